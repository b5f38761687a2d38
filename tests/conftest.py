"""Test configuration: fixtures live in tests/fixtures/ and are loaded as plugins.

Everything under ``tests/integration`` is marked ``integration`` (``make test-unit``
runs the rest, without a broker). Tests marked ``integration`` get the session's Kafka
broker (``kafka_bootstrap``) even if they do not ask for it, so the broker is up before
they run; tests also marked ``own_broker`` start their own, and tests marked
``no_broker`` (real ClickHouse, Prometheus or HTTP peers, but no Kafka) need none.
"""

from __future__ import annotations

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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "own_broker: an integration test that starts its own Kafka broker"
    )
    config.addinivalue_line("markers", "no_broker: an integration test that needs no Kafka")


_INTEGRATION = Path(_TESTS) / "integration"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
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
