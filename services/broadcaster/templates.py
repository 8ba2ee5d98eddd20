"""Compose public messages from the region pack's reviewed templates (pure: no I/O, no clock).

The wording lives in ``schemas/region/packs/<pack>/templates.toml`` (loaded with
:func:`load_templates`), so a ward's translators review one data file and another
municipality brings its own. This module only fills the templates in.

Per language the composer renders a **headline**, a **push** text, an **SMS**
text and the **full** text (description, instruction, sender), plus the CAP
``event``, ``description`` and ``instruction``. Rules that no template can break:

- **Drill marking**: for exercise traffic every variant in every language starts
  with the pack's drill marker (【訓練】 / [DRILL] / 【演练】 / [훈련]) and the full
  text and CAP description end with the drill notice. The marker is added here,
  not by the templates, so a template cannot forget it.
- **Length limits** (``[limits]`` in the file; SMS 70 characters in Japanese,
  Chinese and Korean, the UCS-2 single-message length): the area list is
  shortened until the text fits, in this order: the region-wide phrase when every
  district is named ("千代田区全域"), the full list, the first area and a count
  ("神田公園地区ほか2地区"), then "part of the region". The full text always
  names every area. Only if even that is too long is the text cut with "…"
  (reported in :attr:`Composed.truncated`; a unit test shows it never happens for
  the shipped packs).
- **Place names** come from the region pack's four-language names; unknown
  district ids are an error (the message could not say where), unknown shelter
  ids are left out of the list and reported in :attr:`Composed.warnings`.

Why one file over ~500 lines: the template file's model checks which
placeholders each field may use, and the composer fills exactly those; kept
together, a placeholder added to one cannot be missed by the other.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Literal, NamedTuple

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from schemas.broadcasts import BroadcastKind
from schemas.hazards import Hazard
from schemas.region import LANGUAGES, Language, Region, RegionPackError, load_pack_section
from services.broadcaster.errors import TemplateError

__all__ = [
    "ORDER_KINDS",
    "SHELTER_KINDS",
    "TEMPLATES_FILE",
    "Composed",
    "Composer",
    "OrderFacts",
    "Rendered",
    "ShelterFacts",
    "Templates",
    "load_templates",
]

TEMPLATES_FILE = "templates.toml"

ORDER_KINDS = frozenset(
    {BroadcastKind.ORDER_ISSUED, BroadcastKind.ORDER_UPDATED, BroadcastKind.ORDER_LIFTED}
)
SHELTER_KINDS = frozenset(
    {BroadcastKind.SHELTER_OPENED, BroadcastKind.SHELTER_FULL, BroadcastKind.SHELTER_CLOSED}
)

_ELLIPSIS = "…"
_FULL_MAX = 5000  # schemas.broadcasts.BroadcastPublishedPayload.full

# Placeholders each template may use. Anything else is refused when the file is
# loaded, so a typo fails at start-up, not in the middle of an emergency.
_COMMON = frozenset({"region", "sender_name"})
_ORDER_FIELDS = _COMMON | {
    "label", "action", "instruction", "hazard", "hazard_short", "areas", "shelters", "level",
}
_SHELTER_FIELDS = _COMMON | {"shelter", "district", "address"}
_WORD_FIELDS: Mapping[str, frozenset[str]] = MappingProxyType({
    "areas_more": frozenset({"first", "more", "count"}),
    "areas_all": frozenset({"region"}),
    "areas_some": frozenset({"region"}),
    "event": frozenset({"label", "hazard"}),
})


# --- the file's model -------------------------------------------------------------------


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# Not stripped: the English drill marker ends in a space on purpose.
Text = Annotated[str, StringConstraints(min_length=1, pattern=r"^[^\x00-\x09\x0b-\x1f\x7f]*$")]


class PerLanguage(_Frozen):
    """One text in each public language."""

    ja: Text
    en: Text
    zh: Text
    ko: Text

    def get(self, lang: Language) -> str:
        """The text in ``lang``."""
        value: str = getattr(self, lang)
        return value


class Limit(_Frozen):
    """A maximum length in characters, per language."""

    ja: Annotated[int, Field(ge=20, le=5000)]
    en: Annotated[int, Field(ge=20, le=5000)]
    zh: Annotated[int, Field(ge=20, le=5000)]
    ko: Annotated[int, Field(ge=20, le=5000)]

    def get(self, lang: Language) -> int:
        """The limit for ``lang``."""
        value: int = getattr(self, lang)
        return value


# The most each variant may hold on the wire (schemas.broadcasts.BroadcastPublishedPayload).
_WIRE_MAX = {"headline": 200, "push": 400, "sms": 200}


class Limits(_Frozen):
    """Length limits of the short variants."""

    headline: Limit
    push: Limit
    sms: Limit

    @field_validator("headline", "push", "sms")
    @classmethod
    def _fits_the_wire(cls, value: Limit, info: ValidationInfo) -> Limit:
        assert info.field_name is not None
        most = _WIRE_MAX[info.field_name]
        for lang in LANGUAGES:
            if value.get(lang) > most:
                raise ValueError(f"{lang}: at most {most} characters fit a published message")
        return value


class ReviewStatus(StrEnum):
    """Whether a language's wording has been reviewed by the ward."""

    REVIEWED = "reviewed"
    PENDING = "pending"


