"""The paths a configuration names: where a secret is found, and whether each exists.

pydantic checks values; :func:`path_problems` looks at the disk (through
:func:`agent.core.config.check_paths`), so that a missing track or a ``storage.dir`` that is a
file is refused by ``skysift config check`` and before ``skysift run`` compiles the model or
creates the database.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel

if TYPE_CHECKING:
    from agent.core.config import Config

#: the file that makes a folder a model directory (models/card.py; agent.core cannot import it)
MODEL_CARD = "model_card.json"
#: where the shipped unit's LoadCredential= takes secrets from: ``credentials/`` beside the config
CREDENTIALS_SUBDIR = "credentials"

Kind = Literal["file", "dir", "other", "missing", "unknown"]


def resolve_relative_paths(model: BaseModel, base: Path) -> None:
    """Make every relative path in ``model`` (and its sections) relative to ``base``."""
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            resolve_relative_paths(value, base)
        elif isinstance(value, Path) and not value.is_absolute():
            setattr(model, name, base / value)


def _kind(path: Path) -> Kind:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "missing"
    except NotADirectoryError:
        return "other"  # a parent is a file
    except OSError:
        return "unknown"  # e.g. a root-only folder: the service may well see it, we cannot tell
    if stat.S_ISDIR(mode):
        return "dir"
    return "file" if stat.S_ISREG(mode) else "other"


def _creatable_dir(path: Path) -> str | None:
    """Why ``mkdir -p path`` would fail, or None: the nearest existing ancestor is a folder."""
    here = path
    while True:
        kind = _kind(here)
        if kind == "missing" and here.parent != here:
            here = here.parent
            continue
        if kind in ("dir", "unknown", "missing"):
            return None
        if here == path:
            return f"{path} exists and is not a directory"
        return f"cannot create {path}: {here} is not a directory"


def _existing(path: Path, want: Kind, what: str) -> str | None:
    kind = _kind(path)
    if kind == want or kind == "unknown":
        return None
    if kind in ("missing", "other") and not path.parent.is_dir():
        return f"{what} {path} does not exist (nor does its folder)"
    if kind == "missing":
        return f"{what} {path} does not exist"
    return f"{path} is not a {'directory' if want == 'dir' else 'regular file'}"


def resolve_secret_path(path: Path | None) -> Path | None:
    """Find a secret file: as given, or by name in systemd's ``$CREDENTIALS_DIRECTORY``.

    ``LoadCredential=mqtt-password:/etc/skysift/mqtt-password`` exposes the file to the service
    only; a config saying ``password_file: mqtt-password`` then finds it there.
    """
    if path is None:
        return None
    try:
        if path.exists():
            return path
    except OSError:
        pass  # e.g. /etc/skysift/credentials is root-only: the copy in the credentials dir is ours
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if cred_dir:
        # The shipped unit loads the whole /etc/skysift/credentials directory with
        # LoadCredential=skysift:/etc/skysift/credentials (a missing single file would fail the
        # start), and systemd names each file there skysift_<file name>.
        for name in (path.name, f"skysift_{path.name}"):
            candidate = Path(cred_dir) / name
            if candidate.exists():
                return candidate
    return path


def _secret(path: Path, config_dir: Path | None) -> str | None:
    found = resolve_secret_path(path)
    if found is not None and _kind(found) in ("file", "unknown"):
        return None
    # Checked outside systemd (no $CREDENTIALS_DIRECTORY), a secret named by file name lives
    # where the service's LoadCredential= copies it from.
    beside = config_dir / CREDENTIALS_SUBDIR / path.name if config_dir is not None else None
    if beside is not None and path.parent == config_dir and _kind(beside) in ("file", "unknown"):
        return None
    where = " (nor in $CREDENTIALS_DIRECTORY)" if os.environ.get("CREDENTIALS_DIRECTORY") else ""
    return f"secret file {path} does not exist{where}"


def path_problems(cfg: Config, config_dir: Path | None) -> list[tuple[str, str]]:
    """(dotted key, problem) for each path of ``cfg`` that ``skysift run`` would trip over."""
    out: list[tuple[str, str | None]] = [("storage.dir", _creatable_dir(cfg.storage.dir))]
    if cfg.source.folder is not None:
        # Only the default ./inbox is created by `skysift run`; a named folder is the user's.
        out.append(("source.folder", _existing(cfg.source.folder, "dir", "folder")))
    elif cfg.watch_folder is not None:
        out.append(("source.folder", _creatable_dir(cfg.watch_folder)))
    if cfg.model.path is not None:
        p = cfg.model.path
        card = p if p.name == MODEL_CARD else p / MODEL_CARD
        problem = _existing(card, "file", "model card")
        out.append(("model.path", problem and f"{problem} (model.path names a model directory)"))
    if cfg.model.cache_dir is not None:
        out.append(("model.cache_dir", _creatable_dir(cfg.model.cache_dir)))
    if cfg.geotag.track is not None:
        out.append(("geotag.track", _existing(cfg.geotag.track, "file", "track")))
    if cfg.geotag.dem is not None:
        out.append(("geotag.dem", _existing(cfg.geotag.dem, "file", "DEM")))
    if cfg.sync.credentials_file is not None:
        out.append(("sync.credentials_file", _secret(cfg.sync.credentials_file, config_dir)))
    if cfg.mqtt.password_file is not None:
        out.append(("mqtt.password_file", _secret(cfg.mqtt.password_file, config_dir)))
    for name in ("ca_file", "cert_file", "key_file"):
        tls_path = getattr(cfg.mqtt.tls, name)
        if tls_path is not None:
            out.append((f"mqtt.tls.{name}", _existing(tls_path, "file", "file")))
        tak_path = getattr(cfg.tak.tls, name)
        if tak_path is not None:
            out.append((f"tak.tls.{name}", _existing(tak_path, "file", "file")))
    return [(key, problem) for key, problem in out if problem]
