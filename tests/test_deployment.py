"""The federation as real processes on localhost: a SuperLink, three merchants' `fedshop node` and the
operator's `fedshop run`, with the faults a deployment meets (a restarted SuperLink, a dead node)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fedshop.client.node.model_copy import load_models
from fedshop.core.settings import RunSettings
from fedshop.models.parameters import flatten
from fedshop.models.shared import build_shared_models
from fedshop.operations.app_bundle import app_digest, write_app
from fedshop.operations.audit_report import build_report
from fedshop.operations.certificates import CA_FILE, create_certificates
from fedshop.operations.deployment import process_environment, run_command, superlink_command, write_connection
from fedshop.privacy.ckks import (
    add_updates,
    create_keys,
    encrypt,
    load_public_context,
    load_secret_context,
    parse_update,
)
from fedshop.privacy.fixed_point import Grid, value_range_of
from fedshop.rundir.store import RunStore
from tests.processes import free_port, wait_for_port

RUN_TIMEOUT_S = 420


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


def _ledger(state_dir: Path) -> list[dict]:
    path = state_dir / "privacy_ledger.json"
    return json.loads(path.read_text())["entries"] if path.exists() else []


def _wait(condition, what: str, logs: Path, timeout: float = RUN_TIMEOUT_S) -> float:
    """Wait for ``condition``; returns when it held (monotonic seconds)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(logs.glob("*.log")))
            pytest.fail(f"timed out waiting for {what}\n{tails}")
        time.sleep(0.2)
    return time.monotonic()


def _submit_modified_app(tmp_path: Path, port: int) -> Path:
    """An operator submits a copy of the app whose ClientApp writes a file on the merchant's machine
    (it could as well read the orders or the secret key); returns its run directory."""
    copy = write_app(tmp_path / "modified-app")
    app_py = copy / "fedshop" / "client" / "node" / "app.py"
    honest = "    def train(msg: Message, context: Context) -> Message:\n"
    assert honest in app_py.read_text()
    marker = f"        Path({str(tmp_path / 'operator-code-ran')!r}).write_text('the operator chose the code')\n"
    app_py.write_text(app_py.read_text().replace(honest, honest + marker))
    settings = RunSettings(num_server_rounds=1, min_nodes=3, run_dir=str(tmp_path / "modified-run"),
                           public_context=str(tmp_path / "keys" / "public.ctx"))
    return _submit(tmp_path, port, settings, copy)


def _submit(tmp_path: Path, port: int, settings: RunSettings, app: Path | None = None) -> Path:
    """Submit a run of ``app`` (default: the installed one) with ``settings``, as `fedshop run` does without
    following it; returns its run directory."""
    app = app or (tmp_path / "app" if (tmp_path / "app").exists() else write_app(tmp_path / "app"))
    write_connection(tmp_path / "flwr-home", f"127.0.0.1:{port}", tmp_path / "certs" / CA_FILE)
    submitted = subprocess.run(run_command(settings, app), env=process_environment(tmp_path / "flwr-home"),
                               capture_output=True, text=True, timeout=120)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    return Path(settings.run_dir)


def _ended(run_dir: Path, logs: Path) -> list[dict]:
    _wait(lambda: RunStore(run_dir).status().get("state") in ("finished", "failed"), f"the run in {run_dir}", logs)
    return RunStore(run_dir).rounds()


def _operator_switches_privacy_off(tmp_path: Path, port: int, names: list[str]) -> None:
    """`fedshop run --no-dp` and `--no-he` with the honest, pinned app against default nodes: every node
    refuses before reading anything, naming the setting; no arrays leave a node; every ledger is unchanged."""
    for switch, named in (({"dp": False}, "setting 'dp' is False"), ({"he": False}, "setting 'he' is False")):
        settings = RunSettings(num_server_rounds=1, min_nodes=3, quorum_wait_s=20,
                               run_dir=str(tmp_path / f"switched-{next(iter(switch))}"),
                               public_context=str(tmp_path / "keys" / "public.ctx"), **switch)
        record, = _ended(_submit(tmp_path, port, settings), tmp_path)
        assert record["train"] == {} and sorted(record["failures"]) == names, record
        assert all(named in why and "policy" in why for why in record["failures"].values()), record["failures"]
    for name in names:
        assert _ledger(tmp_path / name) == [] and not (tmp_path / name / "sent_update.npz").exists()


