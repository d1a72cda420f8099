"""The auditors' report of a run directory: reads what the run recorded and hands it to
``fedshop.explain.report``; with a merchant's data and model, adds that merchant's sample explanations.

``fedshop report`` writes what :func:`build_report` returns as report.json and report.html.
"""

from dataclasses import asdict
from pathlib import Path

from fedshop.client.data.schema import load_merchant
from fedshop.client.node.model_copy import load_models
from fedshop.explain import report
from fedshop.explain.report import ReportError, RunRecords
from fedshop.rundir.store import RunStore


def run_records(run_dir: Path) -> RunRecords:
    """What the run directory records (refused when ``run_dir`` is not one)."""
    store = RunStore(run_dir)
    config = store.config()
    if config is None:
        raise ReportError(f"{run_dir}: not a run directory (no config.json)")
    return RunRecords(run_dir=Path(run_dir), config=config, status=store.status(), rounds=store.rounds(),
                      log=asdict(store.verify_log()), final_model=store.final_model_meta(),
                      storage=store.stored_models())


def build_report(run_dir: Path, samples: dict | None = None) -> dict:
    """The report of the run in ``run_dir``; ``samples`` from :func:`merchant_samples` when a merchant
    provides them."""
    return report.report_content(run_records(run_dir), samples)


def merchant_samples(data_dir: Path, model_dir: Path, secret_context: Path | None = None) -> dict:
    """Explained recommendations and prices of the merchant whose data is in ``data_dir``, from its node's
    model copy (or a run's model, decrypted with ``secret_context``)."""
    models, local, history_length = load_models(model_dir, secret_context)
    return report.merchant_samples(load_merchant(data_dir), models, local, history_length)
