"""Real processes for the deployment tests: free ports, a SuperLink that listens, and a launcher that
leaves nothing running behind it."""

import socket
import subprocess
import time
from pathlib import Path

import pytest

from fedshop.operations.deployment import process_environment
from fedshop.operations.supervisor import stop_process_groups

START_TIMEOUT_S = 60
PORTS_USED: list[int] = []  # the SuperLink's and the nodes' ports, for the cleanup


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        PORTS_USED.append(sock.getsockname()[1])
        return PORTS_USED[-1]


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


def launcher(tmp_path: Path):
    """Start processes in their own process groups; every one is killed at the end, pass or fail, and
    so is every Flower process left holding one of the test's ports (a ServerApp outlives its SuperLink)."""
    started: list[subprocess.Popen] = []

    def _launch(command: list[str], name: str) -> tuple[subprocess.Popen, Path]:
        log = tmp_path / f"{name}.log"
        process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT,
                                   start_new_session=True, env=process_environment())
        started.append(process)
        return process, log

    yield _launch
    stop_process_groups(started, grace_s=15)
    for port in PORTS_USED:
        subprocess.run(["pkill", "-KILL", "-f", f"127.0.0.1:{port}( |$)"], check=False)
    PORTS_USED.clear()
