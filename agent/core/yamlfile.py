"""Read the configuration YAML strictly: a key written twice in one mapping is an error.

PyYAML's SafeLoader keeps the last of two equal keys, so a second ``model:`` block further
down a long file silently replaces the first, and an invalid value in the first is never seen.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from agent.core.errors import ConfigError

_MERGE_TAG = "tag:yaml.org,2002:merge"


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping holds the same key twice; ``key`` is its dotted path."""

    def __init__(self, key: str, first_line: int, node: Node):
        super().__init__(
            problem=f"{key}: duplicated key (first at line {first_line}); the last one would "
            "silently replace it",
            problem_mark=node.start_mark,
        )
        self.key = key


class UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a repeated key, naming its dotted path and line.

    Construction is lazy (PyYAML builds nested mappings after their parent), so each mapping
    records the dotted path of its children before they are built.
    """

    def __init__(self, stream: str):
        super().__init__(stream)
        self._paths: dict[int, str] = {}

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        base = self._paths.get(id(node), "")
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                continue  # `<<: *defaults` then overriding a merged key is the point of merges
            key = self.construct_object(key_node, deep=True)
            dotted = f"{base}.{key}" if base else str(key)
            self._paths[id(value_node)] = dotted
            try:
                if key in seen:
                    raise DuplicateKeyError(dotted, seen[key], key_node)
                seen[key] = key_node.start_mark.line + 1
            except TypeError:
                continue  # an unhashable key: SafeLoader itself reports it below
        return super().construct_mapping(node, deep=deep)

    def construct_sequence(self, node: SequenceNode, deep: bool = False) -> list[Any]:
        base = self._paths.get(id(node), "")
        for i, item in enumerate(node.value):
            self._paths[id(item)] = f"{base}[{i}]"
        return super().construct_sequence(node, deep=deep)


def load_yaml(text: str, origin: str) -> Any:
    """Parse ``text`` (the file ``origin``); every YAML problem is a :class:`ConfigError`."""
    loader = UniqueKeyLoader(text)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", exc)
        raise ConfigError(f"{origin}: not valid YAML{where}: {problem}") from None
    finally:
        loader.dispose()
