"""The merchant's Flower ClientApp: train the shared recommender locally, evaluate it locally.

Messages carry the global model (``arrays``) and the round's settings (``config``); replies carry
the locally trained model, metrics weighted by ``num-examples`` and the merchant's name. The
merchant's orders never leave this process.
"""

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from client.node_data import load_interactions, merchant_name, resolve_data_dir
from client.training import evaluate_ranking, example_loader, train_epochs
from models.recommender import Recommender

MERCHANT_RECORD = "merchant"


def _local_model(msg: Message) -> Recommender:
    model = Recommender()
    model.load_state_dict(msg.content.array_records["arrays"].to_torch_state_dict())
    return model


def build_client_app(simulation_dirs: tuple[str, ...] = ()) -> ClientApp:
    """A ClientApp; ``simulation_dirs`` maps simulated partition ids to merchant directories."""
    app = ClientApp()

    def _merchant(context: Context):
        data_dir = resolve_data_dir(context.node_config, simulation_dirs)
        return merchant_name(context.node_config, data_dir), load_interactions(data_dir)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        torch.set_num_threads(1)
        name, data = _merchant(context)
        config = msg.content.config_records["config"]
        model = _local_model(msg)
        round_seed = int(config["seed"]) * 100_003 + int(config["server-round"])
        loader = example_loader(data, int(config["history-length"]), int(config["negatives"]),
                                int(config["batch-size"]), round_seed)
        optimizer = torch.optim.Adam(model.parameters(), lr=float(config["learning-rate"]))
        loss = train_epochs(model, loader, optimizer, int(config["local-epochs"]))
        content = RecordDict({
            "arrays": ArrayRecord(model.state_dict()),
            "metrics": MetricRecord({"num-examples": len(loader.dataset), "train-loss": loss}),
            MERCHANT_RECORD: ConfigRecord({"name": name}),
        })
        return Message(content=content, reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        torch.set_num_threads(1)
        name, data = _merchant(context)
        config = msg.content.config_records["config"]
        metrics = evaluate_ranking(_local_model(msg), data, int(config["history-length"]))
        content = RecordDict({
            "metrics": MetricRecord({"num-examples": metrics.customers, "hr10": metrics.hit_rate,
                                     "ndcg10": metrics.ndcg}),
            MERCHANT_RECORD: ConfigRecord({"name": name}),
        })
        return Message(content=content, reply_to=msg)

    return app


app = build_client_app()
