"""Merchants check the global model they decrypt: a poisoned round is refused, the previous model kept."""

import time
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, Metadata, RecordDict

from fedshop.client.node.aggregate_check import GROWTH_LIMIT, aggregate_problem
from fedshop.client.node.app import TaskRefused, count_examples, evaluate_locally, train_locally
from fedshop.client.node.model_copy import decrypt_global_model, load_models
from fedshop.client.node.options import node_options
from fedshop.core.protocol import AGGREGATE_REFUSED, EXAMPLES, MERCHANT_RECORD, RUN_KEY, VALUE_RANGE, WEIGHT_SCALE
from fedshop.core.settings import RunSettings
from fedshop.models.parameters import parameter_count
from fedshop.models.shared import build_shared_models
from fedshop.privacy.ckks import (
    CKKS,
    SEEDS,
    add_updates,
    create_keys,
    encrypt,
    load_public_context,
    load_secret_context,
    parse_update,
)
from fedshop.privacy.fixed_point import Grid

SETTINGS = RunSettings(num_server_rounds=5, local_epochs=1, dp=False, he=True, pricing=False, local_part_epochs=0)


def test_the_rule_refuses_non_finite_values_and_a_change_far_beyond_the_runs() -> None:
    previous = np.ones(4)
    assert aggregate_problem(previous + 0.5, previous, [])[0] is None  # 1.0 against the model's norm 2.0
    assert "more than 10 times the norm of the model it had" in aggregate_problem(previous * 30, previous, [])[0]
    assert aggregate_problem(previous + 0.5, previous, [0.2])[0] is None
    problem, change = aggregate_problem(previous + 1.5, previous, [0.2, 0.25])
    assert change == pytest.approx(3.0) and f"{GROWTH_LIMIT:g} times the run's typical change" in problem
    assert "3" not in problem, "a refusal carries no decrypted number off the node"
    assert "non-finite values" in aggregate_problem(np.array([1.0, np.nan, np.inf, 1.0]), previous, [])[0]


def _adopt_rounds(pushes: list[float], honest: float = 1.0) -> int | None:
    """Round by round, a node adopts an honest change of norm ``honest`` plus a poisoner's push in the same
    direction; returns the first round it refuses (None: never)."""
    model, changes = np.ones(8), []
    direction = np.eye(8)[0]
    for round_, push in enumerate(pushes, start=1):
        new = model + direction * (honest + push)
        problem, change = aggregate_problem(new, model, changes)
        if problem:
            return round_
        model, changes = new, changes + [change]
    return None


def test_a_poisoner_multiplying_its_push_by_9_each_round_is_refused_within_two_rounds() -> None:
    """With the largest adopted change as the scale, each adopted push raised the limit tenfold: a push
    multiplied by 9 each round passed forever (issue 32). The first changes' median does not move."""
    pushes = [0.0, 0.0, 0.0] + [9.0 ** k for k in range(1, 8)]  # three honest rounds, then 9, 81, 729, ...
    refused = _adopt_rounds(pushes)
    assert refused is not None and refused <= 3 + 2, refused
    assert _adopt_rounds([0.0] * 10) is None, "honest rounds of steady size are never refused"
    model = np.ones(8)  # a poisoner's own first changes (1000 each) cannot lift the scale past the ceiling
    assert aggregate_problem(model + 30.0, model, [1000.0, 1000.0, 1000.0], ceiling=2.0)[0] is not None
    assert _adopt_rounds([0.0] * 10, honest=1e-3) is None


class Aggregate(NamedTuple):
    """What the server sends with an encrypted global model: the sum, its total weight and its grid."""

    ciphertexts: dict[str, np.ndarray] | None = None
    weight: float = 0.0
    scale: float = 0.0
    value_range: float = 0.0


def _message(kind: str, round_: int, aggregate: Aggregate, weight_scale: float, context_id: str) -> Message:
    config = ConfigRecord({**SETTINGS.training_config(), RUN_KEY: "run-9", "server-round": round_,
                           "context-id": context_id, "aggregate-weight": aggregate.weight,
                           "aggregate-scale": aggregate.scale, "aggregate-range": aggregate.value_range,
                           WEIGHT_SCALE: weight_scale})
    arrays = ArrayRecord(array_dict={name: Array(data) for name, data in (aggregate.ciphertexts or {}).items()})
    metadata = Metadata(run_id=9, message_id=f"{kind}-{round_}", src_node_id=1, dst_node_id=2, reply_to_message_id="",
                        group_id=str(round_), created_at=time.time(), ttl=600.0, message_type=kind)
    return Message(content=RecordDict({"arrays": arrays, "config": config}), metadata=metadata)


