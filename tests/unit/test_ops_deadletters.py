"""Dead letters without a broker: headers parsed defensively, selections, filters,
grouping, the replay policy, and decoding as far as it goes on hostile payloads."""

from __future__ import annotations

import io
import json
from pathlib import Path

import fastavro
import pytest
from fastavro.schema import to_parsing_canonical_form

from monitoring.ops.deadletters import (
    MAX_SELECTION_ITEMS,
    DeadLetter,
    Filter,
    Selection,
    SelectionError,
    decode_as_far,
    group,
    replay_verdict,
)
from monitoring.runtime.outputs import MAX_HEADER_BYTES, dead_letter_headers, fit_dead_letter
from monitoring.wire.codec import MARKER, AvroCodec, default_schema_dir, rabin_fingerprint

SAMPLE = "monitoring.MetricSample"
GOOD = {"name": "cpu", "value": 1.5, "timestamp_ms": 1_700_000_000_000, "labels": {"h": "a"}}


@pytest.fixture(scope="module")
def codec() -> AvroCodec:
    return AvroCodec.from_directory()


def letter(offset: int = 0, **kw: object) -> DeadLetter:
    base: dict[str, object] = {"reason": "cardinality", "source_topic": "m.metrics.samples"}
    base.update(kw)
    return DeadLetter(0, offset, 1000 + offset, b"k", b"v", **base)  # type: ignore[arg-type]


# -- headers ---------------------------------------------------------------------------


def test_headers_of_the_runtime_format_parse_back() -> None:
    headers = dead_letter_headers("bad-body", "cut", "m.metrics.samples", 3, 41, "store", [1, 4])
    d = DeadLetter.from_record(0, 9, 5, b"key", b"val", headers)
    assert (d.reason, d.error, d.stage) == ("bad-body", "cut", "store")
    assert (d.source_topic, d.source_partition, d.source_offset) == ("m.metrics.samples", 3, 41)
    assert d.rejected == "1,4"
    assert d.coordinates == "0:9"


def test_hostile_headers_are_bounded_and_never_trusted() -> None:
    headers = [
        ("x-reason", b"\xff\xfe" + b"r" * 10_000),
        ("x-source-partition", b"-1"),
        ("x-source-offset", b"9" * 40),
        ("x-truncated", b"lots"),
        *[(f"h{i}", b"x") for i in range(200)],
    ]
    d = DeadLetter.from_record(0, 1, 2, None, None, headers)
    assert len(d.reason) <= MAX_HEADER_BYTES
    assert d.source_partition is None and d.source_offset is None
    assert d.truncated_from is None
    assert len(d.headers) == 64


def test_missing_reason_reads_as_none() -> None:
    assert DeadLetter.from_record(0, 1, 2, None, b"x", None).reason == "(none)"


# -- selections and filters --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ranges"),
    [
        ("", ()),
        (None, ()),
        ("5", ((0, 5, 5),)),
        ("5-9, 12", ((0, 5, 9), (0, 12, 12))),
        ("2:7-8", ((2, 7, 8),)),
    ],
)
def test_selection_parses(text: str | None, ranges: tuple[tuple[int, int, int], ...]) -> None:
    assert Selection.parse(text).ranges == ranges


@pytest.mark.parametrize("text", ["x", "5-", "-5", "9-3", "1:2:3", "5;DROP", "1e3", "a-b"])
def test_bad_selections_are_refused_with_the_item(text: str) -> None:
    with pytest.raises(SelectionError):
        Selection.parse(text)


def test_selection_size_is_bounded() -> None:
    with pytest.raises(SelectionError, match="at most"):
        Selection.parse(",".join(["1"] * (MAX_SELECTION_ITEMS + 1)))
    with pytest.raises(SelectionError, match="characters"):
        Selection.parse("1" * 20_000)


