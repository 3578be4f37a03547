"""The pytest side of the trace: `@pytest.mark.verifies("SRS-012", ...)` on a test (or a module's
`pytestmark`) names the requirements of design/requirements.yml it verifies.

At collection each test's requirement ids are checked against the requirements file (an unknown
id stops the run with one line naming the test and the id) and stored in the test's
`user_properties` as ("verifies", "SRS-001 SRS-002"), with ("nodeid", <its node id>), so that the
JUnit XML (`--junitxml`) alone carries test -> requirements (`design.verify` reads it).
tests/conftest.py imports these hooks; elsewhere load the plugin with `-p design.pytest_plugin`.
"""
from __future__ import annotations

import re

import pytest

MARKER = "verifies"
PROPERTY = "verifies"
NODEID = "nodeid"
ID = re.compile(r"^SRS-[0-9]{3}$")


def marker_ids(item) -> list[str]:
    """The requirement ids the `verifies` marks of a test name (its own, its class's, its module's)."""
    ids: list[str] = []
    for mark in item.iter_markers(name=MARKER):
        for rid in mark.args:
            if not isinstance(rid, str) or not ID.match(rid):
                raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.verifies({rid!r}): a requirement id is "
                                        "SRS- and three digits (design/requirements.yml)")
            if rid not in ids:
                ids.append(rid)
    return sorted(ids)


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", f"{MARKER}(*ids): the requirements (design/requirements.yml) a test verifies")


def pytest_collection_modifyitems(session, config, items) -> None:
    from design.spec import load

    known = load().requirements
    for item in items:
        ids = marker_ids(item)
        unknown = [rid for rid in ids if rid not in known]
        if unknown:
            raise pytest.UsageError(f"{item.nodeid}: verifies {', '.join(unknown)}, which design/requirements.yml "
                                    "does not define")
        item.user_properties.append((NODEID, item.nodeid))
        if ids:
            item.user_properties.append((PROPERTY, " ".join(ids)))
