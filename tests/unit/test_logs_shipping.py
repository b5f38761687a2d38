"""The shipping front ends (no broker: records are inspected in the buffer)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog
from prometheus_client import CollectorRegistry

from monitoring.dev.deploy import free_port
from monitoring.sdk.log_shipping import KafkaLogHandler, LogShipper, StructlogShipper
from monitoring.wire.codec import AvroCodec

CODEC = AvroCodec.from_directory()


@pytest.fixture
def shipper() -> Iterator[LogShipper]:
    # max_in_flight=0: the sender thread never takes anything out of the buffer
    s = LogShipper(
        f"127.0.0.1:{free_port()}",
        "t",
        "app",
        host="h1",
        buffer_size=3,
        max_in_flight=0,
        registry=CollectorRegistry(),
        producer_config={"log_level": 0},
    )
    yield s
    s.close(0.1)


def test_handler_record_fields(shipper: LogShipper) -> None:
    logger = logging.getLogger("unit.ship")
    logger.propagate = False
    logger.addHandler(KafkaLogHandler(shipper))
    try:
        raise ValueError("bad")
    except ValueError:
        logger.error("job %s failed", "j1", exc_info=True, extra={"trace_id": "t1", "n": 3})
    (e,) = shipper.buffer
    ts, service, host, level, name, msg, trace, span, exc, attrs = e
    assert (service, host, level, name, msg, trace, span) == (
        "app",
        "h1",
        "ERROR",
        "unit.ship",
        "job j1 failed",
        "t1",
        "",
    )
    assert exc.startswith("Traceback") and exc.endswith("ValueError: bad")
    assert attrs == {"n": "3"} and ts > 1_600_000_000_000


def test_full_buffer_drops_the_oldest_and_counts(shipper: LogShipper) -> None:
    h = KafkaLogHandler(shipper)
    for i in range(5):
        h.emit(logging.makeLogRecord({"msg": f"m{i}", "levelname": "INFO"}))
    assert [e[5] for e in shipper.buffer] == ["m2", "m3", "m4"]
    assert shipper.dropped == 2


def test_structlog_processor_ships_and_passes_the_event_on(shipper: LogShipper) -> None:
    captured: list[dict] = []  # type: ignore[type-arg]

    def capture(_l: object, _m: str, ev: dict) -> str:  # type: ignore[type-arg]
        captured.append(dict(ev))
        return "rendered"

    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.format_exc_info,
            StructlogShipper(shipper),
            capture,
        ],
        logger_factory=structlog.ReturnLoggerFactory(),
        cache_logger_on_first_use=False,
    )
    try:
        log = structlog.get_logger(component="worker")
        log.warning("partition_lost", partition=3, span_id="s9")
    finally:
        structlog.reset_defaults()
    (e,) = shipper.buffer
    assert e[3:9] == ("warning", "worker", "partition_lost", "", "s9", "")
    assert e[9] == {"partition": "3"}
    assert captured[0]["event"] == "partition_lost"


def test_oversized_records_are_truncated_before_encoding(shipper: LogShipper) -> None:
    shipper.max_record_bytes = 10
    data = shipper._encode((1, "s", "h", "INFO", "", "x" * 25, "", "", "", {"a": "b"}))
    rec = CODEC.decode(data).record
    assert rec["message"] == "x" * 10
    assert rec["attributes"] == {
        "a": "b",
        "monitoring.truncated": "message",
        "monitoring.original_bytes": "message=25",
    }


def test_install_keeps_the_renderer_last(shipper: LogShipper) -> None:
    import io

    from monitoring.log import configure_logging
    from monitoring.sdk.log_shipping import install_structlog_shipper

    out = io.StringIO()
    configure_logging(json=True)
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(file=out), cache_logger_on_first_use=False
    )
    try:
        install_structlog_shipper(shipper)
        structlog.get_logger(component="store").info("flushed", rows=5)
    finally:
        structlog.reset_defaults()
    (e,) = shipper.buffer
    assert e[3:6] == ("info", "store", "flushed") and e[9] == {"rows": "5"}
    assert '"event": "flushed"' in out.getvalue()
