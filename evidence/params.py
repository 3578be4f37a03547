"""params.yaml: one section per stage; a stage receives only its own section.

A profile may start with `extends: <file>` (relative to the profile): the base file's sections,
with the profile's settings laid over them key by key (nested mappings merged, other values
replaced). A profile then holds only what differs, and cannot fall behind its base.

Every params file is checked when it is read (`load_all`), after the `extends` merge and before
any stage sees it: against `params.schema.json` (types, ranges, allowed values, no unknown keys),
then the checks that relate two settings (`CROSS_CHECKS`). Errors are one line naming the file,
the dotted key and the fix. The YAML is read by `evidence.safeyaml` (no dates, tags or alias bombs).

    python -m evidence.params PARAMS OUT    writes OUT/params/<section>.json for every section,
        rewriting a file only when its content changed (so `make` reruns only the stages whose
        own parameters changed); exit 0, or 1 with one `error:` line on stderr.
    python -m evidence.params --doc [FILE]  the parameter reference (docs/params.md) generated
        from the schema's descriptions, to FILE or stdout.
"""
from __future__ import annotations

import difflib
import functools
import json
import sys
from pathlib import Path

import jsonschema

from . import atomic, layout, safeyaml
from .cli import guarded
from .errors import ToolkitError

SCHEMA_FILE = Path(__file__).with_name("params.schema.json")
DOC_COMMAND = "python -m evidence.params --doc docs/params.md"


class ParamsError(ToolkitError, ValueError):
    pass


@functools.cache
def schema() -> dict:
    return json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))


def allowed(dotted: str) -> list:
    """The `enum` the schema declares for a dotted parameter, e.g. allowed("train.optimizer");
    list items and anyOf branches are looked through ("validate.acceptance.metric")."""
    node = schema()
    for part in dotted.split("."):
        node = _resolve(node)
        node = _resolve(node.get("items", node))["properties"][part]
    node = _resolve(node)
    values = node.get("enum") or [v for alt in node.get("anyOf", []) for v in alt.get("enum", [])]
    if not values:
        raise KeyError(f"{dotted} has no enum in {SCHEMA_FILE.name}")
    return values


# ----------------------------------------------------------------------------- reading

def load_all(path: str | Path) -> dict:
    """Every section of a params file, with its `extends` chain resolved, checked."""
    layers = _layers(Path(path), ())
    params: dict = {}
    for _, raw in layers:
        params = merged(params, raw)
    check(params, path, layers)
    return params


def _layers(path: Path, chain: tuple[Path, ...]) -> list[tuple[Path, dict]]:
    """(file, its own settings) for the base-most file first, the file itself last."""
    if not path.is_file():
        where = f" (extended by {chain[-1]})" if chain else " (pass PARAMS=<file>, default params.yaml)"
        raise ParamsError(f"params file not found: {path}{where}")
    try:
        params = safeyaml.load(path.read_text(encoding="utf-8"), str(path))
    except safeyaml.YamlRefused as e:
        raise ParamsError(str(e)) from None
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ParamsError(f"{path}: must map section names to settings (got {_show(params)})")
    base = params.pop("extends", None)
    if base is None:
        return [(path, params)]
    if not isinstance(base, str) or not base.strip():
        raise ParamsError(f"params file {path}: 'extends' must name one params file, got {base!r}")
    if path.resolve() in chain:
        raise ParamsError(f"params file {path} extends itself through {' -> '.join(map(str, chain))}")
    return _layers(path.parent / base, chain + (path.resolve(),)) + [(path, params)]


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


# ----------------------------------------------------------------------------- checking

def check(params: dict, path: str | Path = "params", layers: list | None = None) -> None:
    """Raise ParamsError (one line: file, dotted key, fix) unless `params` is valid."""
    validator = _validator()
    errors = sorted(validator.iter_errors(params), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        e = errors[0]
        keys = list(e.absolute_path)
        if e.validator == "additionalProperties":
            keys.append(_extra_keys(e)[0])
        raise ParamsError(f"{_origin(path, layers, keys)}: {_message(e)}")
    for rule in CROSS_CHECKS:
        problem = rule(params)
        if problem:
            keys, text = problem
            raise ParamsError(f"{_origin(path, layers, keys)}: {text}")


@functools.cache
def _validator():
    strict_int = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _, v: isinstance(v, int) and not isinstance(v, bool))
    cls = jsonschema.validators.extend(jsonschema.Draft202012Validator, type_checker=strict_int)
    return cls(schema())


def _origin(path, layers, keys: list) -> str:
    """The file of the chain that sets `keys` (the profile before its base), else `path`."""
    for file, raw in reversed(layers or []):
        node = raw
        for key in keys:
            if isinstance(node, dict) and key in node:
                node = node[key]
            elif isinstance(node, list) and isinstance(key, int) and key < len(node):
                node = node[key]
            else:
                break
        else:
            return str(file)
    return str(path)


def dotted(keys) -> str:
    out = ""
    for key in keys:
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else str(key))
    return out


