"""気象庁防災情報XML (JMA disaster-prevention XML): the format as a contract.

Both intake (``POST /v1/jma``) and a feed poller read JMA messages; services may
not import each other, so the reader lives here:

- :func:`parse_jma` (:mod:`schemas.jma.parse`): safe parse and XSD validation;
- :func:`read_jma` (:mod:`schemas.jma.read`): bytes → a typed, frozen
  :class:`JmaMessage` (:mod:`schemas.jma.model`);
- :func:`map_message` (:mod:`schemas.jma.mapping`): a message and the region's
  JMA code table → :class:`JmaSignals` (``hazard.warning`` /
  ``hazard.seismic_intensity`` payloads, cancellations, or why it was ignored);
- :func:`load_jma_table` (:mod:`schemas.jma.areas`): the region pack's ``jma.toml``.

Refusals raise :class:`JmaError` subclasses (:mod:`schemas.jma.errors`).
See docs/jma.md. 出典：気象庁（防災情報XMLフォーマット）.
"""

from schemas.jma.areas import JMA_TABLE_FILE, JmaAreaTable, load_jma_table
from schemas.jma.errors import (
    JmaError,
    JmaNotWellFormed,
    JmaProblem,
    JmaSchemaInvalid,
    JmaTooLarge,
    JmaUnsupported,
)
from schemas.jma.mapping import (
    JmaSignals,
    KindRule,
    KindTable,
    default_kinds,
    map_message,
    message_id,
)
from schemas.jma.model import DataType, InfoType, JmaMessage, JmaStatus
from schemas.jma.parse import DEFAULT_MAX_BYTES, DEFAULT_MAX_ELEMENTS, jma_schema, parse_jma
from schemas.jma.read import data_type_of, read_jma, read_report

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_ELEMENTS",
    "JMA_TABLE_FILE",
    "DataType",
    "InfoType",
    "JmaAreaTable",
    "JmaError",
    "JmaMessage",
    "JmaNotWellFormed",
    "JmaProblem",
    "JmaSchemaInvalid",
    "JmaSignals",
    "JmaStatus",
    "JmaTooLarge",
    "JmaUnsupported",
    "KindRule",
    "KindTable",
    "data_type_of",
    "default_kinds",
    "jma_schema",
    "load_jma_table",
    "map_message",
    "message_id",
    "parse_jma",
    "read_jma",
    "read_report",
]
