"""The update a merchant's node sent last, kept so that a round the server lost is answered again
without training it (and spending its customers' ε) a second time.

A server that dies after a node trained round r, but before the round's aggregate was checkpointed,
resumes the run from round r - 1 and sends round r's instructions again, with the same global model.
The node recognises them by the run's key, the round and the digest of the global model it received
(``fedshop.core.protocol``), and sends back the reply it already made and paid for: the same (encrypted)
update and the same metrics. Only the latest reply is kept (``STATE_DIR/sent_update.npz`` + ``.json``),
written atomically; anything else the server asks for twice is refused by the privacy ledger.
"""

import json
from pathlib import Path
from typing import Any

import numpy as np

from fedshop.core.files import write_json, write_npz
from fedshop.core.protocol import arrays_sha256

SENT_UPDATE, SENT_UPDATE_INFO = "sent_update.npz", "sent_update.json"


def received_digest(arrays: dict[str, np.ndarray], aggregate_weight: float) -> str:
    """What identifies the global model an instruction carried: its arrays and their total weight."""
    return arrays_sha256({**arrays, "aggregate-weight": np.array([aggregate_weight], np.float64)})


def keep_sent_update(state_dir: Path, run: str, round_: int, received: str, arrays: dict[str, np.ndarray],
                     reply: dict[str, Any]) -> None:
    """Keep the reply to round ``round_`` of ``run`` (made from the global model ``received``)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / SENT_UPDATE_INFO).unlink(missing_ok=True)  # never an old description of new arrays
    write_npz(state_dir / SENT_UPDATE, arrays)
    write_json(state_dir / SENT_UPDATE_INFO, {"run": run, "round": round_, "received": received, "reply": reply})


def sent_update(state_dir: Path, run: str, round_: int, received: str
                ) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """The arrays and the rest of the reply already sent for this round of this run and this global
    model, or None when the node has not answered exactly this instruction before."""
    info_path = state_dir / SENT_UPDATE_INFO
    if not info_path.exists() or not (state_dir / SENT_UPDATE).exists():
        return None
    info = json.loads(info_path.read_text())
    if (info["run"], info["round"], info["received"]) != (run, round_, received):
        return None
    with np.load(state_dir / SENT_UPDATE) as saved:
        return {name: saved[name] for name in saved.files}, info["reply"]
