"""Files the federation writes: secrets owner-only from their first byte, state flushed before it replaces
the old copy."""

import os
from pathlib import Path

import numpy as np
import pytest

from fedshop.client.node.model_copy import save_model_copy
from fedshop.core.files import read_json, write_json
from fedshop.models.shared import build_shared_models
from fedshop.operations.certificates import CA_KEY, SERVER_KEY, create_certificates
from fedshop.operations.node_identity import NODE_KEY, create_node_keys
from fedshop.privacy.ckks import SECRET_FILE, create_keys
from fedshop.privacy.ledger import Mechanism, PrivacyLedger


def test_secret_files_are_created_owner_only_never_chmod_ed_afterwards(tmp_path: Path, monkeypatch) -> None:
    """Written then chmod-ed, a key was readable by every local user for a moment (issue 32)."""
    def no_chmod(*args, **kwargs):
        raise AssertionError("a secret file was made readable first and restricted afterwards")

    monkeypatch.setattr(os, "chmod", no_chmod)
    monkeypatch.setattr(Path, "chmod", no_chmod)
    previous = os.umask(0)
    try:
        create_keys(tmp_path / "keys")
        create_certificates(tmp_path / "certs", [])
        create_node_keys(tmp_path / "node", "merchant_0")
    finally:
        os.umask(previous)
    for secret in (tmp_path / "keys" / SECRET_FILE, tmp_path / "certs" / CA_KEY, tmp_path / "certs" / SERVER_KEY,
                   tmp_path / "node" / NODE_KEY):
        assert secret.stat().st_mode & 0o777 == 0o600, secret


def test_state_is_on_disk_before_it_replaces_the_old_copy(tmp_path: Path, monkeypatch) -> None:
    """The ledger and the model copy are fsynced before the rename (a power cut must not leave an empty file)."""
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    write_json(tmp_path / "state.json", {"a": 1})
    assert len(synced) == 2  # the file, then its directory
    synced.clear()
    save_model_copy(tmp_path, build_shared_models(1), None, {"round": 1, "run": "r", "history_length": 20})
    assert len(synced) >= 4
    synced.clear()
    PrivacyLedger(tmp_path / "ledger.json").record("r", 1, "recommender", Mechanism(1.0, 0.1, 10), 1e-5)
    assert synced, "the privacy ledger was renamed into place without fsync"


@pytest.mark.parametrize("payload", [{"x": [1, 2]}, np.arange(3).tolist()])
def test_json_reads_back(tmp_path: Path, payload) -> None:
    write_json(tmp_path / "p.json", payload)
    assert read_json(tmp_path / "p.json") == payload
