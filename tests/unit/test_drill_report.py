"""The after-action report over synthetic decision chains: latencies, grouping, outputs."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

from schemas.envelope import Envelope, new_event
from schemas.evacuation import EvacuationRecommended, OrderIssued
from schemas.events import Event, decode_event, encode_event
from schemas.examples import example
from services.drill.logformat import RecordedFrom, build_log
from services.drill.replay import IdMap
from services.drill.report import write_report
from services.drill.report.html import render_html
from services.drill.report.markdown import render_markdown
from services.drill.report.model import Observed, build_chains, build_report, report_document
from services.drill.verify import normalise

T0 = datetime(2025, 8, 21, 5, 0, tzinfo=UTC)
W0 = datetime(2030, 1, 1, 0, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def wall(seconds: float) -> datetime:
    return W0 + timedelta(seconds=seconds)


def like(event_type: str, *, minutes: float, cause: Envelope | None = None,
         **payload: Any) -> Event:
    """The catalogue example of ``event_type`` with the given payload fields and time."""
    base = example(event_type)
    body = {**base.payload.model_dump(mode="json"), **payload}
    made = new_event(type(base), body, occurred_at=at(minutes), source=base.source,
                     cause=cause)
    return decode_event(encode_event(made))


class Chain:
    """A synthetic flood chain in jimbocho: reading → recommendation → approval → order →
    messages, with a refused approval from a field token before the accepted one."""

    def __init__(self, area: str = "jimbocho", level: int = 3, start: float = 0.0) -> None:
        self.reading = like("hazard.gauge_reading", minutes=start,
                            observed_at=at(start).isoformat())
        self.later = like("hazard.gauge_reading", minutes=start + 10,
                          observed_at=at(start + 10).isoformat())
        rec_id = uuid4()
        self.rec = like("evacuation.recommended", minutes=start + 10, cause=self.later,
                        recommendation_id=str(rec_id), area_ids=[area], level=level,
                        evidence_event_ids=[str(self.later.event_id), str(self.reading.event_id)])
        self.refused_cmd = like("evacuation.command", minutes=start + 12, action="approve",
                                operator="field-team", operator_role="field",
                                recommendation_id=str(rec_id), reason=None)
        self.refusal = like("evacuation.command_rejected", minutes=start + 12,
                            cause=self.refused_cmd,
                            command_event_id=str(self.refused_cmd.event_id),
                            recommendation_id=str(rec_id))
        self.approve = like("evacuation.command", minutes=start + 15, action="approve",
                            operator="hq-duty-officer", operator_role="hq",
                            recommendation_id=str(rec_id), reason=None)
        order_id = uuid4()
        self.order = like("evacuation.order_issued", minutes=start + 15, cause=self.approve,
                          order_id=str(order_id), area_ids=[area], level=level,
                          recommendation_id=str(rec_id), approved_at=at(start + 15).isoformat())
        self.messages = [
            like("broadcast.published", minutes=start + 15, cause=self.order, language=lang,
                 order_id=str(order_id), message_id=str(uuid4()), area_ids=[area], level=level)
            for lang in ("ja", "en")]

    def observed(self, w: float = 0.0) -> list[Observed]:
        """The chain as read from the broker: each event with its wall time (seconds)."""
        timed = [(self.reading, w), (self.later, w + 1), (self.rec, w + 1.2),
                 (self.refused_cmd, w + 3), (self.refusal, w + 3.1), (self.approve, w + 5),
                 (self.order, w + 5.3), (self.messages[0], w + 5.8), (self.messages[1], w + 6.4)]
        return [Observed(e, wall(s)) for e, s in timed]


def test_latencies_run_from_the_first_evidence_in_event_and_wall_time() -> None:
    """Evidence → recommendation → approval → order → message per language, both clocks."""
    chain = Chain()
    [built] = build_chains(chain.observed())
    assert (built.area_id, built.hazard, built.level, built.kind) == ("jimbocho", "flood", 3,
                                                                      "issue")
    assert built.evidence is not None and built.evidence.at == at(0)  # the earliest evidence
    lat = built.latencies()
    assert lat["event"] == {"recommendation": 600.0, "approval": 900.0, "order": 900.0,
                            "message_ja": 900.0, "message_en": 900.0}
    assert lat["wall"]["recommendation"] == 1.2
    assert lat["wall"]["approval"] == 5.0  # the field token's refused approval does not count
    assert lat["wall"]["message_en"] == 6.4
    assert built.outcome == "approved" and built.approved_by == "hq-duty-officer"


def test_duplicates_and_undecided_recommendations_are_handled() -> None:
    """A redelivered event counts once; a recommendation nobody decided stays open."""
    chain = Chain()
    observed = chain.observed()
    observed += [Observed(chain.rec, wall(99)), Observed(chain.order, wall(99))]
    open_chain = Chain(area="fujimi", start=30)
    observed += open_chain.observed()[:3]  # readings and the recommendation only
    built = {c.area_id: c for c in build_chains(observed)}
    assert built["jimbocho"].latencies()["wall"]["order"] == 5.3  # first copy wins
    assert built["fujimi"].outcome == "open"
    assert built["fujimi"].approved is None and built["fujimi"].order is None
    assert built["fujimi"].latencies()["event"]["approval"] is None


def test_a_lift_is_timed_from_its_last_evidence() -> None:
    """A lift's clock starts at the all-clear (its latest evidence), not the first alarm."""
    chain = Chain()
    assert isinstance(chain.order, OrderIssued)
    lift = like("evacuation.recommended", minutes=130, recommendation_id=str(uuid4()),
                kind="lift", order_id=str(chain.order.payload.order_id),
                area_ids=["jimbocho"], level=3,
                evidence_event_ids=[str(chain.reading.event_id), str(chain.later.event_id)])
    [built] = [c for c in build_chains([*chain.observed(), Observed(lift, wall(20))])
               if c.kind == "lift"]
    assert built.evidence is not None and built.evidence.at == at(10)
    assert built.latencies()["event"]["recommendation"] == 120 * 60


