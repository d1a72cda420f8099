"""No single merchant can break a round: a hostile node (a test double written here) next to honest
merchants' real ClientApps, through the real encrypted strategy and real CKKS; and replies of any shape."""

import contextlib
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, Metadata, MetricRecord, RecordDict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedshop.client.node.app import count_examples, train_locally
from fedshop.client.node.model_copy import decrypt_global_model
from fedshop.client.node.options import node_options
from fedshop.core.flower_private import ErrorCode, TaskIdentity
from fedshop.core.protocol import (
    ARRAYS,
    CONFIG,
    EXAMPLES,
    MERCHANT_NAME,
    MERCHANT_RECORD,
    METRICS,
    VALUE_RANGE,
    WEIGHT_SCALE,
)
from fedshop.core.settings import RunSettings
from fedshop.models.parameters import flatten, parameter_count
from fedshop.models.shared import build_shared_models
from fedshop.privacy.ckks import (
    add_updates,
    create_keys,
    encrypt,
    load_public_context,
    load_secret_context,
    parse_update,
)
from fedshop.privacy.fixed_point import Grid, value_range_of
from fedshop.rundir.store import RunStore
from fedshop.server.encrypted_strategy import EncryptedFedAvg
from fedshop.server.strategy import TRAINING_METRICS, MerchantFedAvg

HONEST_TRAINING = dict.fromkeys(TRAINING_METRICS, 0.0)  # the names an honest node's training reply carries
SETTINGS = RunSettings(num_server_rounds=2, local_epochs=1, dp=False, he=True, pricing=False, local_part_epochs=0)
HOSTILE = 9


class _Federation:
    """Just enough of a Grid: honest nodes answer with the merchant's real ClientApp functions, the hostile
    node with whatever the test says."""

    def __init__(self, honest: dict[int, object], hostile_count: int) -> None:
        self.honest, self.hostile_count = honest, hostile_count

    def get_node_ids(self) -> list[int]:
        return [*self.honest, HOSTILE]

    def send_and_receive(self, messages, *, timeout=None):
        replies = []
        for message in _pushed(messages):
            node = message.metadata.dst_node_id
            if node == HOSTILE:
                replies.append(_reply_to(message, {EXAMPLES: self.hostile_count}, {MERCHANT_NAME: "hostile"}))
            else:
                replies.append(count_examples(message, self.honest[node]))
        return replies


def _pushed(messages) -> list[Message]:
    """Give the messages ids, as a grid does when it pushes them."""
    messages = list(messages)
    for message in messages:
        message.metadata.__dict__["_message_id"] = f"instruction-{message.metadata.message_type}-" \
                                                   f"{message.metadata.dst_node_id}"
    return messages


def _reply_to(message: Message, metrics: dict, merchant: dict | None, arrays: dict | None = None) -> Message:
    content = RecordDict({METRICS: MetricRecord(metrics)})
    if merchant is not None:
        content[MERCHANT_RECORD] = ConfigRecord(merchant)
    if arrays is not None:
        content[ARRAYS] = ArrayRecord(array_dict={name: Array(value) for name, value in arrays.items()})
    return Message(content=content, reply_to=message)


@pytest.fixture(autouse=True)
def _serverapp_identity(monkeypatch) -> None:
    """What the ServerApp's runtime sets before a strategy makes messages."""
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    create_keys(folder)
    return folder, load_secret_context(folder / "secret.ctx"), load_public_context(folder / "public.ctx")


