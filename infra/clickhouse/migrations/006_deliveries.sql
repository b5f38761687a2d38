-- The notifier's delivery log (schemas/delivery.v1.avsc): one row per attempt outcome.
-- The identity of a row is (delivery_id, attempt): delivery_id is the deterministic
-- idempotence key of a notification to one integration, so a replayed record
-- collapses; `time_ms` as the version keeps the latest. Queries read with FINAL.
CREATE TABLE IF NOT EXISTS deliveries
(
    delivery_id  String $codec,
    attempt      UInt16 $codec,
    time         DateTime64(3, 'UTC') $delta,
    receiver     LowCardinality(String),
    integration  LowCardinality(String),
    channel      LowCardinality(String),
    target       LowCardinality(String),
    group_key    String $codec,
    tier         UInt16 $codec,
    status       LowCardinality(String),
    fingerprints Array(String) $codec,
    outcome      LowCardinality(String),
    http_status  Nullable(UInt16) $codec,
    error        String $codec,
    duration_ms  Float64 $codec,
    version      UInt64 $delta
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(time)
ORDER BY (delivery_id, attempt)
SETTINGS index_granularity = 8192;
