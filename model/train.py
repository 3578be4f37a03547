"""Train the pneumonia classifier: `python -m model.train --out OUT --params PARAMS`.

Reads `OUT/cohort/manifest.csv` and `OUT/cohort/splits.csv`, fits on the train split with early
stopping on validation AUC, and writes `OUT/models/model.keras` (best epoch),
(when `split.patients` records the val split below its pre-specified minimum and the run was
allowed to proceed: no early stopping, the fixed epochs, the last epoch kept; the record says why),
`OUT/models/preprocessing.json`, `OUT/figures/training_curves.png` and the record `training.run`
(documented in docs/records/model.md).
"""
from __future__ import annotations

import hashlib
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import evidence
from evidence import layout
from evidence.manifest import validation_adequacy
from evidence.params import section
from evidence.cli import stage_main

from . import architectures, data, distribute
from .figures import save_figure
from .preprocess import PreprocessingSpec, load_spec

#: train.optimizer: name -> builder(keras, learning_rate) of the Keras optimizer.
OPTIMIZERS = {
    "adam": lambda keras, lr: keras.optimizers.Adam(lr),
    "adamw": lambda keras, lr: keras.optimizers.AdamW(lr),
    "sgd": lambda keras, lr: keras.optimizers.SGD(lr, momentum=0.9),
    "rmsprop": lambda keras, lr: keras.optimizers.RMSprop(lr),
}
HORIZONTAL_FLIP_REASON = ("horizontal flips are off by default: cardiac and situs anatomy are lateralized, "
                          "so a mirrored chest radiograph is not a plausible patient image")
DEFAULTS = {
    "architecture": "small_cnn", "weights": "none", "image_size": 64, "channels": 1, "batch_size": 32,
    "epochs": 12, "learning_rate": 0.001, "optimizer": "adam", "early_stopping_patience": 4,
    "balance": "class_weight", "horizontal_flip": False,
    "augmentation": {"rotation_deg": 5, "shift": 0.05, "zoom": 0.1, "brightness": 0.1, "contrast": 0.1},
    "fine_tune": {"frozen_epochs": 0, "unfreeze_from": None, "fine_tune_learning_rate": 0.0001},
    "seed": 7, "cache": "memory",
}


def resolve_params(params: dict) -> dict:
    """The train section (checked by evidence.params when the file was read) with defaults filled in."""
    p = {**DEFAULTS, **params}
    p["fine_tune"] = {**DEFAULTS["fine_tune"], **(params.get("fine_tune") or {})}
    p["augmentation"] = params.get("augmentation", DEFAULTS["augmentation"]) or {}
    p["weights"] = architectures.check(p["architecture"], p["weights"])
    return p


def make_spec(p: dict) -> PreprocessingSpec:
    """ImageNet-pretrained bases get 3 channels and their own normalisation; otherwise unit scaling."""
    norm = architectures.normalisation_for(p["architecture"], p["weights"])
    channels = 3 if norm != "unit" else p["channels"]
    return PreprocessingSpec.create(p["image_size"], channels, norm)


def _compile(model, name: str, lr: float):
    from .tf import keras

    model.compile(optimizer=OPTIMIZERS[name](keras, lr), loss="binary_crossentropy",
                  metrics=[keras.metrics.AUC(name="auc")])


def weights_sha256(model) -> str:
    """sha256 over every weight array (dtype, shape, bytes) in model order: a file-independent id."""
    h = hashlib.sha256()
    for w in model.get_weights():
        w = np.ascontiguousarray(w)
        h.update(f"{w.dtype}{w.shape}".encode())
        h.update(w.tobytes())
    return h.hexdigest()


def _number(v):
    v = float(v)
    return v if math.isfinite(v) else {"estimable": False, "reason": "the value was not finite (diverged)"}


def _device(strategy, where: distribute.Cluster | None = None) -> dict:
    from .tf import tf

    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    return {"strategy": type(strategy).__name__, "replicas": int(strategy.num_replicas_in_sync),
            "gpus": gpus, "device": "GPU" if gpus else "CPU",
            **distribute.record(where or distribute.cluster({}), strategy)}


