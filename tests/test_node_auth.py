"""Only registered merchants' nodes join (Flower's node authentication over TLS, wrapped by fedshop),
and the run record names each merchant as the operator registered it."""

import subprocess
import sys
from pathlib import Path

import pytest

from fedshop.operations.audit_report import build_report
from fedshop.operations.certificates import CA_FILE, create_certificates
from fedshop.operations.deployment import process_environment, superlink_command
from fedshop.operations.node_identity import NODE_KEY, NODE_PUBLIC_KEY, create_node_keys
from fedshop.privacy.ckks import create_keys
from fedshop.rundir.store import RunStore
from fedshop.server.registry import read_registry
from tests.processes import free_port, wait_for_port

FEDSHOP = [sys.executable, "-m", "fedshop.cli"]


@pytest.mark.slow
def test_only_registered_nodes_join_and_the_record_names_them_as_registered(tmp_path: Path, federation_dirs,
                                                                            launch) -> None:
    create_keys(tmp_path / "keys")
    create_certificates(tmp_path / "certs", [])
    ca, port = str(tmp_path / "certs" / CA_FILE), free_port()
    superlink, log = launch(superlink_command("127.0.0.1", port, tmp_path / "state.db", tmp_path / "certs",
                                              node_auth=True), "superlink")
    wait_for_port(port, superlink, log)
    server = ["--server", f"127.0.0.1:{port}", "--root-certificate", ca]
    registered = {"merchant_0": "shop-zero", "merchant_1": "shop-one"}
    for data_dir in federation_dirs:
        create_node_keys(tmp_path / data_dir.name, registered.get(data_dir.name, "unregistered"))
    for directory, name in registered.items():
        done = subprocess.run([*FEDSHOP, "register", "--key", str(tmp_path / directory / NODE_PUBLIC_KEY),
                               "--merchant", name, "--registry", str(tmp_path / "registry.json"), *server],
                              capture_output=True, text=True, timeout=120, env=process_environment())
        assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(read_registry(tmp_path / "registry.json").values()) == ["shop-one", "shop-zero"]

    def node(data_dir: Path) -> list[str]:
        return [*FEDSHOP, "node", "--data", str(data_dir), "--port", str(free_port()), "--key",
                str(tmp_path / data_dir.name / NODE_KEY), "--secret-context", str(tmp_path / "keys" / "secret.ctx"),
                "--state-dir", str(tmp_path / f"state-{data_dir.name}"), *server]

    for data_dir in federation_dirs[:2]:
        launch(node(data_dir), f"node-{data_dir.name}")
    stranger = subprocess.run(node(federation_dirs[2]), capture_output=True, text=True, timeout=180,
                              env=process_environment())
    said = " ".join(stranger.stdout.split())
    assert stranger.returncode == 2, said[-2000:]
    assert "the SuperNode cannot join: the SuperLink did not let this node join" in said

    driver, driver_log = launch([*FEDSHOP, "run", "--out", str(tmp_path / "run"), "--rounds", "1", "--min-nodes",
                                 "2", "--registry", str(tmp_path / "registry.json"), "--public-context",
                                 str(tmp_path / "keys" / "public.ctx"), *server], "fedshop-run")
    assert driver.wait(timeout=300) == 0, driver_log.read_text()[-3000:]
    record, = RunStore(tmp_path / "run").rounds()
    assert sorted(record["train"]) == sorted(record["evaluate"]) == ["shop-one", "shop-zero"]
    assert record["failures"] == {}
    trust = build_report(tmp_path / "run")["integrity"]["trust"]
    assert trust["transport"].startswith("TLS, the server's certificate checked against the federation's CA")
    assert trust["node_authentication"].startswith("merchants are named by the operator's registry of node keys")
