"""Keeps a Flower process up: `fedshop node` runs its merchant's SuperNode under this supervisor.

Flower 1.41's SuperNode leaves the federation in three ways without coming back by itself
(``../shared/FLOWER-1.41-NOTES.md``): it exits, even with rc 0, when a restarted SuperLink answers its
heartbeat with 401; it can stay alive after giving up reconnecting; and it stays "offline" when its
heartbeat thread died on an unexpected answer. The supervisor passes the process's output through,
recognises those lines, stops the process (its whole process group) and starts it again after a
backoff that doubles up to a minute and resets after a long healthy spell; each restart is said in
one line. A refusal that a restart cannot cure (an unregistered node key) ends the supervisor with
that reason. Ctrl-C (or SIGTERM) stops the process and the supervisor.
"""

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# Lines after which the process will not rejoin by itself.
STALLED = ("Giving up reconnection", "Exception in thread", "Heartbeat failed unexpectedly")
# Lines after which starting the process again cannot help, and what they mean.
FATAL = {"Failed to activate SuperNode": "the SuperLink did not let this node join: with node authentication on, "
                                         "the operator must register its public key (`fedshop register`) and the "
                                         "node must start with the matching --key"}
EXITING = "terminated gracefully"  # the process says it leaves: it must exit soon or be stopped
EXIT_GRACE_S = 15.0
HEALTHY_S = 300.0  # a process that ran this long restarts after the shortest backoff again


@dataclass(frozen=True)
class Backoff:
    """Seconds before restart number n: ``first`` doubled each time, at most ``longest``."""

    first: float = 1.0
    longest: float = 60.0

    def delay(self, restarts: int) -> float:
        return min(self.longest, self.first * 2 ** max(restarts - 1, 0))


def stop_process_groups(processes: Sequence[subprocess.Popen], grace_s: float = 10.0) -> None:
    """Stop each process and everything it started (each leads its own process group): SIGTERM, then
    SIGKILL for what still runs ``grace_s`` later."""
    for sent in (signal.SIGTERM, signal.SIGKILL):
        running = [process for process in processes if process.poll() is None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sent)
        for process in running:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=grace_s)


def _watch(process: subprocess.Popen, echo: Callable[[str], None]) -> tuple[str, bool]:
    """Pass the process's lines through until it exits or stalls; returns why, and whether starting it
    again cannot help."""
    why, fatal = "", False
    exiting_since: list[float] = []

    def read() -> None:
        nonlocal why, fatal
        for line in process.stdout:
            echo(line.rstrip("\n"))
            if not fatal and (meaning := next((FATAL[m] for m in FATAL if m in line), None)):
                why, fatal = meaning, True
            if not why and any(marker in line for marker in STALLED):
                why = f"it stalled ({line.strip()[:120]})"
            if EXITING in line:
                exiting_since.append(time.monotonic())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    while process.poll() is None and not why:
        if exiting_since and time.monotonic() - exiting_since[0] > EXIT_GRACE_S:
            why = f"it said it terminated but did not exit within {EXIT_GRACE_S:g} s"
        time.sleep(0.2)
    if why:
        stop_process_groups([process])
    reader.join(timeout=5)
    return why or f"it exited with code {process.returncode}", fatal


def supervise(command: Sequence[str], env: dict[str, str], say: Callable[[str], None], name: str = "the SuperNode",
              echo: Callable[[str], None] = print, backoff: Backoff = Backoff(),
              should_stop: Callable[[], bool] = lambda: False) -> int:
    """Run ``command`` (``name`` in what is said) and start it again whenever it exits or stalls, until
    Ctrl-C or SIGTERM (returns 130) or ``should_stop`` (returns the last exit code)."""
    previous = signal.signal(signal.SIGTERM, _interrupt)  # a service manager's stop ends the process too
    try:
        return _supervise(command, env, say, name, echo, backoff, should_stop)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _supervise(command: Sequence[str], env: dict[str, str], say: Callable[[str], None], name: str,
               echo: Callable[[str], None], backoff: Backoff, should_stop: Callable[[], bool]) -> int:
    restarts = 0
    while True:
        started = time.monotonic()
        process = subprocess.Popen(list(command), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, bufsize=1, start_new_session=True)
        try:
            why, fatal = _watch(process, echo)
        except KeyboardInterrupt:
            stop_process_groups([process])
            say("stopped")
            return 130
        if fatal:
            say(f"{name} cannot join: {why}")
            return 2
        if should_stop():
            return process.returncode or 0
        restarts = 1 if time.monotonic() - started > HEALTHY_S else restarts + 1
        delay = backoff.delay(restarts)
        say(f"{name} left the federation: {why}; starting it again in {delay:g} s (restart {restarts})")
        try:
            time.sleep(delay)
        except KeyboardInterrupt:
            say("stopped")
            return 130
