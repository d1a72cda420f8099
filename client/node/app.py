"""The merchant's Flower ClientApp: decrypt the global models, train them with DP-SGD, encrypt them back.

The global model is the recommender, the demand model and the member tiers together (``fedshop.models.shared``);
a round trains both models on this merchant's customers and, in the run's first rounds, releases its
customers' noisy tier statistics (``fedshop.client.training.tiers``), under one privacy plan (they compose
in the ledger).
A training message carries the round's settings (``config``) and the global model (``arrays``):
in the clear, or, with encrypted aggregation, as the CKKS sum of the merchants' weighted models
of the last round on the round's fixed-point grid (``fedshop.privacy.fixed_point``), which this node
decrypts with the merchant's secret context and divides by the total weight. The reply carries this
merchant's model weighted by its number of examples (encrypted: written on this round's grid, the
weight scale the server sent and the value range every merchant derives from the aggregate it
decrypted), plus metrics: the examples, the loss and the ε spent so far. Before an encrypted round
the server may ask (a query message) how many examples the node trains on. The node files a run under
the run key in its config (the same after the operator resumes the run) and keeps its last reply
(``fedshop.client.node.sent_update``): a round the server lost and asks for again gets that reply, never a second
training paid for with the customers' ε. An evaluation message
carries the new aggregate; the node fits its merchant-local part of the recommender on top of it
(``fedshop.client.training.local_fit``: never sent, never used by the next round's training), evaluates the served
model (shared + local) and the shared one on its held-out items, and keeps a decrypted copy of both
in its state directory; after the last round it adds its audit summaries (``fedshop.explain.audit``), its
fairness audit per member tier among them. A share
of the merchant's customers (``audit-holdout``) never trains, so that the audit can test
membership inference. The merchant's orders never leave this process.
"""

from collections.abc import Callable
from functools import cache, lru_cache, partial
from logging import INFO, WARNING
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common import log
from torch.utils.data import Dataset

from fedshop.client.data.customer_profile import CustomerProfiles
from fedshop.client.data.interactions import TRAINING_EXAMPLE_RULE, Interactions
from fedshop.client.node.aggregate_check import aggregate_problem
from fedshop.client.node.model_copy import (
    Adoption,
    adoption,
    decrypt_global_model,
    load_local_part,
    save_adoption,
    save_model_copy,
)
from fedshop.client.node.options import (
    AuditCutError,
    NodeOptions,
    audit_cut,
    audit_salt,
    load_co_purchases,
    load_customer_profiles,
    load_demand_panel,
    load_fold_co_purchases,
    load_interactions,
    node_options,
    save_policy,
)
from fedshop.client.node.sent_update import keep_sent_update, received_digest, sent_update
from fedshop.client.training.demand import train_demand, train_demand_private
from fedshop.client.training.local_fit import fit_local_part, serving_model
from fedshop.client.training.recommender import (
    evaluate_ranking,
    shuffled_loader,
    train_epochs,
    train_recommender_private,
)
from fedshop.client.training.round_plan import (
    audit_holdout,
    audited_customers,
    dp_round,
    recommender_examples,
    training_datasets,
)
from fedshop.client.training.tiers import frozen_tiers, release_tier_statistics, releases_tiers, tier_as_of
from fedshop.core.protocol import (
    AGGREGATE_RANGE,
    AGGREGATE_REFUSED,
    AGGREGATE_SCALE,
    AGGREGATE_WEIGHT,
    ARRAYS,
    CLIPPED_VALUES,
    CONFIG,
    CONTEXT_ID,
    DELTA,
    DEMAND_LOSS,
    EPSILON,
    EPSILON_BUDGET,
    EXAMPLES,
    HR10,
    MAX_GRAD_NORM,
    MERCHANT_NAME,
    MERCHANT_RECORD,
    METRICS,
    NDCG10,
    NODE_POLICY,
    NOISE_MULTIPLIER,
    RUN_KEY,
    SAMPLE_RATE,
    SERVER_ROUND,
    SHARED_HR10,
    SHARED_NDCG10,
    STEPS,
    TRAIN_LOSS,
    VALUE_RANGE,
    WEIGHT_SCALE,
    coarse,
    coarse_rate,
)
from fedshop.explain.audit import audit_metrics
from fedshop.models.local_part import LocalPart
from fedshop.models.parameters import flatten, unflatten
from fedshop.models.shared import SharedModels, build_shared_models
from fedshop.privacy.ckks import CiphertextError, ContextError, KeyContext, encrypt, load_secret_context
from fedshop.privacy.fixed_point import Grid, GridError, value_range_of
from fedshop.privacy.ledger import PrivacyLedger


