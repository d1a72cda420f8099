"""One federated training run, from the seed (or the last checkpoint) to the final global model.

Used by the ServerApp in a real deployment and by the in-process simulation alike. With encrypted
aggregation the server loads only the public CKKS context (refusing one with a secret key), starts
from nothing (merchants build the seeded model themselves) and keeps only ciphertexts.
"""

from pathlib import Path

from flwr.app import Array, ArrayRecord, ConfigRecord
from flwr.serverapp import Grid

from fedshop.core.protocol import RUN_KEY
from fedshop.core.settings import RunSettings
from fedshop.models.parameters import parameter_count
from fedshop.models.shared import build_shared_models
from fedshop.privacy.ckks import CiphertextError, ContextError, load_public_context, parse_sum
from fedshop.rundir.store import RunStore
from fedshop.server.encrypted_strategy import EncryptedFedAvg
from fedshop.server.strategy import MerchantFedAvg


def strategy_for_run(store: RunStore, settings: RunSettings, completed: int) -> tuple[MerchantFedAvg, ArrayRecord]:
    """The strategy for this run and the arrays it starts from."""
    arrays, meta = store.load_checkpoint(completed) if completed else ({}, {})
    start = ArrayRecord(array_dict={name: Array(data) for name, data in arrays.items()})
    if not settings.he:
        initial = start if completed else ArrayRecord(build_shared_models(settings.seed).state_dict())
        return MerchantFedAvg(store, settings, completed), initial
    if not settings.public_context:
        raise ContextError("this run encrypts updates (he = true) but no public-context was given")
    key = load_public_context(Path(settings.public_context))
    if completed and meta.get("context_id") != key.context_id:
        raise ContextError(f"the checkpoint was made under context {meta.get('context_id')}, "
                           f"not {key.context_id}; resume with the same public context")
    if completed:
        try:
            parse_sum(key, arrays, parameter_count())
        except CiphertextError as exc:  # e.g. a sum saved before sums carried their seeds: nodes refuse it
            raise ContextError(f"the checkpoint of round {completed} is not a sum the merchants will decrypt "
                               f"({exc}); start a new run") from exc
    return EncryptedFedAvg(store, settings, completed, key, meta), start


def run_federation(grid: Grid, settings: RunSettings) -> Path:
    """Run (or resume) the training run described by ``settings``; returns its run directory."""
    store = RunStore(settings.run_dir)
    completed = store.open(settings)
    try:
        strategy, arrays = strategy_for_run(store, settings, completed)
        round_config = {**settings.training_config(), RUN_KEY: store.run_key}
        result = strategy.start(grid, arrays, num_rounds=settings.num_server_rounds - completed,
                                timeout=settings.round_timeout_s, train_config=ConfigRecord(round_config),
                                evaluate_config=ConfigRecord(round_config))
    except BaseException as exc:
        store.write_status("failed", store.latest_checkpoint_round(), settings.num_server_rounds,
                           detail=f"{type(exc).__name__}: {exc}")
        raise
    final = result.arrays if len(result.arrays.keys()) else arrays
    store.save_model({k: v.numpy() for k, v in final.items()}, strategy.checkpoint_meta(), encrypted=settings.he)
    store.write_status("finished", settings.num_server_rounds, settings.num_server_rounds)
    return store.run_dir
