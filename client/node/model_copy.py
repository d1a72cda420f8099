"""A finished run's global model as a merchant reads it: the node's decrypted copy, or the run's
stored model (decrypted with the merchant's secret context when the run was encrypted).

The node writes its copy (``MODEL_COPY`` + ``MODEL_COPY_INFO``) after every evaluation, with its
merchant-local part of the recommender (``LOCAL_PART``, ``fedshop.models.local_part``) beside it; the server
writes ``model.npz`` or ``encrypted_model.npz`` into the run directory. Both hold the shared models
(recommender and demand model) of ``fedshop.models.shared``; only a node's directory holds a local part, so
the recommender served from a run directory is the shared one alone.
"""

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from fedshop.core.files import write_json, write_npz
from fedshop.models.local_part import CO_PURCHASE_RIDGES, LocalPart
from fedshop.models.parameters import parameter_count, unflatten
from fedshop.models.shared import SharedModels
from fedshop.privacy.ckks import ContextError, KeyContext, decrypt, load_secret_context
from fedshop.privacy.fixed_point import Grid
from fedshop.rundir.store import RunStore

MODEL_COPY, MODEL_COPY_INFO, LOCAL_PART = "model.npz", "model.json", "local_part.npz"
ADOPTED, ADOPTED_INFO = "adopted.npz", "adopted.json"  # what the node adopted in training, when not its copy
_OFFSET = "offset/"


class LoadedModels(NamedTuple):
    """What a merchant serves from: the federation's models, its local part of the recommender (None
    for a run directory, or when its node serves the shared model alone) and the history length."""

    models: SharedModels
    local: LocalPart | None
    history_length: int


def decrypt_global_model(key: KeyContext, ciphertexts: dict[str, np.ndarray], grid: Grid,
                         total_weight: float) -> np.ndarray:
    """The global models as one flat vector: the CKKS sum of the merchants' integers on the round's
    fixed-point ``grid``, divided by their total weight."""
    return grid.average(decrypt(key, ciphertexts, parameter_count()), total_weight)


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
    grid = Grid(float(meta["aggregate_range"]), float(meta["aggregate_scale"]))
    return unflatten(decrypt_global_model(key, ciphertexts, grid, float(meta["aggregate_weight"])))


def save_model_copy(state_dir: Path, models: SharedModels, local: LocalPart | None, info: dict) -> None:
    """The node's copy of the round's global models, its local part (or none) and what they are; each
    file is replaced whole, so the merchant's service (or a crash) never meets a half-written one."""
    state_dir.mkdir(parents=True, exist_ok=True)
    write_npz(state_dir / MODEL_COPY, {k: v.numpy() for k, v in models.state_dict().items()})
    if local is None:
        (state_dir / LOCAL_PART).unlink(missing_ok=True)
    else:
        write_npz(state_dir / LOCAL_PART, {"co_purchase_weight": np.float64(local.co_purchase_weight),
                                           "co_purchase_ridge": np.float64(local.co_purchase_ridge),
                                           **{_OFFSET + name: value for name, value in (local.offsets or {}).items()}})
    write_json(state_dir / MODEL_COPY_INFO, {**info, "local_part": local is not None})


def _saved_state(path: Path) -> dict[str, torch.Tensor]:
    with np.load(path) as saved:
        return {key: torch.from_numpy(saved[key]) for key in saved.files}


def _kept_for(model_dir: Path, name: str, run: str | None, info_name: str = MODEL_COPY_INFO
              ) -> tuple[Path, dict] | None:
    """``name`` in a node's directory and its info (``info_name``: the copy's), if both exist and belong to
    ``run`` (any run for None)."""
    path, info_path = Path(model_dir) / name, Path(model_dir) / info_name
    if not path.exists() or not info_path.exists():
        return None
    info = json.loads(info_path.read_text())
    return (path, info) if run is None or info.get("run") == run else None


