"""Every piece of Flower that fedshop uses from outside Flower's public API, in one place, and why
``flwr`` is pinned to exactly 1.41.0 in pyproject.toml.

Flower's public API (``flwr.app``, ``flwr.clientapp``, ``flwr.serverapp``, ``flwr.simulation``,
``flwr.common.log``) covers the apps and the strategy. Three things of fedshop's need more, and these
modules are Flower's internals, free to change in any release:

* the node's own task runtime (``fedshop.client.node.runtime``) takes Flower's place as the process
  that acquires a SuperNode's tasks, so that a node runs only the code its merchant installed: it
  speaks the SuperNode's runtime API (its protobuf messages, HTTP client, interceptors, retries and
  task heartbeat) and reads a task's message and FAB as ``flwr-clientapp`` does;
* the in-process simulation wraps the ServerApp's grid (``fedshop.simulation``), which needs Flower's
  ``Run`` record, and a test reaches into the simulation engine's vce API;
* the app a node pins is built with Flower's own FAB builder (``fedshop.operations.app_bundle``), so
  that its bytes are exactly what ``flwr run`` builds from the same files;
* error codes and sub-statuses of failed tasks.

A new Flower release must be checked against each line below (and ``../shared/FLOWER-1.41-NOTES.md``)
before the pin moves. ``ruff`` bans these modules everywhere else (pyproject.toml, TID251).
"""

from flwr.cli.build import build_fab_from_disk, build_fab_from_files
from flwr.common.constant import ErrorCode, SubStatus
from flwr.proto.runtime_pb2 import AcquireTaskRequest, SendTaskHeartbeatRequest  # pylint: disable=E0611
from flwr.server.superlink.fleet.vce import vce_api
from flwr.supercore.constant import TaskType
from flwr.supercore.heartbeat import HeartbeatSender
from flwr.supercore.interceptors import RuntimeTokenHttpInterceptor, RuntimeVersionHttpInterceptor
from flwr.supercore.retry import RetryInvoker, exponential
from flwr.supercore.run import Run
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supercore.task_identity import TaskIdentity
from flwr.supernode.runtime.run_clientapp import pull_task_input, push_message, push_task_output

__all__ = [
    "AcquireTaskRequest", "ErrorCode", "HeartbeatSender", "RetryInvoker", "Run", "RuntimeHttpClient",
    "RuntimeTokenHttpInterceptor", "RuntimeVersionHttpInterceptor", "SendTaskHeartbeatRequest", "SubStatus",
    "TaskIdentity", "TaskType", "build_fab_from_disk", "build_fab_from_files", "exponential", "pull_task_input",
    "push_message", "push_task_output", "vce_api",
]
