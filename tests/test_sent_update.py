"""A round the server lost and asks for again is answered with the update already paid for, never
trained (and charged to the customers' ε) twice."""

import time
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, Metadata, RecordDict

from fedshop.client.node.app import train_locally
from fedshop.client.node.options import node_options
from fedshop.core.protocol import RUN_KEY
from fedshop.core.settings import RunSettings
from fedshop.models.shared import build_shared_models
from fedshop.privacy.ledger import PrivacyLedger, RoundAlreadyPaid

SETTINGS = RunSettings(num_server_rounds=3, local_epochs=1, pricing=False, he=False, dp_batch_size=64)


def _train_message(seed: int) -> Message:
    config = ConfigRecord({**SETTINGS.training_config(), RUN_KEY: "run-a", "server-round": 1})
    content = RecordDict({"arrays": ArrayRecord(build_shared_models(seed).state_dict()), "config": config})
    return Message(content=content, metadata=Metadata(
        run_id=3, message_id="train-1", src_node_id=1, dst_node_id=2, reply_to_message_id="", group_id="1",
        created_at=time.time(), ttl=600.0, message_type="train"))


def _arrays(reply: Message) -> dict[str, np.ndarray]:
    return {name: array.numpy() for name, array in reply.content.array_records["arrays"].items()}


def test_a_round_asked_again_gets_the_same_update_and_costs_no_more_epsilon(federation_dirs, tmp_path: Path) -> None:
    options = node_options({"data-dir": str(federation_dirs[2]), "state-dir": str(tmp_path), "epsilon-budget": 1e9,
                            "allow-clear": True})
    first = train_locally(_train_message(SETTINGS.seed), options)
    ledger = PrivacyLedger(options.ledger_path)
    spent, entries = ledger.epsilon(1e-4), len(ledger.entries)
    assert spent > 0

    again = train_locally(_train_message(SETTINGS.seed), options)  # a resumed server asks for round 1 again
    assert all(np.array_equal(_arrays(first)[name], _arrays(again)[name]) for name in _arrays(first))
    assert dict(again.content.metric_records["metrics"]) == dict(first.content.metric_records["metrics"])
    assert len(PrivacyLedger(options.ledger_path).entries) == entries
    assert PrivacyLedger(options.ledger_path).epsilon(1e-4) == spent

    with pytest.raises(RoundAlreadyPaid, match="already spent ε on round 1 of run run-a"):
        train_locally(_train_message(SETTINGS.seed + 1), options)  # same round, another global model
    assert len(PrivacyLedger(options.ledger_path).entries) == entries
