-- De-duplicated views created by `skysift sync init`. Placeholders: {frames} {flights}
-- {frames_dedup} {flights_latest} are fully qualified, back-quoted table names.
-- The load-job protocol already makes duplicates impossible; these views are the user-facing
-- guarantee even for rows written by other means (a manual re-load, an old device database).

-- One row per frame: the first one synced.
CREATE OR REPLACE VIEW {frames_dedup} AS
SELECT * FROM {frames}
WHERE TRUE
QUALIFY ROW_NUMBER() OVER (PARTITION BY frame_id ORDER BY synced_at, device_id) = 1;

-- One row per flight: its latest state (a reopened flight is synced again when it ends).
CREATE OR REPLACE VIEW {flights_latest} AS
SELECT * FROM {flights}
WHERE TRUE
QUALIFY ROW_NUMBER() OVER (PARTITION BY flight_id, device_id ORDER BY ended_at DESC, synced_at DESC) = 1;
