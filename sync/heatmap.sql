-- skysift damage heat map, cloud side: the damaged tiles per grid cell, where they lie.
--
-- The same question as the offline report's heat map (`skysift report`), asked of every frame
-- every device has synced: where is the damage? The heat is counted by tile position: each
-- damaged tile (the frame row's damaged_tile_locations, at the model card's threshold) falls in
-- the cell of its own centre on the ground, not in the cell under the drone, so an oblique
-- frame's damage is not put where the drone was. Frames are counted by their own position
-- (the coverage: how often a cell was seen). One row per grid cell that holds at least
-- @min_frames classified frames, or a damaged tile, hottest first, with the cell as a GEOGRAPHY
-- polygon (for BigQuery Geo Viz, Looker Studio or a GeoJSON export) and its centre as a point.
--
-- Placeholder: {frames_dedup} is the de-duplicated frames view created by `skysift sync init`
-- (`project.dataset.frames_dedup`), so a frame synced twice is counted once.
-- `skysift report --bigquery-sql` prints this query with the configured view filled in.
--
-- Query parameters (bq query --parameter=cell_m:FLOAT64:50 ..., or QueryJobConfig):
--   @cell_m      FLOAT64    side of a cell in metres, e.g. 50
--   @flight_id   STRING     one flight, or NULL for all flights
--   @since       TIMESTAMP  frames captured (else classified) at or after this, or NULL
--   @min_frames  INT64      cells with fewer frames are left out (1 keeps every cell)
--
-- The grid: rows are bands of @cell_m metres of latitude; in each band, columns are @cell_m
-- metres of longitude at the band's middle latitude. Cells are square on the ground to within
-- the change of cos(latitude) across one cell, and the same everywhere, so maps of different
-- days and devices line up cell for cell. (Columns are not wrapped at the antimeridian.)
-- Metres per degree: 6371008.8 m (mean Earth radius) * pi / 180 = 111195.08 m.
--
-- Only functions that both BigQuery and the local-bigquery emulator support are used
-- (ST_GEOGPOINT, ST_X, ST_Y, ST_MAKELINE, ST_MAKEPOLYGON, ST_AREA, ST_ASGEOJSON); the test
-- tests/test_heatmap_sql.py runs this file against the emulator.

WITH chosen AS (
  SELECT *
  FROM {frames_dedup}
  WHERE status = 'classified'
    AND (@flight_id IS NULL OR flight_id = @flight_id)
    AND (@since IS NULL OR COALESCE(captured_at, classified_at) >= @since)
),

located AS (
  -- one point per frame (kind 'frame') and one per located damaged tile (kind 'tile')
  SELECT
    'frame' AS kind,
    device_id,
    flight_id,
    label,
    p_damaged,
    tiles,
    damaged_tiles,
    captured_at,
    -- the synced point, else one made from lat/lon when they are valid (ST_GEOGPOINT raises otherwise)
    COALESCE(
      position,
      IF(lat BETWEEN -90 AND 90 AND lon BETWEEN -180 AND 180, ST_GEOGPOINT(lon, lat), NULL)
    ) AS geo
  FROM chosen
  UNION ALL
  SELECT
    'tile' AS kind,
    f.device_id,
    f.flight_id,
    NULL AS label,
    d.p_damaged,
    NULL AS tiles,
    NULL AS damaged_tiles,
    f.captured_at,
    d.center AS geo
  FROM chosen f, UNNEST(f.damaged_tile_locations) d
),

indexed AS (
  SELECT
    *,
    -- @cell_m / 111195.08: the cell height in degrees of latitude
    CAST(FLOOR(ST_Y(geo) / (@cell_m / 111195.08)) AS INT64) AS row_ix
  FROM located
  -- (0, 0) is what a receiver without a fix writes: not a position (as in the offline report)
  WHERE geo IS NOT NULL AND NOT (ST_X(geo) = 0 AND ST_Y(geo) = 0)
),

gridded AS (
  SELECT
    *,
    CAST(FLOOR(ST_X(geo) / lon_step) AS INT64) AS col_ix
  FROM (
    SELECT
      *,
      -- the cell width in degrees of longitude at the middle of the row's latitude band
      @cell_m / (111195.08 * COS((row_ix + 0.5) * (@cell_m / 111195.08) * ACOS(-1) / 180)) AS lon_step
    FROM indexed
  )
),

cells AS (
  SELECT
    row_ix,
    col_ix,
    ANY_VALUE(lon_step) AS lon_step,
    COUNTIF(kind = 'frame') AS frames,
    COUNTIF(kind = 'frame' AND label = 'damaged') AS damaged_frames,
    COALESCE(SUM(tiles), 0) AS tiles,
    COALESCE(SUM(damaged_tiles), 0) AS damaged_tiles,
    COUNTIF(kind = 'tile') AS located_damaged_tiles,
    MAX(p_damaged) AS max_p_damaged,
    -- flights are named per device ("flight-1" on two drones is two flights)
    COUNT(DISTINCT CONCAT(device_id, '/', flight_id)) AS flights,
    MIN(captured_at) AS first_captured_at,
    MAX(captured_at) AS last_captured_at
  FROM gridded
  GROUP BY row_ix, col_ix
  HAVING COUNTIF(kind = 'frame') >= @min_frames OR COUNTIF(kind = 'tile') > 0
),

bounds AS (
  SELECT
    *,
    row_ix * (@cell_m / 111195.08) AS lat0,
    (row_ix + 1) * (@cell_m / 111195.08) AS lat1,
    col_ix * lon_step AS lon0,
    (col_ix + 1) * lon_step AS lon1
  FROM cells
),

shaped AS (
  SELECT
    *,
    ST_MAKEPOLYGON(ST_MAKELINE([
      ST_GEOGPOINT(lon0, lat0), ST_GEOGPOINT(lon1, lat0), ST_GEOGPOINT(lon1, lat1),
      ST_GEOGPOINT(lon0, lat1), ST_GEOGPOINT(lon0, lat0)
    ])) AS cell
  FROM bounds
)

SELECT
  row_ix,
  col_ix,
  -- the heat: damaged tiles whose centre lies in this cell
  located_damaged_tiles,
  SAFE_DIVIDE(located_damaged_tiles, ST_AREA(cell) / 1e6) AS damaged_tiles_per_km2,
  frames,
  damaged_frames,
  -- which share of the frames taken over this cell show damage (NULL: no frame centre here)
  SAFE_DIVIDE(damaged_frames, frames) AS damaged_share,
  tiles,
  damaged_tiles,
  SAFE_DIVIDE(damaged_tiles, tiles) AS damaged_tile_share,
  max_p_damaged,
  flights,
  first_captured_at,
  last_captured_at,
  ST_AREA(cell) AS cell_area_m2,
  -- damaged frames per square kilometre: the density, comparable across cell sizes
  SAFE_DIVIDE(damaged_frames, ST_AREA(cell) / 1e6) AS damaged_per_km2,
  (lat0 + lat1) / 2 AS center_lat,
  (lon0 + lon1) / 2 AS center_lon,
  ST_GEOGPOINT((lon0 + lon1) / 2, (lat0 + lat1) / 2) AS center,
  cell,
  ST_ASGEOJSON(cell) AS cell_geojson
FROM shaped
ORDER BY located_damaged_tiles DESC, damaged_share DESC, damaged_frames DESC, row_ix, col_ix