class Review(_Frozen):
    """Review status of each language's wording (shown in docs and logged at start-up)."""

    ja: ReviewStatus
    en: ReviewStatus
    zh: ReviewStatus
    ko: ReviewStatus
    note: str = ""

    def pending(self) -> tuple[Language, ...]:
        """Languages whose wording still awaits review."""
        return tuple(lang for lang in LANGUAGES if getattr(self, lang) is ReviewStatus.PENDING)


class CapSettings(_Frozen):
    """Who the CAP alerts are from."""

    # CAP 1.2 forbids spaces, commas and restricted characters (< &) in sender.
    sender: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,199}$")]
    sender_name: PerLanguage
    web: Annotated[str, StringConstraints(pattern=r"^https?://[^\s<>&]+$")] | None = None
    cancel_listed_hours: Annotated[int, Field(ge=1, le=720)] = 24
    """How long a Cancel stays in the Atom index so that polling aggregators see it."""


class Drill(_Frozen):
    """How exercise traffic is marked."""

    marker: PerLanguage
    notice: PerLanguage


class Words(_Frozen):
    """Phrases the composer joins texts with."""

    list_separator: PerLanguage
    areas_more: PerLanguage
    areas_all: PerLanguage
    areas_some: PerLanguage
    no_shelters: PerLanguage
    event: PerLanguage


class LevelWording(_Frozen):
    """The official wording of one alert level."""

    label: PerLanguage
    action: PerLanguage
    instruction: PerLanguage


class HazardWording(_Frozen):
    """A hazard's name, and a short name for SMS."""

    name: PerLanguage
    short: PerLanguage


class MessageTemplates(_Frozen):
    """The templates of one message kind."""

    headline: PerLanguage
    push: PerLanguage
    sms: PerLanguage
    description: PerLanguage
    instruction: PerLanguage


_VARIANTS = ("headline", "push", "sms", "description", "instruction")


def _placeholders(template: str) -> set[str]:
    names: set[str] = set()
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if not name or spec or conversion:
            raise ValueError(f"placeholder {{{name}}} must be a plain name like {{areas}}")
        names.add(name)
    return names


def _check_fields(where: str, texts: PerLanguage, allowed: frozenset[str]) -> None:
    for lang in LANGUAGES:
        try:
            unknown = _placeholders(texts.get(lang)) - allowed
        except ValueError as e:
            raise ValueError(f"{where}.{lang}: {e}") from None
        if unknown:
            raise ValueError(
                f"{where}.{lang}: unknown placeholder(s) "
                f"{', '.join('{' + u + '}' for u in sorted(unknown))}; "
                f"allowed: {', '.join(sorted(allowed))}"
            )


class Templates(_Frozen):
    """A pack's ``templates.toml``: wording per level, hazard and message kind in 4 languages."""

    format_version: Literal[1]
    review: Review
    limits: Limits
    cap: CapSettings
    drill: Drill
    words: Words
    levels: dict[int, LevelWording]
    hazards: dict[Hazard, HazardWording]
    messages: dict[BroadcastKind, MessageTemplates]

    @field_validator("levels")
    @classmethod
    def _three_levels(cls, value: dict[int, LevelWording]) -> dict[int, LevelWording]:
        if set(value) != {3, 4, 5}:
            raise ValueError(f"give levels 3, 4 and 5 (the levels ordered), got {sorted(value)}")
        return value

    @field_validator("hazards")
    @classmethod
    def _every_hazard(cls, value: dict[Hazard, HazardWording]) -> dict[Hazard, HazardWording]:
        missing = [h.value for h in Hazard if h not in value]
        if missing:
            raise ValueError(f"missing hazard(s): {', '.join(missing)}")
        return value

    @field_validator("messages")
    @classmethod
    def _every_kind(
        cls, value: dict[BroadcastKind, MessageTemplates]
    ) -> dict[BroadcastKind, MessageTemplates]:
        missing = [k.value for k in BroadcastKind if k not in value]
        if missing:
            raise ValueError(f"missing message kind(s): {', '.join(missing)}")
        for kind, templates in value.items():
            allowed = _ORDER_FIELDS if kind in ORDER_KINDS else _SHELTER_FIELDS
            for variant in _VARIANTS:
                _check_fields(f"{kind.value}.{variant}", getattr(templates, variant), allowed)
        return value

    @field_validator("words")
    @classmethod
    def _word_fields(cls, value: Words) -> Words:
        for name, allowed in _WORD_FIELDS.items():
            _check_fields(name, getattr(value, name), allowed)
        for name in ("list_separator", "no_shelters"):
            _check_fields(name, getattr(value, name), frozenset())
        return value