def _ciphertexts(reply: Message) -> dict[str, np.ndarray]:
    return {name: array.numpy() for name, array in reply.content.array_records["arrays"].items()}


@pytest.mark.slow
def test_a_valid_encryption_of_huge_values_is_refused_by_every_honest_merchant(federation_dirs, tmp_path: Path) -> None:
    """Two honest merchants and one that sends a valid CKKS encryption of the largest values its
    field holds in round 2: the server adds it (it cannot see inside), every honest merchant refuses
    the decrypted sum, evaluates and trains on its previous model, and says so in its reply."""
    create_keys(tmp_path / "keys")
    secret, public = (load_secret_context(tmp_path / "keys" / "secret.ctx"),
                      load_public_context(tmp_path / "keys" / "public.ctx"))
    nodes = []
    for data_dir in federation_dirs[1:]:
        config = {"data-dir": str(data_dir), "state-dir": str(tmp_path / data_dir.name), "epsilon-budget": 1e9,
                  "allow-clear": True, "secret-context": str(tmp_path / "keys" / "secret.ctx")}
        nodes.append(node_options(config))
    scale = float(sum(count_examples(_message("query", 1, Aggregate(), 0.0, secret.context_id), node)
                      .content.metric_records["metrics"][EXAMPLES] for node in nodes))

    def server_sum(replies: list[Message], extra: list[dict[str, np.ndarray]] = (), extra_weight: int = 0
                   ) -> Aggregate:
        updates = [parse_update(public, c, parameter_count()) for c in [*map(_ciphertexts, replies), *extra]]
        weight = sum(float(r.content.metric_records["metrics"][EXAMPLES]) for r in replies) + extra_weight
        (value_range,) = {r.content.metric_records["metrics"][VALUE_RANGE] for r in replies}
        return Aggregate(add_updates(public, updates), weight, scale, value_range)

    first = [train_locally(_message("train", 1, Aggregate(), scale, secret.context_id), node) for node in nodes]
    round_one = server_sum(first)
    adopted = [evaluate_locally(_message("evaluate", 1, round_one, scale, secret.context_id), node)
               for node in nodes]
    assert all(r.content.metric_records["metrics"][AGGREGATE_REFUSED] == 0 for r in adopted)
    without_seeds = round_one._replace(ciphertexts={k: v for k, v in round_one.ciphertexts.items() if k != SEEDS})
    with pytest.raises(TaskRefused, match="merchant .* refused to decrypt the round's aggregate: an encrypted sum is "
                                          "the arrays .*'seeds'"):
        evaluate_locally(_message("evaluate", 1, without_seeds, scale, secret.context_id), nodes[0])

    honest = [train_locally(_message("train", 2, round_one, scale, secret.context_id), node) for node in nodes]
    largest = np.full(parameter_count(), 2 ** (CKKS.field_bits - 2), np.int64)
    poisoned = server_sum(honest, [encrypt(secret, largest)], extra_weight=100)
    refused = [evaluate_locally(_message("evaluate", 2, poisoned, scale, secret.context_id), node)
               for node in nodes]
    for before, after in zip(adopted, refused, strict=True):
        metrics = after.content.metric_records["metrics"]
        assert metrics[AGGREGATE_REFUSED] == 1
        assert "changed by" in after.content.config_records[MERCHANT_RECORD][AGGREGATE_REFUSED]
        assert metrics["ndcg10"] == before.content.metric_records["metrics"]["ndcg10"]  # the previous model's
    third = train_locally(_message("train", 3, poisoned, scale, secret.context_id), nodes[0])
    metrics = third.content.metric_records["metrics"]
    assert metrics[AGGREGATE_REFUSED] == 1
    own_sum = add_updates(public, [parse_update(public, _ciphertexts(third), parameter_count())])
    own = decrypt_global_model(secret, own_sum, Grid(metrics[VALUE_RANGE], scale), metrics[EXAMPLES])
    assert np.isfinite(own).all() and np.abs(own).max() < 1e3  # trained from the previous model, not the poison


def test_a_merchant_without_a_copy_of_this_run_compares_round_one_with_the_initial_model(
        federation_dirs, tmp_path: Path) -> None:
    settings = replace(SETTINGS, he=False)
    config = {"data-dir": str(federation_dirs[2]), "state-dir": str(tmp_path / "state"), "epsilon-budget": 1e9,
              "allow-clear": True}
    poisoned = {name: value * 1e3 for name, value in build_shared_models(settings.seed).state_dict().items()}
    message = Message(content=RecordDict({"arrays": ArrayRecord(poisoned), "config": ConfigRecord(
        {**settings.training_config(), RUN_KEY: "run-9", "server-round": 1})}), metadata=Metadata(
        run_id=9, message_id="e", src_node_id=1, dst_node_id=2, reply_to_message_id="", group_id="1",
        created_at=time.time(), ttl=600.0, message_type="evaluate"))
    reply = evaluate_locally(message, node_options(config))
    assert reply.content.metric_records["metrics"][AGGREGATE_REFUSED] == 1
    assert "the norm of the model it had" in reply.content.config_records[MERCHANT_RECORD][AGGREGATE_REFUSED]