def test_filter_by_time_reason_topic_and_selection() -> None:
    f = Filter(
        selection=Selection.parse("0-10"),
        reasons=frozenset({"cardinality"}),
        topics=frozenset({"metrics.samples"}),
        since_ms=1002,
        until_ms=1008,
        prefix="m.",
    )
    kept = [d.offset for d in (letter(i) for i in range(20)) if f.keeps(d)]
    assert kept == [2, 3, 4, 5, 6, 7, 8]
    assert not f.keeps(letter(5, reason="bad-body"))
    assert not f.keeps(letter(5, source_topic="other.metrics.samples"))
    assert Filter(topics=frozenset({"m.metrics.samples"})).keeps(letter(5))


# -- grouping ----------------------------------------------------------------------------


def test_grouping_counts_first_and_last_seen_and_offsets() -> None:
    letters = [letter(i, reason="bad-body" if i % 3 == 0 else "cardinality") for i in range(9)]
    letters.append(letter(20, reason="cardinality", source_topic="m.logs.records", stage="logs"))
    gs = group(letters)
    assert [(g.reason, g.source_topic, g.count) for g in gs] == [
        ("cardinality", "m.metrics.samples", 6),
        ("bad-body", "m.metrics.samples", 3),
        ("cardinality", "m.logs.records", 1),
    ]
    top = gs[0]
    assert (top.first_ms, top.last_ms, top.first_offset, top.last_offset) == (1001, 1008, 1, 8)
    assert top.replayable and not gs[1].replayable
    assert gs[2].stages == {"logs"}


def test_grouping_by_time_buckets() -> None:
    hour = 3_600_000
    letters = [DeadLetter(0, i, t, None, None, reason="cardinality", source_topic="t")
               for i, t in enumerate([10, hour - 1, hour, 3 * hour + 5, 3 * hour + 6])]  # fmt: skip
    gs = group(letters, bucket_ms=hour)
    assert [(g.bucket_ms, g.count, g.first_offset, g.last_offset) for g in gs] == [
        (0, 2, 0, 1), (hour, 1, 2, 2), (3 * hour, 2, 3, 4),
    ]  # fmt: skip
    assert gs[0].as_dict()["bucket_ms"] == 0
    assert "bucket_ms" not in group(letters)[0].as_dict()


def test_groups_are_bounded() -> None:
    gs = group((letter(i, reason=f"r{i}") for i in range(50)), max_groups=10)
    assert len(gs) == 11
    assert sum(g.count for g in gs) == 50
    assert any(g.reason == "(other)" and g.count == 40 for g in gs)


# -- the replay policy -----------------------------------------------------------------


def test_fixable_reasons_replay() -> None:
    for reason in ("unknown-fingerprint", "cardinality", "processing-error", "insert-rejected"):
        assert replay_verdict(letter(reason=reason)).allowed


@pytest.mark.parametrize("reason", ["bad-marker", "oversized", "wrong-record", "made-up"])
def test_permanent_and_unknown_reasons_need_force(reason: str) -> None:
    v = replay_verdict(letter(reason=reason))
    assert not v.allowed and v.forcible and "--force" in v.why
    assert replay_verdict(letter(reason=reason), force=True).allowed


def test_partly_applied_batches_need_force() -> None:
    v = replay_verdict(letter(reason="cardinality", rejected="1,2"))
    assert not v.allowed and "twice" in v.why
    assert replay_verdict(letter(rejected="1"), force=True).allowed


def test_cut_payloads_tombstones_and_sourceless_never_replay() -> None:
    for d in (
        letter(truncated_from=9_000_000),
        letter(key_truncated_from=70_000),
        DeadLetter(0, 1, 2, b"k", None, reason="cardinality", source_topic="t"),
        letter(source_topic=""),
    ):
        v = replay_verdict(d, force=True)
        assert not v.allowed and not v.forcible, d


# -- decoding as far as it goes ----------------------------------------------------------