def _round(tmp_path: Path, keys, federation_dirs, hostile_count: int, hostile_replies):
    """One encrypted round of two honest merchants and the hostile node: the strategy asks for counts, the
    honest nodes train (real ClientApp), the hostile replies (first) with ``hostile_replies(instruction,
    honest_reply)``; returns the strategy, the aggregate, the honest updates and the round's record."""
    folder, secret, public = keys
    settings = replace(SETTINGS, run_dir=str(tmp_path / "run"), public_context=str(folder / "public.ctx"))
    store = RunStore(settings.run_dir)
    store.open(settings)
    strategy = EncryptedFedAvg(store, settings, 0, public)
    honest = {2: node_options({"data-dir": str(federation_dirs[0]), "state-dir": str(tmp_path / "a"),
                               "allow-clear": True, "secret-context": str(folder / "secret.ctx")}),
              3: node_options({"data-dir": str(federation_dirs[1]), "state-dir": str(tmp_path / "b"),
                               "allow-clear": True, "secret-context": str(folder / "secret.ctx")})}
    settings_config = {**settings.training_config(), "run-key": "run-h"}
    instructions = _pushed(strategy.configure_train(1, ArrayRecord(), ConfigRecord(settings_config),
                                                    _Federation(honest, hostile_count)))
    replies = {m.metadata.dst_node_id: train_locally(m, honest[m.metadata.dst_node_id])
               for m in instructions if m.metadata.dst_node_id in honest}
    hostile = [hostile_replies(m, replies[2]) for m in instructions if m.metadata.dst_node_id == HOSTILE]
    arrays, _ = strategy.aggregate_train(1, [*[r for rs in hostile for r in rs], *replies.values()])
    strategy.aggregate_evaluate(1, [])
    honest_updates = add_updates(public, [
        parse_update(public, {name: array.numpy() for name, array in reply.content.array_records[ARRAYS].items()},
                     parameter_count()) for reply in replies.values()])
    return strategy, arrays, honest_updates, store.rounds()[0], secret


def _same_sum(arrays: ArrayRecord, honest_sum: dict, strategy: EncryptedFedAvg, secret) -> None:
    """The round's aggregate is the honest merchants' sum: it decrypts to their weighted average."""
    grid = Grid(strategy.aggregate_range, strategy.aggregate_scale)
    kept = {name: array.numpy() for name, array in arrays.items()}
    average = decrypt_global_model(secret, kept, grid, strategy.aggregate_weight)
    honest = decrypt_global_model(secret, honest_sum, grid, strategy.aggregate_weight)
    np.testing.assert_array_equal(average, honest)
    assert len(average) == parameter_count() and np.isfinite(average).all()


def test_an_inflated_count_answer_sits_its_merchant_out_and_shrinks_no_ones_grid(tmp_path, keys,
                                                                                federation_dirs) -> None:
    """A count of 2^40 set the weight scale, and every honest update quantised to almost all zeros (issue 32)."""
    strategy, arrays, honest_sum, record, secret = _round(tmp_path, keys, federation_dirs, 2**40, lambda m, r: [])
    assert "hostile" in record["failures"] and "more than 100 times the median" in record["failures"]["hostile"]
    assert sorted(record["train"]) == sorted(d.name for d in federation_dirs[:2])
    assert strategy.aggregate_scale == sum(strategy.examples[n] for n in (2, 3))
    _same_sum(arrays, honest_sum, strategy, secret)


def _forged(message: Message, honest: Message, **metrics) -> Message:
    """The hostile node's update: an honest merchant's ciphertexts (valid, same context), its own claims."""
    arrays = {name: array.numpy() for name, array in honest.content.array_records[ARRAYS].items()}
    claims = {**dict(honest.content.metric_records[METRICS]), **metrics}
    merchant = {**dict(honest.content.config_records[MERCHANT_RECORD]), MERCHANT_NAME: "hostile"}
    return _reply_to(message, claims, merchant, arrays)


def test_a_first_reply_with_the_largest_weight_or_another_range_excludes_no_honest_update(
        tmp_path, keys, federation_dirs) -> None:
    """The first accepted reply fixed the round's range and most of the weight cap: a merchant that replied
    first claiming 3x the weight scale made every honest update fail the cap (issue 32)."""

    def hostile(message: Message, honest: Message) -> list[Message]:
        scale = float(message.content.config_records[CONFIG][WEIGHT_SCALE])
        return [_forged(message, honest, **{EXAMPLES: int(3 * scale)}),
                _forged(message, honest, **{VALUE_RANGE: 1e9})]

    strategy, arrays, honest_sum, record, secret = _round(tmp_path / "w", keys, federation_dirs, 50, hostile)
    assert sorted(record["train"]) == sorted(d.name for d in federation_dirs[:2]), record["failures"]
    assert "hostile" in record["failures"]
    _same_sum(arrays, honest_sum, strategy, secret)


