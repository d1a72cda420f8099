"""A merchant's privacy ledger: every DP-SGD release it made, and the ε(δ) they add up to.

The ledger lives on the merchant's node (``STATE_DIR/privacy_ledger.json``) and spans runs. Before
a round trains, the node asks the ledger whether the round's planned steps would take the total
over the merchant's budget, or whether it already paid for this round of this run (a server that
lost the round asks for it again); if so the node refuses to train and says why. A round releases one
model per entry (the recommender and the demand model), and all of them compose. Composition is
Opacus' RDP analysis over the recorded (noise multiplier, sample rate, steps) history, as its
``RDPAccountant`` does it, with one step's RDP kept per (noise multiplier, sample rate): the round's
planner and the ledger ask for the same few again and again, and each costs the node up to half a
second of series expansion.

The unit of privacy is one customer: each customer is one training example (all of their
history), so the guarantee bounds what anyone can learn about any one customer of the merchant.
"""

import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from opacus.accountants import RDPAccountant
from opacus.accountants.analysis import rdp as rdp_analysis

from fedshop.core.files import write_bytes

CLEAR = "none: trained without DP (clear test federation)"
RUN_LIMIT_SLACK = 1e-3  # a run planned to spend exactly its target may compose to a hair above it
ACCOUNTANT = "rdp"
LEDGER_FILE = "privacy_ledger.json"


def default_delta(customers: int) -> float:
    """δ below 1/customers by a factor of ten, the usual rule for a per-customer guarantee."""
    return 0.1 / max(customers, 1)


@dataclass(frozen=True)
class Mechanism:
    """Steps of the subsampled Gaussian mechanism at one noise multiplier and sample rate."""

    noise_multiplier: float
    sample_rate: float
    steps: int


@dataclass(frozen=True)
class Budget:
    """The (ε, δ) a merchant allows over the lifetime of its node."""

    epsilon: float
    delta: float


@lru_cache(maxsize=1024)
def _one_step_rdp(noise_multiplier: float, sample_rate: float) -> np.ndarray:
    rdp = rdp_analysis.compute_rdp(q=sample_rate, noise_multiplier=noise_multiplier, steps=1,
                                   orders=RDPAccountant.DEFAULT_ALPHAS)
    rdp.setflags(write=False)  # shared by every later caller
    return rdp


def composed_epsilon(mechanisms: Sequence[Mechanism], delta: float) -> float:
    """ε(δ) of the mechanisms composed, exactly as Opacus' ``RDPAccountant`` with them as its history."""
    if not mechanisms:
        return 0.0
    rdp = sum(m.steps * _one_step_rdp(m.noise_multiplier, m.sample_rate) for m in mechanisms)
    epsilon, _ = rdp_analysis.get_privacy_spent(orders=RDPAccountant.DEFAULT_ALPHAS, rdp=rdp, delta=delta)
    return float(epsilon)


class BudgetExceeded(RuntimeError):
    """Training would take the merchant past its privacy budget."""


class RoundAlreadyPaid(RuntimeError):
    """A round of a run was already trained and recorded: training it again would charge ε twice."""


class PrivacyLedger:
    """The persisted release history of one merchant node."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.entries: list[dict] = json.loads(self.path.read_text())["entries"] if self.path.exists() else []

    def epsilon(self, delta: float, planned: Sequence[Mechanism] = ()) -> float:
        """ε(δ) spent so far, or after the ``planned`` releases too; infinite once a round was released
        without DP (a clear test federation the merchant allowed): no guarantee is left to state."""
        if any(e.get("mechanism") == CLEAR for e in self.entries):
            return math.inf
        recorded = [Mechanism(e["noise_multiplier"], e["sample_rate"], e["steps"]) for e in self.entries]
        return composed_epsilon([*recorded, *planned], delta)

    def record_clear(self, run: str, round_: int, model: str) -> None:
        """Add a release without DP (its merchant started the node with --allow-clear): from now on the
        ledger states no guarantee for this merchant's customers."""
        self.entries.append({"run": run, "round": round_, "model": model, "mechanism": CLEAR, "time": time.time()})
        self._save()

    def paid_for(self, run: str, round_: int) -> bool:
        """Whether a release of round ``round_`` of ``run`` is already recorded."""
        return any(e["run"] == run and e["round"] == round_ for e in self.entries)

    def run_epsilon(self, run: str, delta: float, planned: Sequence[Mechanism] = ()) -> float:
        """ε(δ) that the releases of one run have spent (after the ``planned`` ones too)."""
        recorded = [Mechanism(e["noise_multiplier"], e["sample_rate"], e["steps"]) for e in self.entries
                    if e["run"] == run and e.get("mechanism") != CLEAR]
        return composed_epsilon([*recorded, *planned], delta)

    def authorize(self, merchant: str, planned: Sequence[Mechanism], budget: Budget, run: str, round_: int,
                  run_limit: float = math.inf) -> float:
        """ε after ``planned`` (round ``round_`` of ``run``) if it stays within ``budget``, the run stays
        within ``run_limit`` (the node's policy: however the operator sets the run's rounds or resumes it)
        and the round was not paid for already; otherwise refuse with the reason."""
        if self.paid_for(run, round_):
            raise RoundAlreadyPaid(
                f"merchant {merchant} already spent ε on round {round_} of run {run}, and the update it sent then "
                "is not the answer to this round's global model; training the round again would charge its "
                "customers twice, so this node refuses"
            )
        in_run = self.run_epsilon(run, budget.delta, planned)
        if in_run > run_limit * (1 + RUN_LIMIT_SLACK):
            raise BudgetExceeded(
                f"merchant {merchant} refused round {round_} of run {run}: it would bring the run's ε to "
                f"{in_run:.2f} (δ={budget.delta:.1e}, per customer), over this node's policy of at most "
                f"ε = {run_limit:g} per run"
            )
        after = self.epsilon(budget.delta, planned)
        if after > budget.epsilon:
            raise BudgetExceeded(
                f"privacy budget reached for merchant {merchant}: this round would bring ε to {after:.2f} "
                f"(δ={budget.delta:.1e}, per customer), over the budget ε={budget.epsilon:g}; spent so far "
                f"ε={self.epsilon(budget.delta):.2f}. This node refuses to train; raise the budget only if "
                "the merchant accepts more disclosure."
            )
        return after

    def record(self, run: str, round_: int, model: str, mechanism: Mechanism, delta: float) -> float:
        """Add one release (one model's training in one round); returns ε(δ) spent in total."""
        epsilon = self.epsilon(delta, [mechanism])
        self.entries.append({"run": run, "round": round_, "model": model, **asdict(mechanism), "delta": delta,
                             "epsilon_total": epsilon, "accountant": ACCOUNTANT, "time": time.time()})
        self._save()
        return epsilon

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(self.path, json.dumps({"unit": "customer", "entries": self.entries}, indent=2).encode())
