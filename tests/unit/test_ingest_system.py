"""System collector: node_exporter's names and kinds, values as psutil and /proc give them,
the bounds (pseudo filesystems, partitions, series and device caps, stuck mounts), named
process groups, NVML absent or present, and the push's backpressure accounting."""

from __future__ import annotations

import os
import re
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from types import SimpleNamespace
from typing import Any

import psutil
import pytest
from prometheus_client import CollectorRegistry

from monitoring.config import (
    ConfigError,
    ProcessGroup,
    Settings,
    SystemCollectorSettings,
)
from monitoring.ingest.gpu import NvmlGpus
from monitoring.ingest.outlet import Outlet, Point
from monitoring.ingest.system import CollectLoop, SystemCollector
from monitoring.sdk.sender import BufferFullError

# kinds as node_exporter 1.5 declares them (# TYPE lines of its /metrics)
NODE_KINDS = {
    "node_cpu_seconds_total": "COUNTER",
    "node_cpu_guest_seconds_total": "COUNTER",
    "node_memory_MemTotal_bytes": "GAUGE",
    "node_memory_MemAvailable_bytes": "GAUGE",
    "node_memory_SwapTotal_bytes": "GAUGE",
    "node_filesystem_size_bytes": "GAUGE",
    "node_filesystem_avail_bytes": "GAUGE",
    "node_disk_read_bytes_total": "COUNTER",
    "node_network_receive_bytes_total": "COUNTER",
    "node_load1": "GAUGE",
    "node_context_switches_total": "COUNTER",
    "node_boot_time_seconds": "GAUGE",
    "node_vmstat_pswpin": "UNTYPED",
}


def no_gpu() -> NvmlGpus:
    return NvmlGpus(nvml=_nvml_missing())


def settings(**kw: Any) -> SystemCollectorSettings:
    return SystemCollectorSettings(gpu=False, **kw)


def by_name(points: list[Point]) -> dict[str, list[Point]]:
    out: dict[str, list[Point]] = {}
    for p in points:
        out.setdefault(p.name, []).append(p)
    return out


def meminfo_bytes(field: str) -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name == field:
                return int(rest.split()[0]) * 1024
    raise KeyError(field)


@pytest.mark.skipif(not os.path.exists("/proc/meminfo"), reason="Linux /proc needed")
def test_real_host_names_kinds_and_values_match_proc() -> None:
    c = SystemCollector(settings(), gpu=no_gpu())
    points = c.collect()
    named = by_name(points)
    for name, kind in NODE_KINDS.items():
        if name.startswith("node_disk_") and not named.get(name):
            continue  # a host without a block device psutil sees
        assert name in named, name
        assert {p.kind for p in named[name]} == {kind}, name
    for p in points:  # counters end in _total, and only counters do
        assert (p.kind == "COUNTER") == p.name.endswith("_total"), p
    (total,) = named["node_memory_MemTotal_bytes"]
    assert total.value == meminfo_bytes("MemTotal")
    (swap,) = named["node_memory_SwapTotal_bytes"]
    assert swap.value == meminfo_bytes("SwapTotal")
    cpus = {p.labels["cpu"] for p in named["node_cpu_seconds_total"]}
    assert cpus == {str(i) for i in range(psutil.cpu_count())}
    modes = {p.labels["mode"] for p in named["node_cpu_seconds_total"]}
    assert {"user", "system", "idle", "iowait", "irq", "softirq", "steal", "nice"} == modes
    # counters from /proc/stat never run backwards between two readings
    again = {(p.name, tuple(sorted(p.labels.items()))): p.value for p in c.collect()}
    for p in named["node_cpu_seconds_total"]:
        assert again[(p.name, tuple(sorted(p.labels.items())))] >= p.value
    boot = named["node_boot_time_seconds"][0].value
    with open("/proc/stat") as f:
        btime = next(int(line.split()[1]) for line in f if line.startswith("btime"))
    assert abs(boot - btime) <= 1
    for p in named["node_filesystem_size_bytes"]:
        st = os.statvfs(p.labels["mountpoint"])
        assert p.value == st.f_blocks * st.f_frsize
        assert not re.match(r"^(proc|sysfs|cgroup2?|devpts|overlay)$", p.labels["fstype"])
    assert not c.errors and c.dropped == 0