def test_malformed_replies_are_their_merchants_failures(tmp_path, keys, federation_dirs) -> None:
    """No merchant record crashed the ServerApp with a KeyError; evaluation replies with other metric names
    with Flower's InconsistentMessageReplies (issue 32)."""

    def hostile(message: Message, honest: Message) -> list[Message]:
        return [_reply_to(message, {EXAMPLES: 50}, None, {"x": np.zeros(2)}),
                _reply_to(message, {"odd-metric": 1.0, EXAMPLES: 50}, {MERCHANT_NAME: "hostile"}, {}),
                Message(RecordDict({}), reply_to=message)]

    strategy, arrays, honest_sum, record, secret = _round(tmp_path / "m", keys, federation_dirs, 50, hostile)
    assert sorted(record["train"]) == sorted(d.name for d in federation_dirs[:2])
    _same_sum(arrays, honest_sum, strategy, secret)
    evaluations = [_reply_to(_evaluate(node), metrics, {MERCHANT_NAME: name})
                   for node, name, metrics in ((HOSTILE, "hostile", {EXAMPLES: 5, "other": 1.0}),
                                               (2, "a", {EXAMPLES: 10, "ndcg10": 0.2}),
                                               (3, "b", {EXAMPLES: 30, "ndcg10": 0.4}))]
    strategy.pending = {}
    aggregate = strategy.aggregate_evaluate(2, evaluations)
    assert aggregate["ndcg10"] == pytest.approx(0.35)
    second = RunStore(tmp_path / "m" / "run").rounds()[-1]
    assert "differ from the round's" in second["failures"]["hostile"] and sorted(second["evaluate"]) == ["a", "b"]


def _evaluate(node: int) -> Message:
    message = Message(RecordDict({CONFIG: ConfigRecord({})}), dst_node_id=node, message_type="evaluate")
    message.metadata.__dict__["_message_id"] = f"evaluate-{node}"
    return message


def _metadata(node: int) -> Metadata:
    return Metadata(run_id=1, message_id=f"r{node}", src_node_id=node, dst_node_id=1,
                    reply_to_message_id=f"i{node}", group_id="", created_at=time.time(), ttl=60.0,
                    message_type="train")


_values = st.one_of(st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                    st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=2))
_keys = st.one_of(st.sampled_from([EXAMPLES, "train-loss", VALUE_RANGE, WEIGHT_SCALE]), st.text(min_size=1,
                                                                                                  max_size=8))
_arrays = st.dictionaries(st.sampled_from(["w", "v", "ct.0"]), st.sampled_from(
    [np.zeros(3, np.float32), np.ones(4, np.float32), np.full(3, np.nan, np.float32), np.zeros(3, np.int64),
     np.zeros((2, 2), np.float32)]), max_size=2)


