"""A finished run's global model as a merchant reads it: the node's decrypted copy, or the run's
stored model (decrypted with the merchant's secret context when the run was encrypted).

The node writes its copy (``MODEL_COPY`` + ``MODEL_COPY_INFO``) after every evaluation; the server
writes ``model.npz`` or ``encrypted_model.npz`` into the run directory. Both hold the shared models
(recommender and demand model) of ``models.shared``.
"""

import json
from pathlib import Path

import numpy as np
import torch

from models.parameters import parameter_count, unflatten
from models.shared import SharedModels
from privacy.ckks import ContextError, KeyContext, decrypt, load_secret_context
from server.run_store import RunStore

MODEL_COPY, MODEL_COPY_INFO = "model.npz", "model.json"


def decrypt_global_state(key: KeyContext, ciphertexts: dict[str, np.ndarray],
                         total_weight: float) -> dict[str, torch.Tensor]:
    """The global models' state from the CKKS sum of the merchants' weighted models and their total weight."""
    return unflatten(decrypt(key, ciphertexts, parameter_count()) / total_weight)


def _history_length(model_dir: Path) -> int:
    config = RunStore(model_dir).config()
    if config is not None:
        return int(config["settings"]["history_length"])
    if (model_dir / MODEL_COPY_INFO).exists():
        return int(json.loads((model_dir / MODEL_COPY_INFO).read_text())["history_length"])
    raise FileNotFoundError(f"{model_dir}: neither a run directory (config.json) "
                            f"nor a node's model copy ({MODEL_COPY_INFO})")


def _decrypted_state(store: RunStore, secret_context: Path | None) -> dict[str, torch.Tensor]:
    path = store.encrypted_model_path
    if secret_context is None:
        raise ContextError(f"{path} is encrypted: only a merchant can read it, with --secret-context secret.ctx")
    key = load_secret_context(secret_context)
    meta = json.loads(store.encrypted_meta_path.read_text())
    if meta["context_id"] != key.context_id:
        raise ContextError(f"{path} was encrypted under context {meta['context_id']}, not {key.context_id}")
    with np.load(path) as saved:
        ciphertexts = {name: saved[name] for name in saved.files}
    return decrypt_global_state(key, ciphertexts, float(meta["aggregate_weight"]))


def load_models(model_dir: Path, secret_context: Path | None = None) -> tuple[SharedModels, int]:
    """The global models of a run directory or of a node's state directory, and the recommender's
    history length they were trained with."""
    model_dir = Path(model_dir)
    plain, store = model_dir / MODEL_COPY, RunStore(model_dir)
    if plain.exists():
        with np.load(plain) as saved:
            state = {key: torch.from_numpy(saved[key]) for key in saved.files}
    elif store.encrypted_model_path.exists():
        state = _decrypted_state(store, secret_context)
    else:
        raise FileNotFoundError(f"{model_dir}: no {MODEL_COPY} or {store.encrypted_model_path.name}; "
                                "has the run finished?")
    models = SharedModels()
    models.load_state_dict(state)
    return models.eval(), _history_length(model_dir)
