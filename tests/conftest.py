"""Shared fixtures. Tests that need ../shared/data skip outside CI and fail inside it (CI set)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# test -> requirements: each test's `verifies` marks as JUnit XML properties (make verify)
from design.pytest_plugin import pytest_collection_modifyitems  # noqa: F401  (a pytest hook)

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = (REPO.parent / "shared" / "data").resolve()


def _require(path: Path) -> Path:
    if not path.exists():
        message = f"shared data not found: {path} (expected ../shared/data beside the repository)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must provide it")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _require(SHARED_DATA)


@pytest.fixture(scope="session")
def nih_dir(shared_data) -> Path:
    return _require(shared_data / "nih")


@pytest.fixture(scope="session")
def nih_metadata(nih_dir) -> Path:
    return _require(nih_dir / "metadata")


@pytest.fixture(scope="session")
def pneumoniamnist_npz(shared_data) -> Path:
    return _require(shared_data / "pneumoniamnist" / "pneumoniamnist.npz")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session", autouse=True)
def own_config_home(tmp_path_factory):
    """The demo signing key is created under $XDG_CONFIG_HOME: keep the tests' key out of the
    user's own configuration folder (and the make runs the tests start inherit it)."""
    os.environ["XDG_CONFIG_HOME"] = str(tmp_path_factory.mktemp("config"))
    yield
