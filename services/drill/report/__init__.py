"""After-action report: how fast the drill went from evidence to decision to public message.

Modules: :mod:`.model` (the pure model: chains, latencies, comparison with the
original run, the JSON document), :mod:`.collect` (reading a namespace's
topics or the event store), :mod:`.markdown` and :mod:`.html` (the writers,
with :mod:`.display` for what they share). :func:`write_report` writes
``report.md``, ``report.json`` and ``report.html``.
"""

from __future__ import annotations

import json
from pathlib import Path

from services.drill.report.collect import collect, collect_from_store
from services.drill.report.html import render_html
from services.drill.report.markdown import render_markdown
from services.drill.report.model import (
    LANGUAGES,
    Chain,
    Comparison,
    Milestone,
    Observed,
    Report,
    build_report,
    report_document,
)

__all__ = [
    "LANGUAGES",
    "Chain",
    "Comparison",
    "Milestone",
    "Observed",
    "Report",
    "build_report",
    "collect",
    "collect_from_store",
    "render_html",
    "render_markdown",
    "write_report",
]


def write_report(report: Report, directory: Path) -> dict[str, Path]:
    """Write report.md, report.json and report.html into ``directory``; return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"md": directory / "report.md", "json": directory / "report.json",
             "html": directory / "report.html"}
    paths["md"].write_text(render_markdown(report), encoding="utf-8")
    paths["json"].write_text(json.dumps(report_document(report), ensure_ascii=False, indent=2)
                             + "\n", encoding="utf-8")
    paths["html"].write_text(render_html(report), encoding="utf-8")
    return paths
