"""A merchant node's own configuration, and its data loaded once per process.

A real SuperNode is started with ``--node-config`` holding these keys (``fedshop node`` writes
them); a simulated node gets the same keys from the list the simulation was built with.

=================  ==========================================================================
``data-dir``       the merchant's data directory (orders + catalog)
``merchant``       the name the operator sees (default: the directory name)
``secret-context`` the key steward's ``secret.ctx`` (needed when the run encrypts)
``epsilon-budget`` the most ε this node will ever spend (default ``DEFAULT_EPSILON_BUDGET``)
``delta``          δ of the guarantee (default: 0.1 / customers)
``state-dir``      where the node keeps its privacy ledger and its copy of the model
                   (default: ``DATA_DIR/.fedshop``)
``allow-clear``    the merchant allows runs without DP or encryption (default: false)
``max-run-epsilon`` the most ε one run may target (default: the federation's default target)
``audit-holdout``  the share of customers the node keeps out for the audit (default: the run default)
=================  ==========================================================================
"""

import secrets
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from fedshop.client.data.audit_holdout import KEY_BYTES, holdout_cut
from fedshop.client.data.customer_profile import CustomerProfiles, customer_profiles
from fedshop.client.data.demand import DemandPanel, build_demand_panel
from fedshop.client.data.interactions import Interactions, build_interactions
from fedshop.client.data.schema import MerchantData, load_merchant
from fedshop.client.training.local_fit import CO_PURCHASE_FOLDS, fold_co_purchases, shop_co_purchases
from fedshop.core.files import read_json, write_json, write_secret
from fedshop.core.node_policy import NodePolicy
from fedshop.core.settings import DEFAULT_EPSILON_BUDGET
from fedshop.models.local_part import CO_PURCHASE_RIDGES, CoPurchases
from fedshop.privacy.ledger import LEDGER_FILE, Budget, default_delta

POLICY_FILE, AUDIT_SALT_FILE, AUDIT_CUT_FILE = "policy.json", "audit.salt", "audit-cut.json"


@dataclass(frozen=True)
class NodeOptions:
    """Everything a merchant node knows about itself."""

    data_dir: Path
    merchant: str
    secret_context: Path | None
    epsilon_budget: float
    delta: float | None
    state_dir: Path
    policy: NodePolicy = field(default_factory=NodePolicy)

    @property
    def ledger_path(self) -> Path:
        return self.state_dir / LEDGER_FILE

    def budget(self, customers: int) -> Budget:
        return Budget(self.epsilon_budget, self.delta if self.delta is not None else default_delta(customers))


def node_options(node_config: dict, simulation_nodes: tuple[dict, ...] = ()) -> NodeOptions:
    """The node's options from its node config (a simulated node's from its partition)."""
    if simulation_nodes and "partition-id" in node_config and "data-dir" not in node_config:
        node_config = simulation_nodes[int(node_config["partition-id"])]
    if "data-dir" not in node_config:
        raise ValueError("this node has no data: start it with --node-config \"data-dir='/path/to/merchant'\"")
    data_dir = Path(str(node_config["data-dir"])).expanduser().resolve()
    secret = node_config.get("secret-context")
    return NodeOptions(
        data_dir=data_dir,
        merchant=str(node_config.get("merchant", data_dir.name)),
        secret_context=Path(str(secret)).expanduser().resolve() if secret else None,
        epsilon_budget=float(node_config.get("epsilon-budget", DEFAULT_EPSILON_BUDGET)),
        delta=float(node_config["delta"]) if "delta" in node_config else None,
        state_dir=Path(str(node_config.get("state-dir", data_dir / ".fedshop"))).expanduser().resolve(),
        policy=NodePolicy.from_node_config(node_config),
    )


AUDIT_SALT_BYTES = 16


class AuditCutError(ValueError):
    """The node's audit salt or kept audit cuts cannot be used, or a run asks for another holdout than it
    started with."""


def audit_salt(state_dir: Path) -> bytes:
    """The node's secret that picks its audit holdout (created once, owner-only, kept in its state directory).
    A shorter one is refused: an emptied file would key the holdout's hash with nothing, and anyone could
    compute who is held out."""
    path = state_dir / AUDIT_SALT_FILE
    if not path.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        write_secret(path, secrets.token_bytes(AUDIT_SALT_BYTES))
    salt = path.read_bytes()
    if len(salt) < AUDIT_SALT_BYTES:
        raise AuditCutError(f"{path}: the node's audit salt is {len(salt)} bytes, not {AUDIT_SALT_BYTES}: restore it "
                            "from a backup, or delete it only between runs (a new one holds out other customers)")
    return salt


