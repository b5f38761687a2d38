-- Raw samples keyed by (series_id, ts, value) instead of (series_id, ts): a replayed
-- sample (same series, ts and value) still collapses under ReplacingMergeTree, but two
-- distinct values of one series stamped in the same millisecond are both kept (002
-- kept one of them). The primary index stays (series_id, ts).
-- ClickHouse cannot put an existing column into a sorting key (MODIFY ORDER BY only
-- takes columns added in the same ALTER), so the table is rebuilt: a copy under the
-- new key, swapped in atomically with EXCHANGE TABLES. On a large table this copies
-- every row (time and disk space of the table); run it with the stores stopped. Each
-- step may be repeated: a run interrupted anywhere starts over from the first line.
DROP TABLE IF EXISTS samples_rekeyed;
CREATE TABLE samples_rekeyed
(
    series_id UInt64 $codec,
    ts        DateTime64(3, 'UTC') $delta,
    value     Float64 $delta
)
ENGINE = ReplacingMergeTree
PARTITION BY toDate(ts)
PRIMARY KEY (series_id, ts)
ORDER BY (series_id, ts, value)
TTL toDateTime(ts) + toIntervalSecond($samples_ttl_seconds)
SETTINGS ttl_only_drop_parts = 1;
INSERT INTO samples_rekeyed SELECT series_id, ts, value FROM samples
SETTINGS max_partitions_per_insert_block = 0;
EXCHANGE TABLES samples AND samples_rekeyed;
DROP TABLE samples_rekeyed;
