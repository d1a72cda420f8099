"""The merchant's policy decides, not the run settings: a task outside it is refused before anything is
read or trained, and nothing leaves the node."""

import math
import time
from dataclasses import replace
from pathlib import Path

import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, Metadata, RecordDict

from fedshop.client.node.app import TaskRefused, count_examples, evaluate_locally, train_locally
from fedshop.client.node.options import node_options, saved_policy
from fedshop.core.node_policy import SETTING_BOUNDS, NodePolicy
from fedshop.core.protocol import RUN_KEY
from fedshop.core.settings import RunSettings
from fedshop.models.shared import build_shared_models
from fedshop.privacy.ledger import LEDGER_FILE, PrivacyLedger


def test_the_default_run_settings_lie_inside_the_default_policy() -> None:
    config = RunSettings().training_config()
    assert NodePolicy().refusal(config) is None
    assert NodePolicy().refusal({**config, "audit-holdout": 0.0}) is None  # no audit at all
    assert all(name in config for name in SETTING_BOUNDS), "a bound names no run setting"


@pytest.mark.parametrize(("change", "named"), [
    ({"dp": False}, "setting 'dp' is False, but this node's policy requires DP-SGD"),
    ({"he": False}, "setting 'he' is False, but this node's policy requires encrypted aggregation"),
    ({"target-epsilon": 50.0}, "allows at most ε = 8 per run"),
    ({"target-epsilon": 0.0}, "allows at most ε = 8 per run (and more than 0)"),
    ({"history-length": 10**7}, "setting 'history-length' is 10000000, outside this node's policy range [1, 200]"),
    ({"negatives": 10**6}, "setting 'negatives'"),
    ({"predictions-per-customer": 0}, "setting 'predictions-per-customer'"),
    ({"local-epochs": 500}, "setting 'local-epochs'"),
    ({"num-server-rounds": 10**4}, "setting 'num-server-rounds'"),
    ({"dp-batch-size": 10**9}, "setting 'dp-batch-size'"),
    ({"audit-holdout": 0.9}, "setting 'audit-holdout' is 0.9, but this node keeps 0.1 of its customers out"),
    ({"audit-holdout": 0.1001}, "setting 'audit-holdout' is 0.1001"),
    ({"batch-size": "128"}, "setting 'batch-size' is '128'"),
    ({"predictions-per-customer": 64, "history-length": 200, "negatives": 1024}, "items a batch, over this node's"),
    ({"tier-noise-multiplier": 1.0}, "setting 'tier-noise-multiplier' is 1.0"),
    ({"tier-rounds": 4, "tier-noise-multiplier": 6.0}, "the member tiers would take too much of the run's ε"),
    ({"tier-as-of": "next week"}, "setting 'tier-as-of' is 'next week', not an ISO date"),
])
def test_a_setting_outside_the_policy_is_named_with_its_value_and_bound(change: dict, named: str) -> None:
    assert named in NodePolicy().refusal({**RunSettings().training_config(), **change})


def test_a_merchant_allows_clear_runs_only_by_saying_so() -> None:
    clear = {**RunSettings().training_config(), "dp": False, "he": False}
    assert NodePolicy.from_node_config({}).refusal(clear) is not None
    assert NodePolicy.from_node_config({"allow-clear": True}).refusal(clear) is None
    assert "at most ε = 4" in NodePolicy.from_node_config({"max-run-epsilon": 4}).refusal(
        RunSettings().training_config())


def _message(kind: str, settings: RunSettings, round_: int = 1) -> Message:
    arrays = ArrayRecord(build_shared_models(settings.seed).state_dict()) if not settings.he else ArrayRecord()
    return Message(content=RecordDict({"arrays": arrays, "config": ConfigRecord(
        {**settings.training_config(), RUN_KEY: "run-p", "server-round": round_, "context-id": "",
         "aggregate-weight": 0.0, "aggregate-scale": 0.0, "aggregate-range": 0.0, "weight-scale": 1.0})}),
        metadata=Metadata(run_id=1, message_id=f"{kind}-{round_}", src_node_id=1, dst_node_id=2,
                          reply_to_message_id="", group_id="1", created_at=time.time(), ttl=600.0,
                          message_type=kind))


def test_the_operator_cannot_switch_dp_or_encryption_off_at_a_default_node(federation_dirs, tmp_path: Path) -> None:
    """`fedshop run --no-dp --no-he` with the honest, pinned app: the node trained without noise and sent
    its model in the clear, and its ledger recorded nothing (issue 32)."""
    state = tmp_path / "state"
    options = node_options({"data-dir": str(federation_dirs[2]), "state-dir": str(state), "merchant": "shop_c"})
    base = RunSettings(local_epochs=1, pricing=False, local_part_epochs=0)
    for settings, named in ((replace(base, dp=False), "'dp'"), (replace(base, he=False), "'he'")):
        for task, kind in ((train_locally, "train"), (evaluate_locally, "evaluate"), (count_examples, "query")):
            with pytest.raises(TaskRefused, match=f"merchant shop_c refused the .* of round 1: setting {named}"):
                task(_message(kind, settings), options)
    assert not (state / LEDGER_FILE).exists() and not (state / "sent_update.npz").exists()
    assert not (state / "model.npz").exists()
    assert saved_policy(state)["require_dp"] is True  # what the merchant's service shows on /health


def test_a_clear_round_the_merchant_allowed_leaves_no_guarantee_to_state(federation_dirs, tmp_path: Path) -> None:
    options = node_options({"data-dir": str(federation_dirs[2]), "state-dir": str(tmp_path), "allow-clear": True})
    settings = RunSettings(local_epochs=1, pricing=False, local_part_epochs=0, dp=False, he=False)
    train_locally(_message("train", settings), options)
    assert math.isinf(PrivacyLedger(tmp_path / LEDGER_FILE).epsilon(1e-5))


def test_a_run_never_spends_more_than_the_policys_epsilon_however_its_rounds_are_set(federation_dirs,
                                                                                  tmp_path: Path) -> None:
    """Resumed with more and more rounds, one run key's ε read 8.00, 9.57, 10.53 ... (a review, issue 32):
    each round was planned as if it alone were the run."""
    options = node_options({"data-dir": str(federation_dirs[2]), "state-dir": str(tmp_path), "merchant": "shop_c",
                            "allow-clear": True})
    spent = []
    for rounds in (1, 2, 3):
        settings = RunSettings(num_server_rounds=rounds, local_epochs=1, pricing=False, local_part_epochs=0,
                               he=False)
        message = _message("train", settings, round_=rounds)
        if rounds > 1:
            with pytest.raises(Exception, match="over this node's policy of at most ε = 8 per run"):
                train_locally(message, options)
            break
        train_locally(message, options)
        ledger = PrivacyLedger(tmp_path / LEDGER_FILE)
        spent.append(ledger.run_epsilon("run-p", ledger.entries[-1]["delta"]))
    assert spent[0] <= 8.0 * 1.001
