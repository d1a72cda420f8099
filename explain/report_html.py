"""``fedshop report``'s output files: ``report.json`` for machines and ``report.html`` for people.

The HTML is one self-contained file (styles and SVG plots inline, no script, nothing fetched), so
an auditor can open it offline or archive it with the run.
"""

import json
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from fedshop.explain.report_figures import all_figures

REPORT_JSON, REPORT_HTML = "report.json", "report.html"


def render_html(report: dict) -> str:
    environment = Environment(loader=PackageLoader("fedshop.explain", "templates"),
                              autoescape=select_autoescape(["html"]))
    return environment.get_template("report.html").render(
        report=report, figures=all_figures(report), run_name=Path(report["run"]["run_dir"]).name,
        merchants=list(report["quality"]["merchants"]))


def write_report(report: dict, out_dir: Path) -> tuple[Path, Path]:
    """Write both files into ``out_dir``; returns their paths (JSON, HTML)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out_dir / REPORT_JSON, out_dir / REPORT_HTML
    json_path.write_text(json.dumps(report, indent=2, allow_nan=False))
    html_path.write_text(render_html(report), encoding="utf-8")
    return json_path, html_path