def _clear_message(kind: str, run: str, round_: int, arrays: dict) -> Message:
    settings = replace(SETTINGS, he=False)
    return Message(content=RecordDict({"arrays": ArrayRecord(arrays), "config": ConfigRecord(
        {**settings.training_config(), RUN_KEY: run, "server-round": round_})}), metadata=Metadata(
        run_id=9, message_id=f"{kind}-{run}-{round_}", src_node_id=1, dst_node_id=2, reply_to_message_id="",
        group_id=str(round_), created_at=time.time(), ttl=600.0, message_type=kind))


def test_a_node_evaluates_and_serves_only_what_it_adopted_whatever_run_key_the_operator_sends(
        federation_dirs, tmp_path: Path) -> None:
    """An evaluate message under a fresh run key with server-round 3 skipped the adoption check, and its
    model became the node's served copy (issue 32). Now it is refused and the copy stays as it was."""
    options = node_options({"data-dir": str(federation_dirs[2]), "state-dir": str(tmp_path / "state"),
                            "epsilon-budget": 1e9, "allow-clear": True})
    initial = build_shared_models(SETTINGS.seed).state_dict()
    evaluate_locally(_clear_message("evaluate", "honest-run", 1, initial), options)
    copy = (tmp_path / "state" / "model.npz").read_bytes()
    crafted = {name: value + 0.01 for name, value in initial.items()}  # small: the check alone would pass it
    with pytest.raises(TaskRefused, match="refused to evaluate round 3 of run fresh-key: it holds no model"):
        evaluate_locally(_clear_message("evaluate", "fresh-key", 3, crafted), options)
    far = {name: value * 1e3 for name, value in initial.items()}
    with pytest.raises(TaskRefused, match="refused round 3 of run fresh-key: it holds no model of this run"):
        train_locally(_clear_message("train", "fresh-key", 3, far), options)
    assert (tmp_path / "state" / "model.npz").read_bytes() == copy, "the served copy changed"


def test_once_the_runs_tiers_are_learnt_no_later_aggregate_moves_them(federation_dirs, tmp_path: Path) -> None:
    """A merchant could push the tiers' sums and counts in a later round, far below what the whole model's
    check notices, and every node would adopt them for good (a hostile review): now a node keeps the tiers of
    round tier-rounds' aggregate."""
    settings = replace(SETTINGS, he=False, tier_rounds=1)
    options = node_options({"data-dir": str(federation_dirs[2]), "state-dir": str(tmp_path / "state"),
                            "epsilon-budget": 1e9, "allow-clear": True})

    def message(kind: str, round_: int, arrays: dict) -> Message:
        record = ArrayRecord({name: Array(np.asarray(value)) for name, value in arrays.items()})
        return Message(content=RecordDict({"arrays": record, "config": ConfigRecord(
            {**settings.training_config(), RUN_KEY: "tiers-run", "server-round": round_})}), metadata=Metadata(
            run_id=9, message_id=f"{kind}-{round_}", src_node_id=1, dst_node_id=2, reply_to_message_id="",
            group_id=str(round_), created_at=time.time(), ttl=600.0, message_type=kind))

    def arrays(reply: Message) -> dict:
        return {name: array.numpy() for name, array in reply.content.array_records["arrays"].items()}

    initial = {name: value.numpy() for name, value in build_shared_models(settings.seed).state_dict().items()}
    learnt = arrays(train_locally(message("train", 1, initial), options))
    evaluate_locally(message("evaluate", 1, learnt), options)
    second = arrays(train_locally(message("train", 2, learnt), options))
    assert np.array_equal(second["tiers.sums"], learnt["tiers.sums"]), "round 2 released nothing new"
    pushed = {**second, "tiers.counts": second["tiers.counts"] * np.array([1.0, 1.0, 0.0], np.float32),
              "tiers.sums": second["tiers.sums"] + 0.2}
    reply = evaluate_locally(message("evaluate", 2, pushed), options)
    assert reply.content.metric_records["metrics"][AGGREGATE_REFUSED] == 0, "the push is too small to refuse"
    kept = load_models(tmp_path / "state").models.tiers.state_dict()
    assert np.array_equal(kept["sums"].numpy(), learnt["tiers.sums"])
    assert np.array_equal(kept["counts"].numpy(), learnt["tiers.counts"])