@st.composite
def replies(draw, node: int) -> Message:
    """A reply of any shape a merchant can send: an error, or any records with any values."""
    if draw(st.booleans()) and draw(st.booleans()):
        return Message(Error(code=draw(st.sampled_from([ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                                                        ErrorCode.NODE_UNAVAILABLE])),
                             reason=draw(st.text(max_size=40))), metadata=_metadata(node))
    content = RecordDict()
    if draw(st.booleans()):
        with contextlib.suppress(Exception):  # Flower itself refuses some values: that reply cannot be sent
            content[METRICS] = MetricRecord(draw(st.dictionaries(_keys, _values, max_size=4)))
    if draw(st.booleans()):
        content[MERCHANT_RECORD] = ConfigRecord(draw(st.dictionaries(
            st.sampled_from([MERCHANT_NAME, "context-id", "aggregate-refused", "app-digest"]),
            st.one_of(st.text(max_size=10), st.integers(0, 9)), max_size=3)))
    if draw(st.booleans()):
        content[ARRAYS] = ArrayRecord(array_dict={k: Array(v) for k, v in draw(_arrays).items()})
    if draw(st.booleans()):  # a record no honest node sends
        extra = draw(st.sampled_from(["extra", ARRAYS + "-2", METRICS + "-2"]))
        content[extra] = MetricRecord({"x": 1.0}) if draw(st.booleans()) else ArrayRecord(
            array_dict={"w": Array(np.ones(3, np.float32))})
    return Message(content=content, metadata=_metadata(node))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_no_reply_of_any_shape_breaks_the_clear_strategy(tmp_path_factory, data) -> None:
    run_dir = tmp_path_factory.mktemp("any")
    settings_ = RunSettings(run_dir=str(run_dir), he=False)
    store = RunStore(run_dir)
    store.open(settings_)
    strategy = MerchantFedAvg(store, settings_, 0)
    strategy.global_arrays = ArrayRecord(array_dict={"w": Array(np.zeros(3, np.float32))})
    honest = Message(RecordDict({ARRAYS: ArrayRecord(array_dict={"w": Array(np.full(3, 2.0, np.float32))}),
                                 METRICS: MetricRecord({**HONEST_TRAINING, EXAMPLES: 10}),
                                 MERCHANT_RECORD: ConfigRecord({MERCHANT_NAME: "honest"})}), metadata=_metadata(2))
    others = [data.draw(replies(node)) for node in range(3, 3 + data.draw(st.integers(1, 4)))]
    arrays, _ = strategy.aggregate_train(1, [*others, honest])
    strategy.aggregate_evaluate(1, [*others, honest])
    record = store.rounds()[0]
    assert "honest" in record["train"] or "honest" in record["failures"]
    if len(record["train"]) == 1:  # the honest update alone, whatever else came
        np.testing.assert_allclose(arrays["w"].numpy(), np.full(3, 2.0))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_no_reply_of_any_shape_breaks_the_encrypted_strategy(tmp_path_factory, keys, data) -> None:
    _, secret, public = keys
    run_dir = tmp_path_factory.mktemp("any-he")
    settings_ = RunSettings(run_dir=str(run_dir))
    store = RunStore(run_dir)
    store.open(settings_)
    strategy = EncryptedFedAvg(store, settings_, 0, public)
    model = flatten(build_shared_models(1).state_dict())
    strategy.weight_scale = 10.0
    grid = Grid(value_range_of(model), strategy.weight_scale)
    update = encrypt(secret, grid.quantise(model, 10, np.random.default_rng(0))[0])
    honest = Message(RecordDict({ARRAYS: ArrayRecord(array_dict={k: Array(v) for k, v in update.items()}),
                                 METRICS: MetricRecord({**HONEST_TRAINING, EXAMPLES: 10, WEIGHT_SCALE: 10.0,
                                                        VALUE_RANGE: grid.value_range, "clipped-values": 0}),
                                 MERCHANT_RECORD: ConfigRecord({MERCHANT_NAME: "honest",
                                                                "context-id": public.context_id})}),
                     metadata=_metadata(2))
    strategy.examples = {2: 10}
    others = [data.draw(replies(node)) for node in range(3, 3 + data.draw(st.integers(1, 3)))]
    arrays, _ = strategy.aggregate_train(1, [*others, honest])
    strategy.aggregate_evaluate(1, [*others, honest])
    record = store.rounds()[0]
    assert list(record["train"]) == ["honest"], record["failures"]
    assert arrays is not None and strategy.aggregate_weight == 10


