"""The plaintext strategy drops a bad merchant for the round and averages the rest."""

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, Metadata, RecordDict
from rich.console import Console

from fedshop.core.flower_private import ErrorCode, TaskIdentity
from fedshop.core.settings import RunSettings
from fedshop.operations.progress import round_table
from fedshop.rundir.store import RunStore
from fedshop.server.strategy import MerchantFedAvg, QuorumNotReached, failure_reason
from tests.messages import merchant_reply


def _strategy(tmp_path: Path, **changes) -> tuple[MerchantFedAvg, RunStore]:
    """A plaintext strategy on a fresh run directory, its global model three zeros."""
    settings = RunSettings(run_dir=str(tmp_path), he=False, **changes)
    store = RunStore(tmp_path)
    store.open(settings)
    strategy = MerchantFedAvg(store, settings, 0)
    strategy.global_arrays = ArrayRecord(array_dict={"w": Array(np.zeros(3, np.float32))})
    return strategy, store


def test_malformed_updates_and_metrics_are_dropped_and_named(tmp_path: Path) -> None:
    strategy, store = _strategy(tmp_path)
    good = {"num-examples": 10, "train-loss": 1.0}
    replies = [
        merchant_reply({"w": np.full(3, 2.0, np.float32)}, good, "alpha", node=2),
        merchant_reply({"w": np.full(3, 4.0, np.float32)}, {**good, "num-examples": 30}, "beta", node=3),
        merchant_reply({"w": np.zeros(4, np.float32)}, good, "gamma", node=4),
        merchant_reply({"w": np.zeros(3, np.float32)}, {"num-examples": 0, "train-loss": 1.0}, "delta", node=5),
        merchant_reply({"w": np.zeros(3, np.float32)}, {"num-examples": 5}, "eps", node=6),
    ]
    arrays, _ = strategy.aggregate_train(1, replies)
    np.testing.assert_allclose(arrays["w"].numpy(), np.full(3, 3.5))
    strategy.aggregate_evaluate(1, [])
    failures = store.rounds()[0]["failures"]
    assert sorted(failures) == ["delta", "eps", "gamma"]
    assert "'w' is float32[4], expected float32[3]" in failures["gamma"]
    assert "positive whole 'num-examples', got 0" in failures["delta"]
    assert "differ from the round's" in failures["eps"]
    assert sorted(store.rounds()[0]["train"]) == ["alpha", "beta"]
    assert store.latest_checkpoint_round() == 1


def test_a_failure_is_filed_as_the_sentence_the_node_raised() -> None:
    sentence = "merchant shop_a: its secret context 1f is not this federation's (2e); get secret.ctx from the steward"
    raw = f"<class 'fedshop.privacy.ckks.ContextError'>:<'{sentence}'>"
    wrapped = ("<class 'flwr.clientapp.client_app.ClientAppException'>:<'\nException ContextError occurred. "
               f"Message: {sentence}'>")
    assert failure_reason(raw) == failure_reason(wrapped) == failure_reason(sentence) == sentence


def test_the_operators_round_table_names_a_merchant_that_refused_the_global_model() -> None:
    record = {"round": 2, "train": {"shop_a": {"num-examples": 10, "train-loss": 1.0}, "shop_b": {"num-examples": 5}},
              "evaluate": {"shop_a": {"ndcg10": 0.1}}, "failures": {},
              "refused_global_model": {"shop_a": "the global model changed by 9e+08"}}
    console = Console(record=True, width=200)
    console.print(round_table(record))
    text = console.export_text()
    assert "refused the global model: the global model changed by 9e+08" in text
    assert text.count("refused the global model") == 1


class _TwoNodes:
    """Just enough of a Grid for a strategy to sample nodes 2 and 3."""

    @staticmethod
    def get_node_ids() -> list[int]:
        return [2, 3]


def _pushed(messages) -> dict[int, str]:
    """Give the instructions ids as a grid does when it pushes them; their id by destination node."""
    for message in messages:
        message.metadata.__dict__["_message_id"] = f"instruction-{message.metadata.dst_node_id}"
    return {message.metadata.dst_node_id: message.metadata.message_id for message in messages}


