"""Benchmark: clinical inference end to end versus prediction alone, in one run.

End to end = `model.infer.classify`, the path `python -m model.infer` runs: header check + decode
(`model.dicom.intake`) on intake threads ahead of batched preprocessing
(`model.preprocess.preprocess_batch`) and prediction, on DICOM files made from the real 1024x1024 NIH images; baseline = prediction
alone on the same images already preprocessed. The same steps one after the other, without the
overlap, are timed too, to show where the time goes. Batches of 64 at the model's input size. The model is
the locked one in `build/` when present, else params.yaml's architecture (`small_cnn`) untrained (timing
only). `python -m bench.inference` prints images/second for both and the ratio (goal <= 1.3).
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import timed

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO.parent / "shared" / "data" / "nih" / "images_1024"
GOAL_RATIO = 1.3


def _model_and_spec(out: Path, profile: str | None = None):
    """`profile`'s architecture untrained, else the locked model of `out`, else params.yaml's
    architecture untrained (timing only)."""
    from evidence import layout

    if profile is None and layout.model_file(out).is_file():
        from model.infer import _load_model
        return (*_load_model(out), f"{layout.model_file(out)}")
    from evidence.params import section
    from model.architectures import build
    from model.train import make_spec
    train = section(REPO / (profile or "params.yaml"), "train")
    spec = make_spec(train)
    name = (f"{train['architecture']} at {spec.image_size} px ({profile or 'params.yaml'}; "
            "untrained, timing only)")
    return build(train["architecture"], "none", spec)[0], spec, name


def _write_files(folder: Path, n: int, size: int | None = None) -> list[Path]:
    """n DICOM files of the real 1024x1024 NIH images, or of them resized to `size` (Lanczos)."""
    from PIL import Image

    from model import dicom

    sources = sorted(IMAGES.glob("*.png"))
    if not sources:
        raise FileNotFoundError(f"no images in {IMAGES} (the shared NIH data must be beside the repository)")
    images = [Image.open(p).convert("L") for p in sources]
    if size is not None:
        images = [im.resize((size, size), Image.LANCZOS) for im in images]
    pixels = [np.asarray(im, np.uint8) for im in images]
    return [dicom.save(dicom.build_dataset(pixels[i % len(pixels)], age="050Y", patient_id=str(i)),
                       folder / f"{i:04d}.dcm") for i in range(n)]


def main(n_images: int = 256, out: str | Path = "build", repeats: int = 2) -> dict:
    """The locked model of `out` (the demo's small CNN) on 1024x1024 files and on files already at
    its input size, then the full-NIH GPU profile's model on 1024x1024 files."""
    result = measure(n_images, out, repeats)
    result["files_at_input_size"] = measure(n_images, out, repeats, at_input_size=True)
    result["gpu_profile"] = measure(128, out, 2, profile="params_nih_gpu.yaml")
    return result


def measure(n_images: int, out: str | Path, repeats: int, profile: str | None = None,
            at_input_size: bool = False) -> dict:
    from model import dicom
    from model.infer import BATCH, INTAKE_WORKERS, LockedDevice, classify, predict
    from model.preprocess import preprocess_batch

    model, spec, model_name = _model_and_spec(Path(out), profile)
    device = LockedDevice(model, spec, 0.5, "timing only", Path(model_name), Path(out))
    rules = dicom.rules_from(None)
    with tempfile.TemporaryDirectory() as tmp:
        files = _write_files(Path(tmp), n_images, spec.image_size if at_input_size else None)
        batches = [files[i:i + BATCH] for i in range(0, len(files), BATCH)]

        def end_to_end():  # the clinical path itself: intake threads ahead of batched prediction
            rows = list(classify(files, device, rules, batch_size=BATCH))
            assert all(r["status"] == dicom.ACCEPTED for r in rows), "bench files must all be accepted"

        ready = [preprocess_batch([dicom.intake(f, rules).pixels for f in b], spec) for b in batches]

        def prediction_only():
            for x in ready:
                predict(model, x)

        prediction_only()  # warm-up (graph tracing)
        end_to_end()
        t_full = min(timed(end_to_end) for _ in range(repeats))
        t_pred = min(timed(prediction_only) for _ in range(repeats))
        stages = {"intake_s": 0.0, "preprocess_s": 0.0, "predict_s": 0.0}
        for batch in batches:  # the same work one step after the other, no overlap (one pass)
            start = time.perf_counter()
            items = [dicom.intake(f, rules) for f in batch]
            mid = time.perf_counter()
            x = preprocess_batch([it.pixels for it in items], spec)
            end = time.perf_counter()
            predict(model, x)
            stages["intake_s"] += mid - start
            stages["preprocess_s"] += end - mid
            stages["predict_s"] += time.perf_counter() - end
    sequential = sum(stages.values())
    result = {
        "model": model_name, "input_size": spec.image_size, "n_images": n_images, "batch": BATCH,
        "intake_workers": INTAKE_WORKERS, "cpu_count": os.cpu_count(),
        "source_image_size": (f"{spec.image_size}x{spec.image_size}" if at_input_size else "1024x1024")
        + " 8-bit DICOM (real NIH images)",
        "end_to_end_images_per_s": round(n_images / t_full, 1),
        "prediction_only_images_per_s": round(n_images / t_pred, 1),
        "ratio": round(t_full / t_pred, 2), "goal_ratio": GOAL_RATIO,
        "sequential_images_per_s": round(n_images / sequential, 1),
        "sequential_ratio": round(sequential / t_pred, 2),
        "stages_s": {k: round(v, 3) for k, v in stages.items()},
    }
    result["goal_met"] = result["ratio"] <= GOAL_RATIO
    print(f"inference: end to end {result['end_to_end_images_per_s']} img/s, prediction only "
          f"{result['prediction_only_images_per_s']} img/s, ratio {result['ratio']} (goal <= {GOAL_RATIO}; "
          f"one step after the other: {result['sequential_ratio']}) [{model_name}; "
          f"{result['source_image_size']}]")
    return result


if __name__ == "__main__":
    main()
