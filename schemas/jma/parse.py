"""Safe parsing and XSD validation of 気象庁防災情報XML messages.

Steps, each refusing with a :mod:`schemas.jma.errors` exception:

1. **Size**: more than ``max_bytes`` → :class:`JmaTooLarge` before any parsing.
2. **Parse** with a hardened lxml parser: no network, no entity resolution, no
   DTD loading, no huge trees; any ``DOCTYPE`` is refused outright (JMA XML
   needs none, and a DTD is how XXE and entity-expansion attacks get in) →
   :class:`JmaNotWellFormed`. Then more than ``max_elements`` elements →
   :class:`JmaTooLarge` (the byte limit already bounds the tree's memory; this
   bounds the work done walking it).
3. **Validate** against JMA's schemas (``schemas/jma/xsd/jmx.xsd``, which imports
   the others by relative ``schemaLocation``). The schema files are served from
   this package by an lxml resolver, so they load from a wheel, an editable
   install or a checkout alike and never from the network. The compiled schema
   is built once, on first use, under a lock, and validation runs under the
   same lock because an ``XMLSchema`` keeps its error log on the object. Invalid
   → :class:`JmaSchemaInvalid`, each problem naming the element path and line.

:func:`parse_jma` returns the validated root element; :mod:`schemas.jma.read`
turns it into typed models.
"""

from __future__ import annotations

import re
import threading
from importlib import resources
from typing import Any, Final

from lxml import etree

from schemas.jma.errors import JmaNotWellFormed, JmaProblem, JmaSchemaInvalid, JmaTooLarge
from schemas.xml import hardened_parser

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_ELEMENTS",
    "XSD_FILES",
    "jma_schema",
    "parse_jma",
    "pointer",
]

# The largest of JMA's samples is 548 kB with ~20,000 elements (a prefecture's
# full warning state with its time series); a real message stays well inside.
DEFAULT_MAX_BYTES: Final = 4_000_000
"""Default size limit of one message, in bytes."""
DEFAULT_MAX_ELEMENTS: Final = 100_000
"""Default limit on the number of elements of one message."""

XSD_FILES: Final = frozenset({
    "jmx.xsd", "jmx_ib.xsd", "jmx_eb.xsd", "jmx_eb_nullable.xsd", "jmx_mete.xsd",
    "jmx_seis.xsd", "jmx_volc.xsd", "jmx_add.xsd",
})
"""JMA's schema files shipped in ``schemas/jma/xsd/``."""

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_MAX_PROBLEMS: Final = 20


class _PackageSchemas(etree.Resolver):  # type: ignore[misc]
    """Serves ``jmx*.xsd`` from this package, whatever URL an import names."""

    def resolve(self, system_url: str, public_id: str, context: Any) -> Any:
        name = system_url.rsplit("/", 1)[-1]
        if name not in XSD_FILES:
            return None  # falls through to the parser, which has no network
        data = resources.files("schemas.jma").joinpath("xsd", name).read_bytes()
        return self.resolve_string(data, context, base_url=name)


_schema: etree.XMLSchema | None = None
_schema_lock = threading.Lock()


def jma_schema() -> etree.XMLSchema:
    """JMA's schema set, compiled on first use (thread-safe) from the package's xsd files."""
    global _schema
    with _schema_lock:
        if _schema is None:
            root = resources.files("schemas.jma").joinpath("xsd", "jmx.xsd").read_bytes()
            parser = hardened_parser(_PackageSchemas())
            document = etree.fromstring(root, parser, base_url="jmx.xsd")
            _schema = etree.XMLSchema(document)
        return _schema


def pointer(element: Any) -> str:
    """An XPath-like path of ``element`` by local names, e.g. ``/Report/Body/Warning[2]/Item``."""
    parts: list[str] = []
    node = element
    while node is not None and isinstance(node.tag, str):
        name = etree.QName(node).localname
        parent = node.getparent()
        if parent is not None:
            same = [c for c in parent if isinstance(c.tag, str) and c.tag == node.tag]
            if len(same) > 1:
                name += f"[{same.index(node) + 1}]"
        parts.append(name)
        node = parent
    return "/" + "/".join(reversed(parts))


def _problem_pointer(document: Any, path: str | None) -> str:
    # libxml2 reports namespaced paths as "/*/*[2]/*[3]"; turn them into local names.
    if not path:
        return ""
    try:
        found = document.getroottree().xpath(path)
    except etree.XPathError:
        return path
    if found and isinstance(found, list) and etree.iselement(found[0]):
        return pointer(found[0])
    return path


def parse_jma(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    validate: bool = True,
) -> Any:
    """Parse a JMA XML message safely and validate it; return the root ``Report`` element.

    Raises :class:`JmaTooLarge`, :class:`JmaNotWellFormed` or :class:`JmaSchemaInvalid`.
    """
    if len(data) > max_bytes:
        raise JmaTooLarge(f"the message is {len(data)} bytes; the limit is {max_bytes}",
                          limit=max_bytes, actual=len(data))
    if not data.strip():
        raise JmaNotWellFormed("the message is empty; expected a JMA <Report> document")
    try:
        root = etree.fromstring(data, hardened_parser())
    except etree.XMLSyntaxError as e:
        raise JmaNotWellFormed(f"the message is not well-formed XML: {e}",
                               line=e.lineno) from None
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise JmaNotWellFormed("a DOCTYPE is not allowed in a JMA message (no DTDs, no entities)")
    for count, _ in enumerate(root.iter(), start=1):
        if count > max_elements:
            raise JmaTooLarge(f"the message has more than {max_elements} elements",
                              limit=max_elements)
    if validate:
        _validate(root)
    return root


def _validate(root: Any) -> None:
    schema = jma_schema()
    with _schema_lock:
        if schema.validate(root):
            return
        entries = list(schema.error_log)[:_MAX_PROBLEMS]
    problems = tuple(
        JmaProblem(_problem_pointer(root, e.path), _CONTROL.sub(" ", e.message)[:1000],
                   e.line, "jma_schema")
        for e in entries
    )
    first = problems[0] if problems else JmaProblem("", "invalid", None, "jma_schema")
    where = f" at {first.pointer}" if first.pointer else ""
    raise JmaSchemaInvalid(
        f"the message is not valid against JMA's schemas{where} (line {first.line}): "
        f"{first.message}",
        problems or (first,),
    )