# -- a fake psutil for the bounds ----------------------------------------------------------


def _cpu(**kw: float) -> SimpleNamespace:
    base = dict.fromkeys(
        ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"), 1.0
    )
    return SimpleNamespace(**{**base, **kw})


class FakeProc:
    def __init__(self, pid: int, name: str, user: float, cmd: list[str] | None = None) -> None:
        self.pid = pid
        self.info = {"name": name, "status": "running", "num_threads": 2}
        self.user = user
        self.cmd = cmd or [name]

    def oneshot(self) -> Any:
        return _Nothing()

    def create_time(self) -> float:
        return 1000.0 + self.pid

    def cpu_times(self) -> Any:
        return SimpleNamespace(user=self.user, system=self.user / 2)

    def memory_info(self) -> Any:
        return SimpleNamespace(rss=1000, vms=5000)

    def cmdline(self) -> list[str]:
        return self.cmd


class _Nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *a: object) -> None:
        return None


class FakePs:
    NoSuchProcess = psutil.NoSuchProcess
    AccessDenied = psutil.AccessDenied
    ZombieProcess = psutil.ZombieProcess

    def __init__(self, cores: int = 2, nics: int = 2) -> None:
        self.cores = cores
        self.nics = nics
        self.procs: list[FakeProc] = []
        self.partitions = [
            ("/dev/sda1", "/", "ext4"),
            ("proc", "/proc", "proc"),
            ("sysfs", "/sys", "sysfs"),
            ("tmpfs", "/dev/shm", "tmpfs"),
            ("overlay", "/var/lib/docker/overlay2/x/merged", "overlay"),
            ("cgroup2", "/sys/fs/cgroup", "cgroup2"),
            ("tmpfs", "/run", "tmpfs"),
            ("tmpfs", "/run", "tmpfs"),  # listed twice: one series
        ]

    def cpu_times(self, percpu: bool = False) -> Any:
        return [_cpu() for _ in range(self.cores)] if percpu else _cpu(user=self.cores)

    def virtual_memory(self) -> Any:
        return SimpleNamespace(total=8e9, free=1e9, available=4e9)

    def swap_memory(self) -> Any:
        return SimpleNamespace(total=2e9, free=1e9, sin=8192, sout=4096)

    def disk_partitions(self, all: bool = False) -> list[Any]:
        return [SimpleNamespace(device=d, mountpoint=m, fstype=t) for d, m, t in self.partitions]

    def disk_io_counters(self, perdisk: bool = False) -> dict[str, Any]:
        c = SimpleNamespace(read_count=1, write_count=2, read_bytes=512, write_bytes=1024)
        return {d: c for d in ("sda", "sda1", "nvme0n1", "nvme0n1p2", "loop0", "ram1", "vdb")}

    def net_io_counters(self, pernic: bool = False) -> dict[str, Any]:
        c = SimpleNamespace(bytes_recv=10, bytes_sent=20, packets_recv=1, packets_sent=2)
        return {f"eth{i}": c for i in range(self.nics)}

    def getloadavg(self) -> tuple[float, float, float]:
        return (0.5, 0.25, 0.125)

    def cpu_stats(self) -> Any:
        return SimpleNamespace(ctx_switches=100, interrupts=50)

    def boot_time(self) -> float:
        return 1_700_000_000.0

    def process_iter(self, attrs: list[str]) -> Iterator[FakeProc]:
        return iter(list(self.procs))


@pytest.fixture
def statvfs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    called: list[str] = []

    def fake(path: str) -> Any:
        called.append(path)
        return SimpleNamespace(
            f_frsize=4096, f_bsize=4096, f_blocks=100, f_bfree=40, f_bavail=30,
            f_files=1000, f_ffree=900, f_flag=0,
        )  # fmt: skip

    monkeypatch.setattr(os, "statvfs", fake)
    return called


