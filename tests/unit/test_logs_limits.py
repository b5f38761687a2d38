"""What the log agent sends always fits the message limit (hardening findings 4, 6).

A value too large for its outputs to fit is refused before it changes any state; a
stored batch that still grows past the limit (every line flagged) is not sent and
the message is reported as oversized; counter samples go in batches of bounded size;
a service name that cannot key state is refused.
"""

from __future__ import annotations

import pytest

from monitoring.agents.log_processing import (
    MAX_BATCH_SAMPLES,
    LogProcessor,
    input_limit,
    output_limit,
)
from monitoring.logs.analyzer import PartitionLogs
from monitoring.logs.records import InvalidLog, LogLimits, check_service
from monitoring.metrics.samples import Sample, series_key
from monitoring.wire.codec import AvroCodec, DecodeError
from monitoring.wire.log_batch import LogBatchDecoder, LogBatchEncoder
from monitoring.wire.log_encoding import LOG_RECORD
from monitoring.wire.partitioner import partition_for

CODEC = AvroCodec.from_directory()
NOW = 1_700_000_000_000
LIMIT = 64 * 1024


def log_record(message: str, service: str = "api") -> bytes:
    rec = {"timestamp_ms": NOW, "service": service, "level": "info", "message": message}
    return CODEC.encode(LOG_RECORD, rec)


def test_a_value_over_the_input_limit_is_refused_before_any_state() -> None:
    proc, logs = LogProcessor(CODEC, 6, LIMIT), PartitionLogs()
    big = log_record("x" * input_limit(LIMIT))
    assert len(big) > input_limit(LIMIT)
    with pytest.raises(DecodeError) as e:
        proc.handle(logs, 0, 5, big, NOW)
    assert e.value.reason == "oversized"
    assert logs.services == {} and logs.last_offset == 5  # seen, nothing applied
    fits = log_record("x" * (input_limit(LIMIT) - 100))
    out = proc.handle(logs, 0, 6, fits, NOW)
    assert out is not None and out.stored is not None and not out.oversized
    assert sum(map(len, out.stored)) <= output_limit(LIMIT)


def test_a_stored_batch_over_the_output_limit_is_not_sent() -> None:
    """4,000 lines, each with a 200-character unknown level: the stored batch keeps each
    level as an attribute beside "INFO", more than the margin allows."""
    lines = [(NOW, "L" * 200, "", f"m {i}", "", "", "", {}) for i in range(4000)]
    value = LogBatchEncoder(CODEC).encode("api", "h", lines)
    limit = len(value) + len(value) // 7  # the input fits (input_limit), the output not
    assert len(value) <= input_limit(limit)
    logs = PartitionLogs()
    out = LogProcessor(CODEC, 6, limit).handle(logs, 1, 9, value, NOW)
    assert out is not None and out.stored is None and out.oversized > output_limit(limit)
    assert out.samples == [] and [e.change for e in out.events] == ["created"]
    assert logs.services["api"].counts.levels == {"INFO": 4000}  # mined and counted
    assert LogBatchDecoder(CODEC).decode(value).lines == 4000


@pytest.mark.parametrize("partitions", [1, 6])
def test_counter_samples_go_in_batches_of_bounded_size(partitions: int) -> None:
    samples = [
        Sample(series_key("log_template_events_total", lb), "log_template_events_total", lb,
               NOW, float(i), "COUNTER")
        for i, lb in enumerate({"service": "api", "template_id": str(t)} for t in range(5000))
    ]  # fmt: skip
    out = LogProcessor(CODEC, partitions).encode_samples(samples)
    got = []
    for key, value in out:
        batch = CODEC.decode(value).record
        assert len(batch["values"]) <= MAX_BATCH_SAMPLES
        assert {partition_for(s, partitions) for s in batch["series"]} == {
            partition_for(key, partitions)
        }
        got += [
            (batch["series"][i], v)
            for i, v in zip(batch["series_index"], batch["values"], strict=True)
        ]
    assert sorted(got) == sorted((s.series, s.value) for s in samples)
    assert max(len(k) + len(v) for k, v in out) < 128 * 1024  # 1,000 series of ~70 bytes


@pytest.mark.parametrize("service", ["s" * 257, "api\x00x", "é" * 129])
def test_a_service_that_cannot_key_state_is_refused(service: str) -> None:
    with pytest.raises(InvalidLog) as e:
        check_service(service, LogLimits())
    assert e.value.reason == "bad-service"
    with pytest.raises(InvalidLog):
        LogProcessor(CODEC, 6).handle(PartitionLogs(), 0, 1, log_record("m", service), NOW)
    batch = LogBatchEncoder(CODEC).encode(service, "h", [(NOW, "info", "", "m", "", "", "", {})])
    out = LogProcessor(CODEC, 6).handle(PartitionLogs(), 0, 2, batch, NOW)
    assert out is not None and out.stored is None
    assert [(r.line, r.reason) for r in out.rejected] == [(0, "bad-service")]
    check_service("s" * 256, LogLimits())  # at the limit: fine
