"""Run settings: the one definition of a training run's knobs and their defaults.

The ServerApp reads them from Flower's run config (``[tool.flwr.app.config]`` in pyproject.toml
mirrors these defaults so that ``flwr run`` accepts overrides); the in-process demo builds them
directly. Clients receive the training-relevant part with every round.
"""

from dataclasses import asdict, dataclass, fields, replace
from typing import Any


@dataclass(frozen=True)
class RunSettings:
    """Knobs of one federated training run."""

    num_server_rounds: int = 5
    local_epochs: int = 3
    learning_rate: float = 0.01
    batch_size: int = 64
    negatives: int = 64
    history_length: int = 20
    seed: int = 7
    run_dir: str = "runs/latest"
    min_nodes: int = 2

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
            values[name] = type(default)(value)
        return replace(cls(), **values)
