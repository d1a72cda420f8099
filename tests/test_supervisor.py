"""`fedshop node` keeps its SuperNode up: a process that exits (even with rc 0) or stalls is started again."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from fedshop.operations.supervisor import Backoff, supervise

STALLS = "import time; print('Giving up reconnection after 60.00 seconds and 4 tries.', flush=True); time.sleep(600)"


def test_a_process_that_exits_or_stalls_is_started_again_with_backoff() -> None:
    said, echoed, runs = [], [], []

    def stop_after_three() -> bool:
        runs.append(time.monotonic())
        return len(runs) == 3

    exits = [sys.executable, "-c", "print('SuperNode terminated gracefully')"]  # Flower's rc 0 after a 401
    code = supervise(exits, dict(os.environ), said.append, echo=echoed.append, backoff=Backoff(0.1, 0.2),
                     should_stop=stop_after_three)
    assert code == 0 and len(runs) == 3
    assert said == ["the SuperNode left the federation: it exited with code 0; starting it again in 0.1 s (restart 1)",
                    "the SuperNode left the federation: it exited with code 0; starting it again in 0.2 s (restart 2)"]
    assert echoed.count("SuperNode terminated gracefully") == 3

    said.clear()
    runs.clear()
    started = time.monotonic()
    supervise([sys.executable, "-c", STALLS], dict(os.environ), said.append, echo=echoed.append,
              backoff=Backoff(0.1, 0.2), should_stop=lambda: bool(runs.append(1)) or len(runs) == 2)
    assert time.monotonic() - started < 60, "a stalled process must be stopped, not waited for"
    assert said[0].startswith("the SuperNode left the federation: it stalled (Giving up reconnection")
    assert Backoff(1, 60).delay(1) == 1 and Backoff(1, 60).delay(4) == 8 and Backoff(1, 60).delay(20) == 60


def test_sigterm_stops_the_supervised_process_too(tmp_path) -> None:
    """A service manager stops `fedshop node` with SIGTERM: its SuperNode must not be left running."""
    pid_file = tmp_path / "child.pid"
    child = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(600)"
    script = ("import sys; from fedshop.operations.supervisor import supervise; "
              f"sys.exit(supervise([sys.executable, '-c', {child!r}], dict(__import__('os').environ), print))")
    supervisor = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[1])
    deadline = time.monotonic() + 60
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline, "the supervised process did not start"
        time.sleep(0.1)
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(timeout=30) == 130
    child_pid = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child_pid}").exists() and "Z" not in _state(child_pid):
        assert time.monotonic() < deadline, "the supervised process outlived its supervisor"
        time.sleep(0.1)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].split()[0]
    except (FileNotFoundError, IndexError):
        return "Z"
