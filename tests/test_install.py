"""A wheel of the project, installed without -e, runs every stage from an empty folder.

The wheel is built from a copy of the packages (a build writes `build/` and `*.egg-info` beside
its sources, and `build/` is the default run folder), installed with `pip --target`, and put
first on PYTHONPATH, ahead of the editable install of the checkout.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from evidence.canonical import sha256_file
from evidence import stages
from demo_params import write_small

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

STAGES = [[s.module, *s.args.replace("DATA", "demo").split()] for s in stages.STAGES if s.in_run]
TEST_ONLY = ("pytest", "hypothesis", "pypdf", "scikit-learn")


def run(args: list[str], *, cwd: Path, env: dict | None = None, timeout: int = 300) -> str:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def device_packages() -> list[str]:
    """The top-level packages that pyproject.toml installs."""
    include = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    return sorted({name.split(".")[0] for name in include})


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for item in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / item, src / item)
    for folder in REPO.iterdir():
        if (folder / "__init__.py").is_file():
            shutil.copytree(folder, src / folder.name, ignore=shutil.ignore_patterns("__pycache__"))
    run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "-w", str(tmp / "dist")], cwd=src)
    wheels = list((tmp / "dist").glob("*.whl"))
    assert len(wheels) == 1, wheels
    run([sys.executable, "-m", "pip", "install", "--no-deps", "--disable-pip-version-check",
         "--target", str(tmp / "site"), str(wheels[0])], cwd=tmp)
    return tmp / "site"


@pytest.fixture(scope="module")
def installed_env(site) -> dict:
    return {**os.environ, "PYTHONPATH": str(site), "TF_CPP_MIN_LOG_LEVEL": "2"}


def test_wheel_installs_every_source_file_and_nothing_else(site):
    packages = device_packages()
    assert {"evidence", "eda", "model", "validation", "submission", "templates"} <= set(packages)
    expected = {f.relative_to(REPO).as_posix(): sha256_file(f) for s in stages.STAGES for f in stages.code_files(s)}
    installed = {f.relative_to(site).as_posix(): sha256_file(f)
                 for pkg in packages for f in (site / pkg).rglob("*")
                 if f.is_file() and "__pycache__" not in f.parts}
    assert sorted(set(expected) - set(installed)) == [], "files missing from the wheel"
    assert sorted(set(installed) - set(expected)) == [], "files in the wheel that no record hashes"
    assert installed == expected
    tops = {p.name for p in site.iterdir() if not p.name.endswith(".dist-info") and p.name != "__pycache__"}
    assert tops == set(packages), "the wheel installs other top-level folders (tests, bench?)"


def test_every_module_and_the_metadata_resolve_from_the_wheel(site, installed_env, tmp_path):
    probe = (
        "import importlib, importlib.metadata, json\n"
        "from evidence.provenance import environment, git_state\n"
        f"mods = {{m: importlib.import_module(m).__file__ for m in {device_packages() + ['eda.sources']!r}}}\n"
        "dist = importlib.metadata.distribution('cxr-510k-toolkit')\n"
        "env = environment()\n"
        "print(json.dumps({'mods': mods, 'dist': str(dist.locate_file('')), 'git': git_state(),\n"
        "                  'runtime': env['runtime_packages'], 'installed': env['installed_packages']}))\n"
    )
    found = json.loads(run([sys.executable, "-c", probe], cwd=tmp_path, env=installed_env))
    for module, file in found["mods"].items():
        assert Path(file).resolve().is_relative_to(site.resolve()), f"{module} imported from {file}"
    assert Path(found["dist"]).resolve() == site.resolve()
    assert found["git"] == [None, None], "an installed wheel is not a git checkout"
    assert "tensorflow" in found["runtime"] and "pytest" in found["installed"]
    assert [name for name in TEST_ONLY if name in found["runtime"]] == []


def test_installed_wheel_runs_every_stage_from_an_empty_folder(site, installed_env, tmp_path):
    params_file = write_small(tmp_path / "params" / "params.yaml", n_patients=60, epochs=1, pdf=True)
    work = tmp_path / "empty"
    work.mkdir()
    for stage in STAGES:
        run([sys.executable, "-m", stage[0], *stage[1:], "--out", "O", "--params", str(params_file)],
            cwd=work, env=installed_env)
    sub = work / "O" / "submission"
    for name in ("510k_submission", "validation_plan"):
        assert (sub / f"{name}.pdf").read_bytes()[:5] == b"%PDF-", name
    run([sys.executable, "-m", "evidence", "audit", "--out", "O"], cwd=work, env=installed_env)
    run([sys.executable, "-m", "submission.check", "--out", "O"], cwd=work, env=installed_env)
    sbom = json.loads((sub / "sbom.cdx.json").read_text())     # the SOUP list: the installed device's SBOM
    listed = {c["name"].lower() for c in sbom["components"]}
    assert {"tensorflow", "pydicom", "numpy"} <= listed
    assert [name for name in TEST_ONLY if name in listed] == []
