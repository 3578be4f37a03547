"""Benchmark: model replay (`model.replay`, the audit's third step) versus model-only inference.

Replay = `model.replay.replay(OUT, sample=None)` end to end: re-hash the model and spec, read the
predictions, manifest and splits, load the model, decode and preprocess every image file, score
and compare. Baseline = prediction alone (`model.infer.predict`, batches of 64) on the same images
already preprocessed in memory, as in bench/inference.py. Images: the 1,000 real 64x64 NIH images
of ../shared/data/nih/images_64px, all in the test split of a temporary run folder whose
predictions are scored first by `model.predict.score_rows`. The model is the locked one in `build/`
when present, else params.yaml's architecture untrained (timing only).
`python -m bench.replay` prints images/second for both and the ratio replay / model-only, and the
same for replay's scoring step alone (the fixed costs of one audit call left out).
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import timed
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO.parent / "shared" / "data" / "nih" / "images_64px"


def _run_folder(out: Path, build: Path):
    """A run folder with the model, a manifest of the NIH 64 px images (all test) and the
    `training.run` and `model.predictions` records replay checks against."""
    import evidence
    from evidence import layout
    from model.predict import score_rows
    from bench.inference import _model_and_spec

    files = sorted(IMAGES.glob("*.png"))
    if not files:
        raise FileNotFoundError(f"no images in {IMAGES} (the shared NIH data must be beside the repository)")
    model, spec, name = _model_and_spec(build)
    layout.models(out).mkdir(parents=True)
    model.save(layout.model_file(out))
    evidence.write_text(layout.preprocessing_spec(out), spec.to_json())
    ids = [f.name for f in files]
    labels = [i % 2 for i in range(len(ids))]  # timing only: labels do not change the work
    layout.manifest(out).parent.mkdir()
    pd.DataFrame({"image_id": ids, "path": [str(f) for f in files], "patient_id": ids,
                  "pneumonia": labels}).to_csv(layout.manifest(out), index=False)
    pd.DataFrame({"image_id": ids, "patient_id": ids, "split": "test"}).to_csv(layout.splits(out), index=False)
    evidence.write_record(out, "training.run", data={}, outs=[layout.model_file(out), layout.preprocessing_spec(out)])
    from model import data
    df, _ = data.read_cohort(out)
    scores = score_rows(model, spec, df, 64, "bench")
    path = layout.predictions(out, "test")
    path.parent.mkdir()
    pd.DataFrame({"image_id": df["image_id"], "patient_id": df["patient_id"], "label": df["label"],
                  "score": scores}).to_csv(path, index=False, float_format="%.8g")
    shas = {"model_sha256": evidence.sha256_file(layout.model_file(out)),
            "preprocessing_sha256": evidence.sha256_file(layout.preprocessing_spec(out))}
    evidence.write_record(out, "model.predictions", data=shas, params={"batch_size": 64},
                          dep_records=["training.run"], outs=[path])
    return model, spec, df, name


def main(out: str | Path = "build", repeats: int = 2) -> dict:
    from model.infer import BATCH, predict
    from model.preprocess import preprocess_batch
    from model.replay import replay
    from PIL import Image

    tmp = Path(tempfile.mkdtemp(prefix="bench-replay-"))
    try:
        model, spec, df, name = _run_folder(tmp / "run", Path(out))
        n = len(df)
        pixels = [np.asarray(Image.open(p).convert("L"), np.uint8) for p in df["path"]]
        ready = [preprocess_batch(pixels[i:i + BATCH], spec) for i in range(0, n, BATCH)]

        def model_only():
            for x in ready:
                predict(model, x)

        model_only()  # warm-up (graph tracing)
        t_model = min(timed(model_only) for _ in range(repeats))
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            failures, summary = replay(tmp / "run", sample=None)
            times.append(time.perf_counter() - start)
            assert failures == [] and summary["replayed"] == n, failures[:3]
        t_replay = min(times)
        from model.predict import score_rows
        t_score = min(timed(lambda: score_rows(model, spec, df, 64, "bench")) for _ in range(repeats))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = {"model": name, "n_images": n, "cpu_count": os.cpu_count(),
              "replay_images_per_s": round(n / t_replay, 1), "model_only_images_per_s": round(n / t_model, 1),
              "ratio": round(t_replay / t_model, 2),
              "replay_scoring_images_per_s": round(n / t_score, 1), "scoring_ratio": round(t_score / t_model, 2),
              "max_abs_difference": summary["max_abs_difference"],
              "tolerance": summary["tolerance"]}
    print(f"replay: {result['replay_images_per_s']} img/s end to end (hashes, files, model load, decode, score, "
          f"compare), model only {result['model_only_images_per_s']} img/s, ratio {result['ratio']} "
          f"(replay's scoring alone, files decoded and preprocessed: {result['replay_scoring_images_per_s']} img/s, "
          f"ratio {result['scoring_ratio']}); "
          f"max |difference| {summary['max_abs_difference']:.2g} [{name}; {n} real NIH 64x64 images]")
    return result


if __name__ == "__main__":
    main()
