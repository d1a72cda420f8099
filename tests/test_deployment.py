"""The federation as real processes: a SuperLink, three SuperNodes and `flwr run` on localhost."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from client.global_model import load_models
from fedshop.deployment import (
    NodePrivacy,
    process_environment,
    run_command,
    superlink_command,
    supernode_command,
    write_connection,
)
from fedshop.settings import RunSettings
from models.shared import build_shared_models
from privacy.ckks import create_keys
from server.run_store import RunStore

START_TIMEOUT_S = 60
RUN_TIMEOUT_S = 420


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"SuperLink exited early:\n{log.read_text()}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    pytest.fail(f"SuperLink did not listen on {port}:\n{log.read_text()}")


@pytest.fixture
def launch(tmp_path: Path):
    """Start processes in their own process groups; every one is killed at the end, pass or fail."""
    started: list[subprocess.Popen] = []

    def _launch(command: list[str], name: str) -> tuple[subprocess.Popen, Path]:
        log = tmp_path / f"{name}.log"
        process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT,
                                   start_new_session=True, env=process_environment())
        started.append(process)
        return process, log

    yield _launch
    for process in started:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in started:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_flower_processes_find_flower_tools_without_an_activated_virtualenv(monkeypatch) -> None:
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    environment = process_environment(Path("/tmp/home"))
    assert environment["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    assert environment["FLWR_HOME"] == "/tmp/home"
    found = subprocess.run(["sh", "-c", "command -v flower-superexec"], env=environment, capture_output=True)
    assert found.returncode == 0


def test_superlink_keeps_its_state_in_memory_unless_given_a_database() -> None:
    """A SQLite state file failed CI: under load an encrypted update's write held the lock past Flower's
    busy timeout, the SuperLink answered a heartbeat with HTTP 500 and the run failed."""
    assert "--database" not in superlink_command("127.0.0.1", 9092)
    on_disk = superlink_command("127.0.0.1", 9092, Path("runs/superlink.db"))
    assert on_disk[on_disk.index("--database") + 1] == "runs/superlink.db"


@pytest.mark.slow
def test_superlink_and_three_supernodes_train_two_rounds_with_dp_and_he(tmp_path: Path, federation_dirs,
                                                                      launch) -> None:
    started = time.monotonic()
    create_keys(tmp_path / "keys")
    port = free_port()
    superlink, superlink_log = launch(superlink_command("127.0.0.1", port), "superlink")
    wait_for_port(port, superlink, superlink_log)
    for data_dir in federation_dirs:
        privacy = NodePrivacy(secret_context=tmp_path / "keys" / "secret.ctx", state_dir=tmp_path / data_dir.name)
        launch(supernode_command(f"127.0.0.1:{port}", data_dir, data_dir.name, free_port(), privacy), data_dir.name)

    settings = RunSettings(num_server_rounds=2, min_nodes=3, local_epochs=1, run_dir=str(tmp_path / "run"),
                           public_context=str(tmp_path / "keys" / "public.ctx"))
    assert settings.dp and settings.he
    write_connection(tmp_path / "flwr-home", f"127.0.0.1:{port}")
    submitted = subprocess.run(run_command(settings), env=process_environment(tmp_path / "flwr-home"),
                               capture_output=True, text=True, timeout=120)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr

    store = RunStore(settings.run_dir)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while store.status().get("state") not in ("finished", "failed") and time.monotonic() < deadline:
        time.sleep(1)
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in tmp_path.glob("*.log"))
    assert store.status().get("state") == "finished", f"status {store.status()}\n{logs}"

    rounds = store.rounds()
    assert [r["round"] for r in rounds] == [1, 2]
    names = sorted(d.name for d in federation_dirs)
    for record in rounds:
        assert sorted(record["train"]) == names and sorted(record["evaluate"]) == names
        assert record["failures"] == {}
        assert all(0 < m["epsilon"] <= settings.target_epsilon + 0.05 for m in record["train"].values())
    assert not store.model_path.exists() and store.encrypted_model_path.exists()
    final = load_models(store.run_dir, tmp_path / "keys" / "secret.ctx").models
    initial = build_shared_models(settings.seed).state_dict()
    for name in ("recommender.item_id.weight", "demand.base.weight"):
        assert not np.allclose(final.state_dict()[name].numpy(), initial[name].numpy()), name
    for data_dir in federation_dirs:
        assert (tmp_path / data_dir.name / "privacy_ledger.json").exists()
    print(f"real-process federation: {time.monotonic() - started:.1f} s")