def test_a_node_unavailable_reply_from_the_superlink_is_filed_under_the_merchant(tmp_path: Path, monkeypatch) -> None:
    """Flower answers for an unavailable node with an error reply whose sender is the SuperLink: the
    failure belongs to the merchant of the instruction it replies to."""
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)  # what the ServerApp's runtime sets
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)
    settings = RunSettings(run_dir=str(tmp_path), he=False)
    store = RunStore(tmp_path)
    store.open(settings)
    strategy = MerchantFedAvg(store, settings, 0)
    arrays = ArrayRecord(array_dict={"w": Array(np.zeros(3, np.float32))})
    good = {"num-examples": 10, "train-loss": 1.0}
    for round_ in (1, 2):
        ids = _pushed(strategy.configure_train(round_, arrays, ConfigRecord({}), _TwoNodes()))
        replies = [merchant_reply({"w": np.ones(3, np.float32)}, good, "alpha", node=2, reply_to=ids[2])]
        if round_ == 1:
            replies.append(merchant_reply({"w": np.ones(3, np.float32)}, good, "beta", node=3, reply_to=ids[3]))
        else:
            replies.append(Message(Error(ErrorCode.NODE_UNAVAILABLE, "node 3 is unavailable"), reply_to=Message(
                RecordDict(), metadata=Metadata(run_id=1, message_id=ids[3], src_node_id=0, dst_node_id=0,
                                                reply_to_message_id="", group_id="", created_at=0.0, ttl=60.0,
                                                message_type="train"))))
            assert replies[-1].metadata.src_node_id == 0
        strategy.aggregate_train(round_, replies)
        strategy.aggregate_evaluate(round_, [])
    assert store.rounds()[1]["failures"] == {"beta": "node 3 is unavailable"}


class _Nodes:
    """Just enough of a Grid for a strategy to sample: the connected node ids, which a test changes."""

    def __init__(self, *nodes: int) -> None:
        self.nodes = list(nodes)

    def get_node_ids(self) -> list[int]:
        return self.nodes


def test_a_round_waits_a_bounded_time_then_goes_on_with_a_quorum_and_evaluation_skips_the_lost(
        tmp_path: Path, monkeypatch) -> None:
    """Flower's own sampling waits for min_available_nodes without limit: a dead node hung the run."""
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)
    settings = RunSettings(run_dir=str(tmp_path), he=False, min_nodes=3, quorum_wait_s=30, quorum=0.5)
    store = RunStore(tmp_path)
    store.open(settings)
    strategy = MerchantFedAvg(store, settings, 0)
    arrays = ArrayRecord(array_dict={"w": Array(np.zeros(3, np.float32))})
    grid = _Nodes(2, 3, 4)
    ids = _pushed(strategy.configure_train(1, arrays, ConfigRecord({}), grid))
    good = {"num-examples": 10, "train-loss": 1.0}
    replies = [merchant_reply({"w": np.ones(3, np.float32)}, good, name, node=node, reply_to=ids[node])
               for node, name in ((2, "alpha"), (3, "beta"))]  # node 4 ("gamma", never heard of) is lost
    strategy.aggregate_train(1, replies)
    assert strategy.lost == {4}
    started = time.monotonic()
    evaluation = list(strategy.configure_evaluate(1, arrays, ConfigRecord({}), grid))
    assert [m.metadata.dst_node_id for m in evaluation] == [2, 3]
    assert time.monotonic() - started < 20, "evaluation waited for the node training lost"
    strategy.aggregate_evaluate(1, [])
    assert store.rounds()[0]["failures"] == {"node 4": f"no reply within {settings.round_timeout_s:g} s"}

    grid.nodes = [3]
    strategy.settings = replace(settings, quorum_wait_s=0.2)
    with pytest.raises(QuorumNotReached, match=r"round 2 training: 1 of 3 merchants connected after waiting 0.2 s, "
                                               r"fewer than the quorum of 2; missing: alpha"):
        strategy.configure_train(2, arrays, ConfigRecord({}), grid)


def test_a_failure_before_any_reply_is_filed_under_the_merchant_its_node_names(tmp_path: Path) -> None:
    strategy, store = _strategy(tmp_path)
    refused = Message(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                            "<class 'fedshop.client.node.runtime.AppRefused'>:<'merchant shop_a refused run 5: the "
                            "submitted app has digest 1f, but this node runs only the app its merchant installed, "
                            "digest 2e'>"),
                      reply_to=Message(RecordDict(), metadata=Metadata(
                          run_id=1, message_id="i7", src_node_id=0, dst_node_id=7, reply_to_message_id="",
                          group_id="", created_at=0.0, ttl=60.0, message_type="train")))
    strategy.aggregate_train(1, [refused])
    strategy.aggregate_evaluate(1, [])
    failures = store.rounds()[0]["failures"]
    assert list(failures) == ["shop_a"] and "digest 1f" in failures["shop_a"] and "digest 2e" in failures["shop_a"]


def test_a_round_records_how_long_its_phases_took_and_the_operator_sees_it(tmp_path: Path) -> None:
    strategy, store = _strategy(tmp_path)
    strategy.aggregate_train(1, [merchant_reply({"w": np.ones(3, np.float32)}, {"num-examples": 10}, "alpha")])
    strategy.aggregate_evaluate(1, [])
    seconds = store.rounds()[0]["seconds"]
    assert set(seconds) == {"train", "evaluate"} and all(s >= 0 for s in seconds.values())
    console = Console(record=True, width=200)
    console.print(round_table({**store.rounds()[0], "seconds": {"train": 31.2, "evaluate": 12.4}}))
    assert "round 1 (train 31 s, evaluate 12 s)" in console.export_text()
