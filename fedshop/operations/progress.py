"""What an operator sees while a run trains: a progress bar over rounds and one table per round.

It reads the run directory (``fedshop.rundir.store``) and nothing else, so it works the same for the
in-process demo and for a deployed run watched on the server machine.
"""

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedshop.core.protocol import EPSILON, EXAMPLES, HR10, NDCG10, SHARED_NDCG10, TRAIN_LOSS
from fedshop.rundir.store import RunStore

POLL_S = 0.5


def round_table(record: dict[str, Any], title: str | None = None) -> Table:
    """Per-merchant numbers of one round (and how long its two phases took): examples, loss, ε spent so
    far, HR@10 and NDCG@10 of the model the merchant serves (shared + its local part), NDCG@10 of the
    shared model alone, failures."""
    seconds = record.get("seconds", {})
    timing = ", ".join(f"{phase} {seconds[phase]:.0f} s" for phase in ("train", "evaluate") if phase in seconds)
    table = Table(title=title or f"round {record['round']}" + (f" ({timing})" if timing else ""), title_justify="left")
    for column in ("merchant", "customers trained", "train loss", "ε spent", "HR@10", "NDCG@10", "NDCG@10 shared",
                   "note"):
        table.add_column(column, justify="left" if column in ("merchant", "note") else "right")
    merchants = sorted({*record.get("train", {}), *record.get("evaluate", {}), *record.get("failures", {})})
    for merchant in merchants:
        train = record.get("train", {}).get(merchant, {})
        evaluate = record.get("evaluate", {}).get(merchant, {})
        table.add_row(
            merchant, str(train.get(EXAMPLES, "-")),
            f"{train[TRAIN_LOSS]:.3f}" if TRAIN_LOSS in train else "-",
            f"{train[EPSILON]:.2f}" if train.get(EPSILON) else "-",
            f"{evaluate[HR10]:.3f}" if HR10 in evaluate else "-",
            f"{evaluate[NDCG10]:.3f}" if NDCG10 in evaluate else "-",
            f"{evaluate[SHARED_NDCG10]:.3f}" if SHARED_NDCG10 in evaluate else "-",
            record.get("failures", {}).get(merchant, "")
            or ("refused the global model: " + record["refused_global_model"][merchant]
                if merchant in record.get("refused_global_model", {}) else ""),
        )
    return table


def watch_run(run_dir: Path, num_rounds: int, console: Console,
              finished: Callable[[], bool] = lambda: False) -> dict[str, Any]:
    """Show rounds as they complete until the run finishes or fails; returns the final status."""
    store = RunStore(run_dir)
    shown = 0
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("training", total=num_rounds)
        while True:
            status = store.status()
            stopping = finished() or status.get("state") in ("finished", "failed")
            rounds = store.rounds()
            for record in rounds[shown:]:
                progress.console.print(round_table(record))
                aggregate = record.get("evaluate_aggregate", {})
                if aggregate:
                    progress.update(task, description=f"round {record['round']}: HR@10 "
                                    f"{aggregate.get('hr10', 0):.3f} NDCG@10 {aggregate.get('ndcg10', 0):.3f}")
            shown = len(rounds)
            progress.update(task, completed=rounds[-1]["round"] if rounds else 0)
            if stopping:
                return store.status()
            time.sleep(POLL_S)