def test_a_good_record_decodes_with_its_schema(codec: AvroCodec) -> None:
    dec = decode_as_far(codec, codec.encode(SAMPLE, GOOD))
    assert (dec.status, dec.schema, dec.version) == ("decoded", SAMPLE, 2)
    assert json.loads(dec.record)["labels"] == {"h": "a"}


def test_garbage_is_previewed_in_hex_and_text(codec: AvroCodec) -> None:
    dec = decode_as_far(codec, b"\x00\x01hello" + bytes(range(256)) * 4)
    assert dec.status == "bad-marker"
    assert dec.hex.startswith("000168656c6c6f") and len(dec.hex) == 128
    assert dec.text.startswith("..hello") and dec.text.endswith("...")
    assert not dec.record and not dec.schema


def test_truncated_records(codec: AvroCodec) -> None:
    assert decode_as_far(codec, MARKER + b"\x01\x02").status == "truncated"
    assert decode_as_far(codec, b"").status == "truncated"
    assert decode_as_far(codec, None).status == "empty"
    cut = decode_as_far(codec, codec.encode(SAMPLE, GOOD)[:-6])
    assert (cut.status, cut.schema) == ("bad-body", SAMPLE)


def test_trailing_bytes(codec: AvroCodec) -> None:
    dec = decode_as_far(codec, codec.encode(SAMPLE, GOOD) + b"\x00\x00")
    assert (dec.status, dec.schema) == ("trailing-bytes", SAMPLE)


def future_sample() -> bytes:
    """A MetricSample v3 (a field appended) that this build has no file for."""
    raw = json.loads((default_schema_dir() / "metric_sample.v2.avsc").read_text())
    raw["fields"].append({"name": "exemplar", "type": "string", "default": ""})
    parsed = fastavro.parse_schema(raw)
    fp = rabin_fingerprint(to_parsing_canonical_form(parsed).encode())
    buf = io.BytesIO()
    buf.write(MARKER + fp.to_bytes(8, "little"))
    fastavro.schemaless_writer(buf, parsed, {**GOOD, "exemplar": "trace-1"})
    return buf.getvalue()


def test_a_future_schema_version_is_named_unknown_with_its_fingerprint(codec: AvroCodec) -> None:
    value = future_sample()
    dec = decode_as_far(codec, value)
    assert dec.status == "unknown-fingerprint"
    assert dec.fingerprint == value[2:10][::-1].hex()
    assert not dec.schema and dec.hex


def test_oversized_payloads_are_not_decoded(codec: AvroCodec) -> None:
    big = codec.encode(SAMPLE, {**GOOD, "labels": {"x": "y" * 5000}})
    dec = decode_as_far(codec, big, max_decode_bytes=1024)
    assert (dec.status, dec.schema, dec.size) == ("too-large", SAMPLE, len(big))
    assert len(dec.hex) == 128


def test_a_payload_cut_to_fit_the_dead_letter_topic(codec: AvroCodec) -> None:
    big = codec.encode(SAMPLE, {**GOOD, "labels": {"x": "y" * 20_000}})
    key, value, headers = fit_dead_letter(b"k", big, [("x-reason", b"oversized")], 8192)
    d = DeadLetter.from_record(0, 1, 2, key, value, headers)
    assert d.truncated_from == len(big)
    dec = decode_as_far(codec, d.value, d.truncated_from)
    assert (dec.status, dec.schema) == ("cut", SAMPLE)
    assert not replay_verdict(d, force=True).allowed


def test_a_decoded_record_is_bounded(codec: AvroCodec) -> None:
    labels = {f"l{i}": "v" * 100 for i in range(30)}
    dec = decode_as_far(codec, codec.encode(SAMPLE, {**GOOD, "labels": labels}), None, 1 << 20, 300)
    assert dec.status == "decoded"
    assert len(dec.record) < 340 and dec.record.endswith("chars)")


def test_every_schema_file_is_known(codec: AvroCodec) -> None:
    names = {p.name for p in Path(default_schema_dir()).glob("*.avsc")}
    assert len(codec.versions()) == len(names)
