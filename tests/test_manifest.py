"""evidence.manifest: the one reader of cohort/manifest.csv and cohort/splits.csv, with the
column contract of ARCHITECTURE.md."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from evidence.manifest import COLUMNS, LABEL, NUMBER, TEXT, ManifestError, read_manifest, read_splits

REPO = Path(__file__).resolve().parent.parent
HEADER = ",".join(COLUMNS)
ROWS = [
    "a.png,/x/a.png," + "ab" * 32 + ",p1,1,Pneumonia,61,M,PA,0,folder,,1024,1024,0.143",
    "b.png,,,p1,0,No Finding,,F,,,folder,test,,,",
]


def write(tmp_path: Path, header: str = HEADER, rows=ROWS, name="manifest.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def test_columns_and_types_match_architecture():
    text = (REPO / "ARCHITECTURE.md").read_text(encoding="utf-8")
    section = text.split("## Cohort manifest", 1)[1].split("\n## ", 1)[0]
    documented = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| `"):
            for name in re.findall(r"`([^`]+)`", cells[0]):
                documented[name] = cells[1]
    assert list(documented) == list(COLUMNS)
    kinds = {"str": TEXT, "int 0/1": LABEL, "float": NUMBER, "int": NUMBER}
    assert {c: kinds[t] for c, t in documented.items()} == COLUMNS


def test_typed_columns(tmp_path):
    m = read_manifest(write(tmp_path))
    assert list(m.columns) == list(COLUMNS)
    assert m["pneumonia"].tolist() == [1, 0] and m["pneumonia"].dtype == int
    assert m["path"].tolist() == ["/x/a.png", ""] and m["split"].tolist() == ["", "test"]
    assert m["age_years"].iloc[0] == 61.0 and np.isnan(m["age_years"].iloc[1])
    assert m["pixel_spacing"].iloc[0] == pytest.approx(0.143) and np.isnan(m["orig_width"].iloc[1])
    assert m["image_id"].tolist() == ["a.png", "b.png"]


def test_a_caller_selects_its_columns(tmp_path):
    m = read_manifest(write(tmp_path), ("path", "pneumonia"))
    assert list(m.columns) == ["image_id", "path", "pneumonia"]
    trimmed = write(tmp_path, "image_id,pneumonia", ["a.png,1", "b.png,0"], "small.csv")
    assert read_manifest(trimmed, ["pneumonia"])["pneumonia"].tolist() == [1, 0]
    with pytest.raises(ManifestError, match=r"small.csv: missing column\(s\) path "):
        read_manifest(trimmed, ["path"])
    with pytest.raises(ValueError, match="not a manifest column: label"):
        read_manifest(trimmed, ["label"])


@pytest.mark.parametrize("rows, message", [
    ([ROWS[0], ROWS[1].replace(",0,No", ",yes,No")], r"manifest.csv: row 3: column pneumonia is 'yes' \(expected 0 or 1\)"),
    ([ROWS[0].replace(",61,", ",060Y,"), ROWS[1]], r"manifest.csv: row 2: column age_years has non-numeric value '060Y'"),
    ([ROWS[0], ROWS[0]], r"manifest.csv: row 3: duplicate image_id 'a.png'; one row per image"),
    ([ROWS[0], ROWS[1].replace("b.png,", ",", 1)], r"manifest.csv: row 3: empty image_id"),
    ([], r"manifest.csv: the manifest has no rows"),
])
def test_bad_rows_are_named(tmp_path, rows, message):
    with pytest.raises(ManifestError, match=message) as e:
        read_manifest(write(tmp_path, rows=rows))
    assert "\n" not in str(e.value)


def test_missing_file_column_and_unreadable(tmp_path):
    with pytest.raises(ManifestError, match=r"none.csv: manifest not found \(run `python -m eda.cohort` first\)"):
        read_manifest(tmp_path / "none.csv")
    no_view = write(tmp_path, HEADER.replace(",view", ""), [r.replace(",PA,", ",", 1) for r in ROWS[:1]])
    with pytest.raises(ManifestError, match=r"manifest.csv: missing column\(s\) view "):
        read_manifest(no_view)
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(ManifestError, match="empty.csv: not a readable CSV manifest"):
        read_manifest(empty)


def test_frames_in_memory_are_checked_alike():
    from evidence.manifest import check_manifest

    frame = pd.DataFrame({c: ["x"] for c in COLUMNS}).assign(pneumonia=[1], age_years=[np.nan])
    out = check_manifest(frame, ["age_years", "sex"])
    assert list(out.columns) == ["image_id", "age_years", "sex"] and np.isnan(out["age_years"].iloc[0])


def test_splits(tmp_path):
    good = write(tmp_path, "image_id,patient_id,split", ["a.png,p1,train", "b.png,p1,test"], "splits.csv")
    assert read_splits(good)["split"].tolist() == ["train", "test"]
    bad = write(tmp_path, "image_id,patient_id,split", ["a.png,p1,validation"], "bad.csv")
    with pytest.raises(ManifestError, match=r"bad.csv: row 2: split must be train, val, test, got 'validation'"):
        read_splits(bad)
    dup = write(tmp_path, "image_id,patient_id,split", ["a.png,p1,train", "a.png,p1,val"], "dup.csv")
    with pytest.raises(ManifestError, match=r"dup.csv: row 3: image_id 'a.png' appears more than once"):
        read_splits(dup)
    with pytest.raises(ManifestError, match=r"missing column\(s\) patient_id"):
        read_splits(write(tmp_path, "image_id,split", ["a.png,train"], "cols.csv"))
    with pytest.raises(ManifestError, match=r"splits file not found \(run `python -m eda.split` first\)"):
        read_splits(tmp_path / "none.csv")
