"""The server's run store and update checks: refusals name the problem, runs resume."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord

from fedshop.core.settings import RunSettings
from fedshop.rundir.store import RunStore, RunStoreError
from fedshop.server.update_checks import update_problem


def _record(**arrays: np.ndarray) -> ArrayRecord:
    return ArrayRecord(array_dict={k: Array(v) for k, v in arrays.items()})


def test_update_checks_name_the_problem() -> None:
    reference = _record(w=np.zeros((2, 3), np.float32), b=np.zeros(3, np.float32))
    assert update_problem(reference, _record(w=np.ones((2, 3), np.float32), b=np.ones(3, np.float32))) is None
    assert "missing ['b']" in update_problem(reference, _record(w=np.zeros((2, 3), np.float32)))
    assert "'w' is float32[3, 2], expected float32[2, 3]" in update_problem(
        reference, _record(w=np.zeros((3, 2), np.float32), b=np.zeros(3, np.float32)))
    assert "'b' is float64[3]" in update_problem(
        reference, _record(w=np.zeros((2, 3), np.float32), b=np.zeros(3, np.float64)))
    poisoned = np.zeros(3, np.float32)
    poisoned[1] = np.nan
    assert "'b' holds NaN" in update_problem(reference, _record(w=np.zeros((2, 3), np.float32), b=poisoned))


def test_run_resumes_from_last_checkpoint_and_refuses_other_settings(tmp_path: Path) -> None:
    settings = RunSettings(run_dir=str(tmp_path), num_server_rounds=3)
    store = RunStore(tmp_path)
    assert store.open(settings) == 0
    store.save_checkpoint(1, {"w": np.ones(2, np.float32)}, {"aggregate_weight": 1.0})
    store.save_checkpoint(2, {"w": np.full(2, 2.0, np.float32)}, {"aggregate_weight": 2.0})
    (store.checkpoints / "round_0003.tmp.npz").write_bytes(b"half-written")
    assert RunStore(tmp_path).latest_checkpoint_round() == 2
    assert sorted(p.name for p in store.checkpoints.iterdir()) == ["round_0002.json", "round_0002.npz",
                                                                    "round_0003.tmp.npz"]
    again = RunStore(tmp_path)
    assert again.open(replace(settings, num_server_rounds=5)) == 2
    arrays, meta = again.load_checkpoint(2)
    assert arrays["w"].tolist() == [2.0, 2.0] and meta == {"aggregate_weight": 2.0}
    with pytest.raises(RunStoreError, match=r"\['learning_rate'\] differ"):
        RunStore(tmp_path).open(replace(settings, learning_rate=0.5))


def test_round_records_replace_on_resume(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    store.open(RunSettings(run_dir=str(tmp_path)))
    store.record_round({"round": 1, "evaluate": {"a": {"hr10": 0.1}}})
    store.record_round({"round": 2, "evaluate": {}})
    store.record_round({"round": 1, "evaluate": {"a": {"hr10": 0.2}}})
    assert [r["round"] for r in store.rounds()] == [1]
    assert store.rounds()[0]["evaluate"]["a"]["hr10"] == 0.2


def test_a_server_process_whose_run_was_resumed_by_another_writes_nothing(tmp_path: Path) -> None:
    """A ServerApp that outlived its crashed SuperLink must not overwrite the records of the process that
    resumed the run after the restart; the run keeps its key across the resume."""
    settings = RunSettings(run_dir=str(tmp_path))
    stale, resumed = RunStore(tmp_path), RunStore(tmp_path)
    stale.open(settings)
    key = stale.run_key
    resumed.open(settings)
    assert resumed.run_key == key
    with pytest.raises(RunStoreError, match="resumed by another server process"):
        stale.write_status("failed", 1, 5, detail="lost the SuperLink")
    with pytest.raises(RunStoreError):
        stale.record_round({"round": 1, "train": {}})
    resumed.write_status("running", 1, 5)
    assert RunStore(tmp_path).status()["state"] == "running"