@lru_cache(maxsize=4)
def _secret_key(path: Path) -> KeyContext:
    return load_secret_context(path)


def merchant_key(options: NodeOptions, context_id: str) -> KeyContext:
    """The merchant's secret context, which must be the one this run's aggregate was made with."""
    if options.secret_context is None:
        raise ContextError(f"merchant {options.merchant}: this run encrypts updates, but the node was "
                           "started without a secret context (node config secret-context=PATH)")
    key = _secret_key(options.secret_context)
    if key.context_id != context_id:
        raise ContextError(f"merchant {options.merchant}: its secret context {key.context_id} is not this "
                           f"federation's ({context_id}); get secret.ctx from the federation's key steward")
    return key


class TaskRefused(RuntimeError):
    """The node will not do this task; the message says why, in words, and names the merchant."""


def global_model(msg: Message, config: ConfigRecord, options: NodeOptions
                 ) -> tuple[SharedModels, KeyContext | None, float]:
    """The round's global models (decrypted when encrypted), the key used, and the value range of
    the fixed-point grid this round's updates are written on (0 in the clear)."""
    models, key = SharedModels(), None
    arrays = msg.content.array_records[ARRAYS]
    if not config["he"]:
        models.load_state_dict(arrays.to_torch_state_dict())
        return models, key, 0.0
    key = merchant_key(options, str(config[CONTEXT_ID]))
    weight = float(config[AGGREGATE_WEIGHT])
    if weight == 0:
        models = build_shared_models(int(config["seed"]))
    else:
        grid = Grid(float(config[AGGREGATE_RANGE]), float(config[AGGREGATE_SCALE]))
        try:
            decrypted = decrypt_global_model(key, {name: array.numpy() for name, array in arrays.items()}, grid, weight)
        except CiphertextError as exc:
            raise TaskRefused(f"merchant {options.merchant} refused to decrypt the round's aggregate: {exc}") from exc
        models.load_state_dict(unflatten(decrypted))
    return models, key, value_range_of(flatten(models.state_dict()))


class Adopted(NamedTuple):
    """The round's global models as the node adopts them: the decrypted aggregate, or the previous
    model when the aggregate was refused (``refusal`` says why; empty when adopted), with the norms
    of every change adopted in this run, and the value range every merchant of the round derives
    from the aggregate it decrypted, adopted or not. ``fresh`` is true when the node adopted a model
    its own records did not hold yet (they must keep it)."""

    models: SharedModels
    key: KeyContext | None
    refusal: str
    changes: list[float]
    value_range: float
    fresh: bool
    anchor: float


