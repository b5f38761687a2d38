-- Anomaly events (schemas/anomaly.v2.avsc): points whose detector score reached the
-- threshold. Identity (series_id, window_ms, ts, detector): a replayed event
-- collapses under ReplacingMergeTree; queries read with FINAL. The scores of every
-- point are the anomaly_score series in `aggregates`. Kept as long as aggregates.
CREATE TABLE IF NOT EXISTS anomalies
(
    series_id UInt64 $codec,
    series    String $codec,
    name      LowCardinality(String),
    labels    Map(LowCardinality(String), String) $codec,
    window_ms UInt32 $codec,
    ts        DateTime64(3, 'UTC') $delta,
    value     Float64 $codec,
    score     Float64 $codec,
    threshold Float64 $codec,
    detector  LowCardinality(String),
    field     LowCardinality(String),
    signals   Map(LowCardinality(String), Float64) $codec
)
ENGINE = ReplacingMergeTree
PARTITION BY toDate(ts)
ORDER BY (series_id, window_ms, ts, detector)
TTL toDateTime(ts) + toIntervalSecond($aggregates_ttl_seconds)
SETTINGS ttl_only_drop_parts = 1;
