"""The merchant's own task runtime: the node runs only the code its merchant installed, and keeps it warm.

Flower's SuperNode, started with ``--isolation process``, does not run tasks itself: a task runtime
acquires them from its runtime API. Flower's own (``flower-superexec``) starts a new ``flwr-clientapp``
process for every message, which installs the app the operator submitted (its FAB) and imports its
ClientApp from the FAB's files: the operator's code, next to the merchant's data and secret key.
This runtime takes its place inside ``fedshop node``. For every task it pulls the message, checks
that the submitted app's FAB is, byte for byte, the app this merchant installed (SHA-256 of the FAB,
against the digest ``fedshop node`` pinned), and then hands the message to the ClientApp imported
once from the merchant's own installation, never from the FAB (and says in its reply which digest
ran, for the run record and the auditors' report). A task of any other app is answered
with an error naming both digests, which reaches the operator's run record as this merchant's
failure; the node stays up for the next run. Because the ClientApp, its imports, the merchant's data
and keys stay loaded between messages, a message costs its work, not a process start.
"""

import hashlib
import threading
from collections.abc import Callable
from logging import ERROR, INFO

import httpx
from flwr.app import Context, Error, Message
from flwr.clientapp import ClientApp
from flwr.common import log

from fedshop.core.flower_private import (
    AcquireTaskRequest,
    ErrorCode,
    HeartbeatSender,
    RetryInvoker,
    RuntimeHttpClient,
    RuntimeTokenHttpInterceptor,
    RuntimeVersionHttpInterceptor,
    SendTaskHeartbeatRequest,
    SubStatus,
    TaskType,
    exponential,
    pull_task_input,
    push_message,
    push_task_output,
)
from fedshop.core.protocol import APP_DIGEST, MERCHANT_RECORD

POLL_S = 0.1  # how often the SuperNode is asked for a task (Flower's SuperExec: 1 s)
RETRY_S = 2.0
RETRIED_STATUS = frozenset({502, 503, 504})
MAX_RETRY_DELAY_S = 20.0
TASK_RETRY_S = 120.0  # a task whose SuperNode went away is given up after this long


class AppRefused(RuntimeError):
    """The submitted app is not the one this merchant installed."""


def fab_digest(fab: bytes) -> str:
    """SHA-256 of a FAB's bytes, computed here rather than taken from what the SuperLink says."""
    return hashlib.sha256(fab).hexdigest()


def _gives_up(exc: Exception) -> bool:
    """An HTTP answer other than "busy" ends the retries (a restarted SuperNode no longer knows the task)."""
    return isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code not in RETRIED_STATUS


def _client(address: str, *interceptors: object, max_time: float | None) -> RuntimeHttpClient:
    """A runtime API client whose retries never signal the process. Flower's own (and its task
    heartbeat) send SIGINT to their process on an unknown task or token, since a ``flwr-clientapp``
    process runs one task; here that would stop the whole node."""
    retry = RetryInvoker(wait_gen_factory=lambda: exponential(max_delay=MAX_RETRY_DELAY_S),
                         recoverable_exceptions=(httpx.TransportError, httpx.HTTPStatusError), max_tries=None,
                         max_time=max_time, should_giveup=_gives_up)
    return RuntimeHttpClient.from_server_address(server_address=address, insecure=True, root_certificates=None,
                                                 interceptors=list(interceptors), retry_invoker=retry)


def _task_heartbeat(client: RuntimeHttpClient) -> Callable[[], bool]:
    """Flower's task heartbeat, but a task the SuperNode no longer knows is left to fail on its own
    instead of interrupting the process."""
    request = SendTaskHeartbeatRequest()

    def beat() -> bool:
        try:
            known = client.SendTaskHeartbeat(request).success
        except (httpx.TransportError, httpx.HTTPStatusError):
            return False
        if not known:
            log(ERROR, "task runtime: the SuperNode no longer knows the task under way")
        return True

    return beat


def _refusal(context: Context, run_id: int, submitted: str, pinned: str) -> str:
    merchant = context.node_config.get("merchant", f"node {context.node_id}")
    return (f"merchant {merchant} refused run {run_id}: the submitted app has digest {submitted}, but this node "
            f"runs only the app its merchant installed, digest {pinned} (the operator must submit that same "
            f"fedshop version; a merchant pins a new one with `fedshop node --app-digest`)")


def run_task(address: str, token: str, app: ClientApp, pinned: str) -> None:
    """Pull one task with its token, check the app, run the merchant's ClientApp and push the reply."""
    client = _client(address, RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
                     RuntimeTokenHttpInterceptor(token), max_time=TASK_RETRY_S)
    heartbeat = HeartbeatSender(_task_heartbeat(client))
    heartbeat.start()
    message: Message | None = None
    context: Context | None = None
    reply, sub_status, details = None, SubStatus.FAILED, ""
    try:
        message, context, run, fab = pull_task_input(client)
        submitted = fab_digest(fab.content)
        if submitted != pinned:
            raise AppRefused(_refusal(context, run.run_id, submitted, pinned))
        reply = app(message=message, context=context)
        if not reply.has_error() and MERCHANT_RECORD in reply.content.config_records:
            reply.content.config_records[MERCHANT_RECORD][APP_DIGEST] = pinned
        sub_status = SubStatus.COMPLETED
    except Exception as exc:  # the task fails, never the node: the reply says why
        log(ERROR, "task failed: %s", exc, exc_info=not isinstance(exc, AppRefused))
        details = f"{type(exc)}:<'{exc}'>"  # the form Flower's ClientApp process reports a failure in
        if message is not None:
            reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=details), reply_to=message)
    finally:
        try:
            if reply is not None and context is not None:
                push_message(client, reply, context)
        except Exception as exc:  # a restarted SuperNode no longer knows the task: its reply is lost, not the node
            log(ERROR, "task runtime: the reply could not be delivered: %s", exc)
        finally:
            push_task_output(client, context, sub_status, details)
            heartbeat.stop()
            client.close()


def serve_tasks(address: str, app: ClientApp, pinned: str, stop: threading.Event) -> None:
    """Acquire the SuperNode's ClientApp tasks one at a time and run them, until ``stop`` is set."""
    client = _client(address, RuntimeVersionHttpInterceptor(component_name="SuperExec"), max_time=None)
    log(INFO, "task runtime: serving %s with the installed app %s", address, pinned)
    try:
        while not stop.is_set():
            try:
                acquired = client.AcquireTask(AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP],
                                                                 agentapp_fab_hashes=[]))
            except Exception as exc:  # a SuperNode restarting answers oddly for a moment: ask again
                log(ERROR, "task runtime: could not ask %s for a task: %s", address, exc)
                stop.wait(RETRY_S)
                continue
            if acquired.HasField("task") and acquired.token:
                try:
                    run_task(address, acquired.token, app, pinned)
                except Exception as exc:  # whatever befalls one task, the runtime serves the next
                    log(ERROR, "task runtime: a task ended with %s", exc)
            else:
                stop.wait(POLL_S)
    finally:
        client.close()
