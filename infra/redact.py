"""Passwords out of everything a person reads: the one masking function for URLs.

A database URL may carry its password (``postgresql://user:secret@host/db`` or
``...?password=secret``). Whatever prints or logs a URL — ``sonae up``, ``sonae
status``, settings errors, start-up errors, every log line (:mod:`infra.logs`) —
passes the text through :func:`mask_passwords` first, so the password never reaches a
terminal, a log file or a bug report. The text keeps everything else (user, host, port,
database), because that is what an operator needs to see which server was meant.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["MASK", "mask_passwords"]

MASK: Final = "***"
"""What a password is replaced by."""

# scheme://user:password@ — the password runs to the last "@" before the path, so an
# unencoded "@" in it is masked too (as urllib and libpq read such a URL).
_USERINFO: Final = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@\s]*:)(?P<password>[^/?#\s]*)@")
# password=... as a URL query parameter (libpq reads it there too) or a keyword DSN.
_PARAMETER: Final = re.compile(r"(?P<head>\bpassword=)(?P<password>[^&\s'\"]*)",
                               re.IGNORECASE)


def mask_passwords(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``."""
    text = _USERINFO.sub(lambda m: f"{m['head']}{MASK}@", text)
    return _PARAMETER.sub(lambda m: f"{m['head']}{MASK}", text)
