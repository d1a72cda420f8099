"""The operator's run directory: settings, per-round metrics, checkpoints and status of one run.

Layout of ``RUN_DIR``::

    config.json          run settings and model layout (written once; a resume must match them), and
                         the run's key: the name merchants file its rounds under, kept across
                         resumes (Flower gives a resubmitted run a new run id)
    status.json          state (running / finished / failed), current round, timestamps
    server.lease         which ServerApp process writes the run now (the last to open it)
    metrics.json         one record per round: per-merchant train and evaluation metrics, failures,
                         chained to the round before by SHA-256 (``fedshop.rundir.chain``)
    checkpoints/         the global model after the last completed round (round_NNNN.npz + .json)
    model.npz            the final global model, when the run aggregates in the clear
    encrypted_model.npz  the final sum of the merchants' weighted models as CKKS ciphertexts, and
    encrypted_model.json its total weight and context id, when the run encrypts (only merchants
                         can decrypt it; the server never holds a plaintext model)

Every JSON file is replaced atomically, so a reader (``fedshop watch``, the demo's progress view)
never sees half a file, and a run that stops can resume from its last checkpoint.
"""

import hashlib
import os
import re
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from fedshop.core.files import read_json, write_json, write_npz
from fedshop.core.protocol import arrays_sha256
from fedshop.core.settings import RunSettings
from fedshop.models.layout import LAYOUT
from fedshop.rundir.chain import CHAIN, GENESIS, ChainCheck, chained, verify_chain

LEASE_FILE = "server.lease"
CHECKPOINT = re.compile(r"round_(\d{4})\.npz")
# Settings that may differ when a run is resumed: where it lives, how long it goes on and how long
# its rounds wait for merchants.
RESUMABLE_CHANGES = {"num_server_rounds", "run_dir", "min_nodes", "quorum_wait_s", "quorum", "round_timeout_s",
                     "registry", "transport"}


class RunStoreError(RuntimeError):
    """The run directory cannot be used for this run."""