def test_list_valued_metrics_or_extra_records_are_their_merchants_failure(tmp_path: Path) -> None:
    """A list-valued metric crashed Flower's averaging, a second ArrayRecord its consistency check: the
    ServerApp failed, and every resume with it (found by a review, issue 32)."""
    settings_ = RunSettings(run_dir=str(tmp_path), he=False)
    store = RunStore(tmp_path)
    store.open(settings_)
    strategy = MerchantFedAvg(store, settings_, 0)
    strategy.global_arrays = ArrayRecord(array_dict={"w": Array(np.zeros(3, np.float32))})

    def reply(node: int, name: str, metrics: dict, extra: RecordDict | None = None) -> Message:
        content = RecordDict({ARRAYS: ArrayRecord(array_dict={"w": Array(np.full(3, 2.0, np.float32))}),
                              METRICS: MetricRecord(metrics), MERCHANT_RECORD: ConfigRecord({MERCHANT_NAME: name})})
        for key, record in (extra or {}).items():
            content[key] = record
        return Message(content=content, metadata=_metadata(node))

    honest = {**HONEST_TRAINING, EXAMPLES: 10}
    replies = [reply(3, "lists", {**honest, "train-loss": [1.0]}),
               reply(4, "arrays", honest, RecordDict({"more": ArrayRecord(array_dict={"w": Array(np.ones(3))})})),
               reply(5, "metrics", honest, RecordDict({"more": MetricRecord({"x": 1.0})})),
               reply(2, "honest", honest), reply(6, "honest-too", honest)]
    arrays, _ = strategy.aggregate_train(1, replies)
    np.testing.assert_allclose(arrays["w"].numpy(), np.full(3, 2.0))
    evaluations = [_reply_to(_evaluate(7), {EXAMPLES: 5, "hr10": [0.9], "ndcg10": 0.1, "shared-hr10": 0.1,
                                            "shared-ndcg10": 0.1}, {MERCHANT_NAME: "lists"}),
                   _reply_to(_evaluate(2), {EXAMPLES: 5, "hr10": 0.2, "ndcg10": 0.1, "shared-hr10": 0.1,
                                            "shared-ndcg10": 0.1}, {MERCHANT_NAME: "honest"})]
    assert strategy.aggregate_evaluate(1, evaluations)["hr10"] == pytest.approx(0.2)
    failures = store.rounds()[0]["failures"]
    assert {"lists", "arrays", "metrics"} <= set(failures), failures


def test_a_merchant_that_withholds_its_audit_is_not_the_odd_one_out(tmp_path: Path) -> None:
    """A small merchant's node sends no membership figures (its policy: too few customers per side); its
    evaluation must still count, although its metric names differ from the others' (the demo lost two)."""
    settings_ = RunSettings(run_dir=str(tmp_path), he=False)
    store = RunStore(tmp_path)
    store.open(settings_)
    strategy = MerchantFedAvg(store, settings_, 0)
    core = {"hr10": 0.2, "ndcg10": 0.1, "shared-hr10": 0.2, "shared-ndcg10": 0.1}
    evaluations = [_reply_to(_evaluate(node), {EXAMPLES: 10 * node, **core, **extra}, {MERCHANT_NAME: f"m{node}"})
                   for node, extra in ((2, {"audit-mia-auc": 0.5}), (3, {"audit-mia-auc": 0.6}), (4, {}))]
    strategy.aggregate_evaluate(1, evaluations)
    record = store.rounds()[0]
    assert sorted(record["evaluate"]) == ["m2", "m3", "m4"] and record["failures"] == {}
    assert record["evaluate_aggregate"]["ndcg10"] == pytest.approx(0.1)


def test_an_inflated_evaluation_weight_does_not_become_the_rounds_figure(tmp_path: Path) -> None:
    """`num-examples` 2**62 with hr10 0.99 made the round's HR@10 0.99 (a review, issue 32)."""
    settings_ = RunSettings(run_dir=str(tmp_path), he=False)
    store = RunStore(tmp_path)
    store.open(settings_)
    strategy = MerchantFedAvg(store, settings_, 0)
    core = {"ndcg10": 0.1, "shared-hr10": 0.2, "shared-ndcg10": 0.1}
    evaluations = [_reply_to(_evaluate(node), {EXAMPLES: count, "hr10": hr, **core}, {MERCHANT_NAME: name})
                   for node, name, count, hr in ((9, "hostile", 2**62, 0.99), (2, "a", 100, 0.2), (3, "b", 50, 0.2))]
    assert strategy.aggregate_evaluate(1, evaluations)["hr10"] == pytest.approx(0.2)
    assert "more than 100 times the median" in store.rounds()[0]["failures"]["hostile"]