def selection_policy(out_dir) -> dict:
    """Whether early stopping and best-epoch selection use the val split, from the validation
    adequacy the split stage recorded in `split.patients` (absent in an older record: used)."""
    adequacy = validation_adequacy(out_dir)
    if adequacy is None:
        return {"on_validation": True, "validation_adequacy": "not recorded",
                "reason": "record split.patients holds no validation_adequacy: early stopping and best-epoch "
                          "selection on validation AUC, as pre-specified by train.early_stopping_patience"}
    counts = (f"{adequacy['positives']} pneumonia images (pre-specified minimum {adequacy['min_positives']}) and "
              f"{adequacy['negatives']} non-pneumonia images (minimum {adequacy['min_negatives']})")
    if adequacy["adequate"]:
        return {"on_validation": True, "validation_adequacy": "adequate",
                "reason": f"the validation split holds {counts}, enough to carry that choice"}
    return {"on_validation": False, "validation_adequacy": "inadequate (allowed)",
            "reason": f"the validation split holds {counts}, too few for its AUC to choose an epoch; the run "
                      "was allowed to proceed by split.allow_inadequate_val"}


def _figure(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]

    def series(key):
        return [h[key] if isinstance(h.get(key), float) else np.nan for h in history]

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for ax, metric, label in ((axes[0], "loss", "binary cross-entropy"), (axes[1], "auc", "ROC AUC")):
        ax.plot(epochs, series(metric), "o-", label="train")
        ax.plot(epochs, series("val_" + metric), "s-", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Training curves")
    fig.tight_layout()
    save_figure(fig, path, 110)


def run(out_dir: str | Path, params: dict) -> dict:
    """Train and write model, spec, figure and the `training.run` record; return the record. A worker
    of a multi-worker cluster (`model.distribute`) that is not the chief trains its share, writes
    nothing in OUT and returns a summary of its part instead."""
    out_dir = Path(out_dir)
    p = resolve_params(params)
    where = distribute.cluster()
    strategy = distribute.strategy(where)           # before any other TensorFlow op
    if not where.is_chief:
        scratch = Path(tempfile.mkdtemp(prefix="cxr-train-worker-"))
        try:
            return _train(out_dir, p, where, strategy, scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return _train(out_dir, p, where, strategy, None)


def _train(out_dir: Path, p: dict, where: distribute.Cluster, strategy, scratch: Path | None) -> dict:
    """Training itself; `scratch` (a worker that is not the chief) holds its checkpoint and file cache."""
    from .tf import keras, tf

    from .callbacks import StderrProgress, checkpoint as make_checkpoint, early_stopping

    if scratch is not None and data._is_file_cache(p["cache"]):
        p = {**p, "cache": str(scratch / "cache")}  # never the chief's cache files
    keras.utils.set_random_seed(p["seed"])
    tf.config.experimental.enable_op_determinism()

    policy = selection_policy(out_dir)
    on_val = policy["on_validation"]
    df, info = data.read_cohort(out_dir)
    train_rows, val_rows = data.split_rows(df, "train"), data.split_rows(df, "val")
    data.check_files(train_rows)
    data.check_files(val_rows)
    spec = make_spec(p)

    ft = p["fine_tune"]
    with strategy.scope():
        model, base = architectures.build(p["architecture"], p["weights"], spec, seed=p["seed"])
        frozen_first = base is not None and ft["frozen_epochs"] > 0
        frozen_layers = architectures.freeze(base) if frozen_first else []
        _compile(model, p["optimizer"], p["learning_rate"])
    distribute.build_with_local_batch(model, strategy, where)

    data.clear_cache(p["cache"])
    train_ds, steps, class_weight, balance_text = data.train_dataset(
        train_rows, spec, batch_size=p["batch_size"], balance=p["balance"], augmentation=p["augmentation"],
        horizontal_flip=bool(p["horizontal_flip"]), seed=p["seed"], cache=p["cache"])
    val_ds = data.eval_dataset(val_rows, spec, p["batch_size"], cache=p["cache"])
    train_ds, val_ds = distribute.shard_train(train_ds, where), distribute.shard_eval(val_ds, where)

    model_path, spec_path = layout.model_file(out_dir), layout.preprocessing_spec(out_dir)
    if scratch is None:
        model_path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint_path = (scratch or model_path.parent) / ".checkpoint.keras"
    checkpoint = make_checkpoint(checkpoint_path, on_validation=on_val)
    progress = StderrProgress(p["epochs"])
    phases, start = [], time.perf_counter()

    def fit(first, last, phase):
        stop = early_stopping(p["early_stopping_patience"], on_validation=on_val)
        hist = model.fit(train_ds, validation_data=val_ds, epochs=last, initial_epoch=first,
                         steps_per_epoch=steps, class_weight=class_weight, verbose=0, shuffle=False,
                         callbacks=[checkpoint, progress] + ([stop] if stop else []))
        n = len(hist.history.get("loss", []))
        phases.append({"phase": phase, "first_epoch": first + 1, "last_epoch": first + n,
                       "stopped_early": bool(stop and stop.stopped_epoch)})
        return [{"epoch": first + i + 1, "phase": phase,
                 **{k: _number(v[i]) for k, v in hist.history.items() if k in ("loss", "auc", "val_loss", "val_auc")}}
                for i in range(n)]

    try:
        history = []
        if frozen_first:
            history += fit(0, ft["frozen_epochs"], "frozen_base")
            with strategy.scope():
                frozen_layers = architectures.set_trainable(base, ft["unfreeze_from"])
                _compile(model, p["optimizer"], ft["fine_tune_learning_rate"])
            history += fit(ft["frozen_epochs"], p["epochs"], "fine_tune")
        else:
            history += fit(0, p["epochs"], "train")
    except BaseException as e:  # no partial output: drop the checkpoint, name an undecodable file
        checkpoint_path.unlink(missing_ok=True)
        if isinstance(e, tf.errors.OpError):
            bad = data.find_unreadable(train_rows) or data.find_unreadable(val_rows)
            if bad:
                raise data.DataError(bad) from None
        raise
    train_seconds = time.perf_counter() - start
    if scratch is not None:  # not the chief: its checkpoint goes with the scratch folder
        return {"worker": where.describe(), "epochs_run": len(history), "train_seconds": round(train_seconds, 1)}

    if not checkpoint_path.is_file():
        raise data.DataError("validation AUC never improved (not finite in every epoch); check the val split labels")
    best = keras.models.load_model(checkpoint_path, compile=False)
    os.replace(checkpoint_path, model_path)
    evidence.write_text(spec_path, spec.to_json())
    figure_path = layout.figures(out_dir) / "training_curves.png"
    _figure(history, figure_path)

    val_aucs = [h["val_auc"] if isinstance(h.get("val_auc"), float) else -1.0 for h in history]
    best_i = int(np.argmax(val_aucs))
    kept_i = best_i if on_val else len(history) - 1
    counts = {s: data.class_counts(df[df["split"] == s]) for s in ("train", "val", "test")}
    record_data = {
        "architecture": p["architecture"],
        "weights": "none" if p["weights"] == "none" else ("imagenet" if p["weights"] == "imagenet"
                                                          else Path(p["weights"]).name),
        "parameters": {"total": int(best.count_params()),
                       "trainable": int(sum(int(np.prod(w.shape)) for w in model.trainable_weights))},
        "preprocessing": spec.to_dict(),
        "preprocessing_sha256": evidence.sha256_file(spec_path),
        "model_sha256": evidence.sha256_file(model_path),
        "weights_sha256": weights_sha256(best),
        "input_shape": [spec.image_size, spec.image_size, spec.channels],
        "augmentation": {**{k: float(v) for k, v in p["augmentation"].items()},
                         "horizontal_flip": bool(p["horizontal_flip"]), "vertical_flip": False,
                         "horizontal_flip_reason": HORIZONTAL_FLIP_REASON},
        "batch_size": p["batch_size"],
        "optimizer": p["optimizer"],
        "learning_rate": float(p["learning_rate"]),
        "loss": "binary_crossentropy",
        "schedule": {"epochs_max": p["epochs"], "epochs_run": len(history), "steps_per_epoch": int(steps),
                     "early_stopping": {"monitor": "val_auc", "mode": "max", "patience": p["early_stopping_patience"],
                                        "used": on_val},
                     "frozen_epochs": ft["frozen_epochs"] if frozen_first else 0,
                     "unfreeze_from": ft["unfreeze_from"] if frozen_first else None,
                     "fine_tune_learning_rate": float(ft["fine_tune_learning_rate"]) if frozen_first else None,
                     "phases": phases},
        "frozen_layers": {"n": len(frozen_layers), "names": frozen_layers},
        "balance": {"method": p["balance"], "description": balance_text,
                    "class_weight": ({str(k): float(v) for k, v in class_weight.items()} if class_weight else None)},
        "class_counts": counts,
        "cohort": {"n_manifest": info["n_manifest"], "n_split_assigned": info["n_split_assigned"],
                   "n_excluded_without_file": info["n_excluded_without_file"]},
        "history": history,
        "best_epoch": history[best_i]["epoch"],
        "best_val_auc": history[best_i]["val_auc"],
        "model_selection": {"rule": "best_val_auc" if on_val else "last_epoch", "early_stopping": on_val,
                            "validation_adequacy": policy["validation_adequacy"],
                            "epoch": history[kept_i]["epoch"], "val_auc": history[kept_i]["val_auc"],
                            "reason": policy["reason"]},
        "seed": p["seed"],
        "deterministic": True,
        "device": _device(strategy, where),
        "train_seconds": round(train_seconds, 1),
    }
    resolved = {**p, "weights": record_data["weights"]}  # a weights file is named, not its local path
    return evidence.write_record(
        out_dir, "training.run", data=record_data, params=resolved,
        deps=[info["manifest"], info["splits"]], dep_records=["split.patients"],
        outs=[model_path, spec_path, figure_path])


def load_model(out_dir: str | Path):
    """(keras model, PreprocessingSpec) from `OUT/models/model.keras` and `OUT/models/preprocessing.json`."""
    from .tf import keras

    model_path = layout.model_file(out_dir)
    if not model_path.is_file():
        raise data.DataError(f"model file not found: {model_path} (run `python -m model.train --out {out_dir}`)")
    spec = load_spec(layout.preprocessing_spec(out_dir))
    try:
        model = keras.models.load_model(model_path, compile=False)
    except Exception as e:
        raise data.DataError(f"cannot load model file {model_path}: {str(e).splitlines()[0] if str(e) else e!r} "
                             "(retrain with `python -m model.train`)") from None
    return model, spec


def main(argv: list[str] | None = None) -> int:
    return stage_main(
        argv, prog="python -m model.train", doc=__doc__,
        call=lambda a: run(a.out, section(a.params, "train")),
        summary=lambda record, a: (f"train: {_kept(record['data'])} -> {layout.model_file(a.out)}" if "data" in record
                                   else f"train: {record['worker']}: {record['epochs_run']} epochs; the chief "
                                        "writes the model and the record"))


def _kept(d: dict) -> str:
    sel = d.get("model_selection") or {"rule": "best_val_auc", "epoch": d["best_epoch"], "val_auc": d["best_val_auc"]}
    which = "best epoch" if sel["rule"] == "best_val_auc" else "last epoch (no early stopping: val split below its minimum)"
    return f"{which} {sel['epoch']} val AUC {sel['val_auc']}"


if __name__ == "__main__":
    sys.exit(main())
