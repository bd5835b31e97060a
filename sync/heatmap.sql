-- skysift damage heat map, cloud side: the share of damaged frames per grid cell.
--
-- The same question as the offline report's heat map (`skysift report`), asked of every frame
-- every device has synced: where is the damage? One row per grid cell that holds at least
-- @min_frames classified frames with a position, hottest first, with the cell as a GEOGRAPHY
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

WITH located AS (
  SELECT
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
  FROM {frames_dedup}
  WHERE status = 'classified'
    AND (@flight_id IS NULL OR flight_id = @flight_id)
    AND (@since IS NULL OR COALESCE(captured_at, classified_at) >= @since)
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
    COUNT(*) AS frames,
    COUNTIF(label = 'damaged') AS damaged_frames,
    SUM(tiles) AS tiles,
    SUM(damaged_tiles) AS damaged_tiles,
    MAX(p_damaged) AS max_p_damaged,
    COUNT(DISTINCT flight_id) AS flights,
    MIN(captured_at) AS first_captured_at,
    MAX(captured_at) AS last_captured_at
  FROM gridded
  GROUP BY row_ix, col_ix
  HAVING COUNT(*) >= @min_frames
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
  frames,
  damaged_frames,
  -- the heat: which share of the frames seen here show damage
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
ORDER BY damaged_share DESC, damaged_frames DESC, row_ix, col_ix
