-- De-duplicated views created by `skysift sync init`. Placeholders: {frames} {flights}
-- {frames_dedup} {flights_latest} are fully qualified, back-quoted table names.
-- The load-job protocol already makes duplicates impossible; these views are the user-facing
-- guarantee even for rows written by other means (a manual re-load, an old device database).

-- One row per frame of each device: the first one synced. Keyed on (device_id, frame_id): a
-- frame_id is the content hash, so two devices that photograph the same file (a copied SD card)
-- each keep their row, and a fleet's counts stay per device.
CREATE OR REPLACE VIEW {frames_dedup} AS
SELECT * FROM {frames}
WHERE TRUE
QUALIFY ROW_NUMBER() OVER (PARTITION BY device_id, frame_id ORDER BY synced_at) = 1;

-- One row per flight: its latest state (a reopened flight is synced again when it ends).
CREATE OR REPLACE VIEW {flights_latest} AS
SELECT * FROM {flights}
WHERE TRUE
QUALIFY ROW_NUMBER() OVER (PARTITION BY flight_id, device_id ORDER BY ended_at DESC, synced_at DESC) = 1;
