"""The model as one flat vector, in a fixed order: what merchants encrypt and decrypt.

The order and shapes come from the shared models (recommender and demand model) built from their
layouts, so every merchant flattens and restores identically.
"""

from functools import cache

import numpy as np
import torch

from fedshop.models.shared import SharedModels


@cache
def parameter_shapes() -> tuple[tuple[str, tuple[int, ...]], ...]:
    """Names and shapes of the model's tensors, in state-dict order."""
    return tuple((name, tuple(t.shape)) for name, t in SharedModels().state_dict().items())


def parameter_count() -> int:
    return sum(int(np.prod(shape)) for _, shape in parameter_shapes())


def flatten(state: dict[str, torch.Tensor]) -> np.ndarray:
    """One float64 vector of a state dict, in the fixed order."""
    return np.concatenate([state[name].detach().numpy().astype(np.float64).ravel()
                           for name, _ in parameter_shapes()])


def unflatten(vector: np.ndarray) -> dict[str, torch.Tensor]:
    """The float32 state dict of a flat vector made by :func:`flatten`."""
    if vector.shape != (parameter_count(),):
        raise ValueError(f"a model vector has {parameter_count()} values, got shape {vector.shape}")
    state, offset = {}, 0
    for name, shape in parameter_shapes():
        size = int(np.prod(shape))
        state[name] = torch.from_numpy(vector[offset:offset + size].astype(np.float32).reshape(shape))
        offset += size
    return state
