"""The after-action report as one self-contained HTML page (``report.html``).

Inline SVG — the timeline of every chain over the river gauges, and the
shelter fill curves — with no scripts and no external files, so the page can
be mailed or archived as it is. The summary and the tables after the latency
tables come from :func:`~services.drill.report.markdown.render_markdown`.
"""

from __future__ import annotations

import html
from datetime import datetime, timedelta
from typing import Final

from services.drill.report.display import Names, duration, offset, step_columns, step_label
from services.drill.report.markdown import render_markdown
from services.drill.report.model import Report

__all__ = ["render_html"]

_W: Final = 960
_LEFT: Final = 190
_RIGHT: Final = 20
_MARKS: Final = {
    "evidence": ("#6b7280", "circle"), "recommendation": ("#2563eb", "triangle"),
    "approval": ("#16a34a", "square"), "order": ("#ea580c", "diamond"),
    "message": ("#9333ea", "tick"),
}


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


class _Axis:
    def __init__(self, start: datetime, end: datetime) -> None:
        self.start = start
        self.span = max((end - start).total_seconds(), 60.0)

    def x(self, at: datetime) -> float:
        return _LEFT + (_W - _LEFT - _RIGHT) * (at - self.start).total_seconds() / self.span

    def ticks(self, names: Names) -> str:
        step = 3600 if self.span > 4 * 3600 else 1800 if self.span > 7200 else 600
        out = []
        for i in range(int(self.span // step) + 1):
            at = self.start + timedelta(seconds=i * step)
            x = self.x(at)
            out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="0" y2="100%" class="grid"/>'
                       f'<text x="{x:.1f}" y="12" class="tick">{_e(names.clock(at)[6:11])}'
                       "</text>")
        return "".join(out)


def _mark(kind: str, x: float, y: float, title: str) -> str:
    color, shape = _MARKS[kind]
    tip = f"<title>{_e(title)}</title>"
    if shape == "circle":
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{color}">{tip}</circle>'
    if shape == "triangle":
        return (f'<polygon points="{x:.1f},{y - 6:.1f} {x - 5:.1f},{y + 4:.1f} {x + 5:.1f},'
                f'{y + 4:.1f}" fill="{color}">{tip}</polygon>')
    if shape == "square":
        return (f'<rect x="{x - 4:.1f}" y="{y - 4:.1f}" width="8" height="8" '
                f'fill="{color}">{tip}</rect>')
    if shape == "diamond":
        return (f'<polygon points="{x:.1f},{y - 6:.1f} {x + 6:.1f},{y:.1f} {x:.1f},'
                f'{y + 6:.1f} {x - 6:.1f},{y:.1f}" fill="{color}">{tip}</polygon>')
    return (f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y - 7:.1f}" y2="{y + 7:.1f}" '
            f'stroke="{color}" stroke-width="2">{tip}</line>')


