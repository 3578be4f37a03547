"""The SOUP list is the device's runtime closure, not everything installed in the venv."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from evidence.errors import EvidenceError
from evidence.provenance import environment, runtime_closure

REPO = Path(__file__).resolve().parent.parent
TEST_ONLY = ("pytest", "hypothesis", "pypdf", "scikit-learn")


class FakeDist:
    def __init__(self, version: str, requires: list[str] | None = None):
        self.version, self.requires = version, requires


def locked_pins(path: Path) -> dict[str, str]:
    return dict(re.findall(r"^([a-z0-9-]+)==(\S+)", path.read_text(), re.M))


def test_runtime_packages_hold_the_device_and_no_test_tool():
    env = environment()
    runtime, installed = env["runtime_packages"], env["installed_packages"]
    assert {"tensorflow", "pydicom", "numpy", "weasyprint", "keras"} <= set(runtime)
    assert [name for name in TEST_ONLY if name in runtime] == []
    assert {"pytest", "hypothesis", "pypdf"} <= set(installed), "the test venv must hold the test tools"
    assert all(installed[name] == version for name, version in runtime.items())
    assert "cxr-510k-toolkit" not in runtime and "cxr-510k-toolkit" in installed


def test_runtime_packages_are_the_runtime_lock():
    runtime = environment()["runtime_packages"]
    locked = locked_pins(REPO / "requirements" / "runtime.txt")
    assert runtime == locked, (
        "the venv is not the one requirements/runtime.txt locks (rerun make venv): "
        f"not locked {sorted(set(runtime) - set(locked))}, not installed {sorted(set(locked) - set(runtime))}, "
        f"other version {sorted(n for n in set(runtime) & set(locked) if runtime[n] != locked[n])}")


def test_test_lock_repeats_every_runtime_pin():
    runtime = locked_pins(REPO / "requirements" / "runtime.txt")
    test = locked_pins(REPO / "requirements" / "test.txt")
    assert {name: test.get(name) for name in runtime} == runtime
    assert set(TEST_ONLY) <= set(test) and not set(TEST_ONLY) & set(runtime)


@pytest.mark.parametrize("lock, extra", [("runtime.txt", None), ("test.txt", "test")])
def test_lock_pins_every_requirement_of_pyproject_within_its_range(lock, extra):
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"] + (project["optional-dependencies"][extra] if extra else [])]
    pins = locked_pins(REPO / "requirements" / lock)
    stale = [str(r) for r in wanted
             if canonicalize_name(r.name) not in pins or pins[canonicalize_name(r.name)] not in r.specifier]
    assert stale == [], f"requirements/{lock} does not satisfy {stale}: run make lock"


def test_closure_evaluates_markers_follows_requested_extras_and_skips_the_roots_extras():
    installed = {
        "device": FakeDist("1.0", ["lib>=1", 'old-backport; python_version < "3.0"',
                                   "fonts[woff]>=4", 'pytest; extra == "test"']),
        "lib": FakeDist("2.0", ["shared"]),
        "fonts": FakeDist("4.1", ['brotli; extra == "woff"', 'unused; extra == "other"']),
        "brotli": FakeDist("1.1"),
        "shared": FakeDist("0.3", ["lib"]),  # a cycle back to lib
        "pytest": FakeDist("9.0"),
        "unused": FakeDist("1.0"),
    }
    assert runtime_closure("device", installed) == {"brotli": "1.1", "fonts": "4.1", "lib": "2.0", "shared": "0.3"}


def test_closure_names_a_missing_runtime_requirement():
    with pytest.raises(EvidenceError, match=r"lib is required at run time but not installed.*requirements/runtime.txt"):
        runtime_closure("device", {"device": FakeDist("1.0", ["Lib>=1"])})
