-- Closed windows (schemas/aggregate.v1.avsc) plus series_id. The identity of a window
-- is (series_id, window_ms, window_start); `version` is the Kafka timestamp of the
-- emission, so when a window is re-emitted the last emitted version wins, and a
-- replayed duplicate (same version) collapses. Queries read with FINAL.
CREATE TABLE IF NOT EXISTS aggregates
(
    series_id    UInt64 $codec,
    series       String $codec,
    name         LowCardinality(String),
    labels       Map(LowCardinality(String), String) $codec,
    window_ms    UInt32 $codec,
    window_start DateTime64(3, 'UTC') $delta,
    window_end   DateTime64(3, 'UTC') $delta,
    count        UInt64 $t64,
    sum          Float64 $delta,
    min          Float64 $delta,
    max          Float64 $delta,
    mean         Float64 $delta,
    last         Float64 $delta,
    p50          Float64 $delta,
    p90          Float64 $delta,
    p99          Float64 $delta,
    closed_by    LowCardinality(String),
    version      UInt64 $delta
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toDate(window_start)
ORDER BY (series_id, window_ms, window_start)
TTL toDateTime(window_start) + toIntervalSecond($aggregates_ttl_seconds)
SETTINGS ttl_only_drop_parts = 1;
