"""System collector: the host's metrics through psutil, named as node_exporter names them.

One ``collect()`` reads CPU (``node_cpu_seconds_total{cpu,mode}`` per core, and
``system_cpu_seconds_total{mode}`` over all cores, which node_exporter leaves to
``sum without (cpu)``), memory and swap (``node_memory_*_bytes``), filesystems
(``node_filesystem_*{device,fstype,mountpoint}``), disk and network counters
(``node_disk_*``, ``node_network_*{device}``), load (``node_load1/5/15``), process
counts (``node_processes_state{state}``, ``node_processes_threads``), context switches,
interrupts and boot time, the named process groups of the configuration
(process-exporter's ``namedprocess_namegroup_*{groupname}``), and NVIDIA GPUs when
NVML finds one (``gpu.py``). Kinds are what node_exporter declares (counters end in
``_total``; ``node_vmstat_*`` are untyped).

Bounded: node_exporter's exclusions of pseudo filesystems, partitions and loop
devices; at most ``max_devices`` entries of each per-device family and ``max_series``
series per collection (the rest counted in ``dropped``); a filesystem whose ``statvfs``
hangs (a dead NFS server) is given up after ``stat_timeout`` and skipped afterwards,
as node_exporter's stuck mounts are.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import psutil
import re2
from prometheus_client import CollectorRegistry, Metric
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from monitoring.config import ProcessGroup, SystemCollectorSettings
from monitoring.ingest.gpu import NvmlGpus
from monitoring.ingest.outlet import Outlet, Point, PushResult
from monitoring.ingest.ticker import Ticker
from monitoring.log import get_logger

log = get_logger("ingest.system")

GAUGE, COUNTER, UNTYPED = "GAUGE", "COUNTER", "UNTYPED"
CPU_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
# psutil's status names as the kernel's state letters (node_exporter's processes collector)
STATE_LETTERS = {
    "running": "R",
    "sleeping": "S",
    "disk-sleep": "D",
    "stopped": "T",
    "tracing-stop": "t",
    "zombie": "Z",
    "dead": "X",
    "wake-kill": "K",
    "waking": "W",
    "idle": "I",
    "parked": "P",
}
MEMORY_FIELDS = (  # node_memory_<X>_bytes from psutil.virtual_memory()'s field
    ("MemTotal", "total"),
    ("MemFree", "free"),
    ("MemAvailable", "available"),
    ("Buffers", "buffers"),
    ("Shmem", "shared"),
    ("Active", "active"),
    ("Inactive", "inactive"),
    ("Slab", "slab"),
)
DISK_FIELDS = (  # node_disk_<x>, psutil field, scale
    ("reads_completed_total", "read_count", 1.0),
    ("writes_completed_total", "write_count", 1.0),
    ("read_bytes_total", "read_bytes", 1.0),
    ("written_bytes_total", "write_bytes", 1.0),
    ("read_time_seconds_total", "read_time", 0.001),
    ("write_time_seconds_total", "write_time", 0.001),
    ("reads_merged_total", "read_merged_count", 1.0),
    ("writes_merged_total", "write_merged_count", 1.0),
    ("io_time_seconds_total", "busy_time", 0.001),
)
NET_FIELDS = (  # node_network_<x>, psutil field
    ("receive_bytes_total", "bytes_recv"),
    ("transmit_bytes_total", "bytes_sent"),
    ("receive_packets_total", "packets_recv"),
    ("transmit_packets_total", "packets_sent"),
    ("receive_errs_total", "errin"),
    ("transmit_errs_total", "errout"),
    ("receive_drop_total", "dropin"),
    ("transmit_drop_total", "dropout"),
)
MAX_TRACKED_PIDS = 10_000  # per process group, for counters that survive exits
MAX_STUCK_MOUNTS = 1_000


class _Points:
    """A list of points that takes at most ``cap``; the rest are counted."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.items: list[Point] = []
        self.dropped = 0

    def add(self, name: str, labels: dict[str, str], kind: str, value: float) -> None:
        if len(self.items) < self.cap:
            self.items.append(Point(name, labels, kind, float(value)))
        else:
            self.dropped += 1


class _Group:
    """A named process group's CPU counters, kept monotonic across process exits
    (what exited processes used stays in ``dead_*``, as process-exporter does)."""

    def __init__(self, spec: ProcessGroup) -> None:
        self.name = spec.name
        self.comm = frozenset(spec.comm)
        self.cmdline = re2.compile(spec.cmdline) if spec.cmdline else None
        self.live: dict[tuple[int, float], tuple[float, float]] = {}
        self.dead_user = self.dead_system = 0.0


