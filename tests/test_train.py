"""Training and prediction on a tiny cohort: outputs, record, determinism, parity and bad input."""
from __future__ import annotations

import pandas as pd
import numpy as np
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from evidence import Store, read_record, sha256_file
from model import predict, score_test, train
from model.images import load_pixels
from model.preprocess import preprocess
from test_data_pipeline import make_cohort
from validation_runs import lock_plan

REPO_PARAMS = __import__("pathlib").Path(__file__).resolve().parent.parent / "params.yaml"

PARAMS = {"architecture": "small_cnn", "weights": "none", "image_size": 32, "channels": 1, "batch_size": 8,
          "epochs": 2, "learning_rate": 0.003, "optimizer": "adam", "early_stopping_patience": 2,
          "balance": "class_weight", "horizontal_flip": False,
          "augmentation": {"rotation_deg": 5, "shift": 0.05, "zoom": 0.1, "brightness": 0.1, "contrast": 0.1},
          "fine_tune": {"frozen_epochs": 0, "unfreeze_from": None, "fine_tune_learning_rate": 0.0001},
          "seed": 7}


def params_file(tmp_path, **overrides):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"train": {**PARAMS, **overrides}}))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("trained")
    out = make_cohort(root, n_train=(24, 16), n_val=(8, 6), n_test=(8, 6))
    train.run(out, PARAMS)
    predict.run(out, PARAMS)
    assert not (out / "predictions" / "test.csv").exists(), "the test split is scored only after the plan lock"
    lock_plan(out, REPO_PARAMS)
    score_test.run(out, PARAMS)
    return out


def test_training_writes_model_spec_figure_and_record(trained):
    record = read_record(trained, "training.run")
    d = record["data"]
    outs = {o["path"]: o["sha256"] for o in record["outs"]}
    assert outs["models/model.keras"] == sha256_file(trained / "models" / "model.keras") == d["model_sha256"]
    assert outs["models/preprocessing.json"] == d["preprocessing_sha256"]
    assert "figures/training_curves.png" in outs
    assert [h["epoch"] for h in d["history"]] == [1, 2]
    assert all(0.0 <= h[k] <= 1.0 for h in d["history"] for k in ("auc", "val_auc"))
    assert d["best_val_auc"] == max(h["val_auc"] for h in d["history"])
    assert d["class_counts"]["train"] == {"n": 40, "positive": 16, "negative": 24, "patients": 40}
    assert d["balance"]["class_weight"] == {"0": pytest.approx(40 / 48), "1": pytest.approx(40 / 32)}
    assert d["augmentation"]["horizontal_flip"] is False and "lateralized" in d["augmentation"]["horizontal_flip_reason"]
    assert d["parameters"]["total"] > 1000 and d["device"]["device"] in ("CPU", "GPU")
    assert record["deps"]["records"][0]["id"] == "split.patients" and record["synthetic"] is True
    assert d["model_selection"]["validation_adequacy"] == "not recorded" and d["model_selection"]["early_stopping"]
    model, spec = train.load_model(trained)
    assert spec.image_size == 32 and model.input_shape == (None, 32, 32, 1)
    assert train.weights_sha256(model) == d["weights_sha256"]


def test_predictions_use_the_same_preprocessing_and_record_counts(trained):
    model, spec = train.load_model(trained)
    manifest = pd.read_csv(trained / "cohort" / "manifest.csv", dtype=str).set_index("image_id")
    for split, n, n_pos, rid in (("val", 14, 6, "model.predictions"), ("test", 14, 6, "model.test_predictions")):
        record = read_record(trained, rid)
        assert [o["path"] for o in record["outs"]] == [f"predictions/{split}.csv"] and set(record["data"]) & {"val", "test"} == {split}
        table = pd.read_csv(trained / "predictions" / f"{split}.csv")
        assert list(table.columns) == ["image_id", "patient_id", "label", "score"]
        assert len(table) == n and table["label"].sum() == n_pos
        assert record["data"][split] == {"n_images": n, "n_patients": n, "n_positive": n_pos,
                                         "score_mean": pytest.approx(table["score"].mean(), abs=1e-6)}
        x = np.stack([preprocess(load_pixels(manifest.loc[i, "path"]), spec) for i in table["image_id"][:5]])
        np.testing.assert_allclose(model.predict(x, verbose=0).ravel(), table["score"][:5], atol=1e-5)
    assert record["data"]["model_sha256"] == Store(trained).value("training.run", "model_sha256")