def test_report_groups_per_area_and_hazard_and_compares_with_the_original() -> None:
    """Chains are grouped by (area, hazard); the log's references give the original run."""
    drill = Chain(start=0)
    other = Chain(area="manseibashi", level=4, start=20)
    original = Chain(start=0)
    references = [original.rec, original.order, *original.messages]
    log = build_log([original.reading, original.later, original.approve, *references],
                    region="chiyoda", recorded_from=RecordedFrom(kind="event-store",
                                                                 namespace=""))
    shelter = [like("shelter.status_changed", minutes=m, version=v, occupancy=occ,
                    status=status, capacity=650)
               for m, v, occ, status in ((5, 1, 100, "open"), (25, 2, 540, "crowded"),
                                         (45, 3, 660, "full"))]
    observed = [*drill.observed(), *other.observed(30), *(Observed(s) for s in shelter)]
    report = build_report(observed, namespace="drill.t1", region="chiyoda", log=log,
                          run={"speed": 60, "time_mode": "shift", "hq": "replay", "sent": 3,
                               "total": 3, "skipped_commands": []})
    assert list(report.per_area()) == [("jimbocho", "flood"), ("manseibashi", "flood")]
    assert report.comparison is not None and len(report.comparison) == 1
    pair = report.comparison[0]
    assert pair.area_id == "jimbocho" and pair.delta["approval"] == 0.0
    assert report.unmatched_original == 0
    curve = report.shelters["e1310100006201"]
    assert curve["peak"] == 660 and curve["first"]["full"] == at(45)
    assert [p["occupancy"] for p in curve["points"]] == [100, 540, 660]


def test_markdown_json_and_html_are_written(tmp_path: Path) -> None:
    """report.md, report.json and a self-contained report.html with an SVG timeline."""
    chain = Chain()
    gauge = chain.reading
    report = build_report([*chain.observed(), Observed(gauge, wall(0))], namespace="drill.t2",
                          region="chiyoda")
    paths = write_report(report, tmp_path / "out")
    markdown = paths["md"].read_text(encoding="utf-8")
    assert "神保町地区 (`jimbocho`) — flood" in markdown
    assert "10m00s · 1.20s" in markdown and "15m00s · 5.00s" in markdown
    document = json.loads(paths["json"].read_text(encoding="utf-8"))
    [group] = document["per_area"]
    assert group["area_id"] == "jimbocho"
    assert group["chains"][0]["latencies_seconds"]["wall"]["order"] == 5.3
    page = paths["html"].read_text(encoding="utf-8")
    assert '<meta charset="utf-8">' in page and "<svg" in page
    assert "<script" not in page and "http://" not in page.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")
    assert render_markdown(report) == markdown and render_html(report) == page
    assert report_document(report) == document


def test_normalised_decisions_do_not_depend_on_namespaced_ids() -> None:
    """Two runs that decided the same compare equal although every id differs."""
    recorded = Chain()
    log = build_log([recorded.reading, recorded.later], region="chiyoda",
                    recorded_from=RecordedFrom(kind="scenario"))

    def run(namespace: str) -> list[str]:
        c = Chain()  # fresh ids for everything the run decided
        ids = IdMap(namespace)
        assert isinstance(recorded.rec, EvacuationRecommended)
        assert isinstance(c.rec, EvacuationRecommended)
        evidence = [str(ids(e)) for e in recorded.rec.payload.evidence_event_ids]
        c.rec = like("evacuation.recommended", minutes=10, area_ids=["jimbocho"], level=3,
                     recommendation_id=str(c.rec.payload.recommendation_id),
                     evidence_event_ids=evidence)
        return normalise((o.event for o in c.observed()), log, namespace=namespace, anchor=T0)

    first, second = run("drill.x"), run("drill.y")
    assert first == second
    decoded = [json.loads(d) for d in first]
    assert {d["type"] for d in decoded} == {"evacuation.recommended",
                                            "evacuation.command_rejected",
                                            "evacuation.order_issued", "broadcast.published"}
    order = next(d for d in decoded if d["type"] == "evacuation.order_issued")
    assert order["payload"]["recommendation_id"].startswith("rec[jimbocho/flood/L3/issue@")
    assert order["payload"]["approved_at"] == "T+900.000000s"
    rec = next(d for d in decoded if d["type"] == "evacuation.recommended")
    assert sorted(rec["payload"]["evidence_event_ids"]) == ["input#0", "input#1"]
    uuid = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
    assert not any(uuid.search(d) for d in first)
