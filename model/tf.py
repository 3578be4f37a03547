"""TensorFlow and Keras, imported in one place: `from model.tf import tf, keras`.

TensorFlow's C++ start-up messages (absl's "log messages before absl::InitializeLog()", oneDNN,
`cudart_stub`, the CPU feature guard, `failed call to cuInit` on a machine without a GPU, and on a
GPU machine the TF-TRT, cuDNN/cuFFT/cuBLAS factory and computation placer registrations) are
written to the process's stderr before TensorFlow reads any setting that could stop them:
`TF_CPP_MIN_LOG_LEVEL` filters only what is logged later. So the import, and the first look at the
devices (where the CUDA probe happens), run with file descriptor 2 captured
(`evidence.console.captured_stderr`), and that text goes to the stage's log under `OUT/logs/`.

Nothing here hides or selects devices: a GPU that TensorFlow finds is used. oneDNN stays as
TensorFlow sets it (`TF_ENABLE_ONEDNN_OPTS` is not changed, so the numbers do not change).
Afterwards only TensorFlow's errors reach the terminal (`TF_CPP_MIN_LOG_LEVEL=2` unless the
environment sets it) and its Python logger and absl's write to the stage log.
"""
from __future__ import annotations

import os

from evidence.console import captured_stderr

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

with captured_stderr("tensorflow"):
    import tensorflow as tf
    import keras

    tf.config.list_physical_devices()

__all__ = ["tf", "keras"]
