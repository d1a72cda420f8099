"""Run settings: the one definition of a training run's knobs and their defaults.

The ServerApp reads them from Flower's run config (``[tool.flwr.app.config]`` in pyproject.toml
mirrors these defaults so that ``flwr run`` accepts overrides); the in-process demo builds them
directly. Clients receive the training-relevant part with every round.
"""

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

DEFAULT_EPSILON_BUDGET = 10.0  # the most ε a merchant's node ever spends, over every run (``fedshop node --budget``)


@dataclass(frozen=True)
class RunSettings:
    """Knobs of one federated training run."""

    num_server_rounds: int = 5
    local_epochs: int = 3
    learning_rate: float = 0.01  # Adam, when training without DP (and the merchant-local part)
    batch_size: int = 128
    negatives: int = 64
    predictions_per_customer: int = 4  # next items each customer's example predicts (one clipped gradient)
    history_length: int = 20
    seed: int = 7
    run_dir: str = "runs/latest"
    min_nodes: int = 2  # merchants a round waits for ...
    quorum_wait_s: float = 300.0  # ... at most this long, then goes on with those connected ...
    quorum: float = 0.5  # ... if they are at least this share of min_nodes (else the run fails, naming who is missing)
    round_timeout_s: float = 3600.0  # how long a phase waits for a node's reply before filing it as lost
    fraction_train: float = 1.0  # share of the connected merchants each round trains (drawn afresh every round)
    dp: bool = True  # DP-SGD on every merchant (per-customer guarantee)
    target_epsilon: float = 8.0  # per merchant for the whole run; 0 = use noise_multiplier as given
    noise_multiplier: float = 1.0
    max_grad_norm: float = 0.5  # per-customer clipping bound
    dp_batch_size: int = 1024  # the recommender's expected batch under DP-SGD (the noise is shared by a batch)
    dp_max_sample_rate: float = 0.25  # ... but at most this share of a merchant's customers per batch
    dp_learning_rate: float = 32.0  # SGD at dp_batch_size, scaled with a smaller batch (Adam would amplify noise)
    local_part_epochs: int = 3  # per round, the merchant-local part's fit on its own customers (0: serve shared only)
    pricing: bool = True  # train the demand model in the same rounds (and the same ε budget)
    demand_learning_rate: float = 0.01  # Adam, when training without DP
    demand_dp_batch_size: int = 256  # the demand model's expected DP-SGD batch (capped by dp_max_sample_rate)
    demand_dp_learning_rate: float = 0.0075  # Adam at demand_dp_batch_size, scaled with a smaller batch
    demand_max_grad_norm: float = 20.0  # per-customer clipping bound of the demand model
    tier_rounds: int = 1  # member tiers: the first rounds in which merchants release k-means statistics (0: none)
    tier_noise_multiplier: float = 6.0  # their Gaussian noise, in the same run ε as the models' DP-SGD
    tier_as_of: str = ""  # the instant (ISO date) customers are profiled at for them; empty: the day a round runs
    audit_holdout: float = 0.1  # share of each merchant's customers kept out of training for the privacy audit
    he: bool = True  # CKKS-encrypted aggregation: the server never sees a model in the clear
    public_context: str = ""  # path to the key steward's public.ctx, on the server machine
    registry: str = ""  # the operator's registry of nodes (`fedshop register`): merchants are named by it
    transport: str = ""  # how `fedshop run` reached the SuperLink (TLS and whose CA), for the auditors' report

    def __post_init__(self) -> None:
        if not 0 < self.quorum <= 1:
            raise ValueError(f"quorum must be a share of min-nodes in (0, 1], not {self.quorum}")
        if not 0 < self.fraction_train <= 1:
            raise ValueError(f"fraction-train must be a share of the merchants in (0, 1], not {self.fraction_train}")
        if self.quorum_wait_s < 0 or self.round_timeout_s <= 0:
            raise ValueError("quorum-wait-s must be ≥ 0 and round-timeout-s > 0")

    def quorum_nodes(self) -> int:
        """The fewest merchants a round goes on with once it has waited ``quorum_wait_s``."""
        return max(1, math.ceil(self.quorum * self.min_nodes - 1e-9))

    def training_config(self) -> dict[str, Any]:
        """What every client needs each round (sent in the round's ConfigRecord)."""
        skip = {"run_dir", "min_nodes", "public_context", "quorum_wait_s", "quorum", "round_timeout_s", "registry",
                "transport", "fraction_train"}
        return {key.replace("_", "-"): value for key, value in asdict(self).items() if key not in skip}

    def to_run_config(self) -> dict[str, Any]:
        """Flower run-config form: kebab-case keys."""
        return {key.replace("_", "-"): value for key, value in asdict(self).items()}

    @classmethod
    def from_run_config(cls, run_config: dict[str, Any]) -> "RunSettings":
        """Build from Flower's run config; unknown keys are an error, missing keys default."""
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in run_config.items():
            name = key.replace("-", "_")
            if name not in known:
                raise ValueError(f"unknown run-config key {key!r}; known: {sorted(known)}")
            default = known[name].default
            if isinstance(default, bool) and not isinstance(value, bool):
                raise ValueError(f"run-config key {key!r} must be true or false, not {value!r}")
            values[name] = type(default)(value)
        return replace(cls(), **values)
