"""The README documents what users type: every command, and the full example configuration."""

from __future__ import annotations

import argparse
import re

from agent.cli.main import build_parser
from agent.core.config import example_config
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def _subcommands(parser: argparse.ArgumentParser, prefix: str = "skysift"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix} {name}"
                yield from _subcommands(sub, f"{prefix} {name}")


def test_readme_starts_with_the_two_commands():
    first_block = re.search(r"```sh\n(.*?)```", README, re.S).group(1)
    assert "pip install" in first_block and "skysift run" in first_block
    assert "bash .ci/run" in first_block


def test_every_command_is_in_the_readme():
    commands = sorted(set(_subcommands(build_parser())))
    assert len(commands) >= 15, commands  # the parser really was walked
    missing = []
    for cmd in commands:
        words = cmd.split()[1:]
        # global options may stand between "skysift" and the command: skysift -c FILE sync init
        pattern = r"skysift(?:[ \t]+-\S+(?:[ \t]+[^\s-]\S*)?)*[ \t]+" + r"[ \t]+".join(map(re.escape, words)) + r"\b"
        if not re.search(pattern, README):
            missing.append(cmd)
    assert not missing, f"commands not documented in README.md: {missing}"


def test_readme_embeds_the_current_example_config():
    assert example_config().strip() in README, "README's config reference differs from agent/core/skysift.example.yaml"