def _operator_forges_a_run(tmp_path: Path, port: int, names: list[str]) -> None:
    """A made-up run (a fresh run key) resumed at round 3 from a crafted model (encrypted by someone who holds
    the secret context): every node refuses it and its served model copy stays as it was."""
    copies = {name: (tmp_path / name / "model.npz").read_bytes() for name in names}
    settings = RunSettings(num_server_rounds=3, min_nodes=len(names), quorum_wait_s=20,
                           run_dir=str(tmp_path / "forged-run"), public_context=str(tmp_path / "keys" / "public.ctx"))
    store = RunStore(settings.run_dir)
    store.open(settings)
    crafted = flatten(build_shared_models(RunSettings.seed).state_dict()) * 1e3
    grid = Grid(value_range_of(crafted), 1.0)
    secret = load_secret_context(tmp_path / "keys" / "secret.ctx")
    public = load_public_context(tmp_path / "keys" / "public.ctx")
    update = encrypt(secret, grid.quantise(crafted, 1, np.random.default_rng(0))[0])
    store.save_checkpoint(2, add_updates(public, [parse_update(public, update, crafted.size)]),
                          {"aggregate_weight": 1.0, "aggregate_scale": 1.0, "aggregate_range": grid.value_range,
                           "context_id": secret.context_id})
    record, = _ended(_submit(tmp_path, port, settings), tmp_path)
    assert record["round"] == 3 and record["train"] == {}, record
    assert all("holds no model of this run" in record["failures"][name] for name in names), record["failures"]
    for name in names:
        assert (tmp_path / name / "model.npz").read_bytes() == copies[name], f"{name}'s served copy changed"


def _kill_node(supervisor: subprocess.Popen) -> None:
    """kill -9 a merchant's node for good: its SuperNode (and what it started), then its supervisor."""
    children = subprocess.run(["pgrep", "-P", str(supervisor.pid)], capture_output=True, text=True).stdout.split()
    for child in children:
        os.killpg(int(child), signal.SIGKILL)
    os.killpg(supervisor.pid, signal.SIGKILL)