def adopted_global_model(msg: Message, config: ConfigRecord, options: NodeOptions, run: str,
                         evaluating: bool) -> Adopted:
    """The round's global models, checked before anything trains on, evaluates or serves them against
    the last ones this node adopted in ``run`` (its own records: a run key the operator makes up finds
    nothing there). A node takes part in a run from its first round, whose reference is the run's
    initial model, built by the node itself: a later round of a run it adopted nothing in is refused,
    whatever it asks (the server can shift a sum by values of its choosing with the public context, so
    a node cannot tell a made-up run's model from a real one, only check it against its own lineage)."""
    models, key, value_range = global_model(msg, config, options)
    round_ = int(config[SERVER_ROUND])
    previous = adoption(options.state_dir, run)
    if previous is None and round_ > 1:
        raise TaskRefused(f"merchant {options.merchant} refused {'to evaluate ' if evaluating else ''}round "
                          f"{round_} of run {run}: it holds no model of this run; a node takes part in a run from "
                          "its first round, and evaluates and serves only models it adopted in it")
    joining = previous is None
    if joining:
        initial = build_shared_models(int(config["seed"]))
        previous = Adoption(initial, [], 0, float(np.linalg.norm(flatten(initial.state_dict()))))
    if frozen_tiers(config, round_ if evaluating else round_ - 1):  # the run's tiers are learnt: keep them
        models.tiers.load_state_dict(previous.models.tiers.state_dict())
    problem, change = aggregate_problem(flatten(models.state_dict()), flatten(previous.models.state_dict()),
                                        previous.changes, previous.anchor)
    if problem:
        log(WARNING, "merchant %s refused round %s's global model (change %.4g): %s", options.merchant, round_,
            change, problem)
        return Adopted(previous.models, key, problem, previous.changes, value_range, joining, previous.anchor)
    return Adopted(models, key, "", previous.changes + ([change] if change > 0 else []), value_range,
                   joining or change > 0, previous.anchor)


def _reply_arrays(model: SharedModels, weight: int, adopted: Adopted, config: ConfigRecord,
                  options: NodeOptions) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """The update a merchant sends: its model in the clear, or its integers on the round's grid,
    encrypted, with the grid they were written on and how many values it clipped."""
    if adopted.key is None:
        return {name: tensor.detach().cpu().numpy() for name, tensor in model.state_dict().items()}, {}
    grid = Grid(adopted.value_range, float(config[WEIGHT_SCALE]))
    try:
        integers, clipped = grid.quantise(flatten(model.state_dict()), weight, np.random.default_rng())
    except GridError as exc:
        raise GridError(f"merchant {options.merchant}: {exc}") from exc
    if clipped:
        log(WARNING, "merchant %s: %d values of the model lay beyond the round's range ±%g and were clipped",
            options.merchant, clipped, grid.value_range)
    return encrypt(adopted.key, integers), {WEIGHT_SCALE: grid.weight_scale, VALUE_RANGE: grid.value_range,
                                            CLIPPED_VALUES: clipped}


def _merchant_record(options: NodeOptions, adopted: Adopted) -> dict[str, str]:
    return {MERCHANT_NAME: options.merchant, CONTEXT_ID: adopted.key.context_id if adopted.key else "",
            AGGREGATE_REFUSED: adopted.refusal, NODE_POLICY: options.policy.describe()}


def within_policy(config: ConfigRecord, options: NodeOptions, task: str) -> None:
    """Refuse a task whose run settings lie outside the merchant's policy, before anything is read."""
    save_policy(options.state_dir, options.policy)
    if problem := options.policy.refusal(dict(config)):
        round_ = config.get(SERVER_ROUND, "?")
        raise TaskRefused(f"merchant {options.merchant} refused the {task} of round {round_}: {problem}")


def _held_out(options: NodeOptions, interactions: Interactions, config: ConfigRecord) -> np.ndarray:
    """The run's audit holdout: the customers at or below the cut the node keeps for the run, by its salt."""
    run = str(config[RUN_KEY])
    try:
        salt = audit_salt(options.state_dir)
        cut = audit_cut(options.state_dir, run, audited_customers(interactions), float(config["audit-holdout"]))
    except AuditCutError as exc:
        raise TaskRefused(f"merchant {options.merchant} refused round {config.get(SERVER_ROUND, '?')} of run "
                          f"{run}: {exc}") from exc
    return audit_holdout(interactions, config, salt, cut)


