"""Reply messages as a merchant's ClientApp sends them, for driving a strategy directly in tests."""

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, Metadata, MetricRecord, RecordDict

from fedshop.core.protocol import MERCHANT_RECORD


def merchant_reply(arrays: dict[str, np.ndarray], metrics: dict, name: str = "m", context_id: str = "",
                   node: int = 2, reply_to: str = "i1") -> Message:
    """A train reply from node ``node`` to instruction ``reply_to`` carrying ``arrays``, ``metrics``
    and the merchant record."""
    content = RecordDict({"arrays": ArrayRecord(array_dict={k: Array(v) for k, v in arrays.items()}),
                          "metrics": MetricRecord(metrics),
                          MERCHANT_RECORD: ConfigRecord({"name": name, "context-id": context_id})})
    metadata = Metadata(run_id=1, message_id=f"m{node}", src_node_id=node, dst_node_id=1,
                        reply_to_message_id=reply_to, group_id="", created_at=0.0, ttl=60.0, message_type="train")
    return Message(content=content, metadata=metadata)