def test_pseudo_filesystems_and_partitions_excluded_like_node_exporter(
    statvfs: list[str],
) -> None:
    c = SystemCollector(settings(), gpu=no_gpu(), ps=FakePs())
    named = by_name(c.collect())
    mounts = sorted(p.labels["mountpoint"] for p in named["node_filesystem_size_bytes"])
    assert mounts == ["/", "/run"]  # proc, sys, /dev, docker overlays, cgroups excluded
    assert sorted(statvfs) == ["/", "/run"]
    (root,) = (p for p in named["node_filesystem_avail_bytes"] if p.labels["mountpoint"] == "/")
    assert root.value == 30 * 4096 and root.labels == {
        "device": "/dev/sda1",
        "fstype": "ext4",
        "mountpoint": "/",
    }
    disks = sorted(p.labels["device"] for p in named["node_disk_read_bytes_total"])
    assert disks == ["nvme0n1", "sda", "vdb"]  # partitions, loop and ram devices excluded
    assert named["node_disk_read_bytes_total"][0].kind == "COUNTER"
    assert named["node_vmstat_pswpin"][0].value == 8192 // os.sysconf("SC_PAGE_SIZE")


def test_series_and_devices_are_capped_and_counted(statvfs: list[str]) -> None:
    ps = FakePs(cores=64, nics=50)
    c = SystemCollector(settings(max_devices=4), gpu=no_gpu(), ps=ps)
    named = by_name(c.collect())
    assert {p.labels["cpu"] for p in named["node_cpu_seconds_total"]} == {"0", "1", "2", "3"}
    assert len({p.labels["device"] for p in named["node_network_receive_bytes_total"]}) == 4
    assert c.dropped == 60 * 8 + 46 * 4  # 60 cores x 8 modes, 46 interfaces x 4 counters
    capped = SystemCollector(settings(max_series=10), gpu=no_gpu(), ps=ps)
    points = capped.collect()
    assert len(points) == 10 and capped.dropped > 0
    assert points[0].name == "node_cpu_seconds_total"  # the order is fixed: CPU first


def test_stuck_filesystem_is_given_up_and_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    calls: list[str] = []

    def hanging(path: str) -> Any:
        calls.append(path)
        release.wait(30)
        raise OSError("released")

    monkeypatch.setattr(os, "statvfs", hanging)
    ps = FakePs()
    ps.partitions = [("server:/export", "/mnt/nfs", "nfs4")]
    c = SystemCollector(settings(stat_timeout="50ms"), gpu=no_gpu(), ps=ps)
    try:
        assert "node_filesystem_size_bytes" not in by_name(c.collect())
        assert c.stuck == {"/mnt/nfs"}
        c.collect()
        assert calls == ["/mnt/nfs"]  # not tried again
    finally:
        release.set()


def test_named_process_groups_keep_cpu_counters_across_exits(statvfs: list[str]) -> None:
    ps = FakePs()
    groups = [
        ProcessGroup(name="web", comm=["nginx"]),
        ProcessGroup(name="jobs", cmdline=r"celery\s+worker"),
    ]
    c = SystemCollector(settings(processes=groups), gpu=no_gpu(), ps=ps)
    ps.procs = [
        FakeProc(1, "nginx", 10.0),
        FakeProc(2, "nginx", 5.0),
        FakeProc(3, "python3", 7.0, ["python3", "-m", "celery", "worker"]),
        FakeProc(4, "bash", 100.0),
    ]

    def cpu(points: list[Point], group: str, mode: str = "user") -> float:
        (p,) = (
            p
            for p in points
            if p.name == "namedprocess_namegroup_cpu_seconds_total"
            and p.labels == {"groupname": group, "mode": mode}
        )
        assert p.kind == "COUNTER"
        return p.value

    first = c.collect()
    assert cpu(first, "web") == 15.0 and cpu(first, "web", "system") == 7.5
    assert cpu(first, "jobs") == 7.0
    procs = {
        p.labels["groupname"]: p.value for p in by_name(first)["namedprocess_namegroup_num_procs"]
    }
    assert procs == {"web": 2, "jobs": 1}
    rss = [
        p.value
        for p in by_name(first)["namedprocess_namegroup_memory_bytes"]
        if p.labels == {"groupname": "web", "memtype": "resident"}
    ]
    assert rss == [2000]
    ps.procs = [FakeProc(1, "nginx", 12.0)]  # pid 2 exited: its 5 s stay counted
    second = c.collect()
    assert cpu(second, "web") == 17.0
    states = by_name(second)["node_processes_state"]
    assert [(p.labels, p.value) for p in states] == [({"state": "R"}, 1.0)]