@pytest.mark.slow
def test_a_federation_survives_a_restarted_superlink_and_a_dead_node(tmp_path: Path, federation_dirs, launch) -> None:
    """Real processes, the README's commands: a SuperLink over TLS (`fedshop certs init`), three
    supervised `fedshop node`s and `fedshop run` (DP + HE, --min-nodes 3). A node without the
    federation's CA is refused in one line. First the operator submits a modified app: every node
    refuses it, naming both digests, and the modified ClientApp never runs. Then the honest run: the
    SuperLink is killed (kill -9, its whole process group) while round 2 trains and started again;
    later one node is killed for good. The run finishes by itself, no merchant pays twice for a round,
    the dead node's failure is filed under its merchant, the run log verifies."""
    started = time.monotonic()
    create_keys(tmp_path / "keys")
    certificates = tmp_path / "certs"
    create_certificates(certificates, [])
    ca = str(certificates / CA_FILE)
    port = free_port()
    superlink, superlink_log = launch(superlink_command("127.0.0.1", port, certificates=certificates), "superlink")
    wait_for_port(port, superlink, superlink_log)
    fedshop, secret = [sys.executable, "-m", "fedshop.cli"], str(tmp_path / "keys" / "secret.ctx")
    joining = [*fedshop, "node", "--server", f"127.0.0.1:{port}", "--secret-context", secret]
    untrusting = subprocess.run([*joining, "--data", str(federation_dirs[0]), "--port", str(free_port())],
                                capture_output=True, text=True, timeout=120, env=process_environment())
    assert untrusting.returncode == 2, untrusting.stdout + untrusting.stderr
    assert "presented a certificate that the system's trust store does not accept" in untrusting.stdout
    nodes = {}
    for data_dir in federation_dirs:
        nodes[data_dir.name] = launch([*joining, "--data", str(data_dir), "--root-certificate", ca,
                                       "--port", str(free_port()), "--state-dir", str(tmp_path / data_dir.name)],
                                      f"node-{data_dir.name}")[0]
    evil = _submit_modified_app(tmp_path, port)
    _wait(lambda: RunStore(evil).status().get("state") in ("finished", "failed"), "the modified app's run", tmp_path)
    refusals = RunStore(evil).rounds()[0]["failures"]
    assert sorted(refusals) == sorted(d.name for d in federation_dirs), refusals
    pinned = app_digest()
    assert all("refused run" in why and pinned in why for why in refusals.values()), refusals
    assert not (tmp_path / "operator-code-ran").exists(), "a node ran the operator's modified ClientApp"
    _operator_switches_privacy_off(tmp_path, port, sorted(d.name for d in federation_dirs))

    run_dir = tmp_path / "run"
    driver, _ = launch([*fedshop, "run", "--server", f"127.0.0.1:{port}", "--out", str(run_dir), "--rounds", "3",
                        "--min-nodes", "3", "--quorum-wait", "20", "--root-certificate", ca, "--public-context",
                        str(tmp_path / "keys" / "public.ctx")], "fedshop-run")
    store = RunStore(run_dir)

    def trained(round_: int) -> bool:
        return any(e["round"] == round_ for d in federation_dirs for e in _ledger(tmp_path / d.name))

    killed = _wait(lambda: trained(2), "a merchant to train round 2", tmp_path)
    os.killpg(superlink.pid, signal.SIGKILL)
    superlink.wait()
    resumed_after = store.latest_checkpoint_round()
    superlink, superlink_log = launch(superlink_command("127.0.0.1", port, certificates=certificates),
                                      "superlink-restarted")
    wait_for_port(port, superlink, superlink_log)
    recovered = _wait(lambda: any(r["round"] == 2 for r in store.rounds()), "round 2 after the restart", tmp_path)

    lost = federation_dirs[-1].name
    _kill_node(nodes[lost])
    node_killed = time.monotonic()
    driver.wait(timeout=RUN_TIMEOUT_S)
    finished = time.monotonic()
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(tmp_path.glob("*.log")))
    assert driver.returncode == 0 and store.status().get("state") == "finished", f"{store.status()}\n{logs}"

    rounds = store.rounds()
    assert [r["round"] for r in rounds] == [1, 2, 3]
    names = sorted(d.name for d in federation_dirs)
    assert sorted(rounds[0]["train"]) == sorted(rounds[1]["train"]) == names
    assert sorted(rounds[2]["train"]) == sorted(set(names) - {lost}), logs
    assert lost in rounds[2]["failures"] and lost not in rounds[2]["evaluate"]
    assert store.verify_log().verified
    assert build_report(run_dir)["integrity"]["app_digests"] == {name: [pinned] for name in names}
    for name in names:
        entries = _ledger(tmp_path / name)
        paid = [(e["run"], e["round"], e["model"]) for e in entries]
        assert len(paid) == len(set(paid)), f"{name} paid twice for a round: {paid}"
        assert entries[-1]["epsilon_total"] <= 8.0 + 0.05
        assert len({e["run"] for e in entries}) == 1, "the resumed run is the same run for the merchants"
        recommender_rounds = {e["round"] for e in entries if e["model"] == "recommender"}
        tier_rounds = {r for r in recommender_rounds if r <= RunSettings().tier_rounds}
        assert {e["round"] for e in entries if e["model"] == "tiers"} == tier_rounds, "tiers paid outside tier rounds"
    for name in set(names) - {lost}:
        assert "left the federation" in (tmp_path / f"node-{name}.log").read_text()
    resent = [n for n in names if "already trained and paid for" in (tmp_path / f"node-{n}.log").read_text()]
    assert resumed_after == 2 or resent, "round 2 was re-asked but no merchant re-sent its paid update"
    assert "stopped answering" in (tmp_path / "fedshop-run.log").read_text()
    assert not store.model_path.exists() and store.encrypted_model_path.exists()
    final = load_models(store.run_dir, tmp_path / "keys" / "secret.ctx").models
    initial = build_shared_models(RunSettings.seed).state_dict()
    for name in ("recommender.item_id.weight", "demand.base.weight"):
        assert not np.allclose(final.state_dict()[name].numpy(), initial[name].numpy()), name
    _operator_forges_a_run(tmp_path, port, sorted(set(names) - {lost}))
    print(f"real-process faults: SuperLink killed {killed - started:.0f} s in; round 2 recorded "
          f"{recovered - killed:.0f} s after the kill (resumed after round {resumed_after}, re-sent by {resent}); "
          f"run finished {finished - node_killed:.0f} s after {lost} was killed; {finished - started:.0f} s in all")
