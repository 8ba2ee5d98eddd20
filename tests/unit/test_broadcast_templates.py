"""The message composer and the packs' templates.toml: every message renders, fits and is marked."""

from __future__ import annotations

import itertools
from functools import cache
from pathlib import Path

import pytest

from schemas.broadcasts import BroadcastKind
from schemas.hazards import Hazard
from schemas.region import LANGUAGES, InvalidField, Region, load_region
from schemas.shelters import ShelterState, ShelterStatus
from services.broadcaster.domain import shelter_kind
from services.broadcaster.errors import TemplateError
from services.broadcaster.templates import (
    ORDER_KINDS,
    SHELTER_KINDS,
    Composer,
    OrderFacts,
    ShelterFacts,
    Templates,
    load_templates,
)

PACKS = ("chiyoda", "testville")
DRILL_MARKERS = {"ja": "【訓練】", "en": "[DRILL]", "zh": "【演练】", "ko": "[훈련]"}
OFFICIAL_LABELS = {
    3: {"ja": "警戒レベル3 高齢者等避難", "en": "Level 3: Elderly and others evacuate",
        "zh": "警戒等级3 高龄者等避难", "ko": "경계레벨3 고령자등피난"},
    4: {"ja": "警戒レベル4 避難指示", "en": "Level 4: Evacuation Order",
        "zh": "警戒等级4 避难指示", "ko": "경계레벨4 피난지시"},
    5: {"ja": "警戒レベル5 緊急安全確保", "en": "Level 5: Emergency Safety Measures",
        "zh": "警戒等级5 紧急安全确保", "ko": "경계레벨5 긴급안전확보"},
}


@cache
def composer(pack: str) -> Composer:
    return Composer(load_region(pack), load_templates(pack))


def area_sets(region: Region) -> list[tuple[str, ...]]:
    """Every non-empty combination of the region's districts (in pack order)."""
    ids = [d.id for d in region.districts]
    return [combo for n in range(1, len(ids) + 1) for combo in itertools.combinations(ids, n)]


@pytest.mark.parametrize("pack", PACKS)
def test_every_level_hazard_and_language_renders(pack: str) -> None:
    """Each order kind × level × hazard renders all four languages with their official label."""
    c = composer(pack)
    areas = tuple(d.id for d in c.region.districts[:2])
    shelters = tuple(s.id for s in c.region.sites if s.is_shelter)[:2]
    for kind, level, hazard in itertools.product(ORDER_KINDS, (3, 4, 5), Hazard):
        composed = c.order(OrderFacts(kind, level, hazard, areas, shelters), exercise=False)
        assert tuple(composed.texts) == LANGUAGES
        for lang, texts in composed.texts.items():
            label = OFFICIAL_LABELS[level][lang]
            assert label in texts.headline and label in texts.full and label in texts.event
            for variant in (texts.headline, texts.push, texts.sms, texts.full):
                assert variant.strip() and "{" not in variant and "}" not in variant
            assert texts.area_names == tuple((a, c.region.district(a).names.get(lang))
                                             for a in areas)
        assert composed.truncated == () and composed.warnings == ()


@pytest.mark.parametrize("pack", PACKS)
def test_place_names_come_from_the_region_pack(pack: str) -> None:
    """Areas and shelters are named in each language as the pack names them."""
    c = composer(pack)
    district = c.region.districts[0]
    shelter = next(s for s in c.region.sites if s.is_shelter)
    composed = c.order(OrderFacts(BroadcastKind.ORDER_ISSUED, 4, Hazard.FLOOD, (district.id,),
                                  (shelter.id,)), exercise=False)
    for lang, texts in composed.texts.items():
        assert district.names.get(lang) in texts.sms
        assert shelter.names.get(lang) in texts.full


@pytest.mark.parametrize("pack", PACKS)
def test_sms_fits_for_every_level_hazard_and_area_combination(pack: str) -> None:
    """SMS is ≤ 70 characters in Japanese (and within every language's limit), never cut."""
    c = composer(pack)
    limits = c.templates.limits
    assert limits.sms.ja == 70
    for areas in area_sets(c.region):
        for kind, level, hazard, drill in itertools.product(ORDER_KINDS, (3, 4, 5), Hazard,
                                                            (False, True)):
            composed = c.order(OrderFacts(kind, level, hazard, areas), exercise=drill)
            assert composed.truncated == (), (areas, kind, level, hazard, drill)
            assert len(composed.texts["ja"].sms) <= 70
            for lang, texts in composed.texts.items():
                assert len(texts.sms) <= limits.sms.get(lang)
                assert len(texts.push) <= limits.push.get(lang)
                assert len(texts.headline) <= limits.headline.get(lang)


