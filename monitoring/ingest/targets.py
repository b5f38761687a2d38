"""Scrape targets: target groups (static and file_sd) to labelled targets, as Prometheus
2.42's ``PopulateLabels`` makes them.

A target starts with its group's labels, ``__address__``, and (unless set) ``job``,
``__scrape_interval__``, ``__scrape_timeout__``, ``__metrics_path__``, ``__scheme__``
and one ``__param_<name>`` per configured param; ``relabel_configs`` run on that; a
target without ``__address__`` afterwards is an error, one a keep/drop step removed is
dropped. Then the port is defaulted (80 for http, 443 for https: 2.42's behaviour),
``__meta_*`` labels are removed, ``instance`` defaults to ``__address__``, and the
labels not starting with ``__`` are the ones every scraped sample gets.

File SD files (JSON or YAML lists of ``{targets, labels}``) are read with their size
bounded; one that cannot be read or parsed keeps the targets it gave last time, as
Prometheus does. Their paths are resolved against the scrape config's folder.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote, urlencode

import yaml
from pydantic import TypeAdapter, ValidationError

from monitoring.ingest.relabel import Labels, Rule, compile_rules, process
from monitoring.ingest.scrape_config import ScrapeConfig, StaticConfig, load_yaml
from monitoring.log import get_logger

log = get_logger("ingest.scrape")

_GROUPS = TypeAdapter(list[StaticConfig])
MAX_FILES_PER_JOB = 1000


class Target(NamedTuple):
    """One target of a job: its URL, its sample labels, and its identity."""

    job: str
    url: str
    labels: tuple[tuple[str, str], ...]  # sorted, without __ labels: added to every sample
    key: str  # the full label set after relabeling: the same target across refreshes

    @property
    def label_dict(self) -> Labels:
        return dict(self.labels)

    def offset_s(self, interval_s: float) -> float:
        """This target's phase within the interval, stable across restarts (a hash of
        its identity), so that targets spread over the interval as in Prometheus."""
        h = int.from_bytes(hashlib.blake2b(self.key.encode(), digest_size=8).digest(), "big")
        return (h % 1_000_000) / 1_000_000 * interval_s


def prom_duration(seconds: float) -> str:
    """Go's ``model.Duration.String()``: ``15s``, ``1m30s``, ``1h``, ``500ms``.

    >>> prom_duration(90), prom_duration(0.5), prom_duration(3600)
    ('1m30s', '500ms', '1h')
    """
    ms = round(seconds * 1000)
    if ms == 0:
        return "0s"
    out = []
    for unit, size in (
        ("y", 31_536_000_000),
        ("w", 604_800_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ):
        if ms >= size:
            out.append(f"{ms // size}{unit}")
            ms %= size
    return "".join(out)


def populate(
    job: ScrapeConfig, group_labels: dict[str, str], address: str, rules: list[Rule]
) -> tuple[Target | None, str]:
    """A target from one address of a group, or (None, why) when dropped or invalid."""
    lset: Labels = {**group_labels, "__address__": address}
    for name, value in (
        ("job", job.job_name),
        ("__scrape_interval__", prom_duration(job.interval_s)),
        ("__scrape_timeout__", prom_duration(job.timeout_s)),
        ("__metrics_path__", job.metrics_path),
        ("__scheme__", job.scheme),
    ):
        if not lset.get(name):
            lset[name] = value
    for k, v in job.params.items():
        if v:
            lset[f"__param_{k}"] = v[0]
    out = process(lset, rules)
    if out is None:
        return None, "dropped by relabeling"
    addr = out.get("__address__", "")
    if not addr:
        return None, "no __address__ after relabeling"
    if not _HOST_PORT.match(addr):  # the URL is text: "a@b", "a#", "a?" would move it
        return None, f"invalid __address__ {addr[:100]!r}"
    scheme = out.get("__scheme__", job.scheme)
    if scheme not in ("http", "https"):
        return None, f"invalid __scheme__ {scheme[:20]!r}"
    if not _has_port(addr):
        addr = f"{addr}:{443 if scheme == 'https' else 80}"
        out["__address__"] = addr
    out = {k: v for k, v in out.items() if not k.startswith("__meta_")}
    if not out.get("instance"):
        out["instance"] = addr
    params: dict[str, list[str]] = {k: list(v) for k, v in job.params.items()}
    for k, value in out.items():
        if k.startswith("__param_"):
            name = k[len("__param_") :]
            if params.get(name):
                params[name][0] = value
            else:
                params[name] = [value]
    path = out.get("__metrics_path__", job.metrics_path) or "/"
    # a path, never a host, query or fragment (Prometheus builds a URL with it as Path)
    path = quote(path if path.startswith("/") else "/" + path, safe="/%:@!$&'()*+,;=~")
    query = urlencode(params, doseq=True)
    url = f"{scheme}://{addr}{path}" + (f"?{query}" if query else "")
    public = tuple(sorted((k, v) for k, v in out.items() if not k.startswith("__")))
    key = json.dumps(sorted(out.items()), separators=(",", ":"))
    return Target(job.job_name, url, public, key), ""


# host (a name, IPv4, or a bracketed IPv6 with an optional zone) and an optional port
_HOST_PORT = re.compile(
    r"^(?:\[[0-9A-Fa-f:.]+(?:%[A-Za-z0-9_.-]+)?\]|[A-Za-z0-9_.-]+)(?::\d{1,5})?$"
)


def _has_port(addr: str) -> bool:
    if addr.startswith("["):  # [ipv6]:port
        return "]:" in addr
    return addr.count(":") == 1


class FileSD:
    """The target groups of one job's ``file_sd_configs``, re-read when files change."""

    def __init__(self, job: ScrapeConfig, base: Path, max_bytes: int) -> None:
        self.job = job
        self.base = base
        self.max_bytes = max_bytes
        self.cache: dict[str, tuple[float, int, list[tuple[dict[str, str], list[str]]]]] = {}
        self.errors = 0

    def groups(self) -> list[tuple[dict[str, str], list[str]]]:
        """Every group of every matching file, with ``__meta_filepath``."""
        paths: list[str] = []
        for sd in self.job.file_sd_configs:
            for pattern in sd.files:
                p = pattern if os.path.isabs(pattern) else str(self.base / pattern)
                paths += sorted(glob.glob(p))
        paths = sorted(set(paths))[:MAX_FILES_PER_JOB]
        out: list[tuple[dict[str, str], list[str]]] = []
        for path in paths:
            out += self._file(path)
        for gone in set(self.cache) - set(paths):
            del self.cache[gone]
        return out

    def _file(self, path: str) -> list[tuple[dict[str, str], list[str]]]:
        try:
            st = os.stat(path)
        except OSError:
            return self.cache.get(path, (0, 0, []))[2]
        cached = self.cache.get(path)
        if cached is not None and cached[:2] == (st.st_mtime, st.st_size):
            return cached[2]
        try:
            if st.st_size > self.max_bytes:
                raise ValueError(f"larger than {self.max_bytes} bytes")
            with open(path, "rb") as f:
                raw = f.read(self.max_bytes + 1)
            data: Any = json.loads(raw) if path.endswith(".json") else load_yaml(raw)
            groups = _GROUPS.validate_python(data or [])
        except (OSError, ValueError, yaml.YAMLError, ValidationError, RecursionError) as e:
            self.errors += 1
            log.warning(
                "file_sd file not read; its previous targets are kept",
                job=self.job.job_name,
                path=path,
                error=str(e)[:300],
            )
            return cached[2] if cached is not None else []
        parsed = [({**g.labels, "__meta_filepath": path}, list(g.targets)) for g in groups]
        self.cache[path] = (st.st_mtime, st.st_size, parsed)
        return parsed


