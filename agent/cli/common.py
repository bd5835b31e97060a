"""One module per `skysift` subcommand, each exposing ``register(subparsers)``."""

from __future__ import annotations

import argparse
import logging

from agent.core.config import Config, load_config


def load(args: argparse.Namespace) -> Config:
    """Load the configuration named on the command line and apply its log level."""
    cfg = load_config(args.config)
    if not getattr(args, "log_level", None):
        logging.getLogger().setLevel(cfg.log_level.upper())
    return cfg
