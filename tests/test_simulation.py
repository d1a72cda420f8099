"""The in-process federation trains every simulated merchant in every round."""

import time
from pathlib import Path

import pytest

from fedshop.core.flower_private import vce_api
from fedshop.core.settings import RunSettings
from fedshop.privacy.ledger import LEDGER_FILE, PrivacyLedger
from fedshop.rundir.store import RunStore
from fedshop.simulation import run_simulated_federation


@pytest.mark.slow
def test_round_one_waits_for_every_simulated_merchant(federation_dirs, tmp_path, monkeypatch) -> None:
    """Flower starts the ServerApp before it registers the simulated nodes; with nodes that register
    slowly, the first round must still sample all of them, not the first ``min_nodes`` to appear."""
    register = vce_api._register_nodes

    def slow_register(num_nodes: int, state_factory):
        mapping = {}
        for _ in range(num_nodes):
            time.sleep(1.5)
            mapping.update({node: len(mapping) for node in register(1, state_factory)})
        return mapping

    monkeypatch.setattr(vce_api, "_register_nodes", slow_register)
    nodes = [{"data-dir": str(d), "merchant": d.name, "state-dir": str(tmp_path / d.name), "allow-clear": True}
             for d in federation_dirs]
    settings = RunSettings(num_server_rounds=1, local_epochs=1, dp=False, he=False, pricing=False,
                           run_dir=str(tmp_path / "run"))
    run = run_simulated_federation(nodes, settings)
    names = sorted(d.name for d in federation_dirs)
    for record in RunStore(run).rounds():
        assert sorted(record["train"]) == names and sorted(record["evaluate"]) == names


@pytest.mark.slow
def test_merchant_with_nothing_to_train_on_is_named_and_the_run_goes_on(one_item_customers_federation,
                                                                        tmp_path) -> None:
    merchants = one_item_customers_federation
    nodes = [{"data-dir": str(d), "merchant": d.name, "state-dir": str(tmp_path / d.name), "allow-clear": True}
             for d in merchants]
    settings = RunSettings(num_server_rounds=1, local_epochs=1, he=False, run_dir=str(tmp_path / "run"))
    record, = RunStore(run_simulated_federation(nodes, settings)).rounds()
    failure, = record["failures"].values()
    assert f"merchant {merchants[-1].name}: no training example for the recommender model" in failure
    assert sorted(record["train"]) == sorted(d.name for d in merchants[:-1])


@pytest.mark.slow
def test_a_sampled_round_trains_a_share_of_the_merchants_and_the_others_spend_nothing(federation_dirs,
                                                                                       tmp_path) -> None:
    """``fraction-train``: each round draws its merchants afresh; a merchant not drawn neither trains
    nor spends ε that round; every merchant evaluates (and adopts) the first round's model, so that it can be
    drawn later, and the final model."""
    nodes = [{"data-dir": str(d), "merchant": d.name, "state-dir": str(tmp_path / d.name), "allow-clear": True}
             for d in federation_dirs]
    settings = RunSettings(num_server_rounds=3, local_epochs=1, he=False, pricing=False, local_part_epochs=0,
                           fraction_train=0.5, run_dir=str(tmp_path / "run"))
    rounds = RunStore(run_simulated_federation(nodes, settings)).rounds()
    assert len(rounds[0]["train"]) == 2 and sorted(rounds[0]["evaluate"]) == sorted(d.name for d in federation_dirs)
    for record in rounds[1:-1]:  # the first round's aggregate went to every merchant: each can be drawn later
        assert len(record["train"]) == 2 and sorted(record["evaluate"]) == sorted(record["train"])
    assert len(rounds[-1]["train"]) == 2 and sorted(rounds[-1]["evaluate"]) == sorted(d.name for d in federation_dirs)
    for node in nodes:
        trained = {record["round"] for record in rounds if node["merchant"] in record["train"]}
        paid = {entry["round"] for entry in PrivacyLedger(Path(node["state-dir"]) / LEDGER_FILE).entries}
        assert paid == trained