def test_test_scores_depend_on_and_follow_the_plan_lock(trained):
    from evidence.prespecified import check

    scores, lock = read_record(trained, "model.test_predictions"), read_record(trained, "validation.plan_lock")
    assert {"id": "validation.plan_lock", "sha256": lock["sha256"]} in scores["deps"]["records"]
    assert scores["created_utc"] >= lock["created_utc"] and lock["data"]["test_scores_present"] is False
    assert check(trained) == []


def test_scoring_the_test_split_without_a_plan_lock_is_refused(trained, tmp_path, capsys):
    import shutil

    out = shutil.copytree(trained, tmp_path / "run")
    (out / "evidence" / "validation.plan_lock.json").unlink()
    (out / "predictions" / "test.csv").unlink()
    assert score_test.main(["--out", str(out), "--params", str(params_file(tmp_path))]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: record validation.plan_lock: not found") and err.count("\n") == 1
    assert not (out / "predictions" / "test.csv").exists()


def test_model_learns_the_tiny_signal(trained):
    table = pd.read_csv(trained / "predictions" / "test.csv")
    assert roc_auc_score(table["label"], table["score"]) >= 0.8


def test_same_seed_same_data_gives_same_weights(tmp_path):
    hashes = []
    for name in ("a", "b"):
        out = make_cohort(tmp_path / name, n_train=(12, 8), n_val=(4, 4), n_test=(2, 2))
        hashes.append(train.run(out, {**PARAMS, "epochs": 1})["data"]["weights_sha256"])
    assert hashes[0] == hashes[1]
    out = make_cohort(tmp_path / "c", n_train=(12, 8), n_val=(4, 4), n_test=(2, 2))
    assert train.run(out, {**PARAMS, "epochs": 1, "seed": 8})["data"]["weights_sha256"] != hashes[0]


def cli(tmp_path, out, capsys, **overrides):
    code = train.main(["--out", str(out), "--params", str(params_file(tmp_path, **overrides))])
    err = capsys.readouterr().err.strip().splitlines()
    return code, err[-1] if err else ""


def test_unknown_architecture_and_weights_are_named(tmp_path, capsys):
    out = make_cohort(tmp_path)
    code, err = cli(tmp_path, out, capsys, architecture="alexnet")
    assert code == 2 and "params.yaml: train.architecture 'alexnet' is not one of" in err and "densenet121" in err
    code, err = cli(tmp_path, out, capsys, architecture="resnet50", weights="/nowhere/w.h5")
    assert code == 2 and err.startswith("error: train.weights") and "imagenet" in err
    code, err = cli(tmp_path, out, capsys, balance="smote")
    assert code == 2 and "params.yaml: train.balance 'smote' is not one of" in err
    assert not (out / "evidence" / "training.run.json").exists()


def test_split_without_negatives_is_named(tmp_path, capsys):
    out = make_cohort(tmp_path, n_val=(0, 5))
    code, err = cli(tmp_path, out, capsys)
    assert code == 2 and "split 'val' has no negatives" in err
    assert not (out / "models" / "model.keras").exists()


def test_missing_and_corrupt_images_are_named(tmp_path, capsys):
    out = make_cohort(tmp_path)
    manifest = pd.read_csv(out / "cohort" / "manifest.csv")
    victim = manifest["path"][5]
    (tmp_path / "images" / victim.split("/")[-1]).unlink()
    code, err = cli(tmp_path, out, capsys)
    assert code == 2 and err.startswith("error: image file not found") and victim in err
    (tmp_path / "images" / victim.split("/")[-1]).write_bytes(b"\x89PNG broken")
    code, err = cli(tmp_path, out, capsys, epochs=1)
    assert code == 2 and err.startswith("error: cannot read image file") and victim in err
    assert not (out / "evidence" / "training.run.json").exists()
    assert not (out / "models" / "model.keras").exists()


def test_predict_without_model_is_a_clear_error(tmp_path, capsys):
    out = make_cohort(tmp_path)
    code = predict.main(["--out", str(out), "--params", str(params_file(tmp_path))])
    assert code == 2 and "model file not found" in capsys.readouterr().err


def test_fine_tune_schedule_runs_frozen_then_unfrozen_phases(tmp_path):
    out = make_cohort(tmp_path, n_train=(8, 8), n_val=(4, 4), n_test=(2, 2))
    params = {**PARAMS, "architecture": "vgg16", "epochs": 2, "batch_size": 8,
              "fine_tune": {"frozen_epochs": 1, "unfreeze_from": "block5_conv1", "fine_tune_learning_rate": 1e-4}}
    d = train.run(out, params)["data"]
    assert [p["phase"] for p in d["schedule"]["phases"]] == ["frozen_base", "fine_tune"]
    assert [h["phase"] for h in d["history"]] == ["frozen_base", "fine_tune"]
    assert d["schedule"]["frozen_epochs"] == 1 and d["schedule"]["fine_tune_learning_rate"] == 1e-4
    assert d["frozen_layers"]["names"][-1] == "block4_pool" and d["input_shape"] == [32, 32, 1]
    model, _ = train.load_model(out)
    assert train.weights_sha256(model) == d["weights_sha256"]


def test_stale_cache_files_of_an_earlier_run_are_removed(tmp_path):
    out = make_cohort(tmp_path, n_train=(8, 8), n_val=(4, 4), n_test=(2, 2))
    cache = tmp_path / "cache"
    (tmp_path / "cache.val.index").write_bytes(b"stale cache of another input")
    (tmp_path / "cache.old").write_text("stale")
    d = train.run(out, {**PARAMS, "epochs": 1, "cache": str(cache)})["data"]
    assert not (tmp_path / "cache.old").exists()
    assert isinstance(d["history"][0]["val_auc"], float)


def _adequacy_record(out, adequate: bool):
    """Replace make_cohort's split.patients record with one carrying the split stage's verdict."""
    import evidence

    counts = dict(pd.read_csv(out / "cohort" / "splits.csv").merge(
        pd.read_csv(out / "cohort" / "manifest.csv")[["image_id", "pneumonia"]], on="image_id")
        .query("split == 'val'")["pneumonia"].value_counts())
    adequacy = {"unit": "images", "positives": int(counts.get(1, 0)), "negatives": int(counts.get(0, 0)),
                "min_positives": 20 if not adequate else 1, "min_negatives": 20 if not adequate else 1,
                "allow_inadequate": not adequate, "adequate": adequate}
    evidence.write_record(out, "split.patients", data={"validation_adequacy": adequacy},
                          deps=[out / "cohort" / "splits.csv"], synthetic=True)


def test_inadequate_validation_trains_the_fixed_epochs_and_keeps_the_last(tmp_path):
    """Val split below its minimum (allowed): no early stopping, no best-epoch selection; the saved
    model is the one after the last epoch, whose validation AUC the history records."""
    out = make_cohort(tmp_path, n_train=(12, 8), n_val=(6, 4), n_test=(2, 2))
    _adequacy_record(out, adequate=False)
    record = train.run(out, {**PARAMS, "epochs": 3, "early_stopping_patience": 1})
    d = record["data"]
    assert [h["epoch"] for h in d["history"]] == [1, 2, 3] and d["schedule"]["epochs_run"] == 3
    assert d["schedule"]["early_stopping"]["used"] is False
    assert all(ph["stopped_early"] is False for ph in d["schedule"]["phases"])
    sel = d["model_selection"]
    assert (sel["rule"], sel["early_stopping"], sel["epoch"]) == ("last_epoch", False, 3)
    assert sel["val_auc"] == d["history"][-1]["val_auc"] and sel["validation_adequacy"] == "inadequate (allowed)"
    assert "4 pneumonia images (pre-specified minimum 20) and 6 non-pneumonia images" in sel["reason"]
    assert "too few" in sel["reason"]
    assert {r["id"] for r in record["deps"]["records"]} == {"split.patients"}
    model, spec = train.load_model(out)
    assert train.weights_sha256(model) == d["weights_sha256"]
    val = pd.read_csv(out / "cohort" / "splits.csv").query("split == 'val'")
    manifest = pd.read_csv(out / "cohort" / "manifest.csv").set_index("image_id")
    x = np.stack([preprocess(load_pixels(manifest.loc[i, "path"]), spec) for i in val["image_id"]])
    auc = roc_auc_score(manifest.loc[val["image_id"], "pneumonia"], model.predict(x, verbose=0).ravel())
    assert auc == pytest.approx(d["history"][-1]["val_auc"], abs=0.03)   # the last epoch's model was kept


def test_adequate_validation_selects_the_best_epoch(tmp_path):
    out = make_cohort(tmp_path, n_train=(12, 8), n_val=(6, 4), n_test=(2, 2))
    _adequacy_record(out, adequate=True)
    d = train.run(out, {**PARAMS, "epochs": 2})["data"]
    sel = d["model_selection"]
    assert (sel["rule"], sel["early_stopping"], sel["validation_adequacy"]) == ("best_val_auc", True, "adequate")
    aucs = [h["val_auc"] for h in d["history"]]
    assert sel["epoch"] == d["best_epoch"] == 1 + aucs.index(max(aucs)) and sel["val_auc"] == max(aucs)
    assert d["schedule"]["early_stopping"]["used"] is True