# -- NVML -----------------------------------------------------------------------------------


class _NVMLError(Exception):
    pass


class _NotSupported(_NVMLError):
    pass


def _nvml_missing() -> Any:
    def init() -> None:
        raise _NVMLError("NVML Shared Library Not Found")

    return SimpleNamespace(
        nvmlInit=init, NVMLError=_NVMLError, NVMLError_NotSupported=_NotSupported
    )


def test_no_nvml_means_no_gpu_series_and_no_error(statvfs: list[str]) -> None:
    gpu = NvmlGpus(nvml=_nvml_missing())
    c = SystemCollector(SystemCollectorSettings(gpu=True), gpu=gpu, ps=FakePs())
    points = c.collect()
    assert not gpu.available and "Not Found" in gpu.reason
    assert not [p for p in points if p.name.startswith("DCGM_")]
    assert "gpu" not in c.errors


def test_real_pynvml_without_a_driver_is_cleanly_absent() -> None:
    gpu = NvmlGpus()
    if gpu.open():  # a machine with a GPU: read it for real
        assert gpu.read()
        gpu.close()
        return
    assert gpu.read() == [] and gpu.reason


def test_nvml_device_readings_are_dcgm_gauges(statvfs: list[str]) -> None:
    def temperature(h: str, sensor: int) -> int:
        return 61

    def power(h: str) -> int:
        raise _NotSupported()  # left out, not an error

    fake = SimpleNamespace(
        NVMLError=_NVMLError,
        NVMLError_NotSupported=_NotSupported,
        nvmlInit=lambda: None,
        nvmlShutdown=lambda: None,
        nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetHandleByIndex=lambda i: f"h{i}",
        nvmlDeviceGetUUID=lambda h: "GPU-1234",
        nvmlDeviceGetName=lambda h: b"Tesla T4",
        nvmlDeviceGetUtilizationRates=lambda h: SimpleNamespace(gpu=87, memory=40),
        nvmlDeviceGetMemoryInfo=lambda h: SimpleNamespace(used=2**30, free=3 * 2**30),
        nvmlDeviceGetTemperature=temperature,
        nvmlDeviceGetPowerUsage=power,
        nvmlDeviceGetClockInfo=lambda h, t: 1590,
    )
    gpu = NvmlGpus(nvml=fake)
    c = SystemCollector(SystemCollectorSettings(gpu=True), gpu=gpu, ps=FakePs())
    named = by_name(c.collect())
    labels = {"gpu": "0", "UUID": "GPU-1234", "modelName": "Tesla T4"}
    assert [(p.labels, p.value, p.kind) for p in named["DCGM_FI_DEV_GPU_UTIL"]] == [
        (labels, 87.0, "GAUGE")
    ]
    assert named["DCGM_FI_DEV_FB_USED"][0].value == 1024.0  # MiB, as dcgm-exporter
    assert named["DCGM_FI_DEV_GPU_TEMP"][0].value == 61.0
    assert "DCGM_FI_DEV_POWER_USAGE" not in named
    assert gpu.errors == 0


# -- push and backpressure --------------------------------------------------------------------


class Recorder:
    """Stands in for MetricsCollector: raises BufferFullError ``full`` times first."""

    def __init__(self, full: int = 0) -> None:
        self.full = full
        self.got: list[tuple[str, float, dict[str, str], int | None, str]] = []

    def record(
        self,
        name: str,
        value: float,
        labels: Mapping[str, str] | None = None,
        timestamp_ms: int | None = None,
        kind: str = "GAUGE",
        unit: str = "",
    ) -> bool:
        if self.full:
            self.full -= 1
            raise BufferFullError("full")
        self.got.append((name, value, dict(labels or {}), timestamp_ms, kind))
        return True