class RunStore:
    """Reads and writes one run directory."""

    def __init__(self, run_dir: Path | str) -> None:
        self.run_dir = Path(run_dir)
        self.checkpoints = self.run_dir / "checkpoints"
        self.holder: str | None = None  # this process's lease on the run, once it has opened it

    @property
    def lease_path(self) -> Path:
        return self.run_dir / LEASE_FILE

    def lease(self) -> dict[str, Any]:
        """Which ServerApp process writes the run now (empty before any opened it)."""
        return read_json(self.lease_path, {})

    def _check_lease(self) -> None:
        """Refuse to write for a ServerApp whose run was resumed by another one since it opened it (one
        that outlived a crashed SuperLink must not overwrite the resumed run's records)."""
        if self.holder is None:
            return
        lease = self.lease()
        if lease.get("holder") != self.holder:
            raise RunStoreError(f"{self.run_dir} was resumed by another server process (pid {lease.get('pid')}) "
                                "since this one opened it; this one stops without writing")

    @property
    def config_path(self) -> Path:
        return self.run_dir / "config.json"

    @property
    def model_path(self) -> Path:
        return self.run_dir / "model.npz"

    @property
    def encrypted_model_path(self) -> Path:
        return self.run_dir / "encrypted_model.npz"

    @property
    def encrypted_meta_path(self) -> Path:
        return self.encrypted_model_path.with_suffix(".json")

    def config(self) -> dict[str, Any] | None:
        """The run's settings and layout, or None when ``run_dir`` is not a run directory."""
        return read_json(self.config_path)

    @property
    def run_key(self) -> str:
        """The run's own name, the same after every resume (set by :meth:`open`)."""
        return str((self.config() or {})["run_key"])

    def open(self, settings: RunSettings) -> int:
        """Start or resume the run; returns the number of rounds already completed."""
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        wanted = {"settings": asdict(settings), "layout": asdict(LAYOUT)}
        existing = self.config()
        if existing is not None:
            changed = {k for k in wanted["settings"] if existing["settings"].get(k) != wanted["settings"][k]}
            if changed - RESUMABLE_CHANGES or existing["layout"] != wanted["layout"]:
                raise RunStoreError(
                    f"{self.run_dir} holds a run with other settings ({sorted(changed - RESUMABLE_CHANGES)} "
                    "differ); choose another run directory to start a new run"
                )
        self.holder = uuid.uuid4().hex
        write_json(self.lease_path, {"holder": self.holder, "pid": os.getpid(), "since": time.time()})
        wanted["run_key"] = (existing or {}).get("run_key") or uuid.uuid4().hex
        write_json(self.config_path, wanted)
        completed = self.latest_checkpoint_round()
        self.write_status("running", completed, settings.num_server_rounds)
        return completed

    def write_status(self, state: str, round_: int, num_rounds: int, detail: str = "") -> None:
        self._check_lease()
        status = read_json(self.run_dir / "status.json", {"started": time.time()})
        status.update(state=state, round=round_, num_rounds=num_rounds, updated=time.time(), detail=detail)
        write_json(self.run_dir / "status.json", status)

    def status(self) -> dict[str, Any]:
        return read_json(self.run_dir / "status.json", {})

    def record_round(self, record: dict[str, Any], aggregate_sha256: str = "") -> None:
        """Append the record of one round, chained to the round before it (``fedshop.rundir.chain``). A resumed
        run records its rounds again from the checkpoint on: the records they replace are dropped."""
        self._check_lease()
        rounds = [r for r in self.rounds() if r["round"] < record["round"]]
        previous = rounds[-1][CHAIN]["digest"] if rounds else GENESIS
        linked = chained(record, previous, self.config() or {}, aggregate_sha256)
        write_json(self.run_dir / "metrics.json", {"rounds": [*rounds, linked]})

    def verify_log(self) -> ChainCheck:
        """Check the chain of round records, and that the final model is the last round's aggregate."""
        final = self.encrypted_model_path if self.encrypted_model_path.exists() else self.model_path
        kept = None
        if final.exists():
            with np.load(final) as saved:
                kept = arrays_sha256({key: saved[key] for key in saved.files})
        return verify_chain(self.rounds(), self.config() or {}, kept)

    def stored_models(self) -> list[dict[str, Any]]:
        """Every model file the server kept (final model and checkpoints): path, size, SHA-256, and
        whether it is ciphertext (the run's settings say)."""
        encrypted = bool((self.config() or {}).get("settings", {}).get("he"))
        files = sorted([*self.run_dir.glob("*.npz"), *self.checkpoints.glob("*.npz")])
        return [{"path": str(path.relative_to(self.run_dir)), "bytes": path.stat().st_size,
                 "sha256": _file_sha256(path), "content": "CKKS ciphertexts" if encrypted else "plaintext model"}
                for path in files]

    def final_model_meta(self) -> dict[str, Any]:
        """The encrypted final model's total weight, grid and context id (empty in the clear or before the end)."""
        return read_json(self.encrypted_meta_path, {})

    def rounds(self) -> list[dict[str, Any]]:
        return read_json(self.run_dir / "metrics.json", {"rounds": []})["rounds"]

    def save_checkpoint(self, round_: int, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        """Keep the model after ``round_``; older checkpoints are removed once it is safely written."""
        self._check_lease()
        path = self.checkpoints / f"round_{round_:04d}.npz"
        write_json(path.with_suffix(".json"), meta)
        write_npz(path, arrays)
        for old in self.checkpoints.glob("round_*"):
            if old.stem != path.stem:
                old.unlink()

    def latest_checkpoint_round(self) -> int:
        found = (CHECKPOINT.fullmatch(p.name) for p in self.checkpoints.glob("round_*.npz"))
        rounds = [int(m.group(1)) for m in found if m and (self.checkpoints / f"{m.group(0)[:-4]}.json").exists()]
        return max(rounds, default=0)

    def load_checkpoint(self, round_: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        path = self.checkpoints / f"round_{round_:04d}.npz"
        with np.load(path) as saved:
            return {key: saved[key] for key in saved.files}, read_json(path.with_suffix(".json"), {})

    def save_model(self, arrays: dict[str, np.ndarray], meta: dict[str, Any], encrypted: bool) -> None:
        """The final model: plaintext ``model.npz``, or ciphertexts and their weight when encrypted."""
        self._check_lease()
        if encrypted:
            write_json(self.encrypted_meta_path, meta)
            write_npz(self.encrypted_model_path, arrays)
        else:
            write_npz(self.model_path, arrays)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