def _show(value) -> str:
    return repr(value) if isinstance(value, str) else _flow(value)


def _example(schema_: dict) -> str:
    examples = schema_.get("examples")
    return f", e.g. {_flow(examples[0])}" if examples else ""


def _flow(value) -> str:
    """A value as it is written in YAML flow style: [DX, CR], {train: 0.7}."""
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_flow(v)}" for k, v in value.items()) + "}"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


_TYPE_WORDS = {"array": "a list", "object": "a mapping", "string": "text", "integer": "an integer",
               "number": "a number", "boolean": "true or false", "null": "null"}


_PLURAL = {"string": "text values", "integer": "integers", "number": "numbers", "object": "mappings"}


def _range(s: dict) -> str:
    """'in (0, 1)', '>= 1', 'from 2 to 100' ... for a numeric schema; '' without bounds."""
    lo = next(((s[k], k == "minimum") for k in ("minimum", "exclusiveMinimum") if k in s), None)
    hi = next(((s[k], k == "maximum") for k in ("maximum", "exclusiveMaximum") if k in s), None)
    if lo and hi:
        if lo[1] and hi[1] and s.get("type") == "integer":
            return f"from {lo[0]} to {hi[0]}"
        return f"in {'[' if lo[1] else '('}{lo[0]}, {hi[0]}{']' if hi[1] else ')'}"
    if lo:
        return f"{'>=' if lo[1] else '>'} {lo[0]}"
    if hi:
        return f"{'<=' if hi[1] else '<'} {hi[0]}"
    return ""


def _kind(s: dict) -> str:
    types = s.get("type")
    types = [types] if isinstance(types, str) else (types or [])
    words = [_TYPE_WORDS[t] for t in types]
    return " or ".join(words) if len(words) < 3 else ", ".join(words[:-1]) + " or " + words[-1]


def _expected(s: dict) -> str:
    """'an integer >= 1', 'a number in (0, 1)', 'a list' ..."""
    return " ".join(filter(None, [_kind(s) or "a number", _range(s)]))


def _suggest(value, choices) -> str:
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _extra_keys(e) -> list:
    return sorted(set(e.instance) - set(e.schema.get("properties", {})), key=str)


def _message(e) -> str:
    s, value, where, kind = e.schema, e.instance, dotted(e.absolute_path), e.validator
    if kind == "additionalProperties":
        key, known = _extra_keys(e)[0], list(s.get("properties", {}))
        if not where:
            return f"{key} is not a params section{_suggest(key, known) or ' (sections: ' + ', '.join(known) + ')'}"
        name = f"{where}.{key}"
        hint = _suggest(key, known) or (f" (parameters of {where}: {', '.join(known)})" if known
                                        else f" ({where} takes no parameters: {where}: {{}})")
        return f"{name} is not a parameter{hint}"
    if kind == "type":
        return f"{where} must be {_expected(s)} (got {_show(value)}){_example(s)}"
    because = f" ({s['description']})" if "then" in e.schema_path else ""
    if kind == "enum":
        return f"{where} {value!r} is not one of {', '.join(map(str, s['enum']))}{_suggest(value, s['enum'])}{because}"
    if kind == "const":
        return f"{where} must be {_flow(s['const'])} (got {_show(value)}){because}"
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        return f"{where} must be {_expected(s)} (got {_show(value)})"
    if kind == "required":
        missing = [k for k in e.validator_value if k not in value]
        return f"{where} lacks {missing[0]} (set {', '.join(e.validator_value)})"
    if kind == "minItems":
        items = "item" if e.validator_value == 1 else "items"
        return f"{where} must list at least {e.validator_value} {items} (got {_show(value)}){_example(s)}"
    if kind == "uniqueItems":
        twice = next(v for i, v in enumerate(value) if v in value[:i])
        return f"{where} lists {twice!r} more than once; list each value once"
    if kind == "minLength":
        return f"{where} must not be empty text"
    if kind == "anyOf":
        options = " or ".join(alt["description"] for alt in s["anyOf"])
        keywords = [v for alt in s["anyOf"] for v in alt.get("enum", [])]
        return f"{where} {value!r} is not {options}{_suggest(value, keywords)}"
    return f"{where or 'params'}: {' '.join(e.message.split())}"


# ----------------------------------------------------------------------------- cross-field checks

def _get(params: dict, *keys):
    for key in keys:
        if not isinstance(params, dict) or key not in params:
            return None
        params = params[key]
    return params


def _fractions_sum_to_one(p):
    f = _get(p, "split", "fractions")
    if f and abs(sum(f.values()) - 1) > 1e-6:
        return ["split", "fractions"], (f"split.fractions sum to {sum(f.values()):g}; make train + val + test "
                                        "sum to 1")


def _less(section_: str, low: str, high: str, strict: bool):
    def rule(p):
        a, b = _get(p, section_, low), _get(p, section_, high)
        if a is not None and b is not None and (a >= b if strict else a > b):
            relation = "less than" if strict else "at most"
            return [section_, low], f"{section_}.{low} ({a}) must be {relation} {section_}.{high} ({b})"
    return rule


