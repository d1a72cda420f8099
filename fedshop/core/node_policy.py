"""A merchant's privacy policy: what its node agrees to do, whatever a run's settings ask.

The operator chooses a run's settings and its messages; the pinned app obeys them only within this
policy, which the merchant sets when it starts its node (``fedshop node``) and which the node applies
to every task before it reads any data: DP required, encrypted aggregation required, at most
``max_run_epsilon`` per run (the lifetime budget is the ledger's), every setting that sizes the work
or what leaves the node within a documented range, and the membership audit over a share of
customers the node fixes (and picks with a secret of its own), reported only over groups large
enough that its figures say nothing about one customer. A task outside the policy is refused with a
sentence naming the setting, its value and the bound. The safe defaults change only by the merchant's
explicit choice (``--allow-clear`` for a test federation without DP or encryption).
"""

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from fedshop.core.settings import RunSettings

# Every run setting that sizes a node's work or what it sends, with its range (inclusive). The defaults
# of RunSettings lie inside; tests/test_node_policy.py checks it.
SETTING_BOUNDS: dict[str, tuple[float, float]] = {
    "num-server-rounds": (1, 100),
    "local-epochs": (1, 20),
    "local-part-epochs": (0, 20),
    "history-length": (1, 200),
    "negatives": (1, 1024),
    "predictions-per-customer": (1, 64),
    "batch-size": (1, 4096),
    "dp-batch-size": (1, 65536),
    "demand-dp-batch-size": (1, 65536),
    "dp-max-sample-rate": (0.001, 1.0),
    "max-grad-norm": (1e-4, 100.0),
    "demand-max-grad-norm": (1e-4, 1000.0),
    "tier-rounds": (0, 100),
    "tier-noise-multiplier": (2.0, 1e4),
}
# ... and their product: the items one batch scores, batch × predictions × (history + negatives), each a
# vector of the model's width; the defaults make 344,064 (about 33 MB of scores), this about 24 times that.
MAX_BATCH_ITEMS = 2**23
MIN_AUDIT_CUSTOMERS = 20  # on each side of the membership audit, or the node sends no audit figures
# The tiers' Gaussian releases cost zCDP ρ = rounds / (2 z²): at most 0.05 (ε ≈ 1.7 at δ = 10⁻⁶ on their own),
# however the operator trades the rounds against the noise; the defaults (3 rounds at z = 6) make 0.042.
MAX_TIER_ROUNDS_PER_NOISE_SQUARED = 0.1


