"""The run log's chain: every round's record, the aggregate it produced and the configuration, by SHA-256."""

import json
from pathlib import Path

import numpy as np

from fedshop.core.protocol import arrays_sha256
from fedshop.core.settings import RunSettings
from fedshop.rundir.chain import GENESIS, verify_chain
from fedshop.rundir.store import RunStore


def _three_rounds(tmp_path: Path) -> RunStore:
    store = RunStore(tmp_path)
    store.open(RunSettings(run_dir=str(tmp_path), he=False))
    for round_ in (1, 2, 3):
        aggregate = {"w": np.full(3, float(round_), np.float32)}
        store.record_round({"round": round_, "train": {"a": {"epsilon": round_ * 1.5}, "b": {"epsilon": 2.0}},
                            "failures": {}}, arrays_sha256(aggregate))
    store.save_model({"w": np.full(3, 3.0, np.float32)}, {}, encrypted=False)
    return store


def _rewrite(store: RunStore, edit) -> None:
    metrics = json.loads((store.run_dir / "metrics.json").read_text())
    edit(metrics["rounds"])
    (store.run_dir / "metrics.json").write_text(json.dumps(metrics))


def test_an_intact_log_verifies_and_each_round_names_its_contributors(tmp_path: Path) -> None:
    store = _three_rounds(tmp_path)
    check = store.verify_log()
    assert check.verified and check.rounds == 3 and check.broken_at is None
    rounds = store.rounds()
    assert rounds[0]["chain"]["previous"] == GENESIS
    assert [r["chain"]["previous"] for r in rounds[1:]] == [r["chain"]["digest"] for r in rounds[:-1]]
    assert rounds[0]["chain"]["contributors"] == ["a", "b"]


def test_an_edited_round_is_named(tmp_path: Path) -> None:
    store = _three_rounds(tmp_path)
    _rewrite(store, lambda rounds: rounds[1]["train"]["a"].update(epsilon=0.1))
    check = store.verify_log()
    assert (check.verified, check.broken_at) == (False, 2)
    assert "changed after it was written" in check.problem


def test_a_removed_round_breaks_the_chain_at_the_next_one(tmp_path: Path) -> None:
    store = _three_rounds(tmp_path)
    _rewrite(store, lambda rounds: rounds.pop(1))
    check = store.verify_log()
    assert (check.verified, check.broken_at) == (False, 3)
    assert "does not follow the round before it" in check.problem


def test_a_swapped_final_model_or_changed_config_is_caught(tmp_path: Path) -> None:
    store = _three_rounds(tmp_path)
    store.save_model({"w": np.full(3, 9.0, np.float32)}, {}, encrypted=False)
    assert "not the aggregate its last round recorded" in store.verify_log().problem
    config = store.config()
    assert not verify_chain(store.rounds(), {**config, "settings": {**config["settings"], "dp": False}}).verified


def test_a_resumed_round_replaces_the_rounds_after_the_checkpoint_and_chains_on(tmp_path: Path) -> None:
    store = _three_rounds(tmp_path)
    store.record_round({"round": 2, "train": {"a": {"epsilon": 3.0}}}, "")
    assert [r["round"] for r in store.rounds()] == [1, 2]
    assert store.rounds()[1]["chain"]["previous"] == store.rounds()[0]["chain"]["digest"]
    assert verify_chain(store.rounds(), store.config()).verified
