"""A JMA Atom feed as entries (pure: bytes in, entries out).

JMA's feeds (``regular.xml``, ``extra.xml``, ``eqvol.xml`` and their ``_l`` long
versions) are Atom 1.0: each ``entry`` has an ``id``, a ``title`` that is the
message's ``Control/Title`` (気象警報・注意報（Ｈ２７）, 震度速報, …), an ``updated``
time and a ``link`` to the message itself. The title is enough to pick the data
types a region asks for without fetching anything else.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from lxml import etree

from schemas.jma import DataType, data_type_of
from schemas.xml import hardened_parser
from services.jma_feed.errors import FeedUnreadable

__all__ = ["ATOM_NS", "FeedEntry", "read_feed", "wanted"]

ATOM_NS: Final = "http://www.w3.org/2005/Atom"
_NS: Final = {"a": ATOM_NS}
_MAX_FEED_BYTES: Final = 8 * 1024 * 1024
"""JMA's long feeds run to about a megabyte."""


@dataclass(frozen=True)
class FeedEntry:
    """One entry of a feed."""

    entry_id: str
    title: str
    updated: datetime | None
    link: str
    data_type: DataType | None
    """What the title says the message is (None: a data type Sonae does not read)."""


def _text(element: Any, path: str) -> str:
    return " ".join(str(element.findtext(path, default="", namespaces=_NS)).split())


def _time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


def read_feed(data: bytes) -> tuple[FeedEntry, ...]:
    """The feed's entries with a link, oldest first (raise :class:`FeedUnreadable`)."""
    if len(data) > _MAX_FEED_BYTES:
        raise FeedUnreadable(f"the feed is larger than {_MAX_FEED_BYTES} bytes")
    try:
        root = etree.fromstring(data, hardened_parser())
    except etree.XMLSyntaxError as e:
        raise FeedUnreadable(f"the feed is not well-formed XML: {e}") from None
    if root.getroottree().docinfo.doctype:
        raise FeedUnreadable("a DOCTYPE is not allowed in a feed (no DTDs, no entities)")
    if root.tag != f"{{{ATOM_NS}}}feed":
        raise FeedUnreadable(f"expected an Atom <feed>, got <{etree.QName(root).localname}>")
    entries = []
    for entry in root.findall("a:entry", namespaces=_NS):
        links = entry.findall("a:link", namespaces=_NS)
        href = next((str(link.get("href")) for link in links if link.get("href")), "")
        if not href:
            continue
        title = _text(entry, "a:title")
        entries.append(FeedEntry(
            entry_id=_text(entry, "a:id") or href, title=title,
            updated=_time(_text(entry, "a:updated")), link=href,
            data_type=data_type_of(title)))
    # Oldest first, so that a warning's versions reach intake in the order issued.
    entries.sort(key=lambda e: (e.updated is None, e.updated.timestamp() if e.updated else 0))
    return tuple(entries)


def wanted(entries: Iterable[FeedEntry], data_types: Sequence[DataType]) -> list[FeedEntry]:
    """The entries of the data types the region pack asks for."""
    asked = set(data_types)
    return [e for e in entries if e.data_type is not None and e.data_type in asked]
