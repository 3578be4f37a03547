"""Input images bound to the trail: the manifest's sha256 column, the Merkle root in `cohort.manifest`,
the audit's re-hash, and `make` rerunning the cohort when an image changes."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from eda import cohort
from evidence import inputs, layout, read_record, write_record
from evidence.__main__ import main as evidence_main
from evidence.make import prepare
from evidence.manifest import read_manifest
from demo_params import write_small

pytestmark = pytest.mark.verifies("SRS-038")

REPO = Path(__file__).resolve().parent.parent
DEMO = {"seed": 5, "n_patients": 20, "image_size": 64, "pneumonia_prevalence": 0.3}
IMAGES = ("00000001_000.png", "00000001_001.png", "00000002_000.png", "00000003_000.png")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_merkle_root_of_three_leaves_by_hand():
    pairs = [("c.png", sha(b"c")), ("a.png", sha(b"a")), ("b.png", sha(b"b"))]
    leaf = {i: hashlib.sha256(b"\x00" + f"{s}  {i}".encode()).digest() for i, s in pairs}
    left = hashlib.sha256(b"\x01" + leaf["a.png"] + leaf["b.png"]).digest()
    expected = hashlib.sha256(b"\x01" + left + leaf["c.png"]).hexdigest()
    assert inputs.merkle_root(pairs) == expected
    assert inputs.merkle_root([*pairs, ("d.png", "")]) == expected, "a row without an image is not a leaf"
    assert inputs.merkle_root(pairs[:1]) == hashlib.sha256(b"\x00" + f"{pairs[0][1]}  c.png".encode()).hexdigest()
    assert inputs.merkle_root([]) == hashlib.sha256(b"").hexdigest()
    assert inputs.merkle_root([("a.png", sha(b"x")), *pairs[1:]]) != expected


def test_merkle_root_splits_at_the_largest_power_of_two():
    pairs = [(f"{i}.png", sha(bytes([i]))) for i in range(5)]
    h = [hashlib.sha256(b"\x00" + f"{s}  {i}".encode()).digest() for i, s in pairs]
    node = lambda a, b: hashlib.sha256(b"\x01" + a + b).digest()  # noqa: E731
    expected = node(node(node(h[0], h[1]), node(h[2], h[3])), h[4]).hex()
    assert inputs.merkle_root(reversed(pairs)) == expected


def test_parallel_hashes_equal_serial_and_hashlib(nih_dir):
    files = sorted((nih_dir / "images_64px").glob("*.png"))[:200] + sorted((nih_dir / "images_1024").glob("*.png"))
    paths = [str(p) for p in files] + [""]
    serial = inputs.hash_files(paths, workers=1)
    assert inputs.hash_files(paths, workers=4) == serial
    assert serial[-1] == ("", 0)
    assert serial[:-1] == [(sha(p.read_bytes()), p.stat().st_size) for p in files]


def _check_manifest_hashes(out: Path) -> dict:
    """The sha256 column against hashlib, and the record's inputs against the column."""
    m = read_manifest(layout.manifest(out), ["path", "sha256"])
    present = m[m["path"] != ""]
    assert len(present) > 0
    assert (m.loc[m["path"] == "", "sha256"] == "").all()
    for _, r in present.iterrows():
        assert r["sha256"] == sha(Path(r["path"]).read_bytes()), r["image_id"]
    got = read_record(out, "cohort.manifest")["data"]["inputs"]
    assert got["files"] == len(present)
    assert got["bytes"] == sum(Path(p).stat().st_size for p in present["path"])
    assert got["merkle_root"] == inputs.merkle_root(zip(m["image_id"], m["sha256"]))
    return got


@pytest.fixture
def demo_run(tmp_path) -> Path:
    out = tmp_path / "out"
    cohort.run("demo", out, {"demo": DEMO})
    return out


