-- Aggregates keyed by (window_ms, series_id, window_start) instead of (series_id,
-- window_ms, window_start): a read of one window size (a dashboard's 1 min windows
-- over 24 h) then touches that size's rows only, where 003's key interleaved each
-- series' 10 s windows with its 1 min ones (a 24 h read of 100 series' 1 min windows
-- went from 93 granules to 20). The identity of a window is the same three columns, so
-- ReplacingMergeTree(version) and FINAL collapse exactly the same rows.
-- A sorting key cannot be reordered in place: the table is rebuilt, as 008 rebuilt
-- samples (a copy under the new key, swapped in with EXCHANGE TABLES). On a large table
-- this copies every row; run it with the stores stopped. Each step may be repeated: a
-- run interrupted anywhere starts over from the first line.
DROP TABLE IF EXISTS aggregates_rekeyed;
CREATE TABLE aggregates_rekeyed
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
    version      UInt64 $delta,
    first        Nullable(Float64) $codec,
    increase     Nullable(Float64) $codec,
    resets       Nullable(UInt64) $codec
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toDate(window_start)
ORDER BY (window_ms, series_id, window_start)
TTL toDateTime(window_start) + toIntervalSecond($aggregates_ttl_seconds)
SETTINGS ttl_only_drop_parts = 1;
INSERT INTO aggregates_rekeyed (series_id, series, name, labels, window_ms, window_start,
    window_end, count, sum, min, max, mean, last, p50, p90, p99, closed_by, version, first,
    increase, resets)
SELECT series_id, series, name, labels, window_ms, window_start, window_end, count, sum,
    min, max, mean, last, p50, p90, p99, closed_by, version, first, increase, resets
FROM aggregates
SETTINGS max_partitions_per_insert_block = 0;
EXCHANGE TABLES aggregates AND aggregates_rekeyed;
DROP TABLE aggregates_rekeyed;