def _profiles(options: NodeOptions, config: ConfigRecord) -> CustomerProfiles:
    """The merchant's customers' profiles as of the run's ``tier-as-of``."""
    return load_customer_profiles(options.data_dir, tier_as_of(config))


def _tier_features(options: NodeOptions, config: ConfigRecord, interactions: Interactions,
                   held_out: np.ndarray) -> np.ndarray:
    """The tier features of the merchant's customers as of the run's ``tier-as-of``, the audit holdout
    (``held_out``, a mask over ``interactions``' customers) left out (it never trains)."""
    profiles = _profiles(options, config)
    return profiles.features[~profiles.table.index.isin(np.array(interactions.customers)[held_out])]


def _train_private(models: SharedModels, datasets: dict[str, Dataset], tier_features: np.ndarray | None,
                   config: ConfigRecord, options: NodeOptions, run: str, round_: int
                   ) -> tuple[dict[str, float], dict[str, float]]:
    """DP-SGD on every model and, in the run's first rounds, the tiers' noisy statistics, planned
    (``fedshop.client.training.round_plan``) and authorised together; the losses and the privacy metrics."""
    epochs = int(config["local-epochs"])
    budget = options.budget(len(load_interactions(options.data_dir).customers))
    recipes, plan = dp_round({name: len(data) for name, data in datasets.items()}, config, budget.delta)
    ledger = PrivacyLedger(options.ledger_path)
    ledger.authorize(options.merchant, plan.mechanisms_in(round_), budget, run, round_,
                     options.policy.max_run_epsilon)
    losses = {}
    losses["recommender"], spent = train_recommender_private(models.recommender, datasets["recommender"],
                                                             plan.release("recommender"), *recipes["recommender"],
                                                             epochs)
    epsilon = ledger.record(run, round_, "recommender", spent, budget.delta)
    if "demand" in datasets:
        losses["demand"], demand_spent = train_demand_private(
            models.demand, datasets["demand"], plan.release("demand"), *recipes["demand"], epochs)
        epsilon = ledger.record(run, round_, "demand", demand_spent, budget.delta)
    if tier_features is not None:
        tiers_spent = release_tier_statistics(models.tiers, tier_features, len(datasets["recommender"]),
                                              plan.release("tiers"))
        epsilon = ledger.record(run, round_, "tiers", tiers_spent, budget.delta)
    return losses, {EPSILON: epsilon, DELTA: budget.delta, NOISE_MULTIPLIER: plan.noise_multiplier,
                    SAMPLE_RATE: spent.sample_rate, STEPS: spent.steps,
                    MAX_GRAD_NORM: plan.release("recommender").max_grad_norm, EPSILON_BUDGET: budget.epsilon}


def _round_seed(config: ConfigRecord) -> int:
    return int(config["seed"]) * 100_003 + int(config[SERVER_ROUND])


def _reply(arrays: dict[str, np.ndarray], reply: dict[str, Any]) -> RecordDict:
    return RecordDict({ARRAYS: ArrayRecord(array_dict={name: Array(data) for name, data in arrays.items()}),
                       METRICS: MetricRecord(reply["metrics"]), MERCHANT_RECORD: ConfigRecord(reply["merchant"])})


