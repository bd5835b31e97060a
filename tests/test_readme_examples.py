"""The example outputs in README.md are what the commands print (sqlite-utils checks its docs
the same way).

A block marked ``<!-- example: NAME -->`` holds ``$ skysift ...`` command lines, each followed by
the stdout it prints. The commands of one block run in order, in one fresh working directory,
on the built-in defaults (no configuration file), and must exit 0. What changes from run to run
(times, durations, ids and hashes, digits past the third decimal) is masked before comparing,
and so is the width of table columns.

``python -m tests.test_readme_examples`` rewrites the blocks from the real commands' output.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BLOCK = re.compile(r"(<!-- example: (?P<name>[\w-]+) -->\n```\n)(?P<body>.*?)(```)", re.S)

MASKS = [
    (re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,]\d+)?Z?"), "<TIME>"),
    (re.compile(r"\b[0-9a-f]{16,}\b"), "<HASH>"),
    (re.compile(r"\d+(?:\.\d+)? ?ms\b"), "<MS>"),
    (re.compile(r"(\d\.\d{3})\d+"), r"\1"),
]


def mask(text: str) -> list[str]:
    """``text`` with its volatile parts masked, one entry per line, runs of blanks collapsed."""
    for pattern, repl in MASKS:
        text = pattern.sub(repl, text)
    return [" ".join(line.split()) for line in text.strip("\n").splitlines()]


def parse(body: str) -> list[tuple[str, str]]:
    """(command, expected stdout) for each ``$ `` line of a block."""
    steps: list[tuple[str, str]] = []
    for line in body.splitlines(keepends=True):
        if line.startswith("$ "):
            steps.append((line[2:].strip(), ""))
        elif steps:
            steps[-1] = (steps[-1][0], steps[-1][1] + line)
    return steps


def run(command: str, cwd: Path) -> str:
    """Run one README command line as a user would, with this checkout's skysift."""
    words = shlex.split(command)
    assert words[0] == "skysift", f"README example runs something else: {command}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKYSIFT_")}
    env["XDG_CACHE_HOME"] = str(cwd / ".cache")
    res = subprocess.run([sys.executable, "-m", "agent", *words[1:]], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"$ {command}\n{res.stderr}"
    return res.stdout


def examples() -> list[tuple[str, str]]:
    return [(m["name"], m["body"]) for m in BLOCK.finditer(README.read_text(encoding="utf-8"))]


def test_the_readme_has_examples() -> None:
    names = [name for name, _ in examples()]
    assert "quick-start" in names and all(parse(body) for _, body in examples())


def test_mask_hides_what_changes_and_nothing_else() -> None:
    a = "demo-survey  2026-12-01T22:33:37.227Z  6  0.999591  d8302a0a0f6e5e57042c  [12.5 ms]"
    b = "demo-survey 2026-02-06T09:30:00Z 6   0.9993  0123456789abcdef0000 [3 ms]"
    assert mask(a) == mask(b)
    assert mask("6 frames: 6 on the map") != mask("6 frames: 5 on the map")
    assert mask("p=0.999") != mask("p=0.998")


@pytest.mark.slow
@pytest.mark.parametrize("name,body", examples(), ids=[name for name, _ in examples()])
def test_readme_example_output_is_current(name: str, body: str, tmp_path: Path) -> None:
    for command, expected in parse(body):
        got = run(command, tmp_path)
        assert mask(got) == mask(expected), f"README example {name!r}: `$ {command}` printed\n{got}"


def regenerate() -> None:
    """Rewrite every example block of README.md with what its commands print now."""
    import tempfile

    def fresh(m: re.Match) -> str:
        with tempfile.TemporaryDirectory() as tmp:
            out = "".join(f"$ {cmd}\n{run(cmd, Path(tmp))}" for cmd, _ in parse(m["body"]))
        return m.group(1) + out + m.group(4)

    README.write_text(BLOCK.sub(fresh, README.read_text(encoding="utf-8")), encoding="utf-8")


if __name__ == "__main__":
    regenerate()
