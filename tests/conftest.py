"""Test configuration: fixtures live in tests/fixtures/ and are loaded as plugins.

Everything under ``tests/integration`` is marked ``integration`` (``make test-unit``
runs the rest, without a broker). Tests marked ``integration`` get the session's Kafka
broker (``kafka_bootstrap``) even if they do not ask for it, so the broker is up before
they run; tests also marked ``own_broker`` start their own, and tests marked
``no_broker`` (real ClickHouse, Prometheus or HTTP peers, but no Kafka) need none.

Under pytest-xdist (``make test`` runs ``--dist loadgroup``, see docs/testing.md) a
test whose fixtures include a module- or class-scoped one of the project runs on the
worker that runs the rest of its module, and one using a session-scoped fixture of the
project (other than the shared broker) runs with the other users of that fixture: each
such fixture is then set up once, not once per worker. A test module can also name a
group itself (``pytest.mark.xdist_group("heavy")``) to keep tests from running at the
same time as each other.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:  # makes `fixtures` importable under any --import-mode
    sys.path.insert(0, _TESTS)

pytest_plugins = [
    "fixtures.kafka",
    "fixtures.pipeline",
    "fixtures.notify",
    "fixtures.store",
    "fixtures.secure_kafka",
]


@pytest.hookimpl(tryfirst=True)  # before Hypothesis's own --hypothesis-profile
def pytest_configure(config: pytest.Config) -> None:
    from fixtures import hypothesis_profiles

    hypothesis_profiles.load()  # HYPOTHESIS_PROFILE: ci (full counts) or dev (a fifth)
    config.addinivalue_line(
        "markers", "own_broker: an integration test that starts its own Kafka broker"
    )
    config.addinivalue_line("markers", "no_broker: an integration test that needs no Kafka")
    config.addinivalue_line(  # pytest-xdist's, named here too for runs without it
        "markers", "xdist_group(name): run on the worker that runs the rest of the group"
    )


_INTEGRATION = Path(_TESTS) / "integration"


# Session fixtures every worker may hold one of: the broker they share, pytest's own.
_PER_WORKER_SESSION = {"kafka_bootstrap"}

# CPU-bound modules (a million series at a worker, the benchmarks, chaos and soak) run
# one at a time on one xdist worker: two of them at once on 2 cores starve each other
# past their deadlines.
_HEAVY = {
    "test_bench_ingest.py", "test_bench_receive.py", "test_bench_ui.py",
    "test_cardinality_e2e.py", "test_chaos.py", "test_soak.py",
}  # fmt: skip


def _shared_scope(item: pytest.Function) -> str | None:
    """The xdist group of a test that shares a fixture beyond itself, or None: the
    module (or class) for a module- or class-scoped fixture of the project, the
    fixture's name for a session-scoped one."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return None
    for name in info.names_closure:
        defs = info.name2fixturedefs.get(name)
        if not defs:
            continue
        fixturedef = defs[-1]
        owner = getattr(fixturedef.func, "__module__", "") or ""
        here = ("conftest", item.module.__name__ if item.module else "")
        if not (owner.startswith(("fixtures.", "tests.")) or owner in here):
            continue  # pytest's and plugins' own fixtures
        if fixturedef.scope == "session" and name not in _PER_WORKER_SESSION:
            return f"session:{name}"
        if fixturedef.scope in ("module", "package", "class"):
            return str(item.nodeid).split("::")[0]
    return None


# pytest 9.2's structured node ids ignore pytest-xdist 3.8's way of telling the
# controller a test's group (it rewrites ``item._nodeid``: pytest-xdist#1386), so
# ``--dist loadgroup`` silently spread groups over workers. Until that is fixed the
# workers write {node id: group} to a file (``pytest_collection_finish``) and the
# controller's scheduler (``pytest_xdist_make_scheduler``) reads its groups from it.


def _groups_file(config: pytest.Config) -> Path | None:
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        path = workerinput.get("xdist_groups_file")
        return Path(path) if path else None
    if not hasattr(config, "_xdist_groups_file"):
        config._xdist_groups_file = config._tmp_path_factory.mktemp("xdist") / "groups.json"  # type: ignore[attr-defined]
    return config._xdist_groups_file  # type: ignore[attr-defined]


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """Controller: tell each xdist worker where to write the groups."""
    if node.config.getvalue("dist") == "loadgroup":
        node.workerinput["xdist_groups_file"] = str(_groups_file(node.config))


@pytest.hookimpl(tryfirst=True)  # before the worker sends its collection
def pytest_collection_finish(session: pytest.Session) -> None:
    """An xdist worker (the first): write {node id: group} for the controller."""
    config = session.config
    path = _groups_file(config) if hasattr(config, "workerinput") else None
    if path is None or os.environ.get("PYTEST_XDIST_WORKER") != "gw0":
        return
    groups = {}
    for item in session.items:
        mark = item.get_closest_marker("xdist_group")
        if mark is not None:
            groups[item.nodeid] = str(mark.args[0] if mark.args else mark.kwargs["name"])
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(groups))
    tmp.replace(path)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Controller: ``--dist loadgroup`` with the groups the workers wrote."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    path = _groups_file(config)

    class FileGroups(LoadGroupScheduling):
        groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.groups is None:  # every worker has collected by the first call
                self.groups = json.loads(path.read_text()) if path and path.exists() else {}
            group = self.groups.get(nodeid)
            return f"group:{group}" if group else str(super()._split_scope(nodeid))

    return FileGroups(config, log)


@pytest.hookimpl(tryfirst=True)  # before xdist's worker reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("xdist_group") is None and isinstance(item, pytest.Function):
            group = "heavy" if item.path.name in _HEAVY else _shared_scope(item)
            if group is not None:
                item.add_marker(pytest.mark.xdist_group(group))
        if _INTEGRATION in Path(str(item.path)).parents:  # the folder is the tier
            item.add_marker(pytest.mark.integration)
        fixturenames = getattr(item, "fixturenames", None)
        if (
            item.get_closest_marker("integration") is not None
            and item.get_closest_marker("own_broker") is None
            and item.get_closest_marker("no_broker") is None
            and fixturenames is not None
            and "kafka_bootstrap" not in fixturenames
        ):
            fixturenames.insert(0, "kafka_bootstrap")


@pytest.fixture(autouse=True)
def _uncached_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A test that configures logging (a CLI command) must not leave loggers cached on
    its configuration: ``structlog.testing.capture_logs`` in later tests would miss them."""
    configure = structlog.configure

    def uncached(*args: Any, **kwargs: Any) -> None:
        configure(*args, **{**kwargs, "cache_logger_on_first_use": False})

    monkeypatch.setattr(structlog, "configure", uncached)
    yield
    structlog.reset_defaults()