def train_locally(msg: Message, options: NodeOptions) -> Message:
    """One round on this merchant's data, with DP-SGD when the run asks for it. Only the decrypted
    aggregate and the merchant's customers enter it: never the merchant-local part. A round this node
    already answered (the server lost it and asks again) gets the same reply, without training."""
    config = msg.content.config_records[CONFIG]
    within_policy(config, options, "training")
    run, round_ = str(config[RUN_KEY]), int(config[SERVER_ROUND])
    received = received_digest({name: array.numpy() for name, array in msg.content.array_records[ARRAYS].items()},
                               float(config.get(AGGREGATE_WEIGHT, 0.0)))
    if (kept := sent_update(options.state_dir, run, round_, received)) is not None:
        log(INFO, "merchant %s: round %d of run %s was already trained and paid for; sending the same update",
            options.merchant, round_, run)
        return Message(content=_reply(*kept), reply_to=msg)
    adopted = adopted_global_model(msg, config, options, run, evaluating=False)
    models = adopted.models
    seed = _round_seed(config)
    interactions = load_interactions(options.data_dir)
    held_out = _held_out(options, interactions, config)
    datasets = training_datasets(interactions, lambda: load_demand_panel(options.data_dir), config, seed, held_out)
    if empty := [name for name, data in datasets.items() if len(data) == 0]:
        why = f" ({TRAINING_EXAMPLE_RULE})" if "recommender" in empty else ""
        raise ValueError(f"merchant {options.merchant}: no training example for the {' and '.join(empty)} model{why}")
    tier_features = _tier_features(options, config, interactions, held_out) if releases_tiers(config, round_) else None
    batch_size, epochs = int(config["batch-size"]), int(config["local-epochs"])
    privacy = {EPSILON: 0.0, DELTA: 0.0, NOISE_MULTIPLIER: 0.0, SAMPLE_RATE: 0.0, STEPS: 0,
               MAX_GRAD_NORM: 0.0, EPSILON_BUDGET: 0.0}
    if config["dp"]:
        losses, privacy = _train_private(models, datasets, tier_features, config, options, run, round_)
    else:  # the merchant allowed clear runs (its policy): its ledger says no guarantee is left
        ledger = PrivacyLedger(options.ledger_path)
        for model in datasets:
            ledger.record_clear(run, round_, model)
        optimizer = torch.optim.Adam(models.recommender.parameters(), lr=float(config["learning-rate"]))
        losses = {"recommender": train_epochs(models.recommender, shuffled_loader(datasets["recommender"], batch_size,
                                                                                  seed), optimizer, epochs)}
        if "demand" in datasets:
            losses["demand"] = train_demand(models.demand, datasets["demand"], batch_size,
                                            float(config["demand-learning-rate"]), epochs, seed)
        if tier_features is not None:
            ledger.record_clear(run, round_, "tiers")
            release_tier_statistics(models.tiers, tier_features, len(datasets["recommender"]), None)
    examples = len(datasets["recommender"])
    arrays, written_on = _reply_arrays(models, examples, adopted, config, options)
    reply = {"metrics": {EXAMPLES: examples, TRAIN_LOSS: coarse(losses["recommender"]),
                         DEMAND_LOSS: coarse(losses.get("demand", 0.0)),
                         AGGREGATE_REFUSED: float(bool(adopted.refusal)),
                         **privacy, **written_on},
             "merchant": _merchant_record(options, adopted)}
    keep_sent_update(options.state_dir, run, round_, received, arrays, reply)
    if adopted.fresh and not adopted.refusal:  # kept once the round was paid for: the next check's reference
        save_adoption(options.state_dir, run, Adoption(adopted.models, adopted.changes, round_ - 1, adopted.anchor))
    return Message(content=_reply(arrays, reply), reply_to=msg)


def _local_part(models: SharedModels, interactions: Interactions, config: ConfigRecord, options: NodeOptions,
                run: str, held_out: Callable[[], np.ndarray]) -> tuple[LocalPart | None, dict[str, float]]:
    """This round's local part of the recommender (None: serve the shared one) and what its fit reports
    (``held_out`` gives the run's audit holdout)."""
    epochs, seed = int(config["local-part-epochs"]), _round_seed(config)
    if not epochs:
        return None, {}
    fit = fit_local_part(models.recommender, load_local_part(options.state_dir, run), interactions, held_out(),
                         lambda left_out: recommender_examples(interactions, config, seed, left_out),
                         int(config["history-length"]), int(config["batch-size"]), float(config["learning-rate"]),
                         epochs, seed, partial(load_fold_co_purchases, options.data_dir))
    return fit.part, {"local-part-epochs": fit.epochs, "local-part-served": float(fit.part is not None),
                      "local-part-co-purchase-weight": fit.weight_setting if fit.part else 0.0,
                      "local-part-co-purchase-ridge": fit.part.co_purchase_ridge if fit.part else 0.0,
                      "local-part-validation-ndcg10": coarse_rate(fit.served_validation_ndcg),
                      "shared-validation-ndcg10": coarse_rate(fit.shared_validation_ndcg),
                      "local-part-validation-customers": fit.validation_customers}


