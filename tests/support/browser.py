"""Helpers for the browser tests (no tests here): Debian's chromium driven by Playwright.

The tests FAIL (never skip) without chromium or playwright, with the command that
installs them. Screenshots and other artefacts go to ``test-artifacts/`` at the
repository root (git-ignored).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Final

import pytest

ARTIFACTS: Final = Path(__file__).resolve().parents[2] / "test-artifacts"
INSTALL: Final = ("run infra/tools/install_browser.sh as root (apt-get install -y chromium "
                  "fonts-noto-cjk; .venv/bin/pip install playwright)")
CHROMIUM_ARGS: Final = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--no-first-run",
                        "--disable-quic"]


def chromium() -> str:
    """The chromium executable, or a loud failure saying how to install it."""
    path = shutil.which("chromium")
    if path is None:
        pytest.fail(f"Debian's chromium is not installed: {INSTALL}", pytrace=False)
    try:
        import playwright  # noqa: F401
    except ImportError:
        pytest.fail(f"the playwright Python package is not installed: {INSTALL}", pytrace=False)
    return path
