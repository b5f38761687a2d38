"""The system collector through the real broker: ``monitoring collect system --once``
sends MetricBatch records whose samples are what /proc says, with node_exporter's names
and kinds and the job and instance labels."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from fixtures.ingest import consume_samples
from typer.testing import CliRunner

from monitoring.cli import app
from monitoring.config import Settings
from monitoring.metrics.samples import BATCH, Sample
from monitoring.runtime.topics import SAMPLES, topic_name

pytestmark = pytest.mark.integration


def meminfo_bytes(field: str) -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name == field:
                return int(rest.split()[0]) * 1024
    raise KeyError(field)


def test_collect_system_once_lands_on_the_samples_topic(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    # a process group of one process of a name nothing else has (not the test's own
    # process: Faust's worker, run in-process by earlier tests, retitles it)
    sleeper = tmp_path / "mon-sleeper"
    shutil.copy("/bin/sleep", sleeper)
    child = subprocess.Popen([str(sleeper), "300"])
    try:
        _collect_and_check(settings_factory())
    finally:
        child.kill()
        child.wait()


def _collect_and_check(settings: Settings) -> None:
    topic = topic_name(settings.kafka, SAMPLES)
    env = {
        "MONITORING_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "MONITORING_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
        "MONITORING_COLLECTION__BATCH_SIZE": "25",
        "MONITORING_SYSTEM_COLLECTOR__GPU": "false",
        "MONITORING_SYSTEM_COLLECTOR__PROCESSES": '[{"name": "sleepers", "comm": ["mon-sleeper"]}]',
    }
    result = CliRunner().invoke(app, ["collect", "system", "--once"], env=env)
    assert result.exit_code == 0, result.output
    sent = int(result.output.split("sent=")[1].split()[0])
    assert sent > 50 and "unsent=0 invalid=0" in result.output

    got = consume_samples(settings.kafka.bootstrap_servers, topic, lambda s: len(s) >= sent)
    assert len(got) == sent
    assert {name for name, _ in got} == {BATCH}
    samples: dict[str, list[Sample]] = {}
    for _, s in got:
        samples.setdefault(s.name, []).append(s)
    host = socket.gethostname()
    for _, s in got:
        assert s.labels["job"] == "node" and s.labels["instance"] == host, s
    assert len({s.timestamp_ms for _, s in got}) == 1  # one collection, one timestamp
    (total,) = samples["node_memory_MemTotal_bytes"]
    assert total.value == meminfo_bytes("MemTotal") and total.kind == "GAUGE"
    cpu = samples["node_cpu_seconds_total"]
    assert {s.labels["cpu"] for s in cpu} == {str(i) for i in range(psutil.cpu_count())}
    assert {s.kind for s in cpu} == {"COUNTER"}
    now_user = psutil.cpu_times(percpu=True)[0].user
    (user0,) = (s for s in cpu if s.labels["cpu"] == "0" and s.labels["mode"] == "user")
    assert 0 < user0.value <= now_user  # a counter read before this one
    (procs,) = samples["namedprocess_namegroup_num_procs"]
    assert procs.labels["groupname"] == "sleepers" and procs.value == 1
    root = [s for s in samples["node_filesystem_size_bytes"] if s.labels["mountpoint"] == "/"]
    if root:
        st = os.statvfs("/")
        assert root[0].value == st.f_blocks * st.f_frsize
