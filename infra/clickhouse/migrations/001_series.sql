-- One row per series: identity (series_id = 64-bit blake2b of the series key, computed
-- in Python by monitoring.sinks.clickhouse.rows.series_id), labels and first/last seen.
-- AggregatingMergeTree keeps one row per series_id on merge, with the earliest
-- first_seen and the latest last_seen of every row the stores wrote; read it with FINAL.
-- series, name and labels are functions of series_id (any), kind and unit the latest.
CREATE TABLE IF NOT EXISTS series
(
    series_id  UInt64,
    series     SimpleAggregateFunction(any, String) $codec,
    name       SimpleAggregateFunction(any, LowCardinality(String)),
    labels     SimpleAggregateFunction(any, Map(String, String)) $codec,
    kind       SimpleAggregateFunction(anyLast, LowCardinality(String)),
    unit       SimpleAggregateFunction(anyLast, LowCardinality(String)),
    first_seen SimpleAggregateFunction(min, DateTime64(3, 'UTC')),
    last_seen  SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = AggregatingMergeTree
ORDER BY series_id;