@dataclass(frozen=True)
class NodePolicy:
    """The merchant's policy, held by its node."""

    require_dp: bool = True
    require_he: bool = True
    max_run_epsilon: float = RunSettings.target_epsilon
    audit_holdout: float = RunSettings.audit_holdout  # the share of customers the audit keeps out of a run's training
    bounds: dict[str, tuple[float, float]] = field(default_factory=lambda: dict(SETTING_BOUNDS))
    min_audit_customers: int = MIN_AUDIT_CUSTOMERS

    @classmethod
    def from_node_config(cls, node_config: Mapping[str, Any]) -> "NodePolicy":
        """The policy a node was started with (``allow-clear``, ``max-run-epsilon`` in its node config)."""
        clear = bool(node_config.get("allow-clear", False))
        return cls(require_dp=not clear, require_he=not clear,
                   max_run_epsilon=float(node_config.get("max-run-epsilon", RunSettings.target_epsilon)),
                   audit_holdout=float(node_config.get("audit-holdout", RunSettings.audit_holdout)))

    @property
    def allows_clear(self) -> bool:
        return not (self.require_dp or self.require_he)

    def refusal(self, config: Mapping[str, Any]) -> str | None:
        """Why a task with the run settings ``config`` is outside this policy (None when it is inside)."""
        if self.require_dp and config.get("dp") is not True:
            return (f"setting 'dp' is {config.get('dp')!r}, but this node's policy requires DP-SGD (a merchant "
                    "starts its node with --allow-clear for a test federation without it)")
        if self.require_he and config.get("he") is not True:
            return (f"setting 'he' is {config.get('he')!r}, but this node's policy requires encrypted aggregation "
                    "(a merchant starts its node with --allow-clear for a test federation without it)")
        if config.get("dp") is True:
            target = _number(config.get("target-epsilon"))
            if target is None or not 0 < target <= self.max_run_epsilon:
                return (f"setting 'target-epsilon' is {config.get('target-epsilon')!r}, but this node's policy "
                        f"allows at most ε = {self.max_run_epsilon:g} per run (and more than 0)")
        for name, (low, high) in self.bounds.items():
            value = _number(config.get(name))
            if value is None or not low <= value <= high:
                return (f"setting '{name}' is {config.get(name)!r}, outside this node's policy range "
                        f"[{low:g}, {high:g}]")
        tier_cost = float(config["tier-rounds"]) / float(config["tier-noise-multiplier"]) ** 2
        if tier_cost > MAX_TIER_ROUNDS_PER_NOISE_SQUARED:
            return (f"settings tier-rounds {config['tier-rounds']} / tier-noise-multiplier "
                    f"{config['tier-noise-multiplier']}² make {tier_cost:.3g}, over this node's policy of "
                    f"{MAX_TIER_ROUNDS_PER_NOISE_SQUARED:g}: the member tiers would take too much of the run's ε")
        as_of = config.get("tier-as-of", "")
        if not isinstance(as_of, str) or (as_of and not _iso_instant(as_of)):
            return f"setting 'tier-as-of' is {as_of!r}, not an ISO date (YYYY-MM-DD) nor empty (the day a round runs)"
        holdout = config.get("audit-holdout")
        if isinstance(holdout, bool) or holdout not in (0, self.audit_holdout):
            return (f"setting 'audit-holdout' is {config.get('audit-holdout')!r}, but this node keeps "
                    f"{self.audit_holdout:g} of its customers out of training for the audit (or, with 0, none)")
        items = batch_items(config)
        if items > MAX_BATCH_ITEMS:
            return (f"settings batch-size / dp-batch-size {max(config['batch-size'], config['dp-batch-size'])} × "
                    f"predictions-per-customer {config['predictions-per-customer']} × (history-length "
                    f"{config['history-length']} + negatives {config['negatives']}) make {items:,.0f} items a "
                    f"batch, over this node's policy of {MAX_BATCH_ITEMS:,}")
        return None

    def describe(self) -> str:
        """The policy in one line, for the node's start, /health, the run record and the report."""
        privacy = ("DP and encryption required" if not self.allows_clear else
                   "clear runs allowed (the merchant's choice: no DP guarantee for a clear round)")
        return (f"{privacy}; at most ε = {self.max_run_epsilon:g} per run; every setting within its range; "
                f"{self.audit_holdout:g} of its customers kept out for the membership audit, reported only over "
                f"at least {self.min_audit_customers} customers on each side")

    def record(self) -> dict[str, Any]:
        """The policy as data (JSON), bounds included."""
        return {**asdict(self), "bounds": {name: list(bound) for name, bound in self.bounds.items()},
                "summary": self.describe()}


DEFAULT_POLICY = NodePolicy()


def batch_items(config: Mapping[str, Any]) -> float:
    """How many items one training batch scores under ``config`` (whose settings are numbers in range)."""
    batch = max(float(config["batch-size"]), float(config["dp-batch-size"]))
    return batch * float(config["predictions-per-customer"]) * (float(config["history-length"])
                                                                + float(config["negatives"]))


def _number(value: Any) -> float | None:
    """``value`` as a number, or None when it is not one (a bool is not a number here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _iso_instant(text: str) -> bool:
    """Whether ``text`` is an ISO 8601 date or instant."""
    try:
        datetime.fromisoformat(text)
    except ValueError:
        return False
    return True
