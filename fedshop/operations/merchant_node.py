"""A merchant's node as ``fedshop node`` starts it: the checks before it joins the federation, then the
node itself, kept up.

Three steps, so that the command can say what it found between them:

``check_merchant``  the merchant's own data and keys, nothing on the network: the data directory loads
                    and passes the schema, the secret context (if any) loads, the recommender has at least
                    one training example (a node without one would fail every round), the privacy
                    guarantee and the ε its ledger has spent so far, and the merchant's policy
                    (``fedshop.core.node_policy``), which the node applies to every task.
``prepare_node``    the connection: the SuperLink's certificate is trusted (unless ``--insecure``), the
                    node key exists, the app digest the node pins, and the SuperNode's command line.
``run_node``        the node's task runtime in a thread (it runs every task with the installed fedshop's
                    code, only for the pinned digest) and the SuperNode, started again whenever it leaves
                    the federation, until Ctrl-C.

A check that fails raises :class:`NodeRefused` with one line naming the problem.
"""

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fedshop.client.data.interactions import TRAINING_EXAMPLE_RULE, build_interactions
from fedshop.client.data.schema import SchemaError, load_merchant
from fedshop.client.node.options import NodeOptions, node_options, save_policy
from fedshop.core.node_policy import DEFAULT_POLICY, NodePolicy
from fedshop.operations.certificates import trust_problem
from fedshop.operations.deployment import NodePrivacy, process_environment, supernode_command
from fedshop.operations.supervisor import supervise
from fedshop.privacy.ckks import ContextError, load_secret_context
from fedshop.privacy.ledger import Budget, PrivacyLedger


class NodeRefused(Exception):
    """The node does not join: the message says why, in one line."""


@dataclass(frozen=True)
class MerchantCheck:
    """A merchant's data and keys as checked before its node starts."""

    data: Path
    secret_context: Path | None
    options: NodeOptions
    customers: int
    items: int
    guarantee: Budget  # the (ε, δ) the merchant allows over the node's lifetime
    spent: float  # ε its ledger has spent so far, at the guarantee's δ
    context_id: str  # of the secret context, "none" without one

    @property
    def merchant(self) -> str:
        return self.options.merchant


@dataclass(frozen=True)
class NodeStart:
    """Everything a checked node needs to start."""

    merchant: str
    digest: str  # the only app the node runs tasks of
    command: list[str]  # the SuperNode's
    runtime_address: str  # where the SuperNode hands tasks to the node's runtime


def check_merchant(data: Path, secret_context: Path | None, budget: float, merchant: str | None = None,
                   delta: float | None = None, state_dir: Path | None = None,
                   policy: NodePolicy = DEFAULT_POLICY) -> MerchantCheck:
    """Check the merchant's data directory and secret context before its node joins (see the module)."""
    try:
        interactions = build_interactions(load_merchant(data))
        context_id = load_secret_context(secret_context).context_id if secret_context else "none"
    except (SchemaError, ContextError) as exc:
        raise NodeRefused(str(exc)) from exc
    given = {"merchant": merchant, "delta": delta, "state-dir": state_dir and str(state_dir)}
    options = node_options({"data-dir": str(data), "epsilon-budget": budget, "allow-clear": policy.allows_clear,
                            "max-run-epsilon": policy.max_run_epsilon, "audit-holdout": policy.audit_holdout,
                            **{key: value for key, value in given.items() if value is not None}})
    if not interactions.trainable:
        raise NodeRefused(f"merchant {options.merchant}: no training example for the recommender model in {data} "
                          f"({TRAINING_EXAMPLE_RULE}); this node would fail every round, so it does not join")
    guarantee = options.budget(len(interactions.customers))
    spent = PrivacyLedger(options.ledger_path).epsilon(guarantee.delta)
    save_policy(options.state_dir, options.policy)  # what the merchant's service shows on /health
    return MerchantCheck(data, secret_context, options, len(interactions.customers),
                         len(interactions.features.item_ids), guarantee, spent, context_id)


def prepare_node(checked: MerchantCheck, server: str, port: int, root_certificate: Path | None = None,
                 insecure: bool = False, digest: str | None = None, key: Path | None = None) -> NodeStart:
    """Check the connection to the SuperLink at ``server`` and the node key, and pin ``digest`` (default:
    the installed fedshop's app); the SuperNode's runtime API listens on ``port``."""
    merchant = checked.merchant
    if not insecure and (problem := trust_problem(server, root_certificate)):
        raise NodeRefused(f"merchant {merchant}: {problem}")
    if key is not None and not key.exists():
        raise NodeRefused(f"merchant {merchant}: {key}: no such node key (make one with `fedshop keys node`)")
    if not digest:
        from fedshop.operations.app_bundle import app_digest  # builds the app: only when no digest is given

        digest = app_digest()
    privacy = NodePrivacy(checked.secret_context, checked.guarantee.epsilon, checked.guarantee.delta,
                          checked.options.state_dir, checked.options.policy)
    command = supernode_command(server, checked.data, merchant, port, privacy, root_certificate, insecure, key)
    return NodeStart(merchant, digest, command, f"127.0.0.1:{port}")


def run_node(start: NodeStart, say: Callable[[str], None]) -> int:
    """Serve the node's tasks in a thread and keep its SuperNode up (``fedshop.operations.supervisor``,
    which tells ``say`` when it restarts it) until Ctrl-C; returns the exit code."""
    from fedshop.client.node.app import app as client_app  # Flower and the models: only once the checks passed
    from fedshop.client.node.runtime import serve_tasks

    stop = threading.Event()
    runtime = threading.Thread(target=serve_tasks, args=(start.runtime_address, client_app, start.digest, stop),
                               daemon=True)
    runtime.start()
    try:
        return supervise(start.command, process_environment(), say)
    finally:
        stop.set()
