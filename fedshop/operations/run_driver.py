"""The operator's side of a training run: submit it to the SuperLink, follow it, and resubmit it
when the SuperLink went away.

A SuperLink that keeps its state in memory forgets its runs when it restarts, and the ServerApp it
was running dies with it. ``fedshop run`` therefore watches the SuperLink as well as the run
directory: when the SuperLink stops answering, it waits for it to come back (the merchants' nodes
rejoin by themselves, see ``fedshop.operations.supervisor``) and submits the run again; the new ServerApp resumes
from the run directory's last checkpoint (``fedshop.rundir.store``), and the merchants answer a round
they had already trained with the update they already paid for (``fedshop.client.node.sent_update``).
"""

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedshop.rundir.store import RunStore

CHECK_S = 2.0  # how often a SuperLink that went away is checked for its return
# How often the SuperLink is checked while a run goes on: more often than a restarted SuperLink takes to
# listen again (a few seconds of imports), or a restart between two checks would look like a failed run
# (its ServerApp writes "failed" as it dies) and the run would not be resubmitted (a CI run under load).
WATCH_S = 0.25
SERVER_WAIT_S = 1800.0  # how long a run waits for its SuperLink to come back
START_WAIT_S = 180.0  # how long a submitted run may take to open its run directory


class RunInterrupted(RuntimeError):
    """The run cannot go on by itself; the message says what to do."""


def superlink_answers(server: str, timeout: float = 2.0) -> bool:
    """Whether something accepts connections at ``server`` (HOST:PORT)."""
    host, _, port = server.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass
class _Watchdog:
    """Checks the SuperLink in the background; ``lost`` is set once it stopped answering."""

    server: str
    lost: threading.Event
    stop: threading.Event

    def run(self) -> None:
        while not self.stop.wait(WATCH_S):
            if not superlink_answers(self.server):
                self.lost.set()
                return


def _wait_until_opened(store: RunStore, before: str | None) -> None:
    """Wait until the submitted ServerApp has (re)opened the run directory: it holds a new lease (a
    ServerApp that outlived its SuperLink may still write "failed" there until then)."""
    deadline = time.monotonic() + START_WAIT_S
    while store.lease().get("holder") in (None, before):
        if time.monotonic() > deadline:
            raise RunInterrupted(f"the submitted run did not open {store.run_dir} within {START_WAIT_S:g} s; "
                                 "check the SuperLink's log")
        time.sleep(0.5)


def drive_run(run_dir: Path, server: str, submit: Callable[[], None],
              watch: Callable[[Callable[[], bool]], dict[str, Any]], say: Callable[[str], None],
              server_wait_s: float = SERVER_WAIT_S) -> dict[str, Any]:
    """Submit the run, follow it with ``watch`` (which returns the run's status when it finishes,
    fails, or when the callable it is given turns true), and submit it again each time the SuperLink
    went away and came back. Returns the final status."""
    store = RunStore(run_dir)
    while True:
        before = store.lease().get("holder")
        submit()
        _wait_until_opened(store, before)
        lost, stop = threading.Event(), threading.Event()
        watchdog = threading.Thread(target=_Watchdog(server, lost, stop).run, daemon=True)
        watchdog.start()
        try:
            status = watch(lost.is_set)
        finally:
            stop.set()
            watchdog.join()
        if status.get("state") == "finished":
            return status
        if not lost.is_set() and superlink_answers(server):
            return status
        resume_from = store.latest_checkpoint_round()
        say(f"the SuperLink at {server} stopped answering; waiting up to {server_wait_s:g} s for it to come back, "
            f"then the run resumes after round {resume_from}")
        deadline = time.monotonic() + server_wait_s
        while not superlink_answers(server):
            if time.monotonic() > deadline:
                raise RunInterrupted(f"the SuperLink at {server} did not come back within {server_wait_s:g} s; "
                                     f"start it and run the same `fedshop run` again: the run resumes after "
                                     f"round {resume_from}")
            time.sleep(CHECK_S)
        say(f"the SuperLink at {server} answers again: submitting the run again (it resumes after round "
            f"{store.latest_checkpoint_round()})")
