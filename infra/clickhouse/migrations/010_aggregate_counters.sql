-- Aggregate v2 (schemas/aggregate.v2.avsc): each window's counter fields, the value of
-- its first sample, the counter's increase (resets handled, from the series' previous
-- sample on, so increases of consecutive windows add up) and the number of resets.
-- Rows of v1 records (and rows stored before this migration) have NULL: readers fall
-- back to inferring the increase from min and last.
ALTER TABLE aggregates
    ADD COLUMN IF NOT EXISTS first    Nullable(Float64) $codec,
    ADD COLUMN IF NOT EXISTS increase Nullable(Float64) $codec,
    ADD COLUMN IF NOT EXISTS resets   Nullable(UInt64) $codec;
