"""The RED metrics (rate, errors, duration) through the SDK's ``MetricsCollector``.

Series (OpenTelemetry's HTTP semantic conventions, as their Prometheus names; labels
shortened to the project's ``route``/``method``/``status``):

==========================================  =========  ==============================
``http_server_request_duration_seconds``    histogram  route, method, status
``http_server_requests_total``              counter    route, method, status
``http_server_errors_total``                counter    route, method, status (5xx, or
                                                       an exception: 500)
``http_server_active_requests``             gauge      method
``callable_duration_seconds``               histogram  function, status (ok, error)
``callable_calls_total``                    counter    function, status
``callable_errors_total``                   counter    function, error (exception type)
``callable_active``                         gauge      function
``process_cpu_seconds_total``               counter    (per process, Prometheus's name)
``process_resident_memory_bytes``           gauge
==========================================  =========  ==============================

Every family carries the constant labels given (``service``...) and ``instance``
(``host:pid`` by default) so processes of one service never overwrite each other's
cumulative series. Buckets are OpenTelemetry's advisory boundaries for
``http.server.request.duration`` (5 ms to 10 s, the same as prometheus_client's default).

Cardinality is bounded: ``route`` is the route template, never the raw path (a request
no route matches is ``unmatched``), and at most ``max_routes`` distinct values (later ones
are ``overflow``, counted); methods outside RFC 9110's and PATCH are ``_OTHER`` (as
OpenTelemetry does); statuses outside 100-599 are ``invalid``; at most ``max_functions``
callables and ``max_errors`` exception types; values are cut to 256 characters.

Recording never breaks the request or call it measures: a failure inside the metrics
(an invalid label, psutil refused) is counted in ``.failures`` and logged once.
"""

from __future__ import annotations

import functools
import inspect
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, overload

import psutil

from monitoring.log import get_logger
from monitoring.sdk.producer import MetricsCollector

log = get_logger("perf")

HTTP_DURATION = "http_server_request_duration_seconds"
HTTP_REQUESTS = "http_server_requests_total"
HTTP_ERRORS = "http_server_errors_total"
HTTP_ACTIVE = "http_server_active_requests"
CALL_DURATION = "callable_duration_seconds"
CALL_CALLS = "callable_calls_total"
CALL_ERRORS = "callable_errors_total"
CALL_ACTIVE = "callable_active"
PROCESS_CPU = "process_cpu_seconds_total"
PROCESS_RSS = "process_resident_memory_bytes"

# OpenTelemetry semantic conventions, http.server.request.duration advisory buckets (s)
HTTP_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
OTHER_METHOD = "_OTHER"
UNMATCHED = "unmatched"
OVERFLOW = "overflow"
INVALID_STATUS = "invalid"
PROCESS_UPDATE_S = 1.0
MAX_LABEL_VALUE = 256  # longer route templates, function names... are cut to this
CHILD_CACHE_MAX = 10_000  # cached (route, method, status) children per HttpMetrics

F = TypeVar("F", bound=Callable[..., Any])


def default_instance() -> str:
    """``host:pid``, the ``instance`` label of this process's series."""
    return f"{socket.gethostname()}:{os.getpid()}"


def method_label(method: str) -> str:
    """The ``method`` label: a known method, else ``_OTHER``.

    >>> method_label("get"), method_label("BREW")
    ('GET', '_OTHER')
    """
    m = method.upper()
    return m if m in METHODS else OTHER_METHOD


def status_label(status: int) -> str:
    """The ``status`` label: the code, or ``invalid`` outside 100-599.

    >>> status_label(204), status_label(0), status_label(9999)
    ('204', 'invalid', 'invalid')
    """
    return str(status) if 100 <= status <= 599 else INVALID_STATUS