@pytest.mark.parametrize("pack", PACKS)
def test_shelter_messages_fit_for_every_shelter(pack: str) -> None:
    """Every site's opened/full/closed message renders within the limits, drill or not."""
    c = composer(pack)
    for site, kind, drill in itertools.product(c.region.sites, SHELTER_KINDS, (False, True)):
        composed = c.shelter(ShelterFacts(kind, site.id), exercise=drill)
        assert composed.truncated == ()
        for lang, texts in composed.texts.items():
            assert site.names.get(lang) in texts.full
            assert len(texts.sms) <= c.templates.limits.sms.get(lang)


def test_long_area_lists_are_shortened_in_short_variants_only() -> None:
    """Five districts: the SMS says "first and N more", the full text names all of them."""
    c = composer("chiyoda")
    areas = tuple(d.id for d in c.region.districts[:5])
    composed = c.order(OrderFacts(BroadcastKind.ORDER_UPDATED, 3, Hazard.INLAND_FLOOD, areas),
                       exercise=True)
    en, ko = composed.texts["en"], composed.texts["ko"]
    assert "Kojimachi and 4 more" in en.sms
    assert "고지마치 지구 외 4개 지구" in ko.sms
    for district_id in areas:
        names = c.region.district(district_id).names
        assert names.en in en.full and names.ko in ko.full
    assert any(note.startswith("en.sms") for note in composed.notes)


def test_every_district_is_said_as_the_whole_region() -> None:
    """An order for every district reads "千代田区全域" / "all of Chiyoda City"."""
    c = composer("chiyoda")
    areas = tuple(d.id for d in c.region.districts)
    composed = c.order(OrderFacts(BroadcastKind.ORDER_ISSUED, 4, Hazard.EARTHQUAKE, areas),
                       exercise=False)
    assert "千代田区全域" in composed.texts["ja"].sms
    assert "all of Chiyoda City" in composed.texts["en"].headline


@pytest.mark.parametrize("pack", PACKS)
def test_drills_are_marked_in_every_language_and_variant(pack: str) -> None:
    """Exercise messages start with the drill marker and the full text carries the notice."""
    c = composer(pack)
    area = (c.region.districts[0].id,)
    site = c.region.sites[0].id
    messages = [c.order(OrderFacts(k, 4, Hazard.FLOOD, area), exercise=True) for k in ORDER_KINDS]
    messages += [c.shelter(ShelterFacts(k, site), exercise=True) for k in SHELTER_KINDS]
    for composed in messages:
        for lang, texts in composed.texts.items():
            marker = DRILL_MARKERS[lang]
            for variant in (texts.headline, texts.push, texts.sms, texts.full, texts.description):
                assert variant.startswith(marker), (lang, variant)
            assert c.templates.drill.notice.get(lang) in texts.full
            assert c.templates.drill.notice.get(lang) in texts.description


@pytest.mark.parametrize("pack", PACKS)
def test_live_messages_carry_no_drill_marking(pack: str) -> None:
    """Real messages never say drill."""
    c = composer(pack)
    composed = c.order(OrderFacts(BroadcastKind.ORDER_ISSUED, 4, Hazard.FLOOD,
                                  (c.region.districts[0].id,)), exercise=False)
    for lang, texts in composed.texts.items():
        for variant in (texts.headline, texts.push, texts.sms, texts.full):
            assert DRILL_MARKERS[lang] not in variant
        assert c.templates.drill.notice.get(lang) not in texts.full


def test_testville_templates_load_and_render_without_chiyoda() -> None:
    """Another pack's templates and names are used throughout: nothing says Chiyoda."""
    c = composer("testville")
    areas = tuple(d.id for d in c.region.districts)
    for kind in ORDER_KINDS:
        composed = c.order(OrderFacts(kind, 4, Hazard.FLOOD, areas), exercise=False)
        for texts in composed.texts.values():
            text = " ".join((texts.headline, texts.push, texts.sms, texts.full))
            for chiyoda in ("千代田", "Chiyoda", "지요다"):
                assert chiyoda not in text
    assert composed.texts["en"].sender_name == "Testville Emergency Operations Centre"
    assert c.templates.cap.sender == "urn:sonae:testville"


