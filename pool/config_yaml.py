"""Reading pool.yaml into a plain document: UTF-8 text, PyYAML's safe loader, and the shapes a
small file must not have (a key given twice, nesting past MAX_YAML_DEPTH, an alias bomb).

It knows nothing of the keys: config.py validates the document this returns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pool.errors import ConfigError

MAX_YAML_DEPTH = 64  # a pool.yaml is a few levels deep; a schedule's args a few more
MAX_YAML_VALUES = 100_000  # values of the document with every alias expanded


def _expanded_size(node: Any, sizes: dict[int, int]) -> int:
    """How many values ``node`` stands for with every alias written out; memoised by node, so
    each distinct node is counted once however many aliases point at it. A node that contains
    itself (``a: &a [*a]``) counts as too many: it expands without end."""
    known = sizes.get(id(node))
    if known is not None:
        return known
    sizes[id(node)] = MAX_YAML_VALUES + 1  # while it is being counted: met again means a cycle
    if isinstance(node, yaml.MappingNode):
        children = [child for pair in node.value for child in pair]
    elif isinstance(node, yaml.SequenceNode):
        children = node.value
    else:
        children = []
    total = 1
    for child in children:
        total += _expanded_size(child, sizes)
        if total > MAX_YAML_VALUES:
            break
    sizes[id(node)] = total
    return total


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping.

    PyYAML keeps the last of two equal keys without a word, so `processes: 7` further down a
    file would silently win over `processes: 2`. Keys a `<<:` merge brings in may still be
    overridden: that is what a merge is for. The check sits in ``flatten_mapping`` because its
    first call on a mapping sees it as written; the merge then rewrites the node's pairs, and a
    check in ``construct_mapping`` would see those (a mapping merged elsewhere can be flattened
    before it is constructed).
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._checked: set[int] = set()
        self._depth = 0

    # Two shapes of a small file that would otherwise crash or hang every command: nesting
    # deeper than the composer's recursion can go (a RecursionError traceback), and aliases
    # that multiply ("billion laughs": 332 bytes naming 9**9 values). PyYAML builds an alias as
    # the same object, so the document itself stays small, but whatever walks it as a tree
    # (${VAR} expansion, JSON encoding of a schedule's args) visits every copy. Both are
    # measured on the composed nodes, before any value is built: the depth as it is composed,
    # the expanded size once, memoised per node, so the check costs the file's size.
    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"values nested more than {MAX_YAML_DEPTH} deep", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self) -> Any:
        node = super().get_single_node()
        if node is not None and _expanded_size(node, {}) > MAX_YAML_VALUES:
            raise yaml.composer.ComposerError(
                None, None, f"aliases expand to more than {MAX_YAML_VALUES:,} values (an alias bomb?); "
                "write the values out, or use fewer nested aliases", node.start_mark)
        return node

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        if id(node) not in self._checked:
            self._checked.add(id(node))
            self._refuse_duplicates(node)
        super().flatten_mapping(node)

    def _refuse_duplicates(self, node: yaml.MappingNode) -> None:
        first_lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = first_lines.get(key)
            except TypeError:  # an unhashable key: construct_mapping says so
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {first})", key_node.start_mark)
            first_lines[key] = key_node.start_mark.line + 1


def read_document(path: Path) -> Any:
    """The parsed YAML of the file at ``path`` (None for an empty file).

    Raises:
        ConfigError: the file is missing, unreadable, not UTF-8 or not valid YAML.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (pass the path of your pool.yaml)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{path.name}: line {line}: byte {exc.start} ({raw[exc.start]:#04x}) is not UTF-8; "
                          "save the file as UTF-8") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader: no Python objects
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path.name}: {where}{problem}") from None
    return data
