"""The merchant's Flower ClientApp: decrypt the global model, train it with DP-SGD, encrypt it back.

A training message carries the round's settings (``config``) and the global model (``arrays``):
in the clear, or, with encrypted aggregation, as the CKKS sum of the merchants' weighted models
of the last round, which this node decrypts with the merchant's secret context and divides by the
total weight. The reply carries this merchant's model multiplied by its number of examples,
encrypted, plus metrics: the examples, the loss and the ε spent so far. An evaluation message
carries the new aggregate; the node evaluates it on its held-out items and keeps a decrypted copy
in its state directory. The merchant's orders never leave this process.
"""

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client.node_data import NodeOptions, load_interactions, node_options
from client.training import NextItemExamples, evaluate_ranking, shuffled_loader, train_epochs
from fedshop.protocol import MERCHANT_RECORD
from models.parameters import flatten, parameter_count, unflatten
from models.recommender import Recommender, build_recommender
from privacy.ckks import ContextError, KeyContext, decrypt, encrypt, load_secret_context
from privacy.dp_sgd import plan_round, train_private
from privacy.ledger import PrivacyLedger

MODEL_COPY, MODEL_COPY_INFO = "model.npz", "model.json"


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


def global_model(msg: Message, config: ConfigRecord, options: NodeOptions) -> tuple[Recommender, KeyContext | None]:
    """The round's global model (decrypted when encrypted), and the key used."""
    model, key = Recommender(), None
    arrays = msg.content.array_records["arrays"]
    if config["he"]:
        key = merchant_key(options, str(config["context-id"]))
        weight = float(config["aggregate-weight"])
        if weight == 0:
            return build_recommender(int(config["seed"])), key
        total = decrypt(key, {name: array.numpy() for name, array in arrays.items()}, parameter_count())
        model.load_state_dict(unflatten(total / weight))
    else:
        model.load_state_dict(arrays.to_torch_state_dict())
    return model, key


def _reply_arrays(model: Recommender, weight: int, key: KeyContext | None) -> ArrayRecord:
    if key is None:
        return ArrayRecord(model.state_dict())
    ciphertexts = encrypt(key, weight * flatten(model.state_dict()))
    return ArrayRecord(array_dict={name: Array(data) for name, data in ciphertexts.items()})


def _merchant_record(options: NodeOptions, key: KeyContext | None) -> ConfigRecord:
    return ConfigRecord({"name": options.merchant, "context-id": key.context_id if key else ""})


def train_locally(msg: Message, context: Context, options: NodeOptions) -> Message:
    """One round on this merchant's data, with DP-SGD when the run asks for it."""
    config = msg.content.config_records["config"]
    data = load_interactions(options.data_dir)
    model, key = global_model(msg, config, options)
    round_ = int(config["server-round"])
    seed = int(config["seed"]) * 100_003 + round_
    dataset = NextItemExamples(data, int(config["history-length"]), int(config["negatives"]), seed)
    batch_size, epochs = int(config["batch-size"]), int(config["local-epochs"])
    privacy = {"epsilon": 0.0, "delta": 0.0, "noise-multiplier": 0.0, "sample-rate": 0.0, "steps": 0,
               "max-grad-norm": 0.0}
    if config["dp"]:
        budget = options.budget(len(data.customers))
        plan = plan_round(len(dataset), batch_size, epochs, int(config["num-server-rounds"]),
                          float(config["target-epsilon"]), float(config["noise-multiplier"]),
                          float(config["max-grad-norm"]), budget.delta)
        ledger = PrivacyLedger(options.ledger_path)
        ledger.authorize(options.merchant, plan.mechanism, budget)
        loss, spent = train_private(model, dataset, plan, batch_size, float(config["dp-learning-rate"]), epochs)
        privacy = {"epsilon": ledger.record(str(context.run_id), round_, spent, budget.delta),
                   "delta": budget.delta, "noise-multiplier": spent.noise_multiplier,
                   "sample-rate": spent.sample_rate, "steps": spent.steps, "max-grad-norm": plan.max_grad_norm}
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=float(config["learning-rate"]))
        loss = train_epochs(model, shuffled_loader(dataset, batch_size, seed), optimizer, epochs)
    content = RecordDict({
        "arrays": _reply_arrays(model, len(dataset), key),
        "metrics": MetricRecord({"num-examples": len(dataset), "train-loss": loss, **privacy}),
        MERCHANT_RECORD: _merchant_record(options, key),
    })
    return Message(content=content, reply_to=msg)


def evaluate_locally(msg: Message, options: NodeOptions) -> Message:
    """Rank the held-out items with the new global model; keep the merchant's copy of it."""
    config = msg.content.config_records["config"]
    model, key = global_model(msg, config, options)
    metrics = evaluate_ranking(model, load_interactions(options.data_dir), int(config["history-length"]))
    options.state_dir.mkdir(parents=True, exist_ok=True)
    np.savez(options.state_dir / MODEL_COPY, **{k: v.numpy() for k, v in model.state_dict().items()})
    info = {"round": int(config["server-round"]), "history_length": int(config["history-length"])}
    (options.state_dir / MODEL_COPY_INFO).write_text(json.dumps(info))
    content = RecordDict({
        "metrics": MetricRecord({"num-examples": metrics.customers, "hr10": metrics.hit_rate,
                                 "ndcg10": metrics.ndcg}),
        MERCHANT_RECORD: _merchant_record(options, key),
    })
    return Message(content=content, reply_to=msg)


def build_client_app(simulation_nodes: tuple[dict, ...] = ()) -> ClientApp:
    """A ClientApp; ``simulation_nodes`` holds the node config of each simulated merchant."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        torch.set_num_threads(1)
        return train_locally(msg, context, node_options(context.node_config, simulation_nodes))

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        torch.set_num_threads(1)
        return evaluate_locally(msg, node_options(context.node_config, simulation_nodes))

    return app


app = build_client_app()