class SystemCollector:
    """Reads the host into a list of ``Point`` per call; not thread-safe."""

    def __init__(
        self,
        settings: SystemCollectorSettings,
        *,
        gpu: NvmlGpus | None = None,
        ps: Any = psutil,
    ) -> None:
        self.settings = settings
        self.ps = ps
        self.fs_types_exclude = _regex(settings.fs_types_exclude)
        self.mount_points_exclude = _regex(settings.mount_points_exclude)
        self.disk_exclude = _regex(settings.disk_devices_exclude)
        self.net_exclude = _regex(settings.network_devices_exclude)
        self.groups = [_Group(g) for g in settings.processes]
        self.gpu = gpu if gpu is not None else NvmlGpus()
        if settings.gpu and self.gpu.open():
            log.info("NVML: GPU series on")
        elif settings.gpu:
            log.info("no GPU series", reason=self.gpu.reason)
        self.stuck: set[str] = set()
        self.dropped = 0  # series beyond the bounds, over all collections
        self.errors: dict[str, int] = {}
        self._pagesize = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def close(self) -> None:
        self.gpu.close()

    def collect(self) -> list[Point]:
        """One reading of everything, in a fixed order (CPU first)."""
        out = _Points(self.settings.max_series)
        for section, read in (
            ("cpu", self._cpu),
            ("memory", self._memory),
            ("filesystem", self._filesystems),
            ("disk", self._disks),
            ("network", self._network),
            ("load", self._load),
            ("stat", self._stat),
            ("processes", self._processes),
            ("gpu", self._gpus),
        ):
            try:
                read(out)
            except Exception as e:  # one failing source must not silence the others
                n = self.errors[section] = self.errors.get(section, 0) + 1
                if n == 1 or n % 100 == 0:
                    log.warning("system read failed", section=section, error=repr(e), errors=n)
        self.dropped += out.dropped
        return out.items

    # -- sources ---------------------------------------------------------------------------

    def _cpu(self, out: _Points) -> None:
        per_cpu = self.ps.cpu_times(percpu=True)
        for i, t in enumerate(per_cpu[: self.settings.max_devices]):
            labels_cpu = str(i)
            for mode in CPU_MODES:
                v = getattr(t, mode, None)
                if v is not None:
                    out.add("node_cpu_seconds_total", {"cpu": labels_cpu, "mode": mode}, COUNTER, v)
            for mode, field in (("user", "guest"), ("nice", "guest_nice")):
                v = getattr(t, field, None)
                if v is not None:
                    out.add(
                        "node_cpu_guest_seconds_total",
                        {"cpu": labels_cpu, "mode": mode},
                        COUNTER,
                        v,
                    )
        for t in per_cpu[self.settings.max_devices :]:  # counted in series, not cores
            out.dropped += sum(getattr(t, m, None) is not None for m in CPU_MODES)
        total = self.ps.cpu_times(percpu=False)
        for mode in CPU_MODES:
            v = getattr(total, mode, None)
            if v is not None:
                out.add("system_cpu_seconds_total", {"mode": mode}, COUNTER, v)

    def _memory(self, out: _Points) -> None:
        vm = self.ps.virtual_memory()
        for name, field in MEMORY_FIELDS:
            v = getattr(vm, field, None)
            if v is not None:
                out.add(f"node_memory_{name}_bytes", {}, GAUGE, v)
        sw = self.ps.swap_memory()
        out.add("node_memory_SwapTotal_bytes", {}, GAUGE, sw.total)
        out.add("node_memory_SwapFree_bytes", {}, GAUGE, sw.free)
        # node_exporter's vmstat counts pages, and declares them untyped
        out.add("node_vmstat_pswpin", {}, UNTYPED, sw.sin // self._pagesize)
        out.add("node_vmstat_pswpout", {}, UNTYPED, sw.sout // self._pagesize)

    def _filesystems(self, out: _Points) -> None:
        seen: set[tuple[str, str, str]] = set()
        n = 0
        for part in self.ps.disk_partitions(all=True):
            labels = (part.device, part.fstype, part.mountpoint)
            if (
                labels in seen
                or self.fs_types_exclude.search(part.fstype)
                or self.mount_points_exclude.search(part.mountpoint)
                or part.mountpoint in self.stuck
            ):
                continue
            seen.add(labels)
            if n >= self.settings.max_devices:
                out.dropped += 1
                continue
            n += 1
            st = self._statvfs(part.mountpoint)
            if st is None:
                continue
            lab = {"device": part.device, "fstype": part.fstype, "mountpoint": part.mountpoint}
            bs = st.f_frsize or st.f_bsize
            out.add("node_filesystem_size_bytes", lab, GAUGE, st.f_blocks * bs)
            out.add("node_filesystem_free_bytes", lab, GAUGE, st.f_bfree * bs)
            out.add("node_filesystem_avail_bytes", lab, GAUGE, st.f_bavail * bs)
            out.add("node_filesystem_files", lab, GAUGE, st.f_files)
            out.add("node_filesystem_files_free", lab, GAUGE, st.f_ffree)
            out.add("node_filesystem_readonly", lab, GAUGE, 1 if st.f_flag & os.ST_RDONLY else 0)

    def _statvfs(self, path: str) -> os.statvfs_result | None:
        """statvfs in a thread, given up after ``stat_timeout`` (and the mount skipped)."""
        box: list[Any] = []

        def run() -> None:
            try:
                box.append(os.statvfs(path))
            except OSError as e:
                box.append(e)

        t = threading.Thread(target=run, name="statvfs", daemon=True)
        t.start()
        t.join(self.settings.stat_timeout.total_seconds())
        if not box:
            if len(self.stuck) < MAX_STUCK_MOUNTS:
                self.stuck.add(path)
            log.warning("filesystem stat timed out; skipping this mount", mountpoint=path)
            return None
        r = box[0]
        return None if isinstance(r, OSError) else r

    def _disks(self, out: _Points) -> None:
        disks = self.ps.disk_io_counters(perdisk=True) or {}
        self._per_device(out, disks, self.disk_exclude, "node_disk_", DISK_FIELDS)

    def _network(self, out: _Points) -> None:
        nics = self.ps.net_io_counters(pernic=True) or {}
        fields = tuple((name, field, 1.0) for name, field in NET_FIELDS)
        self._per_device(out, nics, self.net_exclude, "node_network_", fields)

    def _per_device(
        self,
        out: _Points,
        devices: dict[str, Any],
        exclude: Any,
        prefix: str,
        fields: Iterable[tuple[str, str, float]],
    ) -> None:
        fields = tuple(fields)
        n = 0
        for device in sorted(devices):
            if exclude is not None and exclude.search(device):
                continue
            counters = devices[device]
            if n >= self.settings.max_devices:
                out.dropped += sum(getattr(counters, f, None) is not None for _, f, _ in fields)
                continue
            n += 1
            lab = {"device": device}
            for name, field, scale in fields:
                v = getattr(counters, field, None)
                if v is not None:
                    out.add(prefix + name, lab, COUNTER, v * scale)

    def _load(self, out: _Points) -> None:
        l1, l5, l15 = self.ps.getloadavg()
        out.add("node_load1", {}, GAUGE, l1)
        out.add("node_load5", {}, GAUGE, l5)
        out.add("node_load15", {}, GAUGE, l15)

    def _stat(self, out: _Points) -> None:
        st = self.ps.cpu_stats()
        out.add("node_context_switches_total", {}, COUNTER, st.ctx_switches)
        out.add("node_intr_total", {}, COUNTER, st.interrupts)
        out.add("node_boot_time_seconds", {}, GAUGE, self.ps.boot_time())

    def _processes(self, out: _Points) -> None:
        states: dict[str, int] = {}
        threads = 0
        members: list[list[tuple[Any, Any]]] = [[] for _ in self.groups]
        for p in self.ps.process_iter(["name", "status", "num_threads"]):
            info = p.info
            status = info.get("status")
            if status is None:
                continue  # gone or unreadable between the listing and the read
            letter = STATE_LETTERS.get(status, "?")
            states[letter] = states.get(letter, 0) + 1
            threads += info.get("num_threads") or 0
            name = info.get("name") or ""
            cmd: str | None = None  # read once, only if a group needs it
            for gi, g in enumerate(self.groups):
                if name in g.comm:
                    members[gi].append((p, info))
                elif g.cmdline is not None:
                    if cmd is None:
                        cmd = " ".join(_cmdline(p))
                    if g.cmdline.search(cmd):
                        members[gi].append((p, info))
        for letter in sorted(states):
            out.add("node_processes_state", {"state": letter}, GAUGE, states[letter])
        out.add("node_processes_threads", {}, GAUGE, threads)
        for g, procs in zip(self.groups, members, strict=True):
            self._group(out, g, procs)

    def _group(self, out: _Points, g: _Group, procs: list[tuple[Any, Any]]) -> None:
        live: dict[tuple[int, float], tuple[float, float]] = {}
        rss = vms = 0.0
        threads = counted = 0
        for p, info in procs:
            try:
                with p.oneshot():
                    key = (p.pid, p.create_time())
                    t = p.cpu_times()
                    mem = p.memory_info()
            except (self.ps.NoSuchProcess, self.ps.AccessDenied, self.ps.ZombieProcess):
                continue
            if len(live) < MAX_TRACKED_PIDS:
                live[key] = (t.user, t.system)
            counted += 1
            rss += mem.rss
            vms += mem.vms
            threads += info.get("num_threads") or 0
        for key, (user, system) in g.live.items():
            if key not in live:  # exited: its time stays in the group's counter
                g.dead_user += user
                g.dead_system += system
        g.live = live
        lab = {"groupname": g.name}
        user = g.dead_user + sum(u for u, _ in live.values())
        system = g.dead_system + sum(s for _, s in live.values())
        out.add("namedprocess_namegroup_num_procs", lab, GAUGE, counted)
        out.add("namedprocess_namegroup_num_threads", lab, GAUGE, threads)
        out.add("namedprocess_namegroup_cpu_seconds_total", {**lab, "mode": "user"}, COUNTER, user)
        out.add(
            "namedprocess_namegroup_cpu_seconds_total", {**lab, "mode": "system"}, COUNTER, system
        )
        for memtype, v in (("resident", rss), ("virtual", vms)):
            out.add("namedprocess_namegroup_memory_bytes", {**lab, "memtype": memtype}, GAUGE, v)

    def _gpus(self, out: _Points) -> None:
        for p in self.gpu.read():
            out.add(p.name, dict(p.labels), p.kind, p.value)


def _cmdline(p: Any) -> list[str]:
    try:
        return list(p.cmdline())
    except Exception:
        return []


def _regex(pattern: str) -> Any:
    return re2.compile(pattern) if pattern else None


class CollectLoop:
    """Collect every ``interval_s`` (deadlines without drift, ``ticker.py``) and push
    through ``outlet``; a full SDK buffer blocks the push, so collection slows down.
    Its own counts go to ``registry``."""

    def __init__(
        self,
        collector: SystemCollector,
        outlet: Outlet,
        interval_s: float,
        labels: dict[str, str],
        registry: CollectorRegistry,
    ) -> None:
        self.collector = collector
        self.outlet = outlet
        self.interval_s = interval_s
        self.labels = labels
        self.ticker = Ticker(interval_s)
        self.collections = 0
        self.last_cpu_s = 0.0
        self.cpu_s = 0.0
        g = GaugeMetricFamily
        registry.register(
            _LoopMetrics(
                lambda: [
                    CounterMetricFamily(
                        "monitoring_collector_collections",
                        "System collections done.",
                        value=self.collections,
                    ),
                    CounterMetricFamily(
                        "monitoring_collector_missed_intervals",
                        "Intervals skipped because the previous collection (or its push "
                        "into a full buffer) overran them.",
                        value=self.ticker.missed,
                    ),
                    CounterMetricFamily(
                        "monitoring_collector_series_dropped",
                        "Series beyond system_collector.max_series or max_devices.",
                        value=self.collector.dropped,
                    ),
                    CounterMetricFamily(
                        "monitoring_collector_cpu_seconds",
                        "CPU time spent collecting (this thread).",
                        value=self.cpu_s,
                    ),
                    g(
                        "monitoring_collector_gpu_available",
                        "1 when NVML found a GPU.",
                        value=1.0 if self.collector.gpu.available else 0.0,
                    ),
                ]
            )
        )

    def once(self, timestamp_ms: int | None = None) -> PushResult:
        """One collection, pushed at ``timestamp_ms`` (default: the collection's start)."""
        ts = time.time_ns() // 1_000_000 if timestamp_ms is None else timestamp_ms
        cpu0 = time.thread_time()
        points = self.collector.collect()
        if self.labels:
            points = [p._replace(labels={**p.labels, **self.labels}) for p in points]
        result = self.outlet.push(points, ts)
        self.last_cpu_s = time.thread_time() - cpu0
        self.cpu_s += self.last_cpu_s
        self.collections += 1
        return result

    def run(self, stop: threading.Event) -> None:
        """Collect at every deadline until ``stop`` is set."""
        while not stop.wait(self.ticker.remaining()):
            try:
                self.once()
            except Exception as e:  # ProducerClosedError at shutdown, or a bug: log, go on
                if stop.is_set():
                    return
                log.error("system collection failed", error=repr(e))
            self.ticker.advance()


class _LoopMetrics:
    def __init__(self, read: Callable[[], list[Metric]]) -> None:
        self._read = read

    def collect(self) -> Iterable[Metric]:
        return self._read()
