"""How training is spread over devices and machines: one strategy per run, chosen from `TF_CONFIG`.

- `TF_CONFIG` names a cluster of two or more tasks (`chief` and/or `worker`): every task runs the
  same `python -m model.train --out OUT --params PARAMS` with its own `TF_CONFIG` (same `cluster`,
  its own `task`), and `tf.distribute.MultiWorkerMirroredStrategy` keeps their replicas in sync
  (all-reduce over the network; each worker uses its local GPUs, or its CPU). OUT is a folder every
  task reads (the cohort); only the chief (the `chief` task, else `worker` 0) writes there: the
  model, its preprocessing spec, the figure and the `training.run` record. The other workers keep
  their checkpoint in a temporary folder that they delete.
- no `TF_CONFIG` (or a cluster of one task): `MirroredStrategy` when this machine has more than one
  GPU, else TensorFlow's default strategy, as before.

The training stream is split between workers element by element (`AutoShardPolicy.DATA`: every
worker builds the same seeded stream and keeps its share of each global batch), and every worker
evaluates the whole validation split (`AutoShardPolicy.OFF`), so that the validation AUC that picks
the epoch is the AUC of the whole split on every worker.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

from evidence.errors import ToolkitError

TASK_TYPES = ("chief", "worker")


class ClusterError(ToolkitError, ValueError):
    """TF_CONFIG is not a usable cluster description; the message says what to fix."""


@dataclass(frozen=True)
class Cluster:
    workers: int          # chief and worker tasks: the processes that train
    task_type: str
    task_index: int
    is_chief: bool
    configured_by: str    # "TF_CONFIG" or "local devices"

    def describe(self) -> str:
        return f"{self.task_type} {self.task_index} of {self.workers} workers"


def cluster(environ=None) -> Cluster:
    """This process's place in the training cluster, from `TF_CONFIG` (absent: a cluster of one)."""
    environ = os.environ if environ is None else environ
    text = environ.get("TF_CONFIG", "").strip()
    if not text:
        return Cluster(1, "chief", 0, True, "local devices")
    try:
        config = json.loads(text)
    except ValueError as e:
        raise ClusterError(f"TF_CONFIG is not JSON ({e}); set it to "
                           '{"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", "index": 0}} '
                           "or unset it to train on this machine alone") from None
    spec = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(spec, dict) or not isinstance(task, dict):
        raise ClusterError("TF_CONFIG needs a 'cluster' mapping (task type -> list of host:port) and a 'task' "
                           "mapping ({'type': ..., 'index': ...})")
    unknown = sorted(set(spec) - {*TASK_TYPES, "evaluator", "ps"})
    if unknown or "ps" in spec:
        raise ClusterError(f"TF_CONFIG cluster: task type(s) {', '.join(unknown or ['ps'])} not supported "
                           "(MultiWorkerMirroredStrategy uses 'chief' and 'worker' only)")
    if len(spec.get("chief") or []) > 1:
        raise ClusterError("TF_CONFIG cluster: at most one 'chief' task")
    task_type, index = task.get("type"), task.get("index", 0)
    if task_type not in TASK_TYPES or isinstance(index, bool) or not isinstance(index, int) \
            or not 0 <= index < len(spec.get(task_type) or []):
        raise ClusterError(f"TF_CONFIG task {task!r}: type must be 'chief' or 'worker' and index one of that "
                           "type's entries in cluster (0-based)")
    workers = len(spec.get("chief") or []) + len(spec.get("worker") or [])
    is_chief = task_type == "chief" or (task_type == "worker" and index == 0 and not spec.get("chief"))
    return Cluster(workers, task_type, index, is_chief, "TF_CONFIG")


def strategy(where: Cluster):
    """The `tf.distribute` strategy for this process; create it before any other TensorFlow op."""
    from .tf import tf

    if where.workers > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_physical_devices("GPU")
    return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()


def shard_train(ds, where: Cluster):
    """The training stream split element by element between workers (a no-op on one worker)."""
    return _policy(ds, where, "DATA")


def shard_eval(ds, where: Cluster):
    """The validation stream read whole by every worker (a no-op on one worker)."""
    return _policy(ds, where, "OFF")


def _policy(ds, where: Cluster, name: str):
    if where.workers <= 1:
        return ds
    from .tf import tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = getattr(tf.data.experimental.AutoShardPolicy, name)
    return ds.with_options(options)


def record(where: Cluster, strategy_) -> dict:
    """The fields `training.run` adds to `device`: who trained, how many workers and replicas."""
    replicas = int(strategy_.num_replicas_in_sync)
    named = {"strategy": "MultiWorkerMirroredStrategy"} if where.workers > 1 else {}  # its class: CollectiveAllReduceStrategy
    if where.workers > 1:
        distribution = "MultiWorkerMirroredStrategy across the workers TF_CONFIG names, replicas kept in sync by all-reduce"
    elif type(strategy_).__name__ == "MirroredStrategy":
        distribution = "MirroredStrategy across the GPUs of one machine"
    else:
        distribution = "one process on one device (no distribution strategy)"
    return {**named, "distribution": distribution, "workers": where.workers, "replicas_per_worker": replicas // max(1, where.workers),
            "configured_by": where.configured_by,
            "written_by": "the chief alone" if where.workers > 1 else "this process"}


def build_with_local_batch(model, strategy_, where: Cluster):
    """Keras 3 builds a model before `fit` from one batch, which under MultiWorkerMirroredStrategy
    it first averages across workers with `strategy.reduce`, and that reduce does not accept the
    (x, y, sample weight) tuple of a batch ("Attempt to convert a value (PerReplica...) to a
    Tensor"). Only the shapes and dtypes of that batch are used, so this builds from this worker's
    own replica of it instead. A no-op on one worker; tests/test_distribute.py fails if it stops
    being enough."""
    if where.workers <= 1:
        return model
    from .tf import tf

    reduce_scalar_logs()
    original = model._maybe_symbolic_build

    def local(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy_.experimental_local_results(value)[0]
        return value

    def build(iterator=None, data_batch=None):
        if iterator is not None and data_batch is None:
            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(local, next(batches))
                break
        return original(iterator=None, data_batch=data_batch)

    model._maybe_symbolic_build = build
    return model


_PATCHED = []


def reduce_scalar_logs():
    """Keras 3 (through 3.15 at least) averages each step's logs across workers under
    MultiWorkerMirroredStrategy with `strategy.reduce("MEAN", value, axis=0)`, which fails on the
    scalar loss and metric values ("Invalid reduction dimension 0 for input with 0 dimensions";
    tensorflow/tensorflow#72388). This routes the scalars to `axis=None` (the mean across the
    replicas, what the axis-0 mean means for a batch) and leaves everything else to Keras. Called
    only by a multi-worker run, once per process; tests/test_distribute.py fails if it stops being
    enough."""
    from .tf import keras, tf

    trainer = keras.src.backend.tensorflow.trainer
    if _PATCHED:
        return
    original = trainer.reduce_per_replica

    def rank(value):
        if isinstance(value, tf.distribute.DistributedValues):
            value = value.values[0]
        return getattr(getattr(value, "shape", None), "rank", None)

    def reduce_per_replica(values, strategy, reduction):
        if reduction not in ("auto", "mean") or not trainer._collective_all_reduce_multi_worker(strategy):
            return original(values, strategy, reduction)
        return tf.nest.map_structure(
            lambda v: strategy.reduce("MEAN", v, axis=None) if rank(v) == 0 else original(v, strategy, reduction),
            values)

    trainer.reduce_per_replica = reduce_per_replica
    _PATCHED.append(original)