def test_collect_loop_labels_and_pushes_every_point(statvfs: list[str]) -> None:
    registry = CollectorRegistry()
    rec = Recorder(full=3)  # the buffer is full for a while: the push waits, sends all
    outlet = Outlet(rec, registry, "system", give_up_s=60)
    c = SystemCollector(settings(), gpu=no_gpu(), ps=FakePs())
    loop = CollectLoop(c, outlet, 60.0, {"job": "node", "instance": "h1"}, registry)
    result = loop.once(timestamp_ms=1_700_000_000_000)
    assert result.unsent == 0 and result.sent == len(rec.got) > 40
    assert {r[3] for r in rec.got} == {1_700_000_000_000}
    assert all(r[2]["job"] == "node" and r[2]["instance"] == "h1" for r in rec.got)
    assert Counter(r[4] for r in rec.got)["COUNTER"] > 0
    sent = registry.get_sample_value(
        "monitoring_ingest_samples_total", {"source": "system", "outcome": "sent"}
    )
    assert sent == result.sent
    assert registry.get_sample_value("monitoring_collector_collections_total") == 1


def test_a_buffer_that_stays_full_is_counted_not_dropped_silently() -> None:
    registry = CollectorRegistry()
    outlet = Outlet(Recorder(full=10**9), registry, "system", give_up_s=0.0)
    points = [Point("up", {}, "GAUGE", 1.0), Point("up", {"a": "b"}, "GAUGE", 1.0)]
    result = outlet.push(points, 1_700_000_000_000)
    assert (result.sent, result.unsent) == (0, 2)
    assert (
        registry.get_sample_value(
            "monitoring_ingest_samples_total", {"source": "system", "outcome": "unsent"}
        )
        == 2
    )


def test_invalid_points_are_counted() -> None:
    from monitoring.sdk.producer import make_series

    class Validating(Recorder):
        def record(self, name: str, value: float, *a: Any, **kw: Any) -> bool:
            make_series(name, a[0] if a else None)
            return super().record(name, value, *a, **kw)

    registry = CollectorRegistry()
    outlet = Outlet(Validating(), registry, "system")
    result = outlet.push([Point("bad name", {}, "GAUGE", 1.0), Point("ok", {}, "GAUGE", 1)], 1)
    assert (result.sent, result.invalid) == (1, 1)


def test_settings_validate_regexes_and_groups(tmp_path: Any) -> None:
    f = tmp_path / "m.yaml"
    f.write_text("system_collector:\n  fs_types_exclude: '(unclosed'\n")
    with pytest.raises(ConfigError, match="fs_types_exclude"):
        Settings.load(f)
    f.write_text("system_collector:\n  processes:\n    - name: web\n")
    with pytest.raises(ConfigError, match="comm names or a cmdline"):
        Settings.load(f)
    f.write_text(
        "collection:\n  interval: 60s\n  batch_size: 1000\n"
        "system_collector:\n  processes:\n    - {name: web, comm: [nginx]}\n"
    )
    s = Settings.load(f)
    assert s.collection.interval.total_seconds() == 60 and s.collection.batch_size == 1000
    assert s.system_collector.processes[0].comm == ["nginx"]


def test_the_system_dashboard_charts_the_names_and_labels_the_collector_sends(
    statvfs: list[str],
) -> None:
    """The shipped System dashboard's disk and network panels (those by ``instance``)
    query names the collector sends, grouped and named by labels its series carry
    (``job`` and ``instance`` are the collect loop's)."""
    from monitoring.ui.dashboards import SHIPPED_DIR, DashboardStore

    points = SystemCollector(settings(), gpu=no_gpu(), ps=FakePs()).collect()
    names = {p.name for p in points}
    labels = {k for p in points for k in p.labels} | {"job", "instance"}
    dashboard = DashboardStore("/nonexistent", SHIPPED_DIR).get("system")
    assert dashboard is not None
    queries = [q for p in dashboard.panels() for q in p.queries if "instance" in q.promql]
    assert len(queries) >= 6
    used = {n for q in queries for n in re.findall(r"\bnode_\w+", q.promql)}
    assert used and used <= names, used - names
    grouped = {
        g.strip() for q in queries for m in re.findall(r"by \(([^)]*)\)", q.promql)
        for g in m.split(",")
    }  # fmt: skip
    shown = {g for q in queries for g in re.findall(r"\{\{(\w+)\}\}", q.legend)}
    assert grouped | shown <= labels, (grouped | shown) - labels
