"""The kernel every other room builds on: configuration, named errors, the event bus, the
runtime context, the retry helper, the link log and URL redaction. It imports nothing of
skysift above it (the import-linter contract in pyproject.toml checks that)."""

from agent.core.backoff import Backoff
from agent.core.config import Config, example_config, load_config, parse_config, resolve_secret_path
from agent.core.errors import (
    ConfigError,
    EngineUnavailable,
    ImageError,
    InferenceError,
    MissingExtra,
    ModelError,
    ModelIntegrityError,
    SkysiftError,
    StorageFull,
)
from agent.core.events import EventBus
from agent.core.logutil import LinkLog
from agent.core.redact import redact_url
from agent.core.runtime import AgentContext, Component, Stats

__all__ = [
    "AgentContext",
    "Backoff",
    "Component",
    "Config",
    "ConfigError",
    "EngineUnavailable",
    "EventBus",
    "ImageError",
    "InferenceError",
    "LinkLog",
    "MissingExtra",
    "ModelError",
    "ModelIntegrityError",
    "SkysiftError",
    "Stats",
    "StorageFull",
    "example_config",
    "load_config",
    "parse_config",
    "redact_url",
    "resolve_secret_path",
]
