"""tf.data pipeline: cohort reading, balanced sampling, no augmentation outside training, errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import evidence
from evidence.manifest import ManifestError
from model import data
from model.images import load_pixels
from model.preprocess import PreprocessingSpec, preprocess


def make_cohort(root: Path, *, n_train=(16, 8), n_val=(6, 4), n_test=(6, 4), size=32, seed=0) -> Path:
    """A run folder with a tiny learnable cohort: positives carry a bright disc in the right lung.

    n_* = (negatives, positives). Writes PNGs, cohort/manifest.csv, cohort/splits.csv and a
    `split.patients` record so that training can cite it.
    """
    rng = np.random.default_rng(seed)
    out = root / "build"
    img_dir = root / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    rows = []
    for split, (n_neg, n_pos) in (("train", n_train), ("val", n_val), ("test", n_test)):
        for k, label in enumerate([0] * n_neg + [1] * n_pos):
            img = 60 + 40 * rng.random((size, size))
            if label:
                cx, cy = rng.integers(size // 4, size // 2, 2)
                img[(xx - cx) ** 2 + (yy - cy) ** 2 < (size // 6) ** 2] += 120
            image_id = f"{split}_{k:03d}.png"
            path = img_dir / image_id
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path)
            rows.append({"image_id": image_id, "path": str(path), "patient_id": f"p_{split}_{k}",
                         "pneumonia": label, "split": split})
    df = pd.DataFrame(rows)
    (out / "cohort").mkdir(parents=True)
    manifest = df.drop(columns="split").assign(source="folder", split="")
    manifest.to_csv(out / "cohort" / "manifest.csv", index=False)
    df[["image_id", "patient_id", "split"]].to_csv(out / "cohort" / "splits.csv", index=False)
    evidence.write_record(out, "split.patients", data={"note": "test fixture"},
                          deps=[out / "cohort" / "splits.csv"], synthetic=True)
    return out


@pytest.fixture
def cohort(tmp_path) -> Path:
    return make_cohort(tmp_path)


SPEC = PreprocessingSpec.create(32, 1)
AUG = {"rotation_deg": 5, "shift": 0.05, "zoom": 0.1, "brightness": 0.1, "contrast": 0.1}


def test_read_cohort_joins_manifest_and_splits(cohort):
    df, info = data.read_cohort(cohort)
    assert len(df) == 44 and info["n_excluded_without_file"] == 0
    assert data.class_counts(df[df["split"] == "train"]) == {"n": 24, "positive": 8, "negative": 16, "patients": 24}


def test_undersample_gives_half_positives_per_epoch(cohort):
    df, _ = data.read_cohort(cohort)
    rows = data.split_rows(df, "train")
    ds, steps, cw, _ = data.train_dataset(rows, SPEC, batch_size=4, balance="undersample",
                                          augmentation=AUG, horizontal_flip=False, seed=1)
    labels = np.concatenate([y.numpy() for _, y in ds.take(steps * 3)])
    assert cw is None and steps == 4  # 2 x 8 positives / batch 4
    assert labels.mean() == 0.5
    for b in range(0, len(labels), 4):  # every batch is balanced, not only the epoch
        assert labels[b:b + 4].sum() == 2


def test_class_weight_keeps_prevalence_and_weights_inverse_frequency(cohort):
    df, _ = data.read_cohort(cohort)
    rows = data.split_rows(df, "train")
    ds, steps, cw, _ = data.train_dataset(rows, SPEC, batch_size=6, balance="class_weight",
                                          augmentation=None, horizontal_flip=False, seed=1)
    labels = np.concatenate([y.numpy() for _, y in ds.take(steps)])
    assert steps == 4 and labels.mean() == pytest.approx(8 / 24)
    assert cw == {0: pytest.approx(24 / 32), 1: pytest.approx(24 / 16)}
    assert cw[0] * 16 == pytest.approx(cw[1] * 8)  # equal total weight per class


def test_val_stream_is_unaugmented_in_order_and_equals_preprocess(cohort):
    df, _ = data.read_cohort(cohort)
    rows = data.split_rows(df, "val")
    batches = list(data.eval_dataset(rows, SPEC, batch_size=4))
    x = np.concatenate([b[0].numpy() for b in batches])
    y = np.concatenate([b[1].numpy() for b in batches])
    np.testing.assert_array_equal(y, rows["label"].to_numpy())
    for i, path in enumerate(rows["path"]):
        np.testing.assert_allclose(x[i], preprocess(load_pixels(path), SPEC), atol=1e-6)


def test_training_stream_is_augmented(cohort):
    df, _ = data.read_cohort(cohort)
    rows = data.split_rows(df, "train")
    plain, *_ = data.train_dataset(rows, SPEC, batch_size=24, balance="none", augmentation=None,
                                   horizontal_flip=False, seed=3)
    aug, *_ = data.train_dataset(rows, SPEC, batch_size=24, balance="none", augmentation=AUG,
                                 horizontal_flip=False, seed=3)
    xp, yp = next(iter(plain))
    xa, ya = next(iter(aug))
    np.testing.assert_array_equal(yp.numpy(), ya.numpy())  # same shuffle order
    diff = np.abs(xp.numpy() - xa.numpy()).reshape(24, -1).max(axis=1)
    assert (diff > 1e-3).all()
    assert xa.numpy().min() >= 0.0 and xa.numpy().max() <= 1.0


def test_augment_is_seeded_and_never_flips_vertically():
    import tensorflow as tf

    img = np.zeros((32, 32, 1), np.float32)
    img[:8] = 1.0  # a bright top band
    seed = tf.constant([5, 9], tf.int64)
    a = data.augment(tf.constant(img), seed, AUG).numpy()
    b = data.augment(tf.constant(img), seed, AUG).numpy()
    np.testing.assert_array_equal(a, b)
    for i in range(20):
        out = data.augment(tf.constant(img), tf.constant([1, i], tf.int64), AUG).numpy()
        assert out[:8].mean() > out[-8:].mean() + 0.5  # the top band stays on top


def test_split_without_positives_is_named(tmp_path):
    out = make_cohort(tmp_path, n_val=(6, 0))
    df, _ = data.read_cohort(out)
    with pytest.raises(data.DataError, match="split 'val' has no positives"):
        data.split_rows(df, "val")


def test_missing_image_is_named(cohort):
    df, _ = data.read_cohort(cohort)
    rows = data.split_rows(df, "train")
    Path(rows["path"][3]).unlink()
    with pytest.raises(data.DataError, match=f"image file not found: .*{rows['image_id'][3]}"):
        data.check_files(rows)


def test_bad_label_names_manifest_row(cohort):
    path = cohort / "cohort" / "manifest.csv"
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df.loc[4, "pneumonia"] = "yes"
    df.to_csv(path, index=False)
    with pytest.raises(ManifestError, match=r"manifest.csv: row 6: column pneumonia is 'yes' \(expected 0 or 1\)"):
        data.read_cohort(cohort)


def test_unknown_balance_names_parameter(cohort):
    df, _ = data.read_cohort(cohort)
    with pytest.raises(data.DataError, match="train.balance"):
        data.train_dataset(data.split_rows(df, "train"), SPEC, batch_size=4, balance="oversample",
                           augmentation=None, horizontal_flip=False, seed=0)


def test_dicom_and_jpeg_rows_decode_in_the_pipeline_like_load_pixels(cohort, tmp_path):
    import pydicom

    from test_preprocess import write_dicom

    df, _ = data.read_cohort(cohort)
    rows = data.split_rows(df, "val").copy()
    first = np.asarray(Image.open(rows["path"][0]))
    rows.loc[0, "path"] = str(write_dicom(tmp_path / "v0.dcm", first))
    rows.loc[1, "path"] = str(tmp_path / "v1.jpg")
    Image.open(data.split_rows(df, "val")["path"][1]).save(rows["path"][1], quality=90)
    rows["kind"] = ["dicom", "jpeg"] + list(rows["kind"][2:])
    x = np.concatenate([b[0].numpy() for b in data.eval_dataset(rows, SPEC, batch_size=3)])
    for i in range(3):
        np.testing.assert_allclose(x[i], preprocess(load_pixels(rows["path"][i]), SPEC), atol=1e-6)
    assert pydicom.dcmread(rows["path"][0]).Modality == "DX"


def test_file_cache_keeps_each_stream_apart_and_stale_files_are_removed(cohort, tmp_path):
    df, _ = data.read_cohort(cohort)
    train_rows, val_rows = data.split_rows(df, "train"), data.split_rows(df, "val")
    cache = tmp_path / "cache" / "c"
    cache.parent.mkdir()
    ds, steps, *_ = data.train_dataset(train_rows, SPEC, batch_size=4, balance="none", augmentation=None,
                                       horizontal_flip=False, seed=1, cache=str(cache))
    list(ds.take(steps * 2))  # the training cache file is complete
    x = np.concatenate([b[0].numpy() for b in data.eval_dataset(val_rows, SPEC, batch_size=4, cache=str(cache))])
    assert len(x) == len(val_rows)
    for i, path in enumerate(val_rows["path"]):
        np.testing.assert_allclose(x[i], preprocess(load_pixels(path), SPEC), atol=1e-6)
    assert list(cache.parent.glob("c.*"))
    data.clear_cache(str(cache))
    assert not list(cache.parent.glob("c.*"))
    data.clear_cache("memory")
    data.clear_cache(None)


def test_undersample_works_with_a_file_cache(cohort, tmp_path):
    df, _ = data.read_cohort(cohort)
    rows = data.split_rows(df, "train")
    ds, steps, _, _ = data.train_dataset(rows, SPEC, batch_size=4, balance="undersample", augmentation=None,
                                         horizontal_flip=False, seed=1, cache=str(tmp_path / "c"))
    labels = np.concatenate([y.numpy() for _, y in ds.take(steps * 3)])
    assert labels.mean() == 0.5
