"""One federated training run, from the seed (or the last checkpoint) to the final global model.

Used by the ServerApp in a real deployment and by the in-process simulation alike.
"""

from pathlib import Path

from flwr.app import Array, ArrayRecord, ConfigRecord
from flwr.serverapp import Grid

from fedshop.settings import RunSettings
from models.recommender import build_recommender
from server.run_store import RunStore
from server.strategy import MerchantFedAvg

ROUND_TIMEOUT_S = 3600.0


def initial_arrays(store: RunStore, settings: RunSettings, completed_rounds: int) -> ArrayRecord:
    """The model to start from: the last checkpoint when resuming, else the seeded model."""
    if completed_rounds:
        saved = store.load_checkpoint(completed_rounds)
        return ArrayRecord(array_dict={k: Array(v) for k, v in saved.items()})
    return ArrayRecord(build_recommender(settings.seed).state_dict())


def run_federation(grid: Grid, settings: RunSettings) -> Path:
    """Run (or resume) the training run described by ``settings``; returns its run directory."""
    store = RunStore(settings.run_dir)
    completed = store.open(settings)
    arrays = initial_arrays(store, settings, completed)
    strategy = MerchantFedAvg(store, settings, completed)
    train_config = ConfigRecord({
        "local-epochs": settings.local_epochs, "learning-rate": settings.learning_rate,
        "batch-size": settings.batch_size, "negatives": settings.negatives,
        "history-length": settings.history_length, "seed": settings.seed,
    })
    evaluate_config = ConfigRecord({"history-length": settings.history_length})
    try:
        result = strategy.start(grid, arrays, num_rounds=settings.num_server_rounds - completed,
                                timeout=ROUND_TIMEOUT_S, train_config=train_config,
                                evaluate_config=evaluate_config)
    except BaseException as exc:
        store.write_status("failed", store.latest_checkpoint_round(), settings.num_server_rounds,
                           detail=f"{type(exc).__name__}: {exc}")
        raise
    final = result.arrays if len(result.arrays.keys()) else arrays
    store.save_model({k: v.numpy() for k, v in final.items()})
    store.write_status("finished", settings.num_server_rounds, settings.num_server_rounds)
    return store.run_dir
