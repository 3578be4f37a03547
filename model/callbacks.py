"""Small Keras callbacks: one line of training progress per epoch on stderr, and prediction progress
(both silent with --quiet); the model-selection callbacks of training (checkpoint, early stopping),
which decide on validation AUC only when the validation split is adequate."""
from __future__ import annotations

import sys
import time

from evidence import console

from .tf import keras


class StderrProgress(keras.callbacks.Callback):
    """`epoch 3/12  loss 0.41  auc 0.88  val_loss 0.39  val_auc 0.90  (12.3 s)` on stderr."""

    def __init__(self, total_epochs: int, stream=None):
        super().__init__()
        self.total_epochs = total_epochs
        self.stream = stream or sys.stderr
        self._start = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if console.quiet():
            return
        logs = logs or {}
        parts = [f"{k} {float(logs[k]):.4f}" for k in ("loss", "auc", "val_loss", "val_auc") if k in logs]
        print(f"train: epoch {epoch + 1}/{self.total_epochs}  " + "  ".join(parts)
              + f"  ({time.perf_counter() - self._start:.1f} s)", file=self.stream, flush=True)


class PredictProgress(keras.callbacks.Callback):
    """Images scored so far, reported to an `evidence.console.Progress` after each batch."""

    def __init__(self, bar: console.Progress, batch_size: int):
        super().__init__()
        self.bar, self.batch_size = bar, batch_size

    def on_predict_batch_end(self, batch, logs=None):
        self.bar.update((batch + 1) * self.batch_size)

    def on_predict_end(self, logs=None):
        self.bar.close()


MONITOR = {"monitor": "val_auc", "mode": "max"}


def checkpoint(path, *, on_validation: bool):
    """Keeps the epoch of the best validation AUC (`on_validation`), else every epoch, so the last remains."""
    return keras.callbacks.ModelCheckpoint(str(path), **MONITOR, save_best_only=on_validation, verbose=0)


def early_stopping(patience: int, *, on_validation: bool):
    """Early stopping on validation AUC, or None when the validation split cannot carry the decision."""
    if not on_validation:
        return None
    return keras.callbacks.EarlyStopping(**MONITOR, patience=patience, restore_best_weights=False)