class BoundedLabel:
    """Admits at most ``limit`` distinct values; later new ones become ``overflow``.

    >>> b = BoundedLabel(2)
    >>> [b("a"), b("b"), b("c"), b("a")], b.overflowed
    (['a', 'b', 'overflow', 'a'], 1)
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("a label bound must be at least 1")
        self.limit = limit
        self.seen: set[str] = set()
        self.overflowed = 0
        self._lock = threading.Lock()

    def __call__(self, value: str) -> str:
        value = value[:MAX_LABEL_VALUE]
        if value in self.seen:
            return value
        with self._lock:
            if value in self.seen:
                return value
            if len(self.seen) >= self.limit:
                self.overflowed += 1
                return OVERFLOW
            self.seen.add(value)
        return value


class _Failures:
    """Counts failures of recording; logs the first."""

    def __init__(self) -> None:
        self.failures = 0

    def _failed(self, what: str, e: Exception) -> None:
        self.failures += 1
        if self.failures == 1:
            log.warning("perf_metrics_failed", what=what, error=repr(e)[:300])


def _const_labels(labels: Mapping[str, str] | None, instance: str | None) -> dict[str, str]:
    out = {str(k): str(v) for k, v in (labels or {}).items()}
    if instance:
        out["instance"] = instance
    return out


_PROCESS_LOCK = threading.Lock()


class ProcessMetrics:
    """This process's CPU seconds (user + system) and resident memory, from psutil.

    ``update()`` reads both (a few microseconds); ``maybe_update()`` at most once per
    ``PROCESS_UPDATE_S``, so request paths can call it. Several of these on one
    collector with the same labels (an ``HttpMetrics`` and a ``CallTracker``) share the
    series: the counter is raised to psutil's total, never by it, so nothing is counted
    twice.
    """

    def __init__(self, collector: MetricsCollector, labels: Mapping[str, str]) -> None:
        self._proc = psutil.Process()
        # families are shared by name in a collector: labels go on the children
        self._cpu = collector.counter(PROCESS_CPU, unit="seconds").labels(**labels)
        self._rss = collector.gauge(PROCESS_RSS, unit="bytes").labels(**labels)
        self._next = 0.0
        self.update()

    def update(self) -> None:
        """Read CPU seconds and RSS now."""
        t = self._proc.cpu_times()
        rss = self._proc.memory_info().rss
        with _PROCESS_LOCK:
            ahead = t.user + t.system - self._cpu.value
            if ahead > 0:
                self._cpu.inc(ahead)
            self._rss.set(rss)
        self._next = time.monotonic() + PROCESS_UPDATE_S

    def maybe_update(self) -> None:
        """``update()`` if the last one is older than ``PROCESS_UPDATE_S``."""
        if time.monotonic() >= self._next:
            self.update()


class HttpMetrics(_Failures):
    """The HTTP server RED series of one service (see the module's table)."""

    def __init__(
        self,
        collector: MetricsCollector,
        labels: Mapping[str, str] | None = None,
        *,
        instance: str | None = None,
        buckets: tuple[float, ...] = HTTP_BUCKETS,
        max_routes: int = 256,
        process: bool = True,
    ) -> None:
        super().__init__()
        const = _const_labels(labels, instance if instance is not None else default_instance())
        self.const = const
        self.collector = collector
        # a collector shares a family among all who name it: constant labels are added
        # to each observation, so two services (or runs) in one process stay apart
        self.duration = collector.histogram(HTTP_DURATION, buckets, unit="seconds")
        self.requests = collector.counter(HTTP_REQUESTS, unit="requests")
        self.errors = collector.counter(HTTP_ERRORS, unit="requests")
        self.active = collector.gauge(HTTP_ACTIVE, unit="requests")
        self.routes = BoundedLabel(max_routes)
        self.process = ProcessMetrics(collector, const) if process else None
        # the SDK finds a child by its sorted labels on every call: keep them at hand
        self._children: dict[tuple[str | None, str, int], tuple[Any, Any, dict[str, str]]] = {}
        self._active: dict[str, Any] = {}

    def started(self, method: str) -> str:
        """A request began: the in-flight gauge goes up; returns the method label."""
        m = method_label(method)
        try:
            self._active_child(m).inc(1)
        except Exception as e:
            self._failed("started", e)
        return m

    def _active_child(self, method: str) -> Any:
        child = self._active.get(method)
        if child is None:
            child = self._active[method] = self.active.labels(**self.const, method=method)
        return child

    def finished(
        self, route: str | None, method: str, status: int, seconds: float, error: bool
    ) -> None:
        """A request ended (``method`` as ``started`` returned it)."""
        try:
            self._finished(route, method, status, seconds, error)
        except Exception as e:
            self._failed("finished", e)

    def _finished(
        self, route: str | None, method: str, status: int, seconds: float, error: bool
    ) -> None:
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            labels = {
                **self.const,
                "route": self.routes(route or UNMATCHED),
                "method": method,
                "status": status_label(status),
            }
            children = (self.duration.labels(**labels), self.requests.labels(**labels), labels)
            if len(self._children) >= CHILD_CACHE_MAX:
                self._children.clear()
            self._children[key] = children
        duration, requests, labels = children
        self._active_child(method).dec(1)
        duration.observe(max(0.0, seconds))
        requests.inc(1)
        if error or status >= 500:
            self.errors.inc(1, labels)  # rare: the family's lookup is fine
        if self.process is not None:
            self.process.maybe_update()


class _Timer:
    """One tracked name: a context manager and a decorator (sync and async)."""

    def __init__(self, tracker: CallTracker, name: str) -> None:
        self.tracker = tracker
        self.name = name
        self._starts = threading.local()

    def __enter__(self) -> _Timer:
        stack = getattr(self._starts, "stack", None)
        if stack is None:
            stack = self._starts.stack = []
        stack.append(self.tracker._start(self.name))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        self.tracker._finish(self.name, self._starts.stack.pop(), exc_type)

    def __call__(self, fn: F) -> F:
        tracker, name = self.tracker, self.name
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def awrapper(*args: Any, **kwargs: Any) -> Any:
                t0 = tracker._start(name)
                try:
                    result = await fn(*args, **kwargs)
                except BaseException as e:
                    tracker._finish(name, t0, type(e))
                    raise
                tracker._finish(name, t0, None)
                return result

            return awrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = tracker._start(name)
            try:
                result = fn(*args, **kwargs)
            except BaseException as e:
                tracker._finish(name, t0, type(e))
                raise
            tracker._finish(name, t0, None)
            return result

        return wrapper  # type: ignore[return-value]


class CallTracker(_Failures):
    """RED metrics of Python callables.

    Example::

        tracker = CallTracker(mc, {"service": "scorer", "model": "fraud", "version": "v3"})

        @tracker.track                 # function label: the qualified name
        def predict(x): ...

        @tracker.track("load")         # or a name; async functions too
        async def load(): ...

        with tracker.track("feature-join"):
            ...
    """

    def __init__(
        self,
        collector: MetricsCollector,
        labels: Mapping[str, str] | None = None,
        *,
        instance: str | None = None,
        buckets: tuple[float, ...] = HTTP_BUCKETS,
        max_functions: int = 256,
        max_errors: int = 64,
        process: bool = True,
    ) -> None:
        super().__init__()
        const = _const_labels(labels, instance if instance is not None else default_instance())
        self.const = const
        self.duration = collector.histogram(CALL_DURATION, buckets, unit="seconds")
        self.calls = collector.counter(CALL_CALLS, unit="calls")
        self.errors = collector.counter(CALL_ERRORS, unit="calls")
        self.active = collector.gauge(CALL_ACTIVE, unit="calls")
        self.functions = BoundedLabel(max_functions)
        self.error_types = BoundedLabel(max_errors)
        self.process = ProcessMetrics(collector, const) if process else None
        self._cache: dict[str, tuple[Any, Any, Any, Any, Any, str]] = {}

    @overload
    def track(self, target: str) -> _Timer: ...
    @overload
    def track(self, target: F) -> F: ...
    def track(self, target: str | F) -> _Timer | F:
        """A decorator (bare, or with a name) or, with a name, a context manager."""
        if isinstance(target, str):
            return _Timer(self, target)
        return _Timer(self, getattr(target, "__qualname__", repr(target)))(target)

    def _children_of(self, name: str) -> tuple[Any, Any, Any, Any, Any, str]:
        """(active, ok duration, ok calls, error duration, error calls, label) of a name."""
        ch = self._cache.get(name)
        if ch is None:
            fn, c = self.functions(name), self.const
            ch = (
                self.active.labels(**c, function=fn),
                self.duration.labels(**c, function=fn, status="ok"),
                self.calls.labels(**c, function=fn, status="ok"),
                self.duration.labels(**c, function=fn, status="error"),
                self.calls.labels(**c, function=fn, status="error"),
                fn,
            )
            if len(self._cache) >= CHILD_CACHE_MAX:
                self._cache.clear()
            self._cache[name] = ch
        return ch

    def _start(self, name: str) -> float:
        try:
            self._children_of(name)[0].inc(1)
        except Exception as e:
            self._failed("start", e)
        return time.perf_counter()

    def _finish(self, name: str, t0: float, exc: type[BaseException] | None) -> None:
        seconds = time.perf_counter() - t0
        try:
            self._record(name, seconds, exc)
        except Exception as e:
            self._failed("finish", e)

    def _record(self, name: str, seconds: float, exc: type[BaseException] | None) -> None:
        active, ok_d, ok_n, err_d, err_n, fn = self._children_of(name)
        active.dec(1)
        if exc is None:
            ok_d.observe(seconds)
            ok_n.inc(1)
        else:
            err_d.observe(seconds)
            err_n.inc(1)
            self.errors.inc(1, self.const, function=fn, error=self.error_types(exc.__name__))
        if self.process is not None:
            self.process.maybe_update()
