"""``fedshop report``: the auditors' privacy and explanation report of a run (HTML with plots, and JSON)."""

from pathlib import Path
from typing import Annotated

import typer

from fedshop.cli.options import RunDir, SecretContext, console, fail


def report(
    run_dir: RunDir,
    data: Annotated[Path | None, typer.Option(help="A merchant's data directory, for sample explanations.")] = None,
    model: Annotated[Path | None, typer.Option(help="That merchant's node state directory (or the run with "
                                                    "--secret-context).")] = None,
    secret_context: SecretContext = None,
    out: Annotated[Path | None, typer.Option(help="Where to write report.html and report.json (default RUN_DIR).")]
    = None,
) -> None:
    """Write the auditors' report of a run: privacy (ε per merchant, CKKS, what the server stored,
    membership inference), quality and beyond-accuracy, explanation fidelity and price reasons."""
    from fedshop.client.data.schema import SchemaError
    from fedshop.explain.report import ReportError
    from fedshop.explain.report_html import write_report
    from fedshop.operations.audit_report import build_report, merchant_samples
    from fedshop.privacy.ckks import ContextError

    if (data is None) != (model is None):
        fail("sample explanations need both --data and --model (one merchant's)")
    try:
        samples = merchant_samples(data, model, secret_context) if data and model else None
        content = build_report(run_dir, samples)
    except (ReportError, SchemaError, FileNotFoundError, ContextError) as exc:
        fail(str(exc))
    json_path, html_path = write_report(content, out or run_dir)
    log = content["integrity"]["log"]
    if not log["verified"]:
        console.print(f"[bold red]the run log does not verify at round {log['broken_at']}:[/] {log['problem']}")
    pooled = content["privacy"]["membership_inference"]["pooled"]
    if pooled["auc"] is not None:
        console.print(f"membership inference: AUC {pooled['auc']:.3f} over {pooled['members']} members and "
                      f"{pooled['non_members']} held-out customers (0.5 = nothing revealed)")
    console.print(f"wrote [bold]{html_path}[/] and [bold]{json_path}[/]")
