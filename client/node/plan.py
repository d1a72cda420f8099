"""What a run will cost this merchant, known before it trains (``fedshop plan`` on the merchant's data).

The node's training takes its datasets and its round's DP plan from ``fedshop.client.training.round_plan``;
this is the same plan seen from the node, with its own data, ledger and budget: the examples each model
trains on, the noise multiplier, the member tiers' release (what it spends alone; the ledger composes it
with the models') and the ε its ledger will hold after every round.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fedshop.client.node.options import NodeOptions, audit_salt, load_demand_panel, load_interactions
from fedshop.client.training.round_plan import audit_holdout, dp_round, round_compute_s, training_datasets
from fedshop.client.training.tiers import tier_release
from fedshop.privacy.ledger import PrivacyLedger, composed_epsilon


@dataclass(frozen=True)
class MerchantPlan:
    """A run as one merchant's node will go through it."""

    merchant: str
    customers: int
    examples: dict[str, int]  # per model: customers who train it (the audit holdout left out)
    dp: bool
    noise_multiplier: float
    delta: float
    epsilon_before: float  # what the node's ledger holds before the run
    epsilon_after_round: list[float]  # the ledger's ε after each round of the run
    epsilon_budget: float
    refused_from_round: int | None  # the first round the node refuses to train (its budget), if any
    compute_s: float  # a round's training, local-part fit and encryption on the reference machine
    tier_rounds: int = 0  # the rounds that release member tiers' noisy k-means statistics
    tier_epsilon: float = 0.0  # what those releases would spend alone (the ledger composes them with DP-SGD)

    @property
    def epsilon_per_round(self) -> float:
        """What one round adds (the first; later rounds add a little less, as RDP composes)."""
        return self.epsilon_after_round[0] - self.epsilon_before if self.epsilon_after_round else 0.0


def merchant_plan(options: NodeOptions, config: Mapping[str, Any]) -> MerchantPlan:
    """The run of ``config`` (a run's training config) on the merchant's node: its examples, noise
    multiplier and ε after every round, as its training and ledger will have them."""
    interactions = load_interactions(options.data_dir)
    held_out = audit_holdout(interactions, config, audit_salt(options.state_dir))
    datasets = training_datasets(interactions, lambda: load_demand_panel(options.data_dir), config,
                                 int(config["seed"]), held_out)
    examples = {name: len(data) for name, data in datasets.items()}
    budget = options.budget(len(interactions.customers))
    ledger = PrivacyLedger(options.ledger_path)
    before, rounds = ledger.epsilon(budget.delta), int(config["num-server-rounds"])
    compute = round_compute_s(examples, config)
    if not config["dp"]:
        return MerchantPlan(options.merchant, len(interactions.customers), examples, False, 0.0, budget.delta,
                            before, [], budget.epsilon, None, compute)
    _, plan = dp_round(examples, config, budget.delta)
    after = [ledger.epsilon(budget.delta, plan.mechanisms_through(r)) for r in range(1, rounds + 1)]
    refused = next((r for r, epsilon in enumerate(after, start=1) if epsilon > budget.epsilon), None)
    tiers = tier_release(config)
    tier_rounds = tiers.rounds_made(rounds) if tiers else 0
    tier_epsilon = composed_epsilon([tiers.through(rounds)], budget.delta) if tiers else 0.0
    return MerchantPlan(options.merchant, len(interactions.customers), examples, True, plan.noise_multiplier,
                        budget.delta, before, after, budget.epsilon, refused, compute, tier_rounds, tier_epsilon)