def load_templates(region: str | Path) -> Templates:
    """Load and check ``templates.toml`` of a region pack (a shipped pack's name, or a path).

    Raises a :class:`~schemas.region.RegionPackError` naming the file and field.
    """
    return load_pack_section(region, TEMPLATES_FILE, Templates)


# --- what the composer is given and gives back -------------------------------------------


@dataclass(frozen=True)
class OrderFacts:
    """What an order message says: kind, level, hazard, areas and shelters."""

    kind: BroadcastKind
    level: int
    hazard: Hazard
    area_ids: tuple[str, ...]
    shelter_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class ShelterFacts:
    """What a shelter message says: kind and shelter."""

    kind: BroadcastKind
    shelter_id: str


@dataclass(frozen=True)
class Rendered:
    """Every text of a message in one language."""

    language: Language
    headline: str
    push: str
    sms: str
    full: str
    description: str
    """CAP description (drill-marked; ends with the drill notice for exercises)."""
    instruction: str
    """CAP instruction."""
    event: str
    """CAP event, e.g. 警戒レベル4 避難指示（洪水）; empty for shelter messages."""
    sender_name: str
    area_names: tuple[tuple[str, str], ...] = ()
    """(district id, name in this language) of each area, in order."""


@dataclass(frozen=True)
class Composed:
    """A message in every language, with notes about how it was fitted."""

    exercise: bool
    texts: Mapping[Language, Rendered]
    truncated: tuple[str, ...] = ()
    """``lang.variant`` texts that had to be cut to their limit (never for shipped packs)."""
    warnings: tuple[str, ...] = ()
    """Things left out (e.g. an unknown shelter id), for the service's log."""
    notes: tuple[str, ...] = ()
    """``lang.variant: form`` where the area list was shortened."""


# --- the composer -------------------------------------------------------------------------