class Adoption(NamedTuple):
    """The global models a node last adopted in a run: the aggregate of round ``round`` (0: the run's
    initial model), with the norms of the changes it adopted in that run and the norm of the run's
    initial model (``anchor``: the most a change's scale may be)."""

    models: SharedModels
    changes: list[float]
    round: int
    anchor: float


def adoption(state_dir: Path, run: str) -> Adoption | None:
    """What the node last adopted in ``run``: its model copy (from an evaluation) or what it adopted in a
    round's training, whichever is later (only that one's arrays are read); None when it adopted nothing of
    that run. The node's own record: a run key the operator makes up finds nothing here."""
    found = [kept for kept in (_kept_for(state_dir, MODEL_COPY, run), _kept_for(state_dir, ADOPTED, run, ADOPTED_INFO))
             if kept]
    if not found:
        return None
    path, info = max(found, key=lambda kept: int(kept[1]["round"]))
    models = SharedModels()
    models.load_state_dict(_saved_state(path))
    return Adoption(models, [float(change) for change in info.get("changes", [])], int(info["round"]),
                    float(info.get("anchor", np.inf)))


def save_adoption(state_dir: Path, run: str, adopted: Adoption) -> None:
    """Keep what the node adopted in a round's training (the aggregate of ``adopted.round``), when its model
    copy does not hold it: the reference its next check compares with."""
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / ADOPTED_INFO).unlink(missing_ok=True)  # never an old description of new arrays
    write_npz(state_dir / ADOPTED, {k: v.numpy() for k, v in adopted.models.state_dict().items()})
    write_json(state_dir / ADOPTED_INFO, {"run": run, "round": adopted.round, "changes": adopted.changes,
                                          "anchor": adopted.anchor})


def load_local_part(model_dir: Path, run: str | None = None) -> LocalPart | None:
    """The local part kept in a node's directory (only if it belongs to ``run``, when given), or None."""
    if (kept := _kept_for(model_dir, LOCAL_PART, run)) is None:
        return None
    with np.load(kept[0]) as saved:
        offsets = {name.removeprefix(_OFFSET): saved[name] for name in saved.files if name.startswith(_OFFSET)}
        ridge = float(saved["co_purchase_ridge"]) if "co_purchase_ridge" in saved.files else CO_PURCHASE_RIDGES[0]
        return LocalPart(offsets or None, float(saved["co_purchase_weight"]), ridge)


def model_files(model_dir: Path) -> list[Path]:
    """The files a model directory's models are read from (those that exist): what changes with a new copy."""
    store = RunStore(model_dir)
    candidates = [model_dir / MODEL_COPY, model_dir / MODEL_COPY_INFO, model_dir / LOCAL_PART,
                  store.model_path, store.encrypted_model_path, store.encrypted_meta_path]
    return [path for path in dict.fromkeys(candidates) if path.exists()]


def model_round(model_dir: Path) -> int | None:
    """The round a node's model copy (or a run directory's model) comes from, when it says."""
    info = Path(model_dir) / MODEL_COPY_INFO
    if info.exists():
        return int(json.loads(info.read_text())["round"])
    return RunStore(model_dir).status().get("round")


def load_models(model_dir: Path, secret_context: Path | None = None) -> LoadedModels:
    """The global models of a run directory or of a node's state directory (with the node's local
    part, if it keeps one), and the recommender's history length."""
    model_dir = Path(model_dir)
    plain, store = model_dir / MODEL_COPY, RunStore(model_dir)
    if plain.exists():
        state = _saved_state(plain)
    elif store.encrypted_model_path.exists():
        state = _decrypted_state(store, secret_context)
    else:
        raise FileNotFoundError(f"{model_dir}: no {MODEL_COPY} or {store.encrypted_model_path.name}; "
                                "has the run finished?")
    models = SharedModels()
    models.load_state_dict(state)
    local = load_local_part(model_dir) if plain.exists() else None
    return LoadedModels(models.eval(), local, _history_length(model_dir))
