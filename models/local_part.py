"""The merchant-local part of the recommender a merchant serves: what its own customers add to the
federation's model, kept on its node.

The federation releases the *shared* recommender (trained with DP-SGD, aggregated under CKKS, the
part the (ε, δ) guarantee covers). A merchant's *local part* is one offset per shared parameter: a
fine-tune of the released model on the merchant's own customers, without noise, that never leaves
the node. The served recommender is shared + local, the same architecture with summed weights, so
its score still splits exactly per history item and per candidate feature
(:func:`models.recommender.score_parts`), and the shared model's own split of the same score says
what the federation contributed and what the shop's own data added.

The local part is post-processing of what was released: it is fitted after the shared model is
released and never enters a shared parameter's per-customer gradient (the shared model trains as if
it did not exist).
"""

import numpy as np
import torch

from models.recommender import Recommender

LocalPart = dict[str, np.ndarray]
"""Offsets of the recommender's parameters, by state-dict name (float32)."""


def served_recommender(shared: Recommender, local: LocalPart | None) -> Recommender:
    """A new recommender whose weights are the shared model's plus the local part's (a copy of the
    shared model when there is no local part)."""
    state = shared.state_dict()
    if local is not None:
        if set(local) != set(state):
            raise ValueError(f"a local part holds offsets for {sorted(state)}, got {sorted(local)}")
        for name, offset in local.items():
            if offset.shape != tuple(state[name].shape):
                raise ValueError(f"local part {name}: shape {offset.shape}, the model's is {tuple(state[name].shape)}")
        state = {name: value + torch.from_numpy(np.asarray(local[name], dtype=np.float32))
                 for name, value in state.items()}
    served = Recommender(shared.layout)
    served.load_state_dict(state)
    return served.eval()


def local_part(served: Recommender, shared: Recommender) -> LocalPart:
    """What the served model adds to the shared one, parameter by parameter."""
    shared_state = shared.state_dict()
    return {name: (value - shared_state[name]).detach().numpy().astype(np.float32)
            for name, value in served.state_dict().items()}
