"""The import rules of ARCHITECTURE.md ("Python conventions", Imports), read from its table and
checked against every import statement of the packages (module level and inside functions)."""
from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = tuple(name for name in tomllib.loads((REPO / "pyproject.toml").read_text())
                 ["tool"]["setuptools"]["packages"]["find"]["include"] if "." not in name)


def rules() -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """{module: (imports of this project, never imports)} from the table under `### Imports`."""
    text = (REPO / "ARCHITECTURE.md").read_text(encoding="utf-8")
    section = text.split("\n### Imports\n", 1)[1].split("\n#", 1)[0]
    out = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or not cells[0].startswith("`"):
            continue
        names = [re.findall(r"`([^`]+)`", c) for c in cells[:3]]
        assert len(names[0]) == 1, f"ARCHITECTURE.md import rule row names one module: {line}"
        out[names[0][0]] = (tuple(names[1]), tuple(names[2]))
    return out


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _exists(dotted: str) -> bool:
    base = REPO.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imported(source: str, module: str, is_package: bool) -> list[str]:
    """Every module an import statement of `module` names: `from a import b` names `a.b` when
    that is a module of this repository, else `a`; relative imports are resolved."""
    names = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".") if is_package else module.split(".")[:-1]
                parts = parts[:len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                names.append(sub if _exists(sub) else base)
    return names


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(source: str, module: str, table: dict, *, is_package: bool = False) -> list[str]:
    out = []
    for row, (ours, never) in table.items():
        if not _under(module, row):
            continue
        for name in imported(source, module, is_package):
            if name.split(".")[0] in PACKAGES and not _under(name, row) and not any(_under(name, a) for a in ours):
                out.append(f"{module} imports {name} (ARCHITECTURE.md: {row} imports {', '.join(ours) or 'none'})")
            if any(_under(name, n) for n in never):
                out.append(f"{module} imports {name} (ARCHITECTURE.md: {row} never imports it)")
    return out


def test_the_table_names_every_package_and_only_real_modules():
    table = rules()
    assert set(PACKAGES) <= set(table), f"packages without an import rule: {set(PACKAGES) - set(table)}"
    for row, (ours, _) in table.items():
        assert _exists(row), f"ARCHITECTURE.md import rule for {row}: no such module"
        for name in ours:
            assert _exists(name), f"ARCHITECTURE.md import rule for {row}: {name} is no module"


@pytest.mark.parametrize("package", PACKAGES)
def test_every_module_follows_the_table(package):
    table = rules()
    found = []
    for path in sorted((REPO / package).rglob("*.py")):
        found += violations(path.read_text(encoding="utf-8"), module_name(path), table,
                            is_package=path.name == "__init__.py")
    assert found == []


def test_the_check_catches_each_kind_of_violation():
    table = rules()
    assert violations("import matplotlib.pyplot as plt", "evidence.atomic", table)
    assert violations("from model import dicom", "evidence.record", table)
    assert violations("def f():\n    from model.infer import classify", "eda.pixels", table)
    assert violations("from model import train", "eda.figures", table)
    assert violations("from validation import stats", "submission.render", table)
    assert violations("import tensorflow as tf", "model.dicom", table)
    assert violations("from ..validation import stats", "model.train", table)
    assert not violations("from model.dicom import read_pixels", "eda.pixels", table)
    assert not violations("from model import figures", "eda.figures", table)
    assert not violations("from . import layout", "evidence.record", table)
    assert not violations("from model.infer import classify", "validation.heldout", table)