def evaluate_locally(msg: Message, options: NodeOptions) -> Message:
    """Fit the merchant-local part on top of the new global model, rank the held-out items with the
    served model (shared + local) and with the shared one alone, and keep the merchant's copy of both."""
    config = msg.content.config_records[CONFIG]
    within_policy(config, options, "evaluation")
    run = str(config[RUN_KEY])
    adopted = adopted_global_model(msg, config, options, run, evaluating=True)
    models = adopted.models
    interactions, history_length = load_interactions(options.data_dir), int(config["history-length"])
    held_out = cache(partial(_held_out, options, interactions, config))  # read once, and only where asked
    part, fit_metrics = _local_part(models, interactions, config, options, run, held_out)
    served = serving_model(models.recommender, part, interactions, history_length,
                           partial(load_co_purchases, options.data_dir))
    metrics = evaluate_ranking(served, interactions, history_length)
    shared = evaluate_ranking(models.recommender, interactions, history_length) if part is not None else metrics
    audit = {}
    if int(config[SERVER_ROUND]) == int(config["num-server-rounds"]):
        audit = audit_metrics(models, served, interactions, _profiles(options, config),
                              load_demand_panel(options.data_dir) if config["pricing"] else None,
                              history_length, held_out(), int(config["seed"]),
                              options.policy.min_audit_customers, partial(load_fold_co_purchases, options.data_dir))
    save_model_copy(options.state_dir, models, part, {"round": int(config[SERVER_ROUND]), "run": run,
                                                      "history_length": history_length,
                                                      "changes": adopted.changes, "anchor": adopted.anchor})
    content = RecordDict({
        METRICS: MetricRecord({EXAMPLES: metrics.customers, HR10: coarse_rate(metrics.hit_rate),
                               NDCG10: coarse_rate(metrics.ndcg), SHARED_HR10: coarse_rate(shared.hit_rate),
                               SHARED_NDCG10: coarse_rate(shared.ndcg), AGGREGATE_REFUSED: float(bool(adopted.refusal)),
                               **fit_metrics, **{key: coarse(value) for key, value in audit.items()}}),
        MERCHANT_RECORD: ConfigRecord(_merchant_record(options, adopted)),
    })
    return Message(content=content, reply_to=msg)


def count_examples(msg: Message, options: NodeOptions) -> Message:
    """Answer the server's question before an encrypted round: how many examples this merchant trains on."""
    config = msg.content.config_records[CONFIG]
    within_policy(config, options, "count query")
    interactions = load_interactions(options.data_dir)
    examples = recommender_examples(interactions, config, _round_seed(config),
                                    _held_out(options, interactions, config))
    return Message(content=RecordDict({METRICS: MetricRecord({EXAMPLES: len(examples)}),
                                       MERCHANT_RECORD: ConfigRecord({MERCHANT_NAME: options.merchant})}), reply_to=msg)


def build_client_app(simulation_nodes: tuple[dict, ...] = ()) -> ClientApp:
    """A ClientApp; ``simulation_nodes`` holds the node config of each simulated merchant."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        torch.set_num_threads(1)
        return train_locally(msg, node_options(context.node_config, simulation_nodes))

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        torch.set_num_threads(1)
        return evaluate_locally(msg, node_options(context.node_config, simulation_nodes))

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        return count_examples(msg, node_options(context.node_config, simulation_nodes))

    return app


app = build_client_app()