@pytest.fixture
def folder_run(tmp_path, nih_dir) -> Path:
    data = tmp_path / "data"
    (data / "img").mkdir(parents=True)
    for name in IMAGES:
        shutil.copy(nih_dir / "images_64px" / name, data / "img" / name)
    shutil.copy(nih_dir / "images_1024" / "00000013_003.png", data / "img" / "big.png")
    rows = [f"img/{n},{i % 2}" for i, n in enumerate([*IMAGES, "big.png"])]
    (data / "labels.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    out = tmp_path / "out"
    cohort.run(str(data), out, {})
    return out


def test_demo_manifest_has_each_image_sha256_and_the_root(demo_run):
    got = _check_manifest_hashes(demo_run)
    assert got["files"] == read_record(demo_run, "cohort.manifest")["data"]["counts"]["images"]
    assert inputs.check(demo_run, say=lambda _: None) == []


def test_folder_source_of_real_images(folder_run):
    got = _check_manifest_hashes(folder_run)
    assert got["files"] == len(IMAGES) + 1 and got["bytes"] > 100_000  # the 1024 px image is in it
    assert inputs.check(folder_run, say=lambda _: None) == []


def test_audit_names_an_overwritten_image(folder_run, capsys):
    m = read_manifest(layout.manifest(folder_run), ["path", "sha256"]).set_index("image_id")
    target = Path(m.loc["img/00000002_000.png", "path"])
    target.write_bytes(target.read_bytes() + b"\0")
    lines = inputs.check(folder_run, say=lambda _: None)
    expected = m.loc["img/00000002_000.png", "sha256"]
    assert lines[0] == (f"input img/00000002_000.png: {target}: expected sha256 {expected} "
                        f"found {sha(target.read_bytes())}")
    assert len(lines) == 2 and "field data.inputs.merkle_root: expected" in lines[1]
    assert evidence_main(["audit", "--out", str(folder_run), "--inputs", "always"]) == 1
    assert f"FAIL input img/00000002_000.png: {target}" in capsys.readouterr().out


def test_audit_names_a_missing_image(demo_run):
    m = read_manifest(layout.manifest(demo_run), ["path", "sha256"])
    row = m.iloc[3]
    Path(row["path"]).unlink()
    lines = inputs.check(demo_run, say=lambda _: None)
    assert lines[0] == f"input {row['image_id']}: {row['path']}: expected sha256 {row['sha256']} found missing file"
    assert len(lines) == 2


def test_auto_skips_a_long_rehash_with_one_line_and_never_skips_all(folder_run, monkeypatch):
    target = Path(read_manifest(layout.manifest(folder_run), ["path"])["path"].iloc[0])
    target.write_bytes(b"changed")
    said = []
    assert len(inputs.check(folder_run, "auto", say=said.append)) == 2
    monkeypatch.setattr(inputs, "HASH_BYTES_PER_S", 1000.0)
    said.clear()
    assert inputs.check(folder_run, "auto", say=said.append) == []
    assert len(said) == 1 and said[0].startswith("inputs: not re-hashed") and "INPUTS=1" in said[0]
    assert len(inputs.check(folder_run, "always", say=said.append)) == 2
    assert inputs.check(folder_run, "never") == []


def test_an_edited_sha256_column_is_caught_without_rehashing(folder_run):
    path = layout.manifest(folder_run)
    m = pd.read_csv(path, dtype=str, keep_default_na=False)
    m.loc[0, "sha256"] = "0" * 64
    m.to_csv(path, index=False)
    lines = inputs.check(folder_run, "never") + inputs.check(folder_run, "always", say=lambda _: None)
    assert any("recomputed from the sha256 column" in line for line in lines)


def test_a_cohort_record_without_input_hashes_fails(folder_run):
    record = read_record(folder_run, "cohort.manifest")
    data = {k: v for k, v in record["data"].items() if k != "inputs"}
    write_record(folder_run, "cohort.manifest", data=data, outs=[layout.manifest(folder_run)])
    assert inputs.check(folder_run, say=lambda _: None) == [
        "record cohort.manifest: field data.inputs: expected the sha256 of the input images found none "
        "(rerun `python -m eda.cohort`)"]


def test_the_demo_is_checked_in_a_copied_run_folder(demo_run, tmp_path):
    copy = tmp_path / "auditor"
    shutil.copytree(demo_run, copy)
    shutil.rmtree(layout.demo(demo_run))
    assert inputs.check(copy, say=lambda _: None) == []


def test_nih_label_file_without_images(tmp_path, nih_metadata):
    data = tmp_path / "nih"
    data.mkdir()
    shutil.copy(nih_metadata / "sample_labels.csv", data)
    out = tmp_path / "out"
    cohort.run(str(data), out, {})
    m = read_manifest(layout.manifest(out), ["path", "sha256"])
    assert len(m) == 5606 and (m["path"] == "").all() and (m["sha256"] == "").all()
    got = read_record(out, "cohort.manifest")["data"]["inputs"]
    assert got["files"] == 0 and got["bytes"] == 0 and got["merkle_root"] == sha(b"")
    assert inputs.check(out, say=lambda _: None) == []
    assert inputs.fingerprint(out)["files"] == 0
    assert inputs.write_stamp(out) is False


def test_stamp_written_by_the_cohort_is_what_prepare_computes(folder_run, tmp_path):
    stamp = layout.input_stamp(folder_run)
    before = stamp.read_text()
    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    prepare(params, folder_run, str(tmp_path / "data"))
    assert stamp.read_text() == before
    target = Path(read_manifest(layout.manifest(folder_run), ["path"])["path"].iloc[1])
    target.write_bytes(target.read_bytes()[:-1])
    prepare(params, folder_run, str(tmp_path / "data"))
    assert stamp.read_text() != before
    target.unlink()
    assert inputs.fingerprint(folder_run)["missing"] == 1


def make(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(["make", "--no-print-directory", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"make {' '.join(args)}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    return proc


@pytest.mark.slow
def test_make_reruns_the_cohort_when_an_image_changes(tmp_path, nih_dir):
    params_file = write_small(tmp_path / "params.yaml", n_patients=20)
    data = tmp_path / "data"
    data.mkdir()
    for name in IMAGES:
        shutil.copy(nih_dir / "images_64px" / name, data / name)
    (data / "labels.csv").write_text("path,label\n" + "".join(f"{n},{i % 2}\n" for i, n in enumerate(IMAGES)))
    for source in ("demo", str(data)):
        out = tmp_path / f"out-{Path(source).name}"
        target = str(layout.record(out, "cohort.manifest"))
        args = (f"OUT={out}", f"PARAMS={params_file}", f"DATA={source}", target)
        assert "cohort:" in make(*args).stdout
        assert "cohort:" not in make(*args).stdout, f"{source}: the cohort reran with nothing changed"
        image = Path(read_manifest(layout.manifest(out), ["path"])["path"].iloc[1])
        image.write_bytes(image.read_bytes() + b"\0")
        assert inputs.check(out, say=lambda _: None) != []
        rerun = make(*args)
        assert "cohort:" in rerun.stdout and "input images changed" in rerun.stdout
        assert inputs.check(out, say=lambda _: None) == []
        assert "cohort:" not in make(*args).stdout