class Composer:
    """Renders orders and shelter news in every language from a region and its templates."""

    def __init__(self, region: Region, templates: Templates) -> None:
        self._region = region
        self._t = templates
        self._all_districts = frozenset(d.id for d in region.districts)

    @property
    def templates(self) -> Templates:
        """The templates in use."""
        return self._t

    @property
    def region(self) -> Region:
        """The region in use."""
        return self._region

    def order(self, facts: OrderFacts, *, exercise: bool) -> Composed:
        """Render an order message (issued, updated or lifted)."""
        if facts.kind not in ORDER_KINDS:
            raise TemplateError(f"{facts.kind.value} is not an order message kind")
        if facts.level not in self._t.levels:
            raise TemplateError(f"no wording for alert level {facts.level}")
        if not facts.area_ids:
            raise TemplateError("an order message needs at least one area")
        try:
            districts = [self._region.district(a) for a in facts.area_ids]
        except RegionPackError as e:
            raise TemplateError(f"cannot name the area: {e}") from e
        warnings: list[str] = []
        shelter_names: dict[Language, list[str]] = {lang: [] for lang in LANGUAGES}
        for shelter_id in facts.shelter_ids:
            try:
                site = self._region.site(shelter_id)
            except RegionPackError:
                warnings.append(f"shelter {shelter_id!r} is not in region {self._region.id!r}; "
                                "left out of the shelter list")
                continue
            for lang in LANGUAGES:
                shelter_names[lang].append(site.names.get(lang))
        level = self._t.levels[facts.level]
        hazard = self._t.hazards[facts.hazard]
        templates = self._t.messages[facts.kind]
        everywhere = frozenset(facts.area_ids) == self._all_districts
        texts: dict[Language, Rendered] = {}
        truncated: list[str] = []
        notes: list[str] = []
        for lang in LANGUAGES:
            sep = self._t.words.list_separator.get(lang)
            names = [d.names.get(lang) for d in districts]
            values = {
                **self._common(lang),
                "label": level.label.get(lang),
                "action": level.action.get(lang),
                "instruction": level.instruction.get(lang),
                "hazard": hazard.name.get(lang),
                "hazard_short": hazard.short.get(lang),
                "level": str(facts.level),
                "shelters": sep.join(shelter_names[lang])
                or self._t.words.no_shelters.get(lang),
            }
            forms = self._area_forms(lang, names, everywhere)
            full_areas = forms[0] if everywhere else sep.join(names)
            event = _fill(self._t.words.event.get(lang),
                          {"label": values["label"], "hazard": values["hazard"]})
            v = self._render(lang, templates, values, forms, full_areas, exercise,
                             truncated, notes)
            texts[lang] = Rendered(
                lang, v.headline, v.push, v.sms, v.full, v.description, v.instruction,
                event=event,
                sender_name=self._t.cap.sender_name.get(lang),
                area_names=tuple((d.id, d.names.get(lang)) for d in districts),
            )
        return Composed(exercise, MappingProxyType(texts), tuple(truncated), tuple(warnings),
                        tuple(notes))

    def shelter(self, facts: ShelterFacts, *, exercise: bool) -> Composed:
        """Render a shelter message (opened, full or closed)."""
        if facts.kind not in SHELTER_KINDS:
            raise TemplateError(f"{facts.kind.value} is not a shelter message kind")
        try:
            site = self._region.site(facts.shelter_id)
            district = self._region.district(site.district_id)
        except RegionPackError as e:
            raise TemplateError(f"cannot name the shelter: {e}") from e
        templates = self._t.messages[facts.kind]
        texts: dict[Language, Rendered] = {}
        truncated: list[str] = []
        notes: list[str] = []
        for lang in LANGUAGES:
            values = {
                **self._common(lang),
                "shelter": site.names.get(lang),
                "district": district.names.get(lang),
                "address": site.address,
            }
            v = self._render(lang, templates, values, [""], "", exercise, truncated, notes)
            texts[lang] = Rendered(
                lang, v.headline, v.push, v.sms, v.full, v.description, v.instruction,
                event="",
                sender_name=self._t.cap.sender_name.get(lang),
                area_names=((district.id, district.names.get(lang)),),
            )
        return Composed(exercise, MappingProxyType(texts), tuple(truncated), (), tuple(notes))

    # --- helpers ---

    def _common(self, lang: Language) -> dict[str, str]:
        return {"region": self._region.name(lang),
                "sender_name": self._t.cap.sender_name.get(lang)}

    def _area_forms(self, lang: Language, names: Sequence[str], everywhere: bool) -> list[str]:
        """Ways of saying the areas, longest first: each is tried until a text fits."""
        words = self._t.words
        region = self._region.name(lang)
        forms: list[str] = []
        if everywhere:
            forms.append(_fill(words.areas_all.get(lang), {"region": region}))
        forms.append(words.list_separator.get(lang).join(names))
        if len(names) > 1:
            forms.append(_fill(words.areas_more.get(lang), {
                "first": names[0], "more": str(len(names) - 1), "count": str(len(names)),
            }))
        forms.append(_fill(words.areas_some.get(lang), {"region": region}))
        return forms

    def _render(
        self,
        lang: Language,
        templates: MessageTemplates,
        values: Mapping[str, str],
        area_forms: Sequence[str],
        full_areas: str,
        exercise: bool,
        truncated: list[str],
        notes: list[str],
    ) -> _Variants:
        marker = self._t.drill.marker.get(lang) if exercise else ""
        short: dict[str, str] = {}
        for variant in ("headline", "push", "sms"):
            limit = getattr(self._t.limits, variant).get(lang)
            template = getattr(templates, variant).get(lang)
            short[variant] = _fit(marker, template, values, area_forms, limit,
                                  f"{lang}.{variant}", truncated, notes)
        long_values = {**values, "areas": full_areas}
        description = marker + _fill(templates.description.get(lang), long_values)
        instruction = _fill(templates.instruction.get(lang), long_values)
        if exercise:
            description += "\n" + self._t.drill.notice.get(lang)
        full = "\n".join((description, instruction, self._t.cap.sender_name.get(lang)))
        if len(full) > _FULL_MAX:
            full = full[: _FULL_MAX - 1] + _ELLIPSIS
            truncated.append(f"{lang}.full")
        return _Variants(short["headline"], short["push"], short["sms"], full, description,
                         instruction)


class _Variants(NamedTuple):
    headline: str
    push: str
    sms: str
    full: str
    description: str
    instruction: str


def _fill(template: str, values: Mapping[str, str]) -> str:
    # Templates were checked at load time to use only known plain placeholders.
    return template.format_map(values)


def _fit(
    marker: str,
    template: str,
    values: Mapping[str, str],
    area_forms: Iterable[str],
    limit: int,
    where: str,
    truncated: list[str],
    notes: list[str],
) -> str:
    text = ""
    for index, areas in enumerate(area_forms):
        text = marker + _fill(template, {**values, "areas": areas})
        if len(text) <= limit:
            if index:
                notes.append(f"{where}: areas as {areas!r}")
            return text
    truncated.append(where)
    return text[: limit - 1] + _ELLIPSIS
