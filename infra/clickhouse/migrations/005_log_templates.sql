-- Log templates (schemas/log_template.v1.avsc): one row per (service, template_id),
-- the latest event wins. `size` (records of the template when the event was
-- emitted) grows with every event of a template, so it is the version: a replayed
-- event has the same size and collapses. Queries read with FINAL.
-- first_error is 1970-01-01 when the template was never seen at ERROR or above.
CREATE TABLE IF NOT EXISTS log_templates
(
    service     LowCardinality(String),
    template_id UInt32,
    template    String $codec,
    change      LowCardinality(String),
    level       LowCardinality(String),
    last_event  DateTime64(3, 'UTC'),
    first_seen  DateTime64(3, 'UTC'),
    first_error DateTime64(3, 'UTC'),
    size        UInt64
)
ENGINE = ReplacingMergeTree(size)
ORDER BY (service, template_id);
