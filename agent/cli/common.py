"""What the `skysift` subcommands share: loading the config, showing paths, JSON output,
deprecation warnings and the user cache directory."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from agent.core.config import Config, load_config

#: the release in which the deprecated forms listed in README "Changelog" go away
REMOVED_IN = "0.3.0"


def load(args: argparse.Namespace) -> Config:
    """Load the configuration named on the command line and apply its log level."""
    cfg = load_config(args.config)
    if not getattr(args, "log_level", None):
        logging.getLogger().setLevel(cfg.log_level.upper())
    return cfg


def show_path(path: str | os.PathLike[str]) -> str:
    """``path`` as people want to read it: normalised (no ``./`` or ``a/../``), and relative to
    the working directory when that is shorter (``skysift-report/x.html``, not ``/home/...``)."""
    norm = os.path.normpath(os.fspath(path))
    try:
        rel = os.path.relpath(os.path.abspath(norm))
    except ValueError:  # another drive (Windows): no relative form
        return norm
    return rel if len(rel) < len(norm) else norm


def deprecated(old: str, new: str) -> None:
    """Warn on stderr that ``old`` (what the user typed) still works but goes in REMOVED_IN.
    On stderr, never stdout: the old form's output stays byte for byte what scripts read."""
    print(f"skysift: warning: `{old}` is deprecated and goes in {REMOVED_IN}; use `{new}`",
          file=sys.stderr)


def write_json_lines(rows: Iterable[dict]) -> None:
    """One JSON object per line on stdout, as ``classify --json`` writes: a reader can act on
    each line as it comes, and ``head``/``jq -c`` work on a list of any length."""
    out = sys.stdout
    for row in rows:
        out.write(json.dumps(row, default=str) + "\n")


def user_cache_dir() -> Path:
    """Where a command without a storage directory keeps caches (the compiled-model cache of
    ``skysift classify``): platformdirs' answer when it is installed, else $XDG_CACHE_HOME or
    ~/.cache, then ``skysift``. Not the working directory: a one-off classify must not leave
    a ``skysift-data`` folder wherever it was typed."""
    try:
        from platformdirs import user_cache_path
    except ImportError:
        base = os.environ.get("XDG_CACHE_HOME") or ""
        # XDG: a relative $XDG_CACHE_HOME is invalid and must be ignored
        root = Path(base) if os.path.isabs(base) else Path.home() / ".cache"
        return root / "skysift"
    return user_cache_path("skysift", appauthor=False)
