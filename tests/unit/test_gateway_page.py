"""The dashboard and portal page: one element per id, and every id the scripts look up."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

STATIC = Path(__file__).resolve().parents[2] / "services" / "gateway" / "static"


def test_every_id_on_the_page_is_unique_and_every_looked_up_id_exists() -> None:
    """Two elements with one id make getElementById return the first: a panel's list that
    shares the residents' form's id wipes the form when the panel is filled."""
    ids = re.findall(r'\bid="([^"]+)"', (STATIC / "index.html").read_text(encoding="utf-8"))
    twice = sorted(i for i, n in Counter(ids).items() if n > 1)
    assert not twice, f"ids used more than once in index.html: {twice}"
    looked_up = {m for name in ("app.js", "portal.js")
                 for m in re.findall(r'getElementById\("([^"]+)"\)',
                                     (STATIC / name).read_text(encoding="utf-8"))}
    assert not looked_up - set(ids), f"looked up but not on the page: {looked_up - set(ids)}"
