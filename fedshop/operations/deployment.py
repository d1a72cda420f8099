"""The federation as real processes: the commands that start a SuperLink, a merchant's SuperNode
and a training run, with the flags that keep Flower offline and the app's dependencies as installed.

``fedshop server``, ``fedshop node`` and ``fedshop run`` are thin wrappers over these; the
end-to-end test starts the same commands.
"""

import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from fedshop.core.node_policy import NodePolicy
from fedshop.core.offline import OFFLINE_ENV
from fedshop.core.settings import DEFAULT_EPSILON_BUDGET, RunSettings
from fedshop.operations.certificates import CA_FILE, SERVER_CERT, SERVER_KEY

CONNECTION = "fedshop"


def flower_tool(name: str) -> str:
    """Path of a Flower executable installed beside this Python (or on PATH)."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found; install fedshop with its dependencies first")
    return found


def tls_flags(certificates: Path | None, files: tuple[str, ...]) -> list[str]:
    """``--insecure`` without a certificate folder, else the TLS flags naming its files."""
    if certificates is None:
        return ["--insecure"]
    names = ("--ssl-ca-certfile", "--ssl-certfile", "--ssl-keyfile")
    return [flag for name, file in zip(names, files, strict=True) for flag in (name, str(certificates / file))]


def superlink_command(host: str, port: int, database: Path | None = None,
                      certificates: Path | None = None, node_auth: bool = False) -> list[str]:
    """The SuperLink: Fleet, Control and ServerApp runtime APIs on ``host:port``.

    Without ``database`` it keeps its state (runs, messages, the encrypted updates in flight) in
    memory, Flower's default. With a SQLite ``database`` that state survives a SuperLink restart, but
    every encrypted update is written through SQLite too: on a loaded machine a write can hold the lock
    past Flower's 5 s busy timeout, the SuperLink answers a task heartbeat with HTTP 500 and the run
    fails. A fedshop run does not need the SuperLink's state to resume: its checkpoints are in the
    run directory (``fedshop.rundir.store``). ``node_auth`` admits only registered nodes (Flower's node
    authentication, which needs TLS and the ``database``, where registrations live).
    """
    if node_auth and (database is None or certificates is None):
        raise ValueError("node authentication needs TLS certificates and a state database")
    state = ["--database", str(database)] if database is not None else []
    state += ["--enable-supernode-auth"] if node_auth else []
    return [flower_tool("flower-superlink"), *tls_flags(certificates, (CA_FILE, SERVER_CERT, SERVER_KEY)),
            "--disable-runtime-dependency-installation", "--host", host, "--port", str(port), *state]


@dataclass(frozen=True)
class NodePrivacy:
    """A merchant node's privacy options (see ``fedshop.client.node.options``)."""

    secret_context: Path | None = None
    epsilon_budget: float = DEFAULT_EPSILON_BUDGET
    delta: float | None = None
    state_dir: Path | None = None
    policy: NodePolicy = field(default_factory=NodePolicy)


def supernode_command(server: str, data_dir: Path, merchant: str, runtime_port: int,
                      privacy: NodePrivacy = NodePrivacy(), root_certificate: Path | None = None,
                      insecure: bool = False, auth_key: Path | None = None) -> list[str]:
    """A merchant's SuperNode, pointing its ClientApp at the merchant's data, keys and ledger. It runs no
    task itself (``--isolation process``): the merchant's task runtime (``fedshop.client.node.runtime``, in
    ``fedshop node``) takes its tasks from the runtime API on ``runtime_port``."""
    tls = ["--insecure"] if insecure else ["--root-certificates", str(root_certificate)] if root_certificate else []
    tls += ["--auth-supernode-private-key", str(auth_key)] if auth_key else []
    options = {"data-dir": str(data_dir.resolve()), "merchant": merchant, "epsilon-budget": privacy.epsilon_budget,
               "allow-clear": privacy.policy.allows_clear, "max-run-epsilon": privacy.policy.max_run_epsilon,
               "audit-holdout": privacy.policy.audit_holdout}
    if privacy.secret_context:
        options["secret-context"] = str(privacy.secret_context.resolve())
    if privacy.delta is not None:
        options["delta"] = privacy.delta
    if privacy.state_dir:
        options["state-dir"] = str(privacy.state_dir.resolve())
    node_config = " ".join(f"{key}={json.dumps(value)}" for key, value in options.items())
    return [flower_tool("flower-supernode"), *tls, "--superlink", server, "--isolation", "process",
            "--port", str(runtime_port), "--node-config", node_config]


def write_connection(flwr_home: Path, server: str, root_certificate: Path | None = None,
                     insecure: bool = False) -> None:
    """Flower CLI config naming the SuperLink ``server`` as the ``fedshop`` connection (TLS, trusting
    ``root_certificate`` or the system's trust store, unless ``insecure``)."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    security = ("insecure = true" if insecure else
                f'root-certificates = "{root_certificate.resolve()}"' if root_certificate else "insecure = false")
    (flwr_home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
        f'address = "{server}"\n{security}\n'
    )


def run_command(settings: RunSettings, app_dir: Path) -> list[str]:
    """``flwr run`` of the app in ``app_dir`` (``fedshop.operations.app_bundle.write_app``) against the
    ``fedshop`` connection with ``settings`` as run config."""
    pairs = " ".join(f"{key}={json.dumps(value)}" for key, value in settings.to_run_config().items())
    return [flower_tool("flwr"), "run", str(app_dir), CONNECTION, "--run-config", pairs]


def process_environment(flwr_home: Path | None = None) -> dict[str, str]:
    """Environment for Flower processes: offline (``fedshop.core.offline``, unless the caller set
    a switch itself), this Python's scripts first on PATH (the SuperLink and SuperNodes start
    ``flower-superexec`` by name, also when the virtualenv is not activated), and ``FLWR_HOME`` when a
    Flower CLI call must read its connection from there."""
    scripts = str(Path(sys.executable).parent)
    environment = {**OFFLINE_ENV, **os.environ, "PATH": os.pathsep.join([scripts, os.environ.get("PATH", "")])}
    if flwr_home is not None:
        environment["FLWR_HOME"] = str(flwr_home)
    return environment
