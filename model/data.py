"""tf.data input pipelines from the cohort manifest and the patient-level splits.

Decoding (PNG/JPEG with tf.io, DICOM through model.images in tf.numpy_function) runs in parallel
and deterministically; the windowed, resized unit image is cached; the training stream then
augments and balances; validation and test streams are unshuffled, unaugmented and at their real
prevalence. The model input is always `preprocess.normalise(preprocess.to_unit(pixels))`.
"""
from __future__ import annotations

import glob
import math
from pathlib import Path

import numpy as np
import pandas as pd

from evidence import layout
from evidence.errors import ToolkitError
from evidence.manifest import read_manifest, read_splits

from . import images
from .preprocess import PreprocessingSpec, normalise, to_unit

KINDS = ("png", "jpeg", "dicom")
BALANCE = ("class_weight", "undersample", "none")
MANIFEST_COLUMNS = ("image_id", "path", "patient_id", "pneumonia")


class DataError(ToolkitError, ValueError):
    """Bad cohort input; the message names the file, row, split or parameter."""


def read_cohort(out_dir: str | Path) -> tuple[pd.DataFrame, dict]:
    """Manifest joined with splits: image_id, patient_id, path, label (int), split, kind.

    Images without a file (empty `path`) are excluded and counted in the returned info. Bad
    files raise `evidence.manifest.ManifestError` naming the file, row and column.
    """
    manifest_path, splits_path = layout.manifest(out_dir), layout.splits(out_dir)
    manifest = read_manifest(manifest_path, MANIFEST_COLUMNS)
    splits = read_splits(splits_path)
    df = manifest.merge(splits[["image_id", "split"]], on="image_id", how="inner")
    n_without_file = int((df["path"] == "").sum())
    df = df[df["path"] != ""].rename(columns={"pneumonia": "label"})
    df["kind"] = [images.kind_of(p) for p in df["path"]]
    info = {"manifest": manifest_path, "splits": splits_path,
            "n_manifest": int(len(manifest)), "n_split_assigned": int(len(splits)),
            "n_excluded_without_file": n_without_file}
    return df.reset_index(drop=True), info


def split_rows(df: pd.DataFrame, split: str, *, need_both_classes: bool = True) -> pd.DataFrame:
    """Rows of one split; raises DataError naming the split when it is empty or single-class."""
    rows = df[df["split"] == split].reset_index(drop=True)
    if rows.empty:
        raise DataError(f"split {split!r} has no images with files (check cohort/splits.csv and the paths)")
    if need_both_classes:
        n_pos = int(rows["label"].sum())
        if n_pos == 0 or n_pos == len(rows):
            missing = "positives (pneumonia=1)" if n_pos == 0 else "negatives (pneumonia=0)"
            raise DataError(f"split {split!r} has no {missing} among its {len(rows)} images; "
                            "AUC and training need both classes (use a larger cohort or another split seed)")
    return rows


def check_files(rows: pd.DataFrame) -> None:
    """Every listed image file exists; raises DataError naming the first missing one."""
    for image_id, path in zip(rows["image_id"], rows["path"]):
        if not Path(path).is_file():
            raise DataError(f"image file not found: {path} (image_id {image_id}); fix the manifest or "
                            "restore the file")


def find_unreadable(rows: pd.DataFrame) -> str | None:
    """The first file that cannot be decoded, as a message; None when all decode."""
    for path in rows["path"]:
        try:
            images.load_pixels(path)
        except images.ImageError as e:
            return str(e)
    return None


def _decode_unit(path, kind, spec: PreprocessingSpec):
    from .tf import tf

    def raster(k):
        return lambda: images.decode_display(tf.io.read_file(path), k)

    def dicom():
        x = tf.numpy_function(lambda p: images.load_pixels(p.decode()), [path], tf.float32, stateful=False)
        x.set_shape([None, None])
        return x

    pixels = tf.switch_case(kind, [raster("png"), raster("jpeg"), dicom])
    return to_unit(pixels, spec)