def test_zh_and_ko_wording_is_marked_for_translator_review() -> None:
    """The Chiyoda file says its Chinese and Korean wording awaits the ward's translators."""
    templates = load_templates("chiyoda")
    assert templates.review.pending() == ("zh", "ko")
    text = Path("schemas/region/packs/chiyoda/templates.toml").read_text(encoding="utf-8")
    assert "MUST be reviewed" in text and "translators" in text


def test_unknown_district_is_an_error_and_unknown_shelter_a_warning() -> None:
    """An order must say where; a shelter the pack lacks is left out and reported."""
    c = composer("chiyoda")
    with pytest.raises(TemplateError, match="no-such-district"):
        c.order(OrderFacts(BroadcastKind.ORDER_ISSUED, 4, Hazard.FLOOD, ("no-such-district",)),
                exercise=False)
    composed = c.order(OrderFacts(BroadcastKind.ORDER_ISSUED, 4, Hazard.FLOOD,
                                  (c.region.districts[0].id,), ("no-such-shelter",)),
                       exercise=False)
    assert any("no-such-shelter" in w for w in composed.warnings)
    assert c.templates.words.no_shelters.ja in composed.texts["ja"].full


def test_a_template_with_an_unknown_placeholder_is_refused(tmp_path: Path) -> None:
    """A typo in a placeholder fails at load time, naming the file, field and placeholder."""
    pack = tmp_path / "pack"
    pack.mkdir()
    text = Path("schemas/region/packs/testville/templates.toml").read_text(encoding="utf-8")
    broken = text.replace("{label}（{hazard}）{areas}", "{label}（{hazzard}）{areas}", 1)
    assert broken != text
    (pack / "templates.toml").write_text(broken, encoding="utf-8")
    with pytest.raises(InvalidField, match=r"templates\.toml.*messages.*hazzard"):
        load_templates(pack)


def test_templates_model_requires_every_kind_hazard_and_level() -> None:
    """The file must cover every message kind, every hazard and levels 3-5."""
    assert set(load_templates("chiyoda").messages) == set(BroadcastKind)
    fields = Templates.model_fields
    assert {"levels", "hazards", "messages", "drill", "limits", "cap"} <= set(fields)


@pytest.mark.parametrize(("previous", "status", "kind"), [
    (None, "open", BroadcastKind.SHELTER_OPENED),
    ("opening", "open", BroadcastKind.SHELTER_OPENED),
    ("closed", "crowded", BroadcastKind.SHELTER_OPENED),
    ("full", "crowded", BroadcastKind.SHELTER_OPENED),
    ("crowded", "full", BroadcastKind.SHELTER_FULL),
    ("open", "closing", BroadcastKind.SHELTER_CLOSED),
    ("full", "closed", BroadcastKind.SHELTER_CLOSED),
    ("open", "crowded", None),
    ("crowded", "open", None),
    ("closed", "opening", None),
    ("opening", "closed", None),
    ("closing", "closed", None),
    ("full", "full", None),
])
def test_shelter_changes_that_are_public_news(
    previous: str | None, status: str, kind: BroadcastKind | None
) -> None:
    """Accepting evacuees (again), full, and closing after being open are news; the rest not."""
    state = ShelterState(shelter_id="e1310100006201", version=2, status=ShelterStatus(status),
                         previous_status=ShelterStatus(previous) if previous else None,
                         name="区立スポーツセンター")
    assert shelter_kind(state) is kind


def test_limits_beyond_what_the_wire_carries_are_refused(tmp_path: Path) -> None:
    """A pack cannot allow an SMS longer than broadcast.published carries (200 characters)."""
    pack = tmp_path / "pack"
    pack.mkdir()
    text = Path("schemas/region/packs/testville/templates.toml").read_text(encoding="utf-8")
    broken = text.replace("sms = { ja = 70,", "sms = { ja = 300,", 1)
    assert broken != text
    (pack / "templates.toml").write_text(broken, encoding="utf-8")
    with pytest.raises(InvalidField, match=r"limits\.sms.*at most 200"):
        load_templates(pack)
