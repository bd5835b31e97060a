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


def _parsers(parser: argparse.ArgumentParser, prefix: str = "skysift"):
    """(command line, parser) of every subcommand, nested ones included, aliases once."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            seen: set[int] = set()
            for name, sub in action.choices.items():
                if id(sub) not in seen:
                    seen.add(id(sub))
                    yield f"{prefix} {name}", sub
                    yield from _parsers(sub, f"{prefix} {name}")


def test_every_subcommand_has_a_description_and_upper_case_positionals():
    bad = []
    for cmd, sub in _parsers(build_parser()):
        if not (sub.description or "").strip():
            bad.append(f"{cmd}: no description")
        for action in sub._actions:
            if action.option_strings or isinstance(action, argparse._SubParsersAction):
                continue
            shown = action.metavar or action.dest
            if shown != shown.upper():
                bad.append(f"{cmd}: positional {shown!r} is not upper case")
    assert not bad, bad


def test_deprecated_forms_are_in_the_changelog():
    """Each 0.1 form that still works with a warning is listed under 0.2.0 "Deprecated"."""
    entry = re.search(r"### 0\.2\.0\n(.*?)\n### ", README, re.S).group(1)
    deprecated = entry.split("Deprecated", 1)[1]
    for form in ("--json-array", "bench --json FILE", "--json-out FILE", "sync --once", "sync run"):
        assert form in deprecated, form
