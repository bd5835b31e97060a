#!/usr/bin/env bash
# Build the BigQuery emulator's own virtualenv at <project>/.venv-bq (gitignored).
#
# The emulator is local-bigquery 0.3.2 (the BigQuery REST API on DuckDB + DuckLake). It needs
# Python >= 3.13, so it cannot share the project's 3.11 venv. DuckDB downloads its icu, spatial and
# ducklake extensions at run time, which fails without internet: they come from the
# duckdb-extension-* wheels on PyPI and are installed from those files (DuckDB's own
# `INSTALL '<file>'`, into ~/.duckdb/extensions of the user running this script, who must be
# the user running the tests).
#
# Idempotent: a finished venv (marker file) is reused; the extension check runs every time.
# Usage: bash .ci/setup-bigquery-emulator.sh     (env: SKYSIFT_BQ_VENV, PYTHON313)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SKYSIFT_BQ_VENV:-$ROOT/.venv-bq}"
MARKER="$VENV/.skysift-bq-ready-0.3.2-spatial"
DUCKDB_VERSION=1.5.5

# A pyenv shim may exist and still refuse to run (version not selected): try each candidate.
ok() { [[ -n "$1" && -x "$1" ]] && "$1" -c 'import sys; sys.exit(sys.version_info < (3, 13))' 2>/dev/null; }

find_python() {
  local p
  for p in "${PYTHON313:-}" "$(command -v python3.13 || true)"; do
    ok "$p" && { echo "$p"; return; }
  done
  if command -v pyenv >/dev/null 2>&1; then
    for p in $(ls -d "$(pyenv root)"/versions/3.1[3-9]*/bin/python3 2>/dev/null | sort -V -r); do
      ok "$p" && { echo "$p"; return; }
    done
  fi
  return 1
}

if [[ ! -f "$MARKER" ]]; then
  PY="$(find_python)" || { echo "no Python >= 3.13 found (set PYTHON313=/path/to/python3.13)" >&2; exit 1; }
  echo "building $VENV with $PY"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "local-bigquery==0.3.2" "duckdb==$DUCKDB_VERSION" \
    "duckdb-extension-icu==$DUCKDB_VERSION" "duckdb-extension-ducklake==$DUCKDB_VERSION" \
    "duckdb-extension-spatial==$DUCKDB_VERSION"
  touch "$MARKER"
fi

"$VENV/bin/python" - <<'PY'
import importlib
import pathlib

import duckdb

con = duckdb.connect()
for ext in ("icu", "ducklake", "spatial"):
    pkg = pathlib.Path(importlib.import_module(f"duckdb_extension_{ext}").__file__).parent
    (path,) = pkg.glob(f"extensions/*/{ext}.duckdb_extension")
    con.execute(f"INSTALL '{path}'")
# Prove it loads with downloads switched off, as it must on a machine without internet.
duckdb.connect(config={"autoinstall_known_extensions": False}).execute("LOAD icu; LOAD ducklake; LOAD spatial")
PY
echo "BigQuery emulator ready: $VENV/bin/local-bigquery"
