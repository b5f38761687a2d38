-- Alert state changes (schemas/alert.v2.avsc, the `alerts` topic: firing, its
-- re-sends, resolved) and acknowledgements (the `acknowledge` commands of the
-- `alerts.commands` topic), so that dashboards draw firing bands and reports compute
-- MTTA. An incident of an alert is (fingerprint, starts_at): every record of one
-- firing carries the same starts_at, its resolved record the ends_at. Identity of a
-- row is its whole key: a replayed record collapses; queries read with FINAL.
CREATE TABLE IF NOT EXISTS alert_events
(
    fingerprint  String $codec,
    status       LowCardinality(String),
    alertname    LowCardinality(String),
    labels       Map(LowCardinality(String), String) $codec,
    annotations  Map(LowCardinality(String), String) $codec,
    starts_at    DateTime64(3, 'UTC') $delta,
    ends_at      Nullable(DateTime64(3, 'UTC')) $codec,
    evaluated_at DateTime64(3, 'UTC') $delta,
    severity     LowCardinality(String),
    value        Nullable(Float64) $codec,
    rule         String $codec
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(starts_at)
ORDER BY (fingerprint, starts_at, evaluated_at, status)
SETTINGS index_granularity = 8192;

CREATE TABLE IF NOT EXISTS alert_acks
(
    time        DateTime64(3, 'UTC') $delta,
    fingerprint String $codec,
    group_key   String $codec,
    by          String $codec,
    comment     String $codec
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (time, fingerprint, group_key, by)
SETTINGS index_granularity = 8192;
