"""Many small merchants in one simulated federation: time per round and peak memory as the
federation grows, with a per-round sample of merchants (``fraction-train``).

For each ``--merchants`` count, generates that many merchants with long-tailed sizes (10 to 300
customers each, most of them small), runs the in-process simulation (Flower's simulation engine,
every merchant a virtual node) with DP-SGD and CKKS for ``--rounds`` rounds, training a
``--fraction`` of the merchants each round, and reports the wall time, the median round's training
and evaluation seconds (from the run record) and the peak resident memory of this process and
every process it started (Ray's workers included), sampled twice a second.

Target (issue 21): 1,000 merchants, 10% sampled per round, 5 rounds with DP + HE, ≤ 15 min and
≤ 8 GiB peak on a 2-core machine.

Usage: ``python benchmarks/many_merchants.py [--merchants 10 100 1000] [--fraction 0.1] [--rounds 5]
[--json OUT]``. Prints a table and writes JSON.
"""

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from fedshop.client.data.generate import FederationSpec, write_federation
from fedshop.core.settings import RunSettings
from fedshop.privacy.ckks import PUBLIC_FILE, SECRET_FILE, create_keys
from fedshop.rundir.store import RunStore
from fedshop.simulation import run_simulated_federation

SMALLEST, LARGEST, TAIL = 10, 300, 1.2
PAGE = 4096


def merchant_sizes(count: int, seed: int) -> tuple[int, ...]:
    """Long-tailed customer counts: a Pareto tail from ``SMALLEST``, cut at ``LARGEST``."""
    drawn = SMALLEST * (1 + np.random.default_rng(seed).pareto(TAIL, count))
    return tuple(int(n) for n in np.clip(np.round(drawn), SMALLEST, LARGEST))


def tree_rss(root: int) -> int:
    """Resident bytes of process ``root`` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(stat.parent.name)
        children.setdefault(int(fields[1]), []).append(pid)
        rss[pid] = int(fields[21]) * PAGE
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


class PeakMemory:
    """The largest :func:`tree_rss` of this process seen while it runs (a context manager)."""

    def __init__(self, every_s: float = 0.5) -> None:
        self.every_s, self.peak, self._stop = every_s, 0, threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        import os

        while not self._stop.wait(self.every_s):
            self.peak = max(self.peak, tree_rss(os.getpid()))

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def measure(count: int, fraction: float, rounds: int, work: Path) -> dict:
    """One federation of ``count`` generated merchants, trained with DP + HE."""
    out = work / f"{count}-merchants"
    began = time.monotonic()
    sizes = merchant_sizes(count, seed=count)
    data_dirs = write_federation(out / "data", FederationSpec(customers=sizes, seed=count))
    generated_s = time.monotonic() - began
    create_keys(out / "keys")
    nodes = [{"data-dir": str(d), "merchant": d.name, "secret-context": str(out / "keys" / SECRET_FILE),
              "state-dir": str(out / "nodes" / d.name)} for d in data_dirs]
    settings = RunSettings(num_server_rounds=rounds, fraction_train=fraction, run_dir=str(out / "run"),
                           public_context=str(out / "keys" / PUBLIC_FILE))
    began = time.monotonic()
    with PeakMemory() as memory:
        run = run_simulated_federation(nodes, settings)
    wall = time.monotonic() - began
    records = RunStore(run).rounds()
    seconds = [record["seconds"] for record in records]
    return {"merchants": count, "customers": sum(sizes), "largest": max(sizes), "median_size": statistics.median(sizes),
            "trained_per_round": statistics.median(len(record["train"]) for record in records),
            "generated_s": generated_s, "wall_s": wall, "per_round": seconds,
            "train_s": statistics.median(s["train"] for s in seconds),
            "evaluate_s": statistics.median(s["evaluate"] for s in seconds[:-1] or seconds),
            "last_evaluate_s": seconds[-1]["evaluate"], "peak_rss_gib": memory.peak / 2**30}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--merchants", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="fedshop-many-") as tmp:
        for count in args.merchants:
            results.append(measure(count, args.fraction, args.rounds, Path(tmp)))
            if args.json:  # a long run keeps what it measured so far
                args.json.write_text(json.dumps({"fraction": args.fraction, "rounds": args.rounds,
                                                 "results": results}, indent=2))
    table = Table("merchants", "customers", "trained per round", "train s", "evaluate s", "last evaluate s",
                  "wall s", "peak GiB",
                  title=f"simulated federation, DP + HE, {args.rounds} rounds, fraction-train {args.fraction:g}")
    for r in results:
        table.add_row(str(r["merchants"]), str(r["customers"]), f"{r['trained_per_round']:g}", f"{r['train_s']:.1f}",
                      f"{r['evaluate_s']:.1f}", f"{r['last_evaluate_s']:.1f}", f"{r['wall_s']:.0f}",
                      f"{r['peak_rss_gib']:.2f}")
    Console(width=120).print(table)


if __name__ == "__main__":
    main()
