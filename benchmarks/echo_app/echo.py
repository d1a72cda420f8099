"""A plain Flower round that only echoes the model: the reference of ``benchmarks/round_time.py``.

Each round sends a model of ``parameters`` float32 values (as fedshop's round carries its two shared
models) to every node for training, which sends it back unchanged, and then again for evaluation,
which answers with one metric: the same two messages per node as a fedshop round, with no work.
The ServerApp writes each round's training and evaluation seconds to ``out`` (JSON).
"""

import json
import time
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

server = ServerApp()
client = ClientApp()


@client.train()
def echo(msg: Message, context: Context) -> Message:
    return Message(content=RecordDict({"arrays": msg.content.array_records["arrays"]}), reply_to=msg)


@client.evaluate()
def nothing(msg: Message, context: Context) -> Message:
    return Message(content=RecordDict({"metrics": MetricRecord({"num-examples": 1})}), reply_to=msg)


def _phase(grid: Grid, nodes: list[int], content: RecordDict, kind: str) -> float:
    began = time.monotonic()
    replies = list(grid.send_and_receive([Message(content=content, message_type=kind, dst_node_id=node)
                                          for node in nodes]))
    if failed := [reply.error.reason for reply in replies if reply.has_error()]:
        raise RuntimeError(f"echo {kind} failed: {failed}")
    return time.monotonic() - began


@server.main()
def main(grid: Grid, context: Context) -> None:
    config = context.run_config
    while len(nodes := list(grid.get_node_ids())) < int(config["nodes"]):
        time.sleep(0.5)
    arrays = ArrayRecord(array_dict={"model": Array(np.zeros(int(config["parameters"]), dtype=np.float32))})
    seconds = [{"train": _phase(grid, nodes, RecordDict({"arrays": arrays}), MessageType.TRAIN),
                "evaluate": _phase(grid, nodes, RecordDict({"arrays": arrays}), MessageType.EVALUATE)}
               for _ in range(int(config["rounds"]))]
    Path(str(config["out"])).write_text(json.dumps(seconds))
