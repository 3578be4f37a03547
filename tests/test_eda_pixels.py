"""eda.pixels on the real 64 px and 1024 px NIH images and on small files built here."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bench.eda import manifest_from_label_file
from eda import cohort, pixels, quality
from evidence.manifest import read_manifest


@pytest.fixture(scope="module")
def nih_64(nih_dir, nih_metadata):
    manifest = manifest_from_label_file(nih_metadata / "Data_Entry_2017_v2020.csv.gz")
    files = {p.name: str(p) for p in (nih_dir / "images_64px").glob("*.png")}
    manifest = manifest[manifest["image_id"].isin(files)].copy()
    manifest["path"] = manifest["image_id"].map(files)
    manifest["split"] = np.where(manifest["patient_id"].astype(int) % 2 == 0, "train", "test")
    return manifest


def test_real_64px_sample(nih_64):
    data, quality, figure = pixels.analyse(nih_64, sample_max=60, seed=3)
    assert len(nih_64) == 1000
    assert data["sample"]["drawn"] == 60 and data["images_read"] == 60
    assert set(data["modes"]) <= {"RGB", "RGBA"} and sum(data["modes"].values()) == 60
    assert data["sizes"] == [{"width": 64, "height": 64, "images": 60}]
    assert data["colour"]["rgb_equal_channels_converted_to_l"] == 60
    assert len(quality["converted_to_l"]) == 60 and quality["problems"] == []
    # independent: PIL's own L conversion of equal-channel images equals any channel
    chosen = pixels.sample_rows(nih_64, 60, 3)
    means = [np.asarray(Image.open(p).convert("L"), float).mean() / 255 for p in chosen["path"]]
    assert data["per_image_mean"]["mean"] == pytest.approx(np.mean(means), abs=1e-6)
    train = chosen[chosen["split"] == "train"]["path"]
    pooled = np.concatenate([np.asarray(Image.open(p).convert("L"), float).ravel() / 255 for p in train])
    norm = data["normalisation"]
    assert norm["mean"] == pytest.approx(pooled.mean(), abs=1e-6)
    assert norm["std"] == pytest.approx(pooled.std(), abs=1e-6)
    assert "training" in norm["computed_on"]
    assert norm["reason"].startswith("measured") and "preprocessing spec" in norm["reason"]
    for hist in data["histograms"]["by_class"].values():
        if isinstance(hist, list):
            assert sum(hist) == pytest.approx(1.0)
    assert figure["hist"]["AP"].sum() + figure["hist"]["PA"].sum() == 60 * 64 * 64


def test_sample_is_seeded_and_bounded(nih_64):
    a = pixels.sample_rows(nih_64, 25, seed=1)
    b = pixels.sample_rows(nih_64, 25, seed=1)
    c = pixels.sample_rows(nih_64, 25, seed=2)
    assert list(a["image_id"]) == list(b["image_id"]) and len(a) == 25
    assert list(a["image_id"]) != list(c["image_id"])
    assert len(pixels.sample_rows(nih_64, 5000, seed=1)) == 1000


def test_full_resolution_grey(nih_dir):
    path = str(nih_dir / "images_1024" / "00000002_000.png")
    grey, mode, size, note = pixels.load_gray(path)
    assert (mode, size, note) == ("L", (1024, 1024), "grey")
    assert grey.mean() == pytest.approx(np.asarray(Image.open(path), float).mean() / 255, rel=1e-6)


def test_sixteen_bit_missing_and_unreadable(tmp_path):
    arr = np.full((8, 8), 65535, np.uint16)
    arr[:4] = 0
    Image.fromarray(arr).save(tmp_path / "a.png")
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "b.png")
    (tmp_path / "c.png").write_bytes(b"not a png")
    frame = pd.DataFrame({
        "image_id": ["a.png", "b.png", "c.png", "d.png", "e.png"],
        "path": [str(tmp_path / n) for n in ("a.png", "b.png", "c.png", "d.png")] + [""],
        "pneumonia": [1, 0, 0, 0, 0], "view": ["AP", "PA", "PA", "PA", "PA"], "split": [""] * 5,
    })
    data, quality, _ = pixels.analyse(frame, sample_max=10, seed=0)
    assert data["images_listed_with_path"] == 4 and data["files_missing"] == 1
    assert data["images_read"] == 2 and data["images_unreadable"] == 1
    kinds = {p["image_id"]: p["problem"] for p in quality["problems"]}
    assert kinds == {"d.png": "missing", "c.png": "unreadable"}
    assert "c.png" in next(p["reason"] for p in quality["problems"] if p["image_id"] == "c.png")
    assert data["colour"]["rgb_unequal_channels_converted_by_luma"] == 1
    assert data["per_image_mean_by_class"]["pneumonia"]["mean"] == pytest.approx(0.5)
    assert data["normalisation"]["computed_on"].startswith("all sampled images")


def test_colour_conversions_are_separate_quality_findings(tmp_path):
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 255
    Image.fromarray(red).save(tmp_path / "red.png")
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(tmp_path / "grey.png")
    Image.fromarray(np.full((8, 8, 4), 90, np.uint8)).save(tmp_path / "clear.png")
    names = ["red.png", "grey.png", "clear.png"]
    frame = pd.DataFrame({"image_id": names, "path": [str(tmp_path / n) for n in names], "pneumonia": [0, 0, 1],
                          "view": ["PA"] * 3, "split": [""] * 3})
    data, pixel_quality, _ = pixels.analyse(frame, sample_max=10, seed=0)
    assert data["colour"] == {"grey": 0, "rgb_equal_channels_converted_to_l": 1,
                              "rgb_unequal_channels_converted_by_luma": 1, "rgba_with_transparency": 1}
    found = {f["id"]: f for f in quality.from_pixels(frame, pixel_quality)}
    assert found["colour_storage_converted_to_grayscale"]["example_image_ids"] == ["grey.png"]
    assert found["true_colour_converted_by_luma"]["example_image_ids"] == ["red.png"]
    assert "luma" in found["true_colour_converted_by_luma"]["applied"]
    assert found["transparency_ignored"]["example_image_ids"] == ["clear.png"]
    grey, _, _, note = pixels.load_gray(str(tmp_path / "red.png"))
    assert note == "unequal_channels" and grey.mean() == pytest.approx(
        np.asarray(Image.fromarray(red).convert("L"), float).mean() / 255)


def test_dicom_in_a_folder_cohort_is_read_as_the_model_reads_it(tmp_path, nih_dir):
    from model.dicom import read_pixels
    dcm = nih_dir / "dicom" / "test1.dcm"
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "test1.dcm").symlink_to(dcm)
    (data_dir / "labels.csv").write_text("path,label\ntest1.dcm,0\n")
    params = tmp_path / "params.yaml"
    params.write_text("cohort:\n  nih: {max_age_years: 100}\n")
    out = tmp_path / "out"
    assert cohort.main(["--data", str(data_dir), "--out", str(out), "--params", str(params)]) == 0
    frame = read_manifest(out / "cohort" / "manifest.csv")
    data, pixel_quality, _ = pixels.analyse(frame, sample_max=10, seed=0)
    assert data["images_read"] == 1 and data["images_unreadable"] == 0 and pixel_quality["problems"] == []
    assert data["modes"] == {"DICOM MONOCHROME2": 1}
    expected = np.asarray(read_pixels(dcm), np.float64) / 255
    assert data["per_image_mean"]["mean"] == pytest.approx(expected.mean(), rel=1e-6)
    assert data["sizes"] == [{"width": expected.shape[1], "height": expected.shape[0], "images": 1}]


def test_bad_dicom_is_unreadable(tmp_path):
    (tmp_path / "x.dcm").write_bytes(b"not a dicom")
    frame = pd.DataFrame({"image_id": ["x.dcm"], "path": [str(tmp_path / "x.dcm")], "pneumonia": [0],
                          "view": ["PA"], "split": [""]})
    data, pixel_quality, _ = pixels.analyse(frame, sample_max=10, seed=0)
    assert data["images_unreadable"] == 1 and "x.dcm" in pixel_quality["problems"][0]["reason"]


def test_eda_does_not_import_tensorflow():
    code = "import sys, eda.__main__; assert 'tensorflow' not in sys.modules, 'tensorflow imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_no_images_is_not_estimable():
    frame = pd.DataFrame({"image_id": ["x"], "path": [""], "pneumonia": [0], "view": ["PA"], "split": [""]})
    data, quality, figure = pixels.analyse(frame, sample_max=10, seed=0)
    assert figure is None and data["normalisation"]["estimable"] is False
