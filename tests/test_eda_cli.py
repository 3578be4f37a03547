"""`python -m eda`: four valid records with figures; bad input gives one error line and no record."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from statsmodels.stats.proportion import proportion_confint

from bench import eda as bench_eda
from bench.eda import manifest_from_label_file
from eda.__main__ import main
from evidence import read_record, write_record

RECORDS = ("eda.dataset", "eda.pixels", "eda.quality", "eda.ground_truth")


def make_run(out, nih_dir, nih_metadata, n_patients=40):
    """OUT with a manifest of real 64 px NIH images, a split and the two upstream records."""
    label_file = nih_metadata / "Data_Entry_2017_v2020.csv.gz"
    manifest = manifest_from_label_file(label_file)
    files = {p.name: str(p) for p in (nih_dir / "images_64px").glob("*.png")}
    manifest = manifest[manifest["image_id"].isin(files)]
    manifest = manifest[manifest["patient_id"].isin(manifest["patient_id"].unique()[:n_patients])].copy()
    manifest["path"] = manifest["image_id"].map(files)
    manifest.loc[manifest.index[-1], "path"] = ""  # one image listed but not present
    (out / "cohort").mkdir(parents=True)
    manifest.to_csv(out / "cohort" / "manifest.csv", index=False)
    pid = manifest["patient_id"].astype(int)
    split = np.select([pid % 5 == 0, pid % 5 == 1], ["test", "val"], "train")
    splits = manifest[["image_id", "patient_id"]].assign(split=split)
    splits.to_csv(out / "cohort" / "splits.csv", index=False)
    source = {"kind": "nih", "synthetic": False, "data_dir": str(nih_dir), "label_file": str(label_file),
              "label_file_sha256": "0" * 64, "release": "nih-2020", "label_files_found": [label_file.name],
              "official_split_lists": False, "patient_ids_given": True}
    write_record(out, "cohort.manifest",
                 data={"source": source, "quality_findings": [
                     {"id": "age_impossible", "description": "age above 100 years", "n_rows": 0,
                      "example_image_ids": [], "decision": "exclude", "applied": "age set empty"}]})
    write_record(out, "split.patients", dep_records=["cohort.manifest"],
                 data={"method": "test"})
    return manifest


@pytest.fixture
def params(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("eda:\n  pixel_sample_max: 40\n  pixel_seed: 1\n")
    return path


def test_cli_writes_valid_records_and_figures(tmp_path, params, nih_dir, nih_metadata, capsys):
    out = tmp_path / "run"
    manifest = make_run(out, nih_dir, nih_metadata)
    assert main(["--out", str(out), "--params", str(params)]) == 0
    records = {rid: read_record(out, rid) for rid in RECORDS}
    for rid, rec in records.items():
        assert [d["id"] for d in rec["deps"]["records"]] == ["cohort.manifest", "split.patients"], rid
        assert rec["synthetic"] is False
        json.dumps(rec, allow_nan=False)
    ds = records["eda.dataset"]["data"]
    assert ds["counts"]["images"] == len(manifest)
    assert ds["counts"]["images_with_pixels"] == len(manifest) - 1
    assert ds["splits"]["train"]["images"] + ds["splits"]["val"]["images"] + ds["splits"]["test"]["images"] \
        == len(manifest)
    outs = [o["path"] for o in records["eda.dataset"]["outs"]] + [o["path"] for o in records["eda.pixels"]["outs"]]
    assert sorted(outs) == sorted(f"figures/{n}" for n in (
        "eda_age_by_class.png", "eda_view_by_class.png", "eda_cooccurrence_pneumonia.png",
        "eda_images_per_patient.png", "eda_pixel_intensity.png"))
    with Image.open(out / "figures" / "eda_pixel_intensity.png") as im:
        assert round(im.info["dpi"][0]) == 200
    assert records["eda.pixels"]["data"]["images_read"] == 40
    ids = {f["id"] for f in records["eda.quality"]["data"]["findings"]}
    assert {"image_not_present", "colour_storage_converted_to_grayscale"} <= ids
    gt = records["eda.ground_truth"]["data"]
    assert gt["label_quality"]["matched_images"] >= 0
    assert any(d["path"].endswith("google2019_nih-chest-xray-labels.csv.gz")
               for d in records["eda.ground_truth"]["deps"]["files"])
    assert "error" not in capsys.readouterr().err


def test_cli_bad_manifest_gives_one_error_line_and_no_record(tmp_path, params, nih_dir, nih_metadata, capsys):
    out = tmp_path / "run"
    manifest = make_run(out, nih_dir, nih_metadata, n_patients=3)
    manifest.drop(columns=["sex"]).to_csv(out / "cohort" / "manifest.csv", index=False)
    assert main(["--out", str(out), "--params", str(params)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "manifest.csv" in err[0] and "sex" in err[0]
    assert not any((out / "evidence" / f"{r}.json").exists() for r in RECORDS)
    assert not (out / "figures").exists()


def test_cli_empty_splits_file_gives_one_error_line(tmp_path, params, nih_dir, nih_metadata, capsys):
    out = tmp_path / "run"
    make_run(out, nih_dir, nih_metadata, n_patients=3)
    (out / "cohort" / "splits.csv").write_text("")
    assert main(["--out", str(out), "--params", str(params)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "splits.csv" in err[0] and "eda.split" in err[0]
    assert not any((out / "evidence" / f"{r}.json").exists() for r in RECORDS)


def test_cli_bad_params_and_missing_upstream(tmp_path, nih_dir, nih_metadata, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("eda:\n  pixel_sample_max: 0\n")
    assert main(["--out", str(tmp_path / "nothing"), "--params", str(bad)]) == 2
    assert "eda.pixel_sample_max" in capsys.readouterr().err
    good = tmp_path / "good.yaml"
    good.write_text("eda:\n  pixel_sample_max: 5\n")
    assert main(["--out", str(tmp_path / "nothing"), "--params", str(good)]) == 2
    assert "cohort.manifest" in capsys.readouterr().err


def test_cli_uses_the_configured_ci_level(tmp_path, nih_dir, nih_metadata):
    out = tmp_path / "run"
    manifest = make_run(out, nih_dir, nih_metadata, n_patients=3)
    params = tmp_path / "params.yaml"
    params.write_text("eda:\n  pixel_sample_max: 5\n  ci_level: 0.9\n")
    assert main(["--out", str(out), "--params", str(params)]) == 0
    got = read_record(out, "eda.dataset")["data"]["prevalence"]["per_image"]
    k, n = int(manifest["pneumonia"].sum()), len(manifest)
    low, high = proportion_confint(k, n, alpha=0.1, method="wilson")
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((low, high)) and got["ci_level"] == 0.9


def test_bench_reports_a_ratio(nih_metadata):
    result = bench_eda.main(nih_metadata / "Data_Entry_2017_v2020.csv.gz", repeats=1)
    assert result["rows"] == 112120
    assert result["read_csv_s"] > 0 and result["ratio"] == pytest.approx(result["eda_s"] / result["read_csv_s"])
