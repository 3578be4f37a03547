"""params.yaml: one section per stage; a stage receives only its own section.

A profile may start with `extends: <file>` (relative to the profile): the base file's sections,
with the profile's settings laid over them key by key (nested mappings merged, other values
replaced). A profile then holds only what differs, and cannot fall behind its base.

`python -m evidence.params PARAMS OUT` writes `OUT/params/<section>.json` for every section,
rewriting a file only when its content changed, so that `make` reruns only the stages whose
own parameters changed.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from . import atomic
from .errors import ToolkitError


class ParamsError(ToolkitError, ValueError):
    pass


def load_all(path: str | Path) -> dict:
    """Every section of a params file, with its `extends` chain resolved."""
    return _load(Path(path), ())


def _load(path: Path, chain: tuple[Path, ...]) -> dict:
    if not path.is_file():
        where = f" (extended by {chain[-1]})" if chain else " (pass PARAMS=<file>, default params.yaml)"
        raise ParamsError(f"params file not found: {path}{where}")
    try:
        params = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ParamsError(f"params file {path} is not valid YAML: {e}") from None
    if not isinstance(params, dict):
        raise ParamsError(f"params file {path} must map section names to settings")
    base = params.pop("extends", None)
    if base is None:
        return params
    if not isinstance(base, str) or not base.strip():
        raise ParamsError(f"params file {path}: 'extends' must name one params file, got {base!r}")
    if path.resolve() in chain:
        raise ParamsError(f"params file {path} extends itself through {' -> '.join(map(str, chain))}")
    return merged(_load(path.parent / base, chain + (path.resolve(),)), params)


def merged(base: dict, over: dict) -> dict:
    """`over` laid over `base`: mappings merged key by key, any other value replaced."""
    out = dict(base)
    for key, value in over.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = merged(out[key], value) if both else value
    return out


def section(path: str | Path, name: str) -> dict:
    params = load_all(path)
    if name not in params:
        raise ParamsError(f"params file {path} has no section {name!r} (sections: {', '.join(params)})")
    value = params[name]
    if not isinstance(value, dict):
        raise ParamsError(f"params file {path}: section {name!r} must be a mapping")
    return value


def stamp(path: str | Path, out_dir: str | Path) -> list[str]:
    """Write changed per-section stamp files; return the sections that changed."""
    changed = []
    for name, value in load_all(path).items():
        target = Path(out_dir) / "params" / f"{name}.json"
        text = json.dumps(value, sort_keys=True, indent=2) + "\n"
        if not target.is_file() or target.read_text() != text:
            atomic.write_text(target, text)
            changed.append(name)
    return changed


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m evidence.params PARAMS OUT", file=sys.stderr)
        return 2
    try:
        stamp(argv[0], argv[1])
    except ParamsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
