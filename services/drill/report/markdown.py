"""The after-action report as Markdown (``report.md``).

The HTML page reuses the summary lines and the sections after the latency
tables from this rendering, so the two never say different things.
"""

from __future__ import annotations

from services.drill.report.display import Names, duration, offset, step_columns, step_label
from services.drill.report.model import Report, language_order

__all__ = ["render_markdown"]


def render_markdown(report: Report) -> str:
    """The report as Markdown."""
    names = Names(report.region)
    lines = [f"# After-action report — `{report.namespace}`", ""]
    if report.log is not None:
        lines.append(f"- Log: {report.log.get('description') or '(no description)'} "
                     f"(region {report.log['region']}, recorded from "
                     f"{report.log['recorded_from']['kind']}, "
                     f"{report.log['inputs']} inputs)")
    if report.run is not None:
        run = report.run
        speed = "max speed" if run.get("speed") is None else f"{run['speed']:g}×"
        lines.append(f"- Replay: {speed}, event times `{run.get('time_mode')}`, HQ "
                     f"`{run.get('hq')}`, {run.get('sent')}/{run.get('total')} inputs sent"
                     f"{' (stopped early)' if run.get('stopped') else ''}, "
                     f"{run.get('commands_replayed', 0)} HQ commands replayed, "
                     f"{len(run.get('skipped_commands') or [])} skipped; started "
                     f"{run.get('started_at')}, finished {run.get('finished_at')}")
    lines.append(f"- Start (T+0): {names.clock(report.start)} (event time of the first input, "
                 f"{names.tz.key})")
    lines.append(f"- Generated {report.generated_at.isoformat(timespec='seconds')}")
    lines += ["", "Latencies are from the **first triggering evidence** of each recommendation. "
              "Each cell is *event time* · *wall time*: event time is scenario time (as the "
              "rules and the original run count it), wall time is how long the drill's "
              "services and people took.", ""]
    columns = step_columns(report)
    lines += ["## Decision latencies per area and hazard", ""]
    if not report.chains:
        lines += ["No recommendation was made.", ""]
    for (area, hazard), chains in report.per_area().items():
        lines += [f"### {names(area)} (`{area}`) — {hazard}", ""]
        header = ["level", "kind", "rule", "evidence", *(step_label(c) for c in columns),
                  "outcome"]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for chain in chains:
            lat = chain.latencies()
            cells = [f"L{chain.level}", chain.kind, f"`{chain.rule_id}`",
                     offset(report, chain.evidence.at if chain.evidence else None)]
            for column in columns:
                cells.append(f"{duration(lat['event'].get(column))} · "
                             f"{duration(lat['wall'].get(column), wall=True)}")
            cells.append(chain.outcome)
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Shelters", ""]
    if report.shelters:
        lines += ["| shelter | capacity | peak | peak at | opened | crowded | full | closed |",
                  "|---|---|---|---|---|---|---|---|"]
        for shelter_id, s in report.shelters.items():
            capacity = s["capacity"]
            peak = f"{s['peak']}" + (f" ({100 * s['peak'] / capacity:.0f} %)" if capacity
                                     else "")
            first = s["first"]
            lines.append(f"| {s['name']} (`{shelter_id}`) | {capacity or '–'} | {peak} | "
                         f"{offset(report, s['peak_at'])} | "
                         f"{offset(report, first.get('open'))} | "
                         f"{offset(report, first.get('crowded'))} | "
                         f"{offset(report, first.get('full'))} | "
                         f"{offset(report, first.get('closed'))} |")
        lines += ["", "Fill curves: report.html.", ""]
    else:
        lines += ["No shelter state changes (was the shelter tracker running?).", ""]
    lines += _markdown_comparison(report, names)
    skipped = (report.run or {}).get("skipped_commands") or []
    if skipped:
        lines += ["## Recorded HQ commands not replayed", ""]
        lines += [f"- #{s['index']} {s['action']} (`{s['original_id']}`): {s['reason']}"
                  for s in skipped]
        lines.append("")
    lines += ["## Events", "", ", ".join(f"{k} {v}" for k, v in report.counts.items()), ""]
    return "\n".join(lines)


def _markdown_comparison(report: Report, names: Names) -> list[str]:
    if report.comparison is None:
        return ["## Comparison with the original run", "",
                "The log carries no decisions of an original run.", ""]
    steps = ["recommendation", "approval", "order"]
    steps += sorted({k for c in report.comparison for k in c.original
                     if k.startswith("message_") and c.original[k] is not None},
                    key=lambda k: language_order(k.removeprefix("message_")))
    lines = ["## Comparison with the original run", "",
             "Event-time latencies from the first evidence: original / drill "
             f"(original: {report.comparison_source}).", "",
             "| area | hazard | level | kind | " + " | ".join(step_label(s) for s in steps)
             + " | largest Δ |",
             "|" + "---|" * (5 + len(steps))]
    for c in report.comparison:
        deltas = [abs(v) for v in c.delta.values() if v is not None]
        cells = [f"{duration(c.original.get(s))} / {duration(c.drill.get(s))}"
                 for s in steps]
        lines.append(f"| {names(c.area_id)} | {c.hazard} | L{c.level} | {c.kind} | "
                     + " | ".join(cells) + f" | {duration(max(deltas) if deltas else None)} |")
    if report.unmatched_original:
        lines.append("")
        lines.append(f"{report.unmatched_original} decision(s) of the original run have no "
                     "counterpart in the drill.")
    lines.append("")
    return lines
