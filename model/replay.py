"""Replay the model: re-score test images with the stored model and preprocessing spec and compare
with `predictions/test.csv`.

    python -m model.replay --out OUT [--all | --sample N] [--seed S]

Before scoring, `models/model.keras` and `models/preprocessing.json` are re-hashed against the
outs of `training.run` (`model.infer.trained_sha256`), and the record that lists the test
predictions must state the same model. The images are those of the test split
(`cohort/manifest.csv` joined with `cohort/splits.csv`); the file must list each exactly once with
its manifest label. Default: a seeded sample of `SAMPLE` images (all when fewer), `--all` for all.
Scoring is `model.predict.score_rows`, the code that wrote the file, with the batch size the
predictions record used.

Exit 0 when every replayed score is within `TOLERANCE` of the stored one, 1 with one `FAIL` line
per image that differs (or is missing, extra or relabelled), 2 on bad input, 70 on a bug.
"""
from __future__ import annotations

import argparse
import csv
import random
import sys
from pathlib import Path

import numpy as np

from evidence import EvidenceError, Store, console, layout
from evidence.cli import EXIT_FAILED, EXIT_OK, guarded
from evidence.manifest import image_path

from .infer import MODEL_FILE, SPEC_FILE, DeviceError, trained_sha256

SPLIT = "test"
SAMPLE = 200
#: |replayed - stored| allowed. Stored scores have 8 significant digits (at most 5e-9 off), and
#: TensorFlow on CPU (op determinism on) may differ in the last float32 bits (about 6e-8 at 0.5)
#: between batch compositions (a sample is batched differently from the full split). Measured:
#: at most 4.9e-9 on the demo (all test images, and samples of 10) and 5e-9 on 1,000 real NIH
#: images (`make bench BENCH=replay`), i.e. the rounding alone. 1e-6 is 200 times that and over 15
#: times a float32 step, yet a thousand times below the 3 decimals scores and thresholds are shown with.
TOLERANCE = 1e-6


def predictions_record(store: Store) -> dict:
    """The record that lists the test predictions file among its outs."""
    rel = layout.predictions("", SPLIT).as_posix()
    for rid in store.ids():
        record = store.get(rid)
        if rel in {o["path"] for o in record["outs"]}:
            return record
    raise DeviceError(f"no record in {store.out_dir} lists {rel} among its outs (run `make validate`)")


def read_scores(path: Path) -> dict[str, tuple[int, float]]:
    """{image_id: (label, score)} from a predictions file; a repeated image id is bad input."""
    if not path.is_file():
        raise DeviceError(f"predictions file not found: {path} (run `make validate`)")
    found: dict[str, tuple[int, float]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for n, row in enumerate(csv.DictReader(f), start=2):
            try:
                image_id, label, score = row["image_id"], int(float(row["label"])), float(row["score"])
            except (KeyError, TypeError, ValueError) as e:
                raise DeviceError(f"{path} line {n}: expected image_id, label and score ({e})") from None
            if image_id in found:
                raise DeviceError(f"{path} line {n}: image {image_id} is listed twice")
            found[image_id] = (label, score)
    return found


def _located(rows, out: Path, store: Store):
    """The rows with each image's current path (`evidence.manifest.image_path`: a demo cohort's
    images are read from this run folder's copy)."""
    source = store.get("cohort.manifest")["data"].get("source", {}) if store.has("cohort.manifest") else {}
    rows = rows.copy()
    rows["path"] = [str(image_path(p, source, out)) if p else p for p in rows["path"]]
    return rows


def replay(out: str | Path, *, sample: int | None = SAMPLE, seed: int = 0) -> tuple[list[str], dict]:
    """(failure lines, summary) for the test split of run `out`; `sample=None` replays all images."""
    from . import data
    from .predict import score_rows
    from .train import load_model

    out = Path(out)
    store = Store(out)
    try:
        hashes = trained_sha256(out)
        record = predictions_record(store)
    except EvidenceError as e:
        raise DeviceError(str(e)) from None
    rid, failures = record["id"], []
    for field, name in (("model_sha256", MODEL_FILE), ("preprocessing_sha256", SPEC_FILE)):
        if record["data"].get(field) != hashes[name]:
            failures.append(f"record {rid}: field data.{field}: expected {hashes[name]} (training.run) "
                            f"found {record['data'].get(field)}")
    path = layout.predictions(out, SPLIT)
    stored = read_scores(path)
    df, _ = data.read_cohort(out)
    rows = df[df["split"] == SPLIT].reset_index(drop=True)
    rel = path.relative_to(out).as_posix()
    ids = set(rows["image_id"])
    failures += [f"image {i}: field {rel}: expected a {SPLIT} image found an image outside the {SPLIT} split"
                 for i in sorted(set(stored) - ids)]
    failures += [f"image {i}: field {rel}: expected a score found missing row" for i in sorted(ids - set(stored))]
    for image_id, label in zip(rows["image_id"], rows["label"]):
        if image_id in stored and stored[image_id][0] != int(label):
            failures.append(f"image {image_id}: field {rel}[label]: expected {int(label)} (cohort/manifest.csv) "
                            f"found {stored[image_id][0]}")
    rows = rows[rows["image_id"].isin(stored)]
    if sample is not None and sample < len(rows):
        chosen = set(random.Random(seed).sample(sorted(rows["image_id"]), sample))
        rows = rows[rows["image_id"].isin(chosen)]
    rows = _located(rows.reset_index(drop=True), out, store)
    data.check_files(rows)
    batch_size = int(record["params"].get("batch_size", 32))
    model, spec = load_model(out)
    scores = score_rows(model, spec, rows, batch_size, f"replay {SPLIT}")
    diffs = np.abs(scores - np.array([stored[i][1] for i in rows["image_id"]]))
    for image_id, replayed, diff in zip(rows["image_id"], scores, diffs):
        if not diff <= TOLERANCE:
            failures.append(f"image {image_id}: field {rel}[score]: expected {replayed:.8g} (replayed) "
                            f"found {stored[image_id][1]:.8g} (difference {diff:.2g} > {TOLERANCE:g})")
    summary = {"replayed": int(len(rows)), "of": len(ids), "max_abs_difference": float(diffs.max(initial=0.0)),
               "tolerance": TOLERANCE, "record": rid}
    return failures, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.replay", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="build", help="run folder (default build)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--all", action="store_true", help="replay every test image")
    which.add_argument("--sample", type=int, default=SAMPLE, help=f"images to replay (default {SAMPLE})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample (default 0)")
    console.add_arguments(parser)
    args = parser.parse_args(argv)
    if args.sample < 1:
        parser.error(f"--sample must be at least 1, got {args.sample}")
    command = " ".join(["python -m model.replay", *(sys.argv[1:] if argv is None else argv)])

    def body() -> int:
        with console.session(args.out, "model.replay", command=command, verbose=args.verbose, quiet=args.quiet):
            failures, s = replay(args.out, sample=None if args.all else args.sample, seed=args.seed)
        for line in failures:
            print(f"FAIL {line}")
        what = f"{s['replayed']} of {s['of']} {SPLIT} images re-scored, max |difference| {s['max_abs_difference']:.2g}"
        if failures:
            print(f"replay: {len(failures)} failure(s); {what} (tolerance {s['tolerance']:g})", file=sys.stderr)
            return EXIT_FAILED
        print(f"replay: OK, {what} (tolerance {s['tolerance']:g}) against {s['record']}")
        return EXIT_OK

    return guarded(body)


if __name__ == "__main__":
    sys.exit(main())
