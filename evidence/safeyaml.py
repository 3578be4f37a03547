"""YAML for hand-written settings: plain mappings, lists, text, numbers, booleans and null only.

`load(text, name)` refuses, with one line naming the file and line:
- dates and timestamps (`2024-06-01` would silently become a date; quote it to keep it as text);
- tags other than the standard ones above (`!!python/object`, `!!binary`, `!foo`, ...);
- a document whose expansion through aliases exceeds MAX_NODES nodes ("billion laughs": a few
  lines that expand to billions of items are stopped while being read, before anything is built);
- a key given twice in one mapping (the second would silently win).
"""
from __future__ import annotations

from pathlib import Path

import yaml

MAX_NODES = 100_000
_BASE = "tag:yaml.org,2002:"
_ALLOWED = {_BASE + t for t in ("str", "int", "float", "bool", "null", "seq", "map", "merge")}
_TIMESTAMP = _BASE + "timestamp"


class YamlRefused(ValueError):
    """The text is not YAML this project reads; the message names the file and line."""


def _line(node_or_mark) -> int:
    mark = getattr(node_or_mark, "start_mark", node_or_mark)
    return mark.line + 1 if mark is not None else 0


class SettingsLoader(yaml.SafeLoader):
    """A SafeLoader that builds only plain data and counts the nodes aliases expand to."""

    yaml_constructors = {tag: f for tag, f in yaml.SafeLoader.yaml_constructors.items() if tag in _ALLOWED}

    def __init__(self, stream, name: str = "<text>"):
        super().__init__(stream)
        self.name = name
        self._size: dict[int, int] = {}

    def refuse(self, where, message: str) -> YamlRefused:
        return YamlRefused(f"{self.name}: line {_line(where)}: {message}")

    def compose_node(self, parent, index):
        node = super().compose_node(parent, index)
        if id(node) not in self._size:
            if isinstance(node, yaml.MappingNode):
                children = [n for pair in node.value for n in pair]
            elif isinstance(node, yaml.SequenceNode):
                children = node.value
            else:
                children = []
            self._size[id(node)] = 1 + sum(self._size[id(c)] for c in children)
        if self._size[id(node)] > MAX_NODES:
            raise self.refuse(node, f"aliases expand this value to more than {MAX_NODES:,} items; "
                                    "write the settings out instead of repeating them through aliases")
        return node

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if value_node.tag == _TIMESTAMP:
                raise self.refuse(value_node, f"{key}: {value_node.value} is read as a date; quote it "
                                              f"(\"{value_node.value}\") to keep it as text")
            if key is not None and key in seen and key != "<<":
                raise self.refuse(key_node, f"{key} is given twice in one mapping (first on line "
                                            f"{seen[key]}); keep one")
            seen[key] = _line(key_node)
        return super().construct_mapping(node, deep=deep)


def _refuse_date(loader: SettingsLoader, node):
    raise loader.refuse(node, f"{node.value} is read as a date; quote it (\"{node.value}\") to keep it as text")


def _refuse_tag(loader: SettingsLoader, node):
    tag = node.tag.replace(_BASE, "!!")
    raise loader.refuse(node, f"the tag {tag} is not allowed; write plain text, numbers, lists and mappings")


SettingsLoader.add_constructor(_TIMESTAMP, _refuse_date)
SettingsLoader.add_constructor(None, _refuse_tag)


def load(text: str, name: str = "<text>"):
    """The single document in `text`, as plain Python data; YamlRefused (one line) otherwise."""
    loader = SettingsLoader(text, name)
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as e:
        problem = " ".join(str(e.problem or e.context or "not valid YAML").split())
        raise YamlRefused(f"{name}: line {_line(e.problem_mark)}: {problem} (not valid YAML)") from None
    except yaml.YAMLError as e:
        raise YamlRefused(f"{name}: {' '.join(str(e).split())} (not valid YAML)") from None
    finally:
        loader.dispose()


def load_file(path: str | Path, error: type[Exception]):
    """`load` of the file at `path`; an unreadable file or refused YAML raises `error` with one line
    naming the file."""
    path = Path(path)
    try:
        return load(path.read_text(encoding="utf-8"), str(path))
    except YamlRefused as e:
        raise error(str(e)) from None
    except OSError as e:
        raise error(f"{path}: cannot be read ({e.strerror})") from None
