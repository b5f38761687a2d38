-- Stored logs (schemas/log_stored.v1.avsc), written by the store from logs.stored.
-- ORDER BY (service, timestamp, event_id) serves "one service over a time range"
-- (the primary key prunes granules by service, then by time); event_id is the
-- source partition << 48 | source offset, so a replayed record has the same key and
-- ReplacingMergeTree collapses it: queries read with FINAL.
-- Token search: tokenbf_v1 skip indexes on message and exception (hasToken,
-- multiSearchAny, LIKE '%tok%' use them); works on ClickHouse 23+ servers too (the
-- newer `text` index needs 25.x with the experimental flag; see BENCHMARKS.md).
-- One granule per index block: 8192 rows, a 32 KiB filter with 3 hashes.
CREATE TABLE IF NOT EXISTS logs
(
    service     LowCardinality(String),
    timestamp   DateTime64(3, 'UTC') $delta,
    event_id    UInt64 $codec,
    observed    DateTime64(3, 'UTC') $delta,
    host        LowCardinality(String),
    level       LowCardinality(String),
    severity    UInt8,
    logger      LowCardinality(String),
    message     String $codec,
    trace_id    String $codec,
    span_id     String $codec,
    exception   String $codec,
    attributes  Map(LowCardinality(String), String) $codec,
    template_id UInt32 $codec,
    INDEX message_tokens lower(message) TYPE tokenbf_v1(32768, 3, 0) GRANULARITY 1,
    INDEX exception_tokens lower(exception) TYPE tokenbf_v1(32768, 3, 0) GRANULARITY 1,
    INDEX trace_ids trace_id TYPE bloom_filter(0.01) GRANULARITY 1
)
ENGINE = ReplacingMergeTree
PARTITION BY toDate(timestamp)
ORDER BY (service, timestamp, event_id)
TTL toDateTime(timestamp) + toIntervalSecond($logs_ttl_seconds)
SETTINGS ttl_only_drop_parts = 1;
