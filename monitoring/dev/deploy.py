"""A local deployment of the pipeline's processes, for the demo, benchmarks and tests.

``LocalDeployment`` runs ``monitoring worker`` and ``monitoring store run`` as
subprocesses configured through MONITORING_* environment variables (a topic prefix
and a chDB directory of their own), kills or stops them, and queries the store over
its HTTP endpoint (the process that owns the embedded ClickHouse).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from monitoring.config import Settings
from monitoring.runtime import topics
from monitoring.runtime.admin import ensure_topics
from monitoring.runtime.kafka_client import client_config
from monitoring.sinks.clickhouse.query_server import query_store

BIN = Path(sys.executable).parent / "monitoring"
ROLES = {
    "worker": ["worker"],
    "store": ["store", "run"],
    "alerting": ["alerts", "evaluate"],
    "notifier": ["alerts", "notify"],
    "ui": ["ui"],
}


def free_port() -> int:
    """A TCP port on loopback that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def env_settings(env: dict[str, str]) -> Settings:
    """Settings as a process started with ``env`` would load them."""
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        return Settings.load(None)
    finally:
        os.environ.clear()
        os.environ.update(saved)


class LocalDeployment:
    """Worker and store processes of one pipeline, isolated by topic prefix and data dir.

    Example::

        d = LocalDeployment("127.0.0.1:9092", Path("/tmp/demo"))
        d.start_store(); d.start("worker", "worker")
        d.query("SELECT count() FROM aggregates FINAL")
    """

    def __init__(
        self,
        bootstrap: str,
        directory: Path,
        prefix: str | None = None,
        query_port: int | None = None,
        **overrides: str,
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.dir = directory
        self.prefix = prefix or f"e{uuid.uuid4().hex[:10]}."
        self.query_port = query_port or free_port()
        (directory / "settings.yaml").write_text("{}\n")
        self.env = {
            **os.environ,
            "MONITORING_CONFIG": str(directory / "settings.yaml"),
            "MONITORING_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            "MONITORING_KAFKA__TOPIC_PREFIX": self.prefix,
            "MONITORING_STORAGE__DSN": f"chdb://{directory / 'chdb'}",
            "MONITORING_STORAGE__QUERY_PORT": str(self.query_port),
            "MONITORING_STORAGE__FLUSH_INTERVAL": "500ms",
            "MONITORING_WORKER__METRICS_PORT": "0",
            "MONITORING_ALERTING__METRICS_PORT": "0",
            "MONITORING_AGGREGATION__CHECKPOINT_INTERVAL": "500ms",
            "MONITORING_AGGREGATION__IDLE_TIMEOUT": "6s",
            "MONITORING_ANOMALY__CHECKPOINT_INTERVAL": "500ms",
        }
        self.env.update({f"MONITORING_{k.upper()}": v for k, v in overrides.items()})
        self.settings = env_settings(self.env)
        ensure_topics(self.settings)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.stores: set[str] = set()

    def topic(self, role: str) -> str:
        """Full name of a topic role (``metrics.late``, ...)."""
        return self.prefix + role

    def start(self, role: str, name: str, **env: str) -> subprocess.Popen[bytes]:
        """Start ``monitoring <role>`` as process ``name``; its log is ``<dir>/<name>.log``."""
        log = open(self.dir / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
        extra = {f"MONITORING_{k.upper()}": v for k, v in env.items()}
        proc = subprocess.Popen(
            [str(BIN), *ROLES[role]], env={**self.env, **extra}, stdout=log, stderr=log
        )
        self.procs[name] = proc
        if role == "store":
            self.stores.add(name)
        return proc

    def start_store(self, name: str = "store", timeout: float = 90) -> subprocess.Popen[bytes]:
        """Start the store and wait until its query endpoint is healthy."""
        proc = self.start("store", name)
        self.wait(self.healthy, timeout, f"store healthy (log: {self.dir / (name + '.log')})")
        return proc

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal process ``name`` (SIGKILL by default) and wait for it to exit."""
        proc = self.procs[name]
        proc.send_signal(sig)
        proc.wait(60)

    def stop_all(self, timeout: float = 30) -> None:
        """SIGTERM every process, SIGKILL those that do not exit in time."""
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)

    def delete_topics(self) -> list[str]:
        """Delete this deployment's topics (every name with its prefix); the names.
        About 20 topics and 100 partitions a deployment: a shared broker that keeps
        those of a few hundred runs fails to load its log directory (open files)."""
        from monitoring.runtime.admin import delete_topics, list_topics

        k = self.settings.kafka
        return delete_topics(k, list_topics(k, self.prefix))

    def healthy(self) -> bool:
        """Whether the store's query endpoint answers /healthz with 200."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.query_port}/healthz", timeout=2
            ) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def query(self, sql: str) -> list[list[Any]]:
        """Rows of a read-only query, answered by the store process."""
        result = query_store("127.0.0.1", self.query_port, sql, timeout=60)
        if result is None:
            raise ConnectionError(
                f"no store answers on 127.0.0.1:{self.query_port}: {self._stores()}"
            )
        return list(result["rows"])

    def _stores(self) -> str:
        """What became of the store processes, with the end of their logs."""
        out = []
        for name, p in self.procs.items():
            if name in self.stores:
                code = p.poll()
                state = "running" if code is None else f"exited with {code}"
                log = self.dir / f"{name}.log"
                tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
                out.append(f"{name} (pid {p.pid}) {state}; its log ends:\n{tail}")
        return "\n".join(out) or "no store started"

    def drained(
        self,
        worker: Sequence[str] = (topics.SAMPLES,),
        store: Sequence[str] = (topics.SAMPLES, topics.AGGREGATES),
    ) -> bool:
        """Whether the worker committed every record now on its input topics ``worker``
        and the store every record now on ``store`` (topic roles): nothing more is on
        its way. The defaults are the metrics path; the logs path, for instance, is
        ``drained(worker=[LOGS], store=[LOG_STORED, LOG_TEMPLATES, SAMPLES])``."""
        from monitoring.runtime.faust_app import BrokerOffsets

        k = self.settings.kafka
        # a transactional writer's (the evaluator's) commit marker at the end is never
        # handed to a reader, so a group's committed offset stops before it
        offsets = BrokerOffsets(k)
        try:
            return self._drained(offsets.drained, worker, store)
        finally:
            offsets.close()

    def _drained(
        self,
        between: Callable[[str, int, int, int], bool],
        worker: Sequence[str],
        store: Sequence[str],
    ) -> bool:
        from confluent_kafka import Consumer, TopicPartition

        from monitoring.sinks.clickhouse.store import store_group

        k = self.settings.kafka
        groups = {
            f"{self.prefix}worker": [topics.topic_name(k, t) for t in worker],
            store_group(self.settings): [topics.topic_name(k, t) for t in store],
        }
        parts = {t: range(self._partitions(t)) for names in groups.values() for t in names}
        for group, names in groups.items():
            c = Consumer(client_config(k, **{"group.id": group}))
            try:
                tps = [TopicPartition(t, p) for t in names for p in parts[t]]
                for tp in c.committed(tps, timeout=10):
                    end = c.get_watermark_offsets(tp, timeout=10, cached=False)[1]
                    if (
                        end > 0
                        and tp.offset < end
                        and (tp.offset < 0 or not between(tp.topic, tp.partition, tp.offset, end))
                    ):
                        return False
            finally:
                c.close()
        return True

    def _partitions(self, topic: str) -> int:
        from monitoring.runtime.admin import list_topics

        return list_topics(self.settings.kafka, prefix=topic)[topic]

    def wait(self, cond: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``cond`` until true; fail early if a process crashed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return
            for name, p in self.procs.items():
                if p.poll() not in (None, 0, -signal.SIGKILL, -signal.SIGTERM):
                    raise RuntimeError(f"{name} exited with {p.returncode}: see {self.dir}")
            time.sleep(0.5)
        raise TimeoutError(f"timed out after {timeout}s waiting for {what}")

    def logs(self, tail: int = 3000) -> str:
        """The end of every process log, for failure messages."""
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-tail:]}"
            for p in sorted(self.dir.glob("*.log"))
        )
