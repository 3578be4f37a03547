"""Multi-worker training (model.distribute): TF_CONFIG parsing, and two local worker processes on
CPU training one model with MultiWorkerMirroredStrategy, the chief alone writing."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from evidence import read_record, sha256_file
from model import distribute
from test_data_pipeline import make_cohort

REPO = Path(__file__).resolve().parent.parent
PARAMS = {"architecture": "small_cnn", "weights": "none", "image_size": 32, "channels": 1, "batch_size": 8,
          "epochs": 2, "learning_rate": 0.003, "optimizer": "adam", "early_stopping_patience": 2,
          "balance": "class_weight", "horizontal_flip": False, "augmentation": {},
          "fine_tune": {"frozen_epochs": 0, "unfreeze_from": None, "fine_tune_learning_rate": 0.0001}, "seed": 7}


def _config(cluster: dict, kind: str, index: int) -> dict:
    return {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": kind, "index": index}})}


def test_cluster_from_tf_config():
    assert distribute.cluster({}) == distribute.Cluster(1, "chief", 0, True, "local devices")
    two = {"worker": ["localhost:1", "localhost:2"]}
    assert distribute.cluster(_config(two, "worker", 0)) == distribute.Cluster(2, "worker", 0, True, "TF_CONFIG")
    assert distribute.cluster(_config(two, "worker", 1)).is_chief is False
    with_chief = {"chief": ["h0:1"], "worker": ["h1:1", "h2:1"]}
    assert distribute.cluster(_config(with_chief, "chief", 0)) == distribute.Cluster(3, "chief", 0, True, "TF_CONFIG")
    assert distribute.cluster(_config(with_chief, "worker", 0)).is_chief is False  # the chief task is chief
    for bad, words in (({"TF_CONFIG": "{not json"}, "not JSON"),
                       (_config(two, "worker", 2), "index one of"),
                       (_config({"ps": ["h:1"], "worker": ["h:2"]}, "worker", 0), "not supported"),
                       ({"TF_CONFIG": json.dumps({"cluster": two})}, "'task' mapping")):
        with pytest.raises(distribute.ClusterError, match=words):
            distribute.cluster(bad)


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.mark.slow
def test_two_local_workers_train_one_model_and_only_the_chief_writes(tmp_path):
    from model.tf import tf

    if not hasattr(tf.distribute, "MultiWorkerMirroredStrategy"):
        pytest.skip("this TensorFlow has no MultiWorkerMirroredStrategy")
    out = make_cohort(tmp_path, n_train=(12, 8), n_val=(6, 4), n_test=(2, 2), size=32)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"train": PARAMS}))
    cluster = {"worker": [f"localhost:{p}" for p in _free_ports(2)]}
    scratch = [tmp_path / "tmp0", tmp_path / "tmp1"]
    procs = []
    for i in (0, 1):
        scratch[i].mkdir()
        env = {**os.environ, **_config(cluster, "worker", i), "TMPDIR": str(scratch[i]), "CUDA_VISIBLE_DEVICES": ""}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "model.train", "--out", str(out), "--params", str(params), "-q"],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        results = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (stdout, stderr) in zip(procs, results):
        assert p.returncode == 0, stderr[-3000:]
    assert "the chief writes the model and the record" in results[1][0] and "worker 1 of 2 workers" in results[1][0]
    assert results[0][0].startswith("train: best epoch")

    record = read_record(out, "training.run")
    device = record["data"]["device"]
    assert device["strategy"] == "MultiWorkerMirroredStrategy"
    assert (device["workers"], device["replicas"], device["replicas_per_worker"]) == (2, 2, 1)
    assert device["configured_by"] == "TF_CONFIG" and device["written_by"] == "the chief alone"
    assert device["distribution"].startswith("MultiWorkerMirroredStrategy across the workers TF_CONFIG names")
    assert [h["epoch"] for h in record["data"]["history"]] == [1, 2]
    assert record["data"]["model_sha256"] == sha256_file(out / "models" / "model.keras")
    # one record written, once; no checkpoint or scratch folder left by either worker
    log = [json.loads(line) for line in (out / "evidence" / "log.jsonl").read_text().splitlines()]
    assert [e["record_id"] for e in log if e.get("record_id") == "training.run"] == ["training.run"]
    assert sorted(p.name for p in (out / "models").iterdir()) == ["model.keras", "preprocessing.json"]
    assert list(scratch[1].iterdir()) == [] and list(scratch[0].iterdir()) == []


def test_one_process_records_a_cluster_of_one(tmp_path, monkeypatch):
    from model.tf import tf
    from model.train import _device

    monkeypatch.delenv("TF_CONFIG", raising=False)
    where = distribute.cluster()
    d = _device(distribute.strategy(where), where)
    assert d["workers"] == 1 and d["configured_by"] == "local devices" and d["written_by"] == "this process"
    if d["strategy"] != "MirroredStrategy":
        assert d["distribution"] == "one process on one device (no distribution strategy)"
    assert d["replicas"] == d["replicas_per_worker"] == tf.distribute.get_strategy().num_replicas_in_sync
