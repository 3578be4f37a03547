"""Batch-independent prediction: a file's probability does not depend on the other files scored with it.

A convolution or a matrix product over a batch of 7 images may round differently (last bit of float32)
from the same images in a batch of 64: the CPU and GPU kernels pick their blocking from the batch
shape. A sharded run (`validation.shards`) puts different files side by side than the unsharded run
does, so to give the same probabilities it must not let the batch shape vary. `FixedBatch` wraps the
model and always calls it on batches of exactly `size` rows, padding the last one with zeros and
dropping the padded rows' outputs: the same file then gets the same probability whatever shares
its batch (tests/test_shards.py checks it on permuted and partial sets).
"""
from __future__ import annotations

import numpy as np


class FixedBatch:
    """Callable like a Keras model (`model(batch, training=False)`): a NumPy batch is scored in
    `size`-row batches only; a tensor (what saliency differentiates) goes to the model unchanged."""

    def __init__(self, model, size: int):
        if size < 1:
            raise ValueError(f"batch size {size} must be at least 1")
        self.model, self.size = model, int(size)

    def __call__(self, batch, training: bool = False):
        if not isinstance(batch, np.ndarray):  # a tensor (a saliency gradient): the model itself
            return self.model(batch, training=training)
        n = len(batch)
        if n == 0:
            return np.zeros((0, 1), dtype=np.float32)
        total = -(-n // self.size) * self.size
        if total != n:
            batch = np.concatenate([batch, np.zeros((total - n, *batch.shape[1:]), dtype=batch.dtype)])
        outputs = [np.asarray(self.model(batch[i:i + self.size], training=training))
                   for i in range(0, total, self.size)]
        return np.concatenate(outputs)[:n]

    def __getattr__(self, name):  # everything else (layers, inputs, saliency) is the wrapped model's
        return getattr(self.model, name)


def fixed_batch(device, size: int | None = None):
    """`device` (a `model.infer.LockedDevice`) with its model wrapped in `FixedBatch` (once)."""
    from .infer import BATCH

    if not isinstance(device.model, FixedBatch):
        device.model = FixedBatch(device.model, size or BATCH)
    return device
