"""The hardened lxml parser every XML input of Sonae uses (JMA XML; CAP can share it).

No network, no entity resolution, no DTD loading, no huge trees, comments and
processing instructions dropped. Callers still refuse any ``DOCTYPE`` and
bound size and element count themselves (see :mod:`schemas.jma.parse`).
"""

from __future__ import annotations

from lxml import etree

__all__ = ["hardened_parser"]


def hardened_parser(resolver: etree.Resolver | None = None) -> etree.XMLParser:
    """A new hardened parser (lxml parsers keep state: one per document, they are cheap).

    ``resolver`` is added for schema documents whose imports must be served locally.
    """
    parser = etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )
    if resolver is not None:
        parser.resolvers.add(resolver)
    return parser