def _frozen_before_last_epoch(p):
    frozen, epochs = _get(p, "train", "fine_tune", "frozen_epochs"), _get(p, "train", "epochs")
    if frozen and epochs is not None and frozen >= epochs:
        return ["train", "fine_tune", "frozen_epochs"], (
            f"train.fine_tune.frozen_epochs ({frozen}) must be less than train.epochs ({epochs}), "
            "or 0 to train the whole network from the start")


def _pretrained_weights_need_a_base(p):
    architecture, weights = _get(p, "train", "architecture"), _get(p, "train", "weights")
    if architecture == "small_cnn" and weights not in (None, "none"):
        return ["train", "weights"], (f"train.weights {weights!r} needs a pretrained architecture; small_cnn "
                                      "has none (set weights: none, or architecture: densenet121)")


def _target_for_its_rule(p):
    rule, target = _get(p, "validate", "threshold_rule"), _get(p, "validate", "target_sensitivity")
    if rule == "target_sensitivity" and target is None:
        return ["validate", "threshold_rule"], ("validate.threshold_rule target_sensitivity needs "
                                                "validate.target_sensitivity (e.g. 0.90)")


def _interval_inside_zero_one(p):
    design = _get(p, "validate", "sample_size")
    if design:
        room = min(design["sensitivity"], 1 - design["sensitivity"],
                   design["specificity"], 1 - design["specificity"])
        if design["half_width"] >= room:
            return ["validate", "sample_size", "half_width"], (
                f"validate.sample_size.half_width ({design['half_width']}) must be less than {room:g}, the "
                "distance of the planned sensitivity and specificity from 0 and 1")


CROSS_CHECKS = (
    _fractions_sum_to_one,
    _less("workflow", "min_age_years", "max_age_years", strict=True),
    _less("workflow", "min_rows_columns", "max_rows_columns", strict=False),
    _frozen_before_last_epoch,
    _pretrained_weights_need_a_base,
    _target_for_its_rule,
    _interval_inside_zero_one,
)


# ----------------------------------------------------------------------------- reference

def _resolve(s: dict) -> dict:
    if "$ref" in s:
        target = schema()
        for part in s["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return {**target, **{k: v for k, v in s.items() if k != "$ref"}}
    return s


def _allowed_text(s: dict) -> str:
    s = _resolve(s)
    if "enum" in s:
        return " \\| ".join(f"`{_flow(v)}`" for v in s["enum"])
    if "anyOf" in s:
        return " or ".join(_allowed_text(alt) if "enum" in alt else alt["description"] for alt in s["anyOf"])
    if s.get("type") == "array":
        item = _resolve(s["items"])
        least = f", at least {s['minItems']}" if s.get("minItems") else ""
        return " ".join(filter(None, ["list of", _PLURAL[item["type"]], _range(item)])) + least
    return _expected(s) if "type" in s else ""


def _rows(s: dict, prefix: str):
    for name, prop in s.get("properties", {}).items():
        prop = _resolve(prop)
        key = f"{prefix}.{name}"
        yield key, prop, name in s.get("required", [])
        inner = prop.get("items", {}) if prop.get("type") == "array" else prop
        yield from _rows(_resolve(inner), key + ("[]" if inner is not prop else ""))


def reference() -> str:
    """docs/params.md: every parameter with its allowed values and description."""
    s = schema()
    lines = ["# Parameter reference", "",
             f"Generated from `evidence/{SCHEMA_FILE.name}` by `{DOC_COMMAND}`; edit the schema, not this file.",
             "", s["description"], ""]
    for name, sec in s["properties"].items():
        lines += [f"## {name}", "", sec["description"], ""]
        rows = list(_rows(sec, name))
        if rows:
            lines += ["| Parameter | Allowed values | Description |", "|---|---|---|"]
            lines += [f"| `{key}` | {_allowed_text(prop)} | {'Required. ' * required}{prop['description']} |"
                      for key, prop, required in rows]
            lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- command line

def stamp(path: str | Path, out_dir: str | Path, sections: dict | None = None) -> list[str]:
    """Write changed per-section stamp files; return the sections that changed. `sections`: the
    file's sections when the caller has already read them (`load_all(path)`)."""
    changed = []
    for name, value in (load_all(path) if sections is None else sections).items():
        target = layout.params_stamp(out_dir, name)
        text = json.dumps(value, sort_keys=True, indent=2) + "\n"
        if not target.is_file() or target.read_text() != text:
            atomic.write_text(target, text)
            changed.append(name)
    return changed


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--doc"] and len(argv) <= 2:
        if len(argv) == 2:
            atomic.write_text(Path(argv[1]), reference())
        else:
            sys.stdout.write(reference())
        return 0
    if len(argv) != 2:
        print("usage: python -m evidence.params PARAMS OUT | --doc [FILE]", file=sys.stderr)
        return 2

    def body() -> int:
        stamp(argv[0], argv[1])
        return 0

    return guarded(body)


if __name__ == "__main__":
    sys.exit(main())