def _timeline_svg(report: Report, names: Names, axis: _Axis) -> str:
    groups = report.per_area()
    gauge_h = 120 if report.gauges else 0
    row_h = 26
    height = 24 + gauge_h + row_h * max(1, len(groups)) + 10
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{height}" '
             f'viewBox="0 0 {_W} {height}" role="img" aria-label="timeline">',
             axis.ticks(names)]
    if report.gauges:
        top, bottom = 22, 22 + gauge_h - 10
        levels = [v for points in report.gauges.values() for _, v in points]
        for g, th in names.thresholds.items():
            if g in report.gauges:
                levels += [th.get("evacuation_judgement", 0.0), th.get("flood_danger", 0.0)]
        low, high = min(levels), max(levels)
        span = max(high - low, 0.1)

        def gy(v: float) -> float:
            return bottom - (bottom - top) * (v - low) / span

        for g, points in report.gauges.items():
            pts = " ".join(f"{axis.x(t):.1f},{gy(v):.1f}" for t, v in points)
            parts.append(f'<polyline points="{pts}" fill="none" stroke="#0ea5e9" '
                         f'stroke-width="2"><title>{_e(names(g))}</title></polyline>')
            for label, key in (("避難判断水位", "evacuation_judgement"),
                               ("氾濫危険水位", "flood_danger")):
                value = names.thresholds.get(g, {}).get(key)
                if value is not None:
                    y = gy(value)
                    parts.append(f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y:.1f}" '
                                 f'y2="{y:.1f}" class="threshold"/><text x="{_LEFT - 4}" '
                                 f'y="{y + 4:.1f}" class="label">{_e(label)} {value:g} m</text>')
        parts.append(f'<text x="4" y="{top + 12}" class="label-left">'
                     f'{_e(" / ".join(names(g) for g in report.gauges))}</text>')
    y = 24 + gauge_h
    for (area, hazard), chains in groups.items():
        mid = y + row_h / 2
        parts.append(f'<text x="4" y="{mid + 4:.1f}" class="label-left">{_e(names(area))} · '
                     f"{_e(hazard)}</text>")
        parts.append(f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{mid:.1f}" y2="{mid:.1f}" '
                     'class="row"/>')
        for chain in chains:
            what = f"L{chain.level} {chain.kind} ({chain.rule_id})"
            if chain.evidence is not None:
                parts.append(_mark("evidence", axis.x(chain.evidence.at), mid,
                                   f"{what}: first evidence {names.clock(chain.evidence.at)}"))
            for step, milestone in chain.steps().items():
                if milestone is None:
                    continue
                kind = "message" if step.startswith("message_") else step
                parts.append(_mark(kind, axis.x(milestone.at), mid,
                                   f"{what}: {step} {names.clock(milestone.at)}"))
            parts.append(f'<text x="{axis.x(chain.recommended.at) + 4:.1f}" '
                         f'y="{mid - 7:.1f}" class="level">L{chain.level}'
                         f'{"↓" if chain.kind == "lift" else ""}</text>')
        y += row_h
    parts.append("</svg>")
    return "".join(parts)


def _shelters_svg(report: Report, names: Names, axis: _Axis) -> str:
    height = 200
    top, bottom = 20, height - 20
    colours = ["#2563eb", "#16a34a", "#ea580c", "#9333ea", "#0891b2", "#be123c", "#65a30d"]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{height}" '
             f'viewBox="0 0 {_W} {height}" role="img" aria-label="shelter fill">',
             axis.ticks(names)]
    for pct in (0, 50, 80, 100):
        y = bottom - (bottom - top) * min(pct, 110) / 110
        parts.append(f'<line x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
                     f'class="threshold"/><text x="{_LEFT - 4}" y="{y + 4:.1f}" '
                     f'class="label">{pct} %</text>')
    for i, s in enumerate(report.shelters.values()):
        colour = colours[i % len(colours)]
        capacity = s["capacity"] or max(p["occupancy"] for p in s["points"]) or 1
        pts = []
        for p in s["points"]:
            pct = 100 * p["occupancy"] / capacity
            pts.append(f"{axis.x(p['at']):.1f},{bottom - (bottom - top) * min(pct, 110) / 110:.1f}")
        parts.append(f'<polyline points="{" ".join(pts)}" fill="none" stroke="{colour}" '
                     f'stroke-width="2"><title>{_e(s["name"])}</title></polyline>')
        # Inline style: the class's fill would win over a presentation attribute.
        parts.append(f'<text x="4" y="{top + 14 * (i + 1)}" class="label-left" '
                     f'style="fill:{colour}">■ {_e(s["name"])}</text>')
    parts.append("</svg>")
    return "".join(parts)


_CSS: Final = """
body{font-family:"Noto Sans CJK JP","Hiragino Sans",system-ui,sans-serif;margin:24px;color:#111}
h1{font-size:1.4em} h2{font-size:1.15em;margin-top:1.6em} h3{font-size:1em}
table{border-collapse:collapse;margin:8px 0 16px} td,th{border:1px solid #ccc;padding:3px 7px;
font-size:.85em;text-align:left} th{background:#f3f4f6}
.grid{stroke:#eee} .row{stroke:#ddd} .threshold{stroke:#fca5a5;stroke-dasharray:4 3}
.tick{font-size:10px;fill:#666;text-anchor:middle} .label{font-size:10px;fill:#b91c1c;
text-anchor:end} .label-left{font-size:11px;fill:#333} .level{font-size:10px;fill:#1e3a8a}
.legend span{margin-right:14px;font-size:.85em} .drill{background:#fef3c7;padding:4px 8px}
"""