def audit_cut(state_dir: Path, run: str, customer_ids: list[str], share: float) -> bytes:
    """The run's audit holdout cut (``fedshop.client.data.audit_holdout``): taken over ``customer_ids`` the
    first time the run asks, and kept in the state directory (one per run key) for the rest of the run,
    so that no customer changes side within it (a restart on a refreshed export included). A run that
    asks for another share than it started with is refused: at 0 for a round, every held-out customer
    would train, and the last round's audit would count them as never seen."""
    path = state_dir / AUDIT_CUT_FILE
    try:
        kept = read_json(path, {})
        runs = {key: (float(entry["share"]), bytes.fromhex(entry["cut"])) for key, entry in kept.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise AuditCutError(f"{path}: the node's kept audit holdout cuts cannot be read ({exc}); restore it "
                            "from a backup, or delete it only between runs (a run in progress would hold "
                            "out other customers)") from exc
    if any(len(cut) not in (0, KEY_BYTES) for _, cut in runs.values()):
        raise AuditCutError(f"{path}: an audit holdout cut is not {KEY_BYTES} bytes (or empty: nobody)")
    if run in runs:
        started, cut = runs[run]
        if started != share:
            raise AuditCutError(f"run {run} started with an audit holdout of {started:g} and now asks for "
                                f"{share:g}: refused, so that no held-out customer trains within the run")
        return cut
    cut = holdout_cut(customer_ids, share, audit_salt(state_dir))
    write_json(path, {**kept, run: {"share": share, "cut": cut.hex()}})
    return cut


def save_policy(state_dir: Path, policy: NodePolicy) -> None:
    """Keep the policy the node applies beside its ledger, for the merchant's service (``/health``)."""
    path = state_dir / POLICY_FILE
    if read_json(path) != policy.record():
        state_dir.mkdir(parents=True, exist_ok=True)
        write_json(path, policy.record())


def saved_policy(state_dir: Path) -> dict | None:
    """The policy a node applied last (its record), or None when this directory is not a node's."""
    return read_json(Path(state_dir) / POLICY_FILE)


@lru_cache(maxsize=8)
def _merchant_data(data_dir: Path) -> MerchantData:
    """The merchant's tables, read and validated once per process for both models."""
    return load_merchant(data_dir)


@lru_cache(maxsize=8)
def load_interactions(data_dir: Path) -> Interactions:
    """Validated data of the merchant in ``data_dir``, turned into training interactions."""
    return build_interactions(_merchant_data(data_dir))


@lru_cache(maxsize=8)
def load_customer_profiles(data_dir: Path, as_of: pd.Timestamp) -> CustomerProfiles:
    """Validated data of the merchant in ``data_dir``, turned into its customers' profiles as of ``as_of``
    (each tier round and the last round's audit ask for the same)."""
    return customer_profiles(_merchant_data(data_dir), as_of)


@lru_cache(maxsize=8)
def load_co_purchases(data_dir: Path, ridge: float) -> CoPurchases:
    """The shop's co-purchases at λ = ``ridge`` over all its customers' training histories, counted once per
    process: every round's evaluation serves them."""
    return shop_co_purchases(load_interactions(data_dir), ridge)


def load_fold_co_purchases(data_dir: Path, ridge: float, excluded: np.ndarray, fold: int) -> CoPurchases:
    """The co-purchases the local fit chooses its weight and λ with (``fold_co_purchases``), counted once
    per process: every round's fit asks for the same."""
    return _fold_co_purchases(data_dir, ridge, tuple(np.flatnonzero(excluded).tolist()), fold)


@lru_cache(maxsize=8 * CO_PURCHASE_FOLDS * len(CO_PURCHASE_RIDGES))  # every fold and λ of a few merchants
def _fold_co_purchases(data_dir: Path, ridge: float, excluded: tuple[int, ...], fold: int) -> CoPurchases:
    interactions = load_interactions(data_dir)
    mask = np.zeros(len(interactions.customers), dtype=bool)
    mask[list(excluded)] = True
    return fold_co_purchases(interactions, ridge, mask, fold)


@lru_cache(maxsize=8)
def load_demand_panel(data_dir: Path) -> DemandPanel:
    """Validated data of the merchant in ``data_dir``, turned into weekly demand."""
    return build_demand_panel(_merchant_data(data_dir))
