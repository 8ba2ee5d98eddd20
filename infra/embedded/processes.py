"""Child processes that never outlive their parent.

Every embedded part (broker, PostgreSQL, each service) is started in its own
process group and asks the kernel to signal it when its parent dies
(``PR_SET_PDEATHSIG``), so a crash or SIGKILL of ``sonae up`` or of a test
session leaves nothing behind. A normal stop signals the whole group and
escalates to SIGKILL after a deadline.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

_PR_SET_PDEATHSIG = 1


class EmbeddedError(RuntimeError):
    """Base for embedded-stack failures; the message says what to do."""


class PortInUse(EmbeddedError):
    """The port an embedded part should listen on is taken."""


class BinaryNotFound(EmbeddedError):
    """A server binary the embedded stack needs is not installed."""


class StaleState(EmbeddedError):
    """A lock, pid file or data directory from an earlier run is in the way."""


class StartFailed(EmbeddedError):
    """A part did not become ready before its deadline or exited early."""


def death_signal_setter(sig: int) -> Callable[[], None]:
    """Return a ``preexec_fn`` that arms the parent-death signal in the child.

    It must run after the child's setuid (which clears the setting); CPython's
    ``preexec_fn`` does run after ``user=`` is applied.
    """

    def arm() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        # The parent may have died between fork and prctl; then nobody would signal us.
        if os.getppid() == 1:
            os.kill(os.getpid(), sig)

    return arm


def spawn(
    argv: Sequence[str],
    *,
    log: IO[bytes] | int | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
    death_signal: int = signal.SIGTERM,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new process group that dies with this process."""
    return subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=log if log is not None else subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        # Drop root's groups too: with gid 0 the group bits of root-owned parents apply.
        user=user,
        group=_primary_group(user),
        extra_groups=[] if user is not None else None,
        process_group=0,
        preexec_fn=death_signal_setter(death_signal),
    )


def _primary_group(user: str | None) -> int | None:
    return pwd.getpwnam(user).pw_gid if user is not None else None


def stop_group(
    proc: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, timeout: float = 10.0
) -> int | None:
    """Signal the process group of ``proc``, wait, and SIGKILL it after ``timeout``."""
    if proc.poll() is not None:
        _kill_group(proc.pid, signal.SIGKILL)  # reap stragglers of an exited leader
        return proc.returncode
    _kill_group(proc.pid, sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid, signal.SIGKILL)
        return proc.wait(5)


def _kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def process_alive(pid: int | None) -> bool:
    """True when ``pid`` is a running process (a zombie counts as gone)."""
    if pid is None or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    # A zombie still answers kill(0) until its parent reaps it.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def port_is_free(host: str, port: int) -> bool:
    """True when nothing accepts connections on ``host:port`` and we could bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """An ephemeral port that was free a moment ago (for tests and side-by-side stacks)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def require_free_port(host: str, port: int, what: str, setting: str) -> None:
    """Raise :class:`PortInUse` with the fix spelled out when the port is taken."""
    if not port_is_free(host, port):
        raise PortInUse(
            f"{what} cannot listen on {host}:{port}: the port is in use. Stop whatever holds it "
            f"(`ss -ltnp 'sport = :{port}'`), or choose another port with {setting}."
        )


def wait_until(
    check: Callable[[], bool],
    *,
    deadline: float,
    proc: subprocess.Popen[bytes] | None = None,
    what: str,
    log_tail: Callable[[], str] = lambda: "",
) -> None:
    """Poll ``check`` until true; fail early if ``proc`` exits, and at the deadline."""
    end = time.monotonic() + deadline
    while True:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            raise StartFailed(
                f"{what} exited with status {proc.returncode} before it was ready."
                + _tail_suffix(log_tail())
            )
        if time.monotonic() >= end:
            raise StartFailed(
                f"{what} was not ready within {deadline:.0f}s." + _tail_suffix(log_tail())
            )
        time.sleep(0.05)


def _tail_suffix(tail: str) -> str:
    return f"\n--- last lines of its log ---\n{tail}" if tail.strip() else ""


def tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a log file, or '' when it does not exist."""
    try:
        data = path.read_bytes()[-8192:]
    except FileNotFoundError:
        return ""
    return "\n".join(data.decode("utf-8", "replace").splitlines()[-lines:])


def tcp_ready(host: str, port: int) -> bool:
    """True when a TCP connection to ``host:port`` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False
