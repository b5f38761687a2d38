-- Raw samples. ORDER BY (series_id, ts) with ReplacingMergeTree: a replayed sample
-- (same series, same ts) collapses into one row; queries read with FINAL.
-- Codecs chosen by measurement (see ARCHITECTURE notes / storage_footprint): Delta on
-- the float's bit pattern then ZSTD beats Gorilla and FPC for scraped gauges/counters.
CREATE TABLE IF NOT EXISTS samples
(
    series_id UInt64 $codec,
    ts        DateTime64(3, 'UTC') $delta,
    value     Float64 $delta
)
ENGINE = ReplacingMergeTree
PARTITION BY toDate(ts)
ORDER BY (series_id, ts)
TTL toDateTime(ts) + toIntervalSecond($samples_ttl_seconds)
SETTINGS ttl_only_drop_parts = 1;