def unit_dataset(rows: pd.DataFrame, spec: PreprocessingSpec):
    """(unit image (S, S, 1), label float) per row, decoded in parallel, in row order."""
    from .tf import tf

    kinds = np.array([KINDS.index(k) for k in rows["kind"]], dtype=np.int32)
    ds = tf.data.Dataset.from_tensor_slices((rows["path"].to_numpy(dtype=str), kinds,
                                             rows["label"].to_numpy(dtype=np.float32)))
    return ds.map(lambda p, k, y: (_decode_unit(p, k, spec), y),
                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _is_file_cache(cache) -> bool:
    return cache not in (None, "none", False, "memory")


def _cache(ds, cache, name: str):
    """Cache in memory, or in the file `{cache}.{name}`: one file per stream, never shared."""
    if cache in (None, "none", False):
        return ds
    return ds.cache() if cache == "memory" else ds.cache(f"{cache}.{name}")


def clear_cache(cache) -> None:
    """Remove the `{cache}.*` files of an earlier run (TensorFlow would reuse them whatever the input)."""
    if not _is_file_cache(cache):
        return
    base = Path(str(cache))
    for path in base.parent.glob(glob.escape(base.name) + ".*"):
        if path.is_file():
            path.unlink()


def eval_dataset(rows: pd.DataFrame, spec: PreprocessingSpec, batch_size: int, *, cache="memory",
                 name: str = "val"):
    """Validation/test stream: row order, no augmentation, no resampling."""
    from .tf import tf

    ds = _cache(unit_dataset(rows, spec), cache, name).batch(batch_size)
    return ds.map(lambda x, y: (normalise(x, spec), y), num_parallel_calls=tf.data.AUTOTUNE,
                  deterministic=True).prefetch(tf.data.AUTOTUNE)


def augment(unit, seed, aug: dict, horizontal_flip: bool = False):
    """Random small rotation, shift, zoom, brightness and contrast of one (S, S, 1) unit image.

    `seed` is a stateless seed pair: the same pair gives the same image. Never a vertical flip;
    a horizontal flip only when `horizontal_flip` is true.
    """
    from .tf import tf

    u = tf.random.stateless_uniform([6], seed=seed, minval=-1.0, maxval=1.0)
    size = tf.cast(tf.shape(unit)[0], tf.float32)
    theta = u[0] * float(aug.get("rotation_deg", 0.0)) * math.pi / 180.0
    scale = 1.0 / (1.0 + u[1] * float(aug.get("zoom", 0.0)))  # output->input sampling step
    tx, ty = u[2] * float(aug.get("shift", 0.0)) * size, u[3] * float(aug.get("shift", 0.0)) * size
    c = (size - 1.0) / 2.0
    a0, a1 = scale * tf.cos(theta), -scale * tf.sin(theta)
    b0, b1 = scale * tf.sin(theta), scale * tf.cos(theta)
    transform = tf.stack([a0, a1, c - a0 * c - a1 * c + tx, b0, b1, c - b0 * c - b1 * c + ty, 0.0, 0.0])
    x = tf.raw_ops.ImageProjectiveTransformV3(
        images=unit[None], transforms=transform[None], output_shape=tf.shape(unit)[:2],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="NEAREST")[0]
    x = x + u[4] * float(aug.get("brightness", 0.0))
    mean = tf.reduce_mean(x)
    x = (x - mean) * (1.0 + u[5] * float(aug.get("contrast", 0.0))) + mean
    if horizontal_flip:
        flip = tf.random.stateless_uniform([], seed=seed + tf.constant([0, 1], seed.dtype)) < 0.5
        x = tf.cond(flip, lambda: tf.reverse(x, axis=[1]), lambda: x)
    x = tf.clip_by_value(x, 0.0, 1.0)
    x.set_shape(unit.shape)
    return x


def class_counts(rows: pd.DataFrame) -> dict:
    n_pos = int(rows["label"].sum())
    return {"n": int(len(rows)), "positive": n_pos, "negative": int(len(rows)) - n_pos,
            "patients": int(rows["patient_id"].nunique())}


def train_dataset(rows: pd.DataFrame, spec: PreprocessingSpec, *, batch_size: int, balance: str,
                  augmentation: dict | None, horizontal_flip: bool, seed: int, cache="memory"):
    """(infinite training stream, steps_per_epoch, class_weight or None, balance description)."""
    from .tf import tf

    if balance not in BALANCE:
        raise DataError(f"train.balance: unknown value {balance!r} (allowed: {', '.join(BALANCE)})")
    counts = class_counts(rows)
    n, n_pos, n_neg = counts["n"], counts["positive"], counts["negative"]

    def stream(part, offset, name):
        return (_cache(unit_dataset(part, spec), cache, name)
                .shuffle(len(part), seed=seed + offset, reshuffle_each_iteration=True).repeat())

    class_weight = None
    if balance == "undersample":
        neg = stream(rows[rows["label"] == 0], 1, "neg")
        pos = stream(rows[rows["label"] == 1], 2, "pos")
        ds = tf.data.Dataset.choose_from_datasets([neg, pos], tf.data.Dataset.range(2).repeat())
        steps = math.ceil(2 * min(n_pos, n_neg) / batch_size)
        description = ("each epoch draws 2 x n_minority images alternating the classes (50% positives); "
                       "the majority class is subsampled anew each epoch")
    else:
        ds = stream(rows, 0, "train")
        steps = math.ceil(n / batch_size)
        if balance == "class_weight":
            class_weight = {0: n / (2.0 * n_neg), 1: n / (2.0 * n_pos)}
            description = "loss weight n/(2 n_class) per class; images at their real prevalence"
        else:
            description = "no balancing; images at their real prevalence"
    if augmentation:
        aug = dict(augmentation)
        ds = ds.enumerate().map(
            lambda i, xy: (augment(xy[0], tf.stack([tf.constant(seed, tf.int64), i]), aug, horizontal_flip), xy[1]),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size).map(lambda x, y: (normalise(x, spec), y),
                                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE), steps, class_weight, description
