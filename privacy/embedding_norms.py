"""Exact, fast per-sample gradient norms of embedding tables for Opacus' ghost clipping.

Registered with Opacus' own ``register_norm_sampler`` for ``nn.Embedding`` on import. Opacus'
built-in version finds the distinct (sample, row) pairs with a 2-column ``unique(dim=0)``, which
dominates a DP step on CPU, and it counts the padding row, whose gradient nn.Embedding leaves at
zero (over-estimating norms, so clipping more than needed). Here each pair is one integer key
``sample * rows + row`` and padding positions are left out, so the norm is the true norm of the
gradient nn.Embedding applies.
"""

import torch
from opacus.grad_sample.utils import register_norm_sampler
from torch import nn


@register_norm_sampler(nn.Embedding)
def embedding_norm_sample(layer: nn.Embedding, activations: list[torch.Tensor],
                          backprops: torch.Tensor) -> dict[nn.Parameter, torch.Tensor]:
    """Per-sample L2 norm of the weight gradient of ``layer``."""
    ids = activations[0].reshape(activations[0].shape[0], -1)
    batch = ids.shape[0]
    grads = backprops.reshape(batch, ids.shape[1], -1)
    keys = torch.arange(batch, device=ids.device).unsqueeze(1) * layer.num_embeddings + ids
    keep = ids != layer.padding_idx if layer.padding_idx is not None else torch.ones_like(ids, dtype=torch.bool)
    unique, inverse = torch.unique(keys[keep], return_inverse=True)
    summed = torch.zeros(len(unique), grads.shape[-1], dtype=grads.dtype, device=grads.device)
    summed.index_add_(0, inverse, grads[keep])
    squared = torch.zeros(batch, dtype=grads.dtype, device=grads.device)
    squared.index_add_(0, torch.div(unique, layer.num_embeddings, rounding_mode="floor"), summed.pow(2).sum(1))
    return {layer.weight: squared.sqrt()}