def render_html(report: Report) -> str:
    """The report as one self-contained HTML page (inline SVG timeline, no scripts)."""
    names = Names(report.region)
    times = [m.at for c in report.chains for m in (c.evidence, *c.steps().values())
             if m is not None]
    times += [t for points in report.gauges.values() for t, _ in points]
    times += [p["at"] for s in report.shelters.values() for p in s["points"]]
    body: list[str] = [f"<h1>After-action report — {_e(report.namespace)}</h1>",
                       '<p class="drill">訓練 / DRILL — exercise data only</p>']
    full_markdown = render_markdown(report)
    markdown = full_markdown.split("\n## ", 1)[0].splitlines()[2:]
    body.append("<ul>" + "".join(f"<li>{_e(line.removeprefix('- ').replace('`', ''))}</li>"
                                 for line in markdown if line.startswith("- ")) + "</ul>")
    if times:
        axis = _Axis(min(times), max(times))
        legend = "".join(f'<span style="color:{c}">■ {_e(k)}</span>'
                         for k, (c, _) in _MARKS.items())
        body += ["<h2>Timeline (event time)</h2>", f'<p class="legend">{legend}</p>',
                 _timeline_svg(report, names, axis)]
        if report.shelters:
            body += ["<h2>Shelter fill (occupancy / capacity)</h2>",
                     _shelters_svg(report, names, axis)]
    columns = step_columns(report)
    body.append("<h2>Decision latencies per area and hazard</h2>"
                "<p>From the first triggering evidence; event time · wall time.</p>")
    for (area, hazard), chains in report.per_area().items():
        body.append(f"<h3>{_e(names(area))} ({_e(area)}) — {_e(hazard)}</h3><table><tr>"
                    + "".join(f"<th>{_e(h)}</th>" for h in
                              ["level", "kind", "rule", "evidence",
                               *(step_label(c) for c in columns), "outcome"]) + "</tr>")
        for chain in chains:
            lat = chain.latencies()
            cells = [f"L{chain.level}", chain.kind, chain.rule_id,
                     offset(report, chain.evidence.at if chain.evidence else None)]
            cells += [f"{duration(lat['event'].get(c))} · "
                      f"{duration(lat['wall'].get(c), wall=True)}" for c in columns]
            cells.append(chain.outcome)
            body.append("<tr>" + "".join(f"<td>{_e(x)}</td>" for x in cells) + "</tr>")
        body.append("</table>")
    rest = "\n## Shelters" + full_markdown.split("\n## Shelters", 1)[-1] \
        if "\n## Shelters" in full_markdown else ""
    body.append(_markdown_tables_html(rest))
    return ("<!doctype html>\n<html lang=\"ja\"><head><meta charset=\"utf-8\">"
            f"<title>After-action report {_e(report.namespace)}</title>"
            f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _markdown_tables_html(markdown: str) -> str:
    """The Markdown sections after the latency tables, as simple HTML."""
    out: list[str] = []
    table: list[list[str]] = []

    def flush() -> None:
        if table:
            head, *rows = table
            out.append("<table><tr>" + "".join(f"<th>{_e(c)}</th>" for c in head) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>"
                                 for row in rows) + "</table>")
            table.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [c.strip().strip("`") for c in line.strip("|").split("|")]
            if not all(set(c) <= {"-"} for c in cells):
                table.append(cells)
            continue
        flush()
        if line.startswith("## "):
            out.append(f"<h2>{_e(line[3:])}</h2>")
        elif line.startswith("- "):
            out.append(f"<p>• {_e(line[2:])}</p>")
        elif line.strip():
            out.append(f"<p>{_e(line.replace('**', ''))}</p>")
    flush()
    return "\n".join(out)