class JobTargets:
    """All targets of a job: static groups plus file_sd, through relabeling."""

    def __init__(
        self, job: ScrapeConfig, base: Path, max_sd_bytes: int, max_targets: int = 1_000_000
    ) -> None:
        self.job = job
        self.max_targets = max_targets
        self.rules = compile_rules(job.relabel_configs)
        self.metric_rules = compile_rules(job.metric_relabel_configs)
        self.file_sd = FileSD(job, base, max_sd_bytes) if job.file_sd_configs else None
        self.dropped = 0
        self.invalid = 0
        self.over = 0

    def targets(self) -> list[Target]:
        groups = [(dict(g.labels), list(g.targets)) for g in self.job.static_configs]
        if self.file_sd is not None:
            groups += self.file_sd.groups()
        seen: dict[str, Target] = {}
        dropped = invalid = 0
        self.over = 0
        for labels, addresses in groups:
            for address in addresses:
                if len(seen) >= self.max_targets:  # counted, not labelled
                    self.over += 1
                    continue
                t, why = populate(self.job, labels, address, self.rules)
                if t is None:
                    if why == "dropped by relabeling":
                        dropped += 1
                    else:
                        invalid += 1
                        log.warning("target refused", job=self.job.job_name, reason=why)
                    continue
                seen.setdefault(t.key, t)
        self.dropped, self.invalid = dropped, invalid
        return list(seen.values())
