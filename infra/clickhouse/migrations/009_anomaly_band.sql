-- Anomaly events v3 (schemas/anomaly.v3.avsc): the value the detector expected, the
-- band of values it would not have flagged, and the components that fired. Rows of
-- v1/v2 events (and rows stored before this migration) have NULL and [].
ALTER TABLE anomalies
    ADD COLUMN IF NOT EXISTS expected   Nullable(Float64) $codec,
    ADD COLUMN IF NOT EXISTS lower      Nullable(Float64) $codec,
    ADD COLUMN IF NOT EXISTS upper      Nullable(Float64) $codec,
    ADD COLUMN IF NOT EXISTS components Array(LowCardinality(String)) $codec;
