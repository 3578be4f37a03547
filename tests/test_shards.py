"""Sharded held-out runs (validation.shards): every file in exactly one shard, the merge refuses
incomplete or foreign shards, and N shards merged give the records of one unsharded run."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from evidence import layout, read_record
from evidence.errors import ToolkitError
from model import dicom
from model.batching import FixedBatch
from validation import heldout, shards
from test_heldout import _heldout_rows, _pixels, build_heldout, locked_run, nih  # noqa: F401 (fixtures)
from test_infer import make_device

pytestmark = pytest.mark.verifies("SRS-020")

PARAMS = ("validate: {ci_level: 0.95, bootstrap_resamples: 200, bootstrap_seed: 3, min_subgroup_positives: 5, "
          "min_subgroup_negatives: 5}\nworkflow: {allowed_modalities: [DX, CR]}\nsubmission: {}\n")


def test_parse_shard_accepts_k_of_n_and_names_the_fix():
    assert shards.parse_shard("2/3") == (2, 3) and shards.parse_shard(" 1 / 1 ") == (1, 1)
    for bad in ("0/2", "3/2", "2", "a/b", "1/0", "-1/2"):
        with pytest.raises(ToolkitError, match="K/N with 1 <= K <= N"):
            shards.parse_shard(bad)
    assert shards.parse_count("4") == 4
    with pytest.raises(heldout.HeldoutError, match="number of shards"):
        shards.parse_count("0")


def test_every_file_lands_in_exactly_one_shard_by_a_stable_rule(tmp_path):
    files = [tmp_path / f"site_{i % 3}" / f"img_{i:03d}.dcm" for i in range(200)]
    for n in (1, 2, 3, 7):
        parts = [shards.assign(tmp_path, files, k, n) for k in range(1, n + 1)]
        flat = [f for part in parts for f in part]
        assert sorted(flat) == sorted(files) and len(flat) == len(set(flat)) == 200
        for part in parts:
            rel = [shards.relative(tmp_path, f) for f in part]
            assert rel == sorted(rel)
        if n > 1:
            assert min(map(len, parts)) > 0.5 * 200 / n  # a hash spreads the files
    # the rule depends on the relative path only: the same set elsewhere gets the same shards
    other = [tmp_path / "copy" / f.relative_to(tmp_path) for f in files]
    assert [shards.relative(tmp_path / "copy", f) for f in shards.assign(tmp_path / "copy", other, 2, 3)] == \
        [shards.relative(tmp_path, f) for f in shards.assign(tmp_path, files, 2, 3)]
    import hashlib
    assert shards.shard_of("a/b.dcm", 5) == 1 + int(hashlib.sha256(b"a/b.dcm").hexdigest()[:16], 16) % 5


def test_fixed_batch_probability_does_not_depend_on_the_other_files(tmp_path):
    from model.infer import load_device, predict

    device = load_device(make_device(tmp_path / "run"))
    rng = np.random.default_rng(1)
    x = rng.random((150, 64, 64, 1)).astype(np.float32)
    wrapped = FixedBatch(device.model, 64)
    full = predict(wrapped, x)
    for idx in (rng.permutation(150)[:7], np.arange(1, 150, 3), rng.permutation(150)[:65], np.array([149])):
        np.testing.assert_array_equal(predict(wrapped, x[idx]), full[idx])  # bit for bit
    # and the same numbers as the model itself, to float32 rounding
    np.testing.assert_allclose(full, predict(device.model, x), atol=1e-6)
    assert predict(wrapped, x[:0]).shape == (0,)


def _set(folder: Path, nih) -> None:
    rows = _heldout_rows(nih).head(40)
    labels = build_heldout(folder, rows)
    # one file the header checks reject and one file labels.csv does not name
    extra = nih[~nih["image_id"].isin(rows["image_id"])].head(2)
    r = next(extra.itertuples())
    dicom.save(dicom.build_dataset(_pixels(r.path), patient_id=r.patient_id, view="LL", age="050Y"), folder / "x_lat.dcm")
    labels.loc[len(labels)] = {"file": "x_lat.dcm", "label": 0, "patient_id": r.patient_id, "reader_a": 0}
    labels.to_csv(folder / "labels.csv", index=False)
    r = list(extra.itertuples())[1]
    dicom.save(dicom.build_dataset(_pixels(r.path), patient_id=r.patient_id), folder / "site_a" / "unlabelled.dcm")


@pytest.mark.slow
def test_two_shards_merged_equal_one_unsharded_run(locked_run, nih, tmp_path, capsys):
    folder = tmp_path / "site_s"
    _set(folder, nih)
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS)
    common = ["--out", str(locked_run), "--heldout", str(folder), "--params", str(params), "--no-report"]

    assert heldout.main(common) == 0
    hout = layout.heldout(locked_run, heldout.folder_name(folder))
    single = hout.with_name(hout.name + ".single")
    hout.rename(single)

    capsys.readouterr()
    assert heldout.main(common + ["--merge", "2"]) == 2           # no shard yet: names the command to run
    err = capsys.readouterr().err
    assert "shard-1-of-2.json: missing" in err and "--shard 1/2" in err and not hout.exists()
    for k in (1, 2):
        assert heldout.main(common + ["--shard", f"{k}/2"]) == 0
    out = capsys.readouterr().out
    assert "shard 1/2" in out and "shard 2/2" in out
    name = heldout.folder_name(folder)
    parts = [json.loads(shards.shard_file(locked_run, name, k, 2).read_text()) for k in (1, 2)]
    assert sorted(parts[0]["files"] + parts[1]["files"]) == sorted(
        f.relative_to(folder).as_posix() for f in heldout.heldout_files(folder))
    assert parts[0]["files"] and parts[1]["files"] and not set(parts[0]["files"]) & set(parts[1]["files"])
    assert not hout.exists(), "a shard writes no record and no held-out folder"

    assert heldout.main(common + ["--merge", "2"]) == 0
    assert hout.is_dir() and not shards.shard_dir(locked_run, name).exists()
    assert (hout / "predictions.csv").read_bytes() == (single / "predictions.csv").read_bytes()
    for rid in ("heldout.plan_lock", "heldout.intake", "heldout.metrics", "heldout.subgroups", "heldout.acceptance"):
        a, b = read_record(single, rid), read_record(hout, rid)
        assert shards.comparable(a) == shards.comparable(b), rid
    intake = read_record(hout, "heldout.intake")["data"]
    assert intake["counts"] == {"accepted": 40, "rejected": 1, "error": 0}
    assert [u["file"] for u in intake["unlabelled_files"]] == ["site_a/unlabelled.dcm"]
    from evidence import recompute
    from evidence.audit import audit_run
    assert recompute.check_heldout(hout, 0.5) == [] and audit_run(hout, check_code=False, out=locked_run)[0] == []
    shutil.rmtree(single)
    shutil.rmtree(hout)


@pytest.mark.slow
def test_merge_refuses_a_shard_of_another_model_or_an_incomplete_cover(locked_run, nih, tmp_path, capsys):
    folder = tmp_path / "site_t"
    _set(folder, nih)
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS)
    common = ["--out", str(locked_run), "--heldout", str(folder), "--params", str(params), "--no-report"]
    for k in (1, 2):
        assert heldout.main(common + ["--shard", f"{k}/2"]) == 0
    name = heldout.folder_name(folder)
    path = shards.shard_file(locked_run, name, 2, 2)
    body = json.loads(path.read_text())
    path.write_text(json.dumps({**body, "model_sha256": "0" * 64}))
    capsys.readouterr()
    assert heldout.main(common + ["--merge", "2"]) == 2
    assert "model_sha256 differ" in capsys.readouterr().err
    dropped = {**body, "results": body["results"][1:], "files": body["files"][1:]}
    path.write_text(json.dumps(dropped))
    assert heldout.main(common + ["--merge", "2"]) == 2
    assert f"1 file(s) missing (first: {body['files'][0]!r})" in capsys.readouterr().err
    assert not layout.heldout(locked_run, name).exists()
    shutil.rmtree(shards.shard_dir(locked_run, name))


def test_infer_shards_merged_print_what_one_process_prints(tmp_path, capsys):
    from model import infer, sharding

    out = make_device(tmp_path / "run")
    rng = np.random.default_rng(3)
    folder = tmp_path / "files"
    for i in range(70):  # more than one 64-file batch; one lateral view, rejected
        ds = dicom.build_dataset((rng.random((80, 80)) * 255).astype(np.uint8), age="050Y", patient_id=str(i),
                                 view="LL" if i == 5 else "PA")
        dicom.save(ds, folder / f"sub{i % 3}" / f"{i:03d}.dcm")
    base = ["--out", str(out), "--no-images", "-q"]
    assert infer.main(base + [str(folder)]) == 0
    single = capsys.readouterr().out.splitlines()
    assert json.loads(single[-1])["files"] == 70 and json.loads(single[-1])["rejected"] == 1

    assert infer.main(base + ["--merge", "3", str(folder)]) == 2
    assert "shard-1-of-3.jsonl: missing" in capsys.readouterr().err
    shares = []
    for k in (1, 2, 3):
        assert infer.main(base + ["--shard", f"{k}/3", str(folder)]) == 0
        lines = capsys.readouterr().out.splitlines()
        shares.append([json.loads(line)["file"] for line in lines[:-1]])
    assert sorted(sum(shares, [])) == sorted(json.loads(line)["file"] for line in single[:-1]) and all(shares)
    assert infer.main(base + ["--merge", "3", str(folder)]) == 0
    assert capsys.readouterr().out.splitlines() == single     # same lines, same order, same probabilities
    assert not sharding.shard_file(out, 1, 3).parent.exists()
    with pytest.raises(ToolkitError, match="K/N"):
        sharding.parse_shard("4/3")


def test_local_shards_stop_before_the_merge_when_a_shard_fails(tmp_path, capsys):
    assert shards.main(["--shards", "0", "--heldout", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "--shards 0" in capsys.readouterr().err
    # no such folder: both shard processes exit 2, the merge never runs
    rc = shards.run_local(tmp_path / "run", tmp_path / "missing", tmp_path / "params.yaml", 2)
    err = capsys.readouterr().err
    assert rc == 2 and "shard(s) 1/2 (exit 2), 2/2 (exit 2) failed" in err and "no records written" in err
