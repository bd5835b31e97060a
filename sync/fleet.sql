-- skysift fleet view, cloud side: the latest state of every device that has synced anything.
--
-- One row per device_id: when it last synced, how far behind it is, where it was last seen.
-- Placeholders: {frames_dedup} and {flights_latest}, the views created by `skysift sync init`
-- (fully qualified, back-quoted). Every grouping and join is on device_id: two devices may
-- both fly a "flight-1".
--
-- What the columns mean (BigQuery only knows what devices sent, so all of it is as of the
-- device's last sync):
--   last_sync_at      the newest synced_at of the device's frame or flight rows: when those
--                     rows entered their outbox batch on the device (device clock), i.e. the
--                     last load job that reached BigQuery
--   frames            frames of the device in BigQuery
--   flights           ended flights of the device in BigQuery (their latest version)
--   backlog_frames    frames the device reported in its ended flights (flights.frames) that are
--                     not in the frames table yet: rows still owed. No table holds the
--                     device's own outbox count; frames of a flight still open, and images
--                     (GCS), are not counted
--   last_position     the position of the device's newest frame (by capture time, else
--                     classification time) that has a valid one; (0, 0) is "no fix", skipped
--   last_position_at  when that frame was taken, and last_flight_id the flight it belongs to

WITH synced_frames AS (
  SELECT device_id, flight_id, COUNT(*) AS n
  FROM {frames_dedup}
  GROUP BY device_id, flight_id
),

flight_state AS (
  SELECT
    fl.device_id,
    COUNT(*) AS flights,
    SUM(GREATEST(COALESCE(fl.frames, 0) - COALESCE(sf.n, 0), 0)) AS backlog_frames,
    MAX(fl.synced_at) AS last_synced_at
  FROM {flights_latest} AS fl
  LEFT JOIN synced_frames AS sf ON sf.device_id = fl.device_id AND sf.flight_id = fl.flight_id
  GROUP BY fl.device_id
),

frame_state AS (
  SELECT device_id, COUNT(*) AS frames, MAX(synced_at) AS last_synced_at
  FROM {frames_dedup}
  GROUP BY device_id
),

located AS (
  SELECT
    device_id,
    flight_id,
    COALESCE(captured_at, classified_at) AS at,
    COALESCE(
      position,
      IF(lat BETWEEN -90 AND 90 AND lon BETWEEN -180 AND 180, ST_GEOGPOINT(lon, lat), NULL)
    ) AS geo
  FROM {frames_dedup}
),

last_seen AS (
  SELECT device_id, flight_id, at, geo
  FROM located
  WHERE geo IS NOT NULL AND NOT (ST_X(geo) = 0 AND ST_Y(geo) = 0)
  QUALIFY ROW_NUMBER() OVER (PARTITION BY device_id ORDER BY at DESC, flight_id DESC) = 1
),

devices AS (
  SELECT device_id FROM frame_state
  UNION DISTINCT
  SELECT device_id FROM flight_state
)

SELECT
  d.device_id,
  GREATEST(
    COALESCE(fr.last_synced_at, fl.last_synced_at), COALESCE(fl.last_synced_at, fr.last_synced_at)
  ) AS last_sync_at,
  COALESCE(fr.frames, 0) AS frames,
  COALESCE(fl.flights, 0) AS flights,
  COALESCE(fl.backlog_frames, 0) AS backlog_frames,
  ls.geo AS last_position,
  ST_Y(ls.geo) AS last_lat,
  ST_X(ls.geo) AS last_lon,
  ls.at AS last_position_at,
  ls.flight_id AS last_flight_id
FROM devices AS d
LEFT JOIN frame_state AS fr ON fr.device_id = d.device_id
LEFT JOIN flight_state AS fl ON fl.device_id = d.device_id
LEFT JOIN last_seen AS ls ON ls.device_id = d.device_id
ORDER BY d.device_id
