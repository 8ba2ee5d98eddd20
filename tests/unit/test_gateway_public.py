"""The public documents (snapshot, shelter list), the portal's strings, manifest and icons."""

from __future__ import annotations

import json
import struct
import uuid
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from infra.tools.build_icons import build
from schemas.broadcasts import BroadcastKind
from schemas.envelope import new_event
from schemas.evacuation import RecommendationKind, RecommendationOutcome
from schemas.examples import EXAMPLES, example
from schemas.hazards import Hazard
from schemas.people import AtHomeNeed, HouseholdNeed, WelfareCheckOutcome
from schemas.region import load_region
from schemas.reports import ReportAccepted, ReportCategory
from schemas.shelters import ShelterStatus
from schemas.supplies import FuelType, GeneratorState, SupplyItem, SupplyRequestStatus, Urgency
from services.gateway.cop import COP, RegionIndex
from services.gateway.errors import BadPublicRequest, TooManyAreas, UnknownArea
from services.gateway.public import (
    MAX_AREAS,
    PublicDocuments,
    etag_matches,
    public_areas,
    shelter_list,
    snapshot_document,
)
from services.gateway.reducer import reduce
from services.gateway.views import Audience, Viewer, view_state

REGION = load_region()
INDEX = RegionIndex.from_region(REGION)
AREAS = [d.id for d in REGION.districts]
STATIC = resources.files("services.gateway").joinpath("static")
# What must never leave for the public: people's names, free text, casualties, teams.
PRIVATE = ("佐藤", "reporter", "description", "casualties", "occupancy", "special_care",
           "rationale", "recommendation", "last_reported_by", "deliveries")


def fold(events: list[Any], cop: COP | None = None) -> COP:
    """Fold events into a picture."""
    cop = cop or COP.empty(INDEX)
    for event in events:
        cop, _ = reduce(cop, event)
    return cop


def named_report(area: str) -> ReportAccepted:
    """An accepted report in ``area`` naming its reporter, with a description."""
    body = example("report.accepted").payload.model_dump(mode="json")
    body.update(report_id=str(uuid.uuid4()), area_id=area)
    body["report"] = {**body["report"], "area_id": area, "description": "冠水 住所 佐藤宅前",
                      "reporter": {"team": "神田公園地区 防災会", "name": "佐藤 花子"}}
    return new_event(ReportAccepted, body, occurred_at=example("report.accepted").occurred_at,
                     source="intake")


def everything() -> COP:
    """A picture that has seen every example event and named reports in every area."""
    return fold([*EXAMPLES.values(), *(named_report(a) for a in AREAS)])


def test_public_snapshot_holds_only_public_kinds_and_no_personal_data() -> None:
    """Whatever the picture holds, the snapshot document carries public kinds only."""
    cop = everything()
    hq = json.dumps(view_state(cop, Viewer(Audience.HQ)), ensure_ascii=False)
    assert all(word in hq for word in PRIVATE)  # the picture does hold each of them
    for areas in (None, frozenset(AREAS[:1]), frozenset(AREAS[:3])):
        doc = snapshot_document(cop, areas)
        text = doc.body.decode("utf-8")
        assert not [word for word in PRIVATE if word in text], text
        state = json.loads(text)["state"]
        assert set(state) == {"meta", "area", "order", "shelter", "message"}


def test_an_area_snapshot_has_only_that_areas_entities() -> None:
    """A snapshot for some areas leaves out other areas' shelters and area entities."""
    cop = everything()
    state = json.loads(snapshot_document(cop, frozenset({"jimbocho"})).body)["state"]
    assert set(state["area"]) == {"jimbocho"}
    assert {s["area_id"] for s in state["shelter"].values()} <= {"jimbocho"}


def test_the_tag_follows_the_public_view_not_the_log() -> None:
    """Same public view, same bytes and tag; a report (not public) keeps it; an order changes it."""
    cop = everything()
    first = snapshot_document(cop, None)
    assert snapshot_document(cop, None) == first
    assert first.etag.startswith('"') and not first.etag.startswith('W/')
    with_report = fold([named_report("kanda-koen")], cop)
    assert with_report is not cop
    assert snapshot_document(with_report, None) == first
    order = example("evacuation.order_issued")
    body = {**order.payload.model_dump(mode="json"), "order_id": str(uuid.uuid4())}
    changed = fold([new_event(type(order), body, occurred_at=order.occurred_at,
                              source=order.source)], cop)
    assert snapshot_document(changed, None).etag != first.etag


def test_documents_are_encoded_once_per_picture() -> None:
    """The memo answers the same object for the same picture and a new one for a new picture."""
    documents = PublicDocuments()
    cop = everything()
    one = documents.snapshot(cop, None)
    assert documents.snapshot(cop, None) is one
    assert documents.snapshot(cop, frozenset({"jimbocho"})) is not one
    later = fold([named_report("jimbocho")], cop)
    assert documents.snapshot(later, None) is not one
    assert documents.snapshot(later, None) == one


def test_if_none_match_uses_weak_comparison_over_a_list() -> None:
    """A listed, weak-prefixed or wildcard tag matches; another tag or none does not."""
    tag = '"abc"'
    assert etag_matches('"abc"', tag)
    assert etag_matches('"x", W/"abc"', tag)
    assert etag_matches("*", tag)
    assert not etag_matches('"abd"', tag)
    assert not etag_matches(None, tag)
    assert not etag_matches("", tag)


def test_area_filter_is_checked_and_named() -> None:
    """No area means ward-wide; unknown ids and more than three are refused naming 'area'."""
    assert public_areas([], AREAS) is None
    assert public_areas(["jimbocho,kanda-koen", "jimbocho"], AREAS) == {"jimbocho",
                                                                         "kanda-koen"}
    with pytest.raises(UnknownArea, match=r"area: unknown area id.*nowhere"):
        public_areas(["nowhere"], AREAS)
    with pytest.raises(TooManyAreas, match=f"area: at most {MAX_AREAS}"):
        public_areas([",".join(AREAS[:4])], AREAS)
    assert issubclass(UnknownArea, BadPublicRequest)


def test_shelter_list_has_every_site_with_address_and_designations() -> None:
    """The offline list: every site of the pack, its names, address and hazards."""
    doc = json.loads(shelter_list(REGION).body)
    assert doc["timezone"] == "Asia/Tokyo"
    assert len(doc["sites"]) == len(REGION.sites)
    by_id = {s["id"]: s for s in doc["sites"]}
    for site in REGION.sites:
        entry = by_id[site.id]
        assert entry["address"] == site.address
        assert entry["names"]["en"] == site.names.en
        assert entry["hazards"] == sorted(h.value for h in site.hazards)
        assert entry.get("accessible") == site.accessible  # facilities only
    assert by_id["ts-ogawamachi"]["kinds"] == ["temporary_stay"]
    assert by_id["ts-ogawamachi"]["accessible"] is False


def strings() -> dict[str, Any]:
    """The page's strings file."""
    return dict(json.loads(STATIC.joinpath("i18n.json").read_text(encoding="utf-8")))


def test_every_category_hazard_and_status_is_translated_in_four_languages() -> None:
    """Each enum value the page shows has a non-empty string in ja, en, zh and ko."""
    doc = strings()["strings"]
    names = ({c.value for c in ReportCategory} | {h.value for h in Hazard}
             | {s.value for s in ShelterStatus} | {k.value for k in BroadcastKind}
             | {k.value for k in RecommendationKind} | {o.value for o in RecommendationOutcome}
             | {"pending", "approved", "ordered", "active", "lifted"}
             | {f"L{n}" for n in (3, 4, 5)} | {f"todo_L{n}" for n in (3, 4, 5)} | {"todo_none"}
             # People and supplies, prefixed as app.js looks them up.
             | {f"supply_{s.value}" for s in SupplyRequestStatus}
             | {f"urgency_{u.value}" for u in Urgency} | {f"item_{i.value}" for i in SupplyItem}
             | {f"gen_{g.value}" for g in GeneratorState} | {"gen_unknown"}
             | {f"fuel_{f.value}" for f in FuelType}
             | {f"need_{n.value}" for n in (*AtHomeNeed, *HouseholdNeed)}
             | {f"welfare_{o.value}" for o in WelfareCheckOutcome} | {"welfare_pending"}
             | {f"{role.value}_view" for role in Audience})
    assert set(doc) == {"ja", "en", "zh", "ko"}
    keys = set(doc["ja"])
    for lang, table in doc.items():
        assert set(table) == keys, lang
        missing = sorted(n for n in names if not table.get(n))
        assert missing == [], (lang, missing)


def test_zh_and_ko_strings_stay_marked_for_translator_review() -> None:
    """The strings file marks zh and ko pending, and the page has a note to show for them."""
    doc = strings()
    assert {k for k, v in doc["review"].items() if v == "pending"} == {"zh", "ko"}
    assert doc["strings"]["zh"]["review_note"] and doc["strings"]["ko"]["review_note"]


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_checked_in_icons_are_the_generated_ones_and_match_the_manifest(tmp_path: Path) -> None:
    """The icons in the repo equal a fresh build; the manifest's sizes are theirs."""
    built = {p.name: p.read_bytes() for p in build(tmp_path)}
    manifest = json.loads(STATIC.joinpath("manifest.webmanifest").read_text(encoding="utf-8"))
    assert manifest["start_url"] == "/" and manifest["display"] == "standalone"
    for entry in manifest["icons"]:
        name = entry["src"].removeprefix("/icons/")
        shipped = STATIC.joinpath("icons").joinpath(name).read_bytes()
        assert shipped == built[name], name
        width, height = png_size(shipped)
        assert entry["sizes"] == f"{width}x{height}"
    assert {e["purpose"] for e in manifest["icons"]} == {"any", "maskable"}
