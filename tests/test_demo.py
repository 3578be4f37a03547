"""Demo cohort: deterministic, marked synthetic, and pneumonia measurably visible in the pixels."""
from __future__ import annotations

import json

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupShuffleSplit

from eda import cohort, demo, split
from validation import acceptance
from validation.power import exact_binomial_n
from validation.sample_size import power_design

REPO = Path(__file__).resolve().parent.parent

SMALL = {"seed": 5, "n_patients": 40, "image_size": 64, "pneumonia_prevalence": 0.3}


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_gives_same_bytes_and_other_seed_differs(tmp_path):
    demo.generate(tmp_path / "a", SMALL)
    demo.generate(tmp_path / "b", SMALL)
    demo.generate(tmp_path / "c", {**SMALL, "seed": 6})
    a, b, c = (_files(tmp_path / x / "demo") for x in "abc")
    assert len(a) > 40 and a == b
    assert a["labels.csv"] != c["labels.csv"]


def test_regeneration_skipped_when_up_to_date_and_redone_when_changed(tmp_path):
    demo.generate(tmp_path, SMALL)
    png = sorted((tmp_path / "demo" / "images").glob("*.png"))[0]
    before = png.stat().st_mtime_ns
    demo.generate(tmp_path, SMALL)
    assert png.stat().st_mtime_ns == before
    png.unlink()
    demo.generate(tmp_path, SMALL)
    assert png.is_file()
    demo.generate(tmp_path, {**SMALL, "n_patients": 20})
    listed = set(pd.read_csv(tmp_path / "demo" / "labels.csv")["Image Index"])
    assert {p.name for p in (tmp_path / "demo" / "images").glob("*.png")} == listed


def test_outputs_say_synthetic(tmp_path):
    demo.generate(tmp_path, SMALL)
    folder = tmp_path / "demo"
    labels = pd.read_csv(folder / "labels.csv", dtype=str)
    assert (labels["Synthetic"] == "true").all()
    assert json.loads((folder / "demo.json").read_text())["synthetic"] is True
    with Image.open(next((folder / "images").glob("*.png"))) as im:
        assert "SYNTHETIC" in im.info["Comment"]
        assert im.mode == "L" and im.size == (64, 64)


def test_metadata_resembles_nih():
    meta = demo.metadata(demo.settings({**SMALL, "n_patients": 400}))
    pos = meta["Finding Labels"].str.split("|").map(lambda f: "Pneumonia" in f)
    per_patient = meta.groupby("Patient ID").size()
    assert per_patient.mean() > 2 and per_patient.max() > 3          # follow-up studies
    assert meta.loc[pos, "Patient Age"].mean() > meta.loc[~pos, "Patient Age"].mean() + 3
    ap = meta["View Position"] == "AP"
    assert ap[pos].mean() > ap[~pos].mean() + 0.15
    labels = set("|".join(meta["Finding Labels"]).split("|"))
    assert len(labels - {"No Finding"}) >= 12
    infil = meta["Finding Labels"].str.contains("Infiltration")
    assert infil[pos].mean() > infil[~pos].mean()                   # co-occurrence with pneumonia
    under_18 = (meta["Patient Age"] < 18).mean()                     # NIH: 4.8% of images
    assert 0 < under_18 < 0.06                                       # adults mostly; out-of-scope strata show


def test_pneumonia_measurably_visible(tmp_path):
    """A linear model on raw pixels separates pneumonia from other images on unseen patients."""
    s = {**SMALL, "n_patients": 120}
    demo.generate(tmp_path, s)
    meta = pd.read_csv(tmp_path / "demo" / "labels.csv")
    x = np.stack([np.asarray(Image.open(tmp_path / "demo" / "images" / i), np.float32) / 255
                  for i in meta["Image Index"]])
    x = x.reshape(len(x), 32, 2, 32, 2).mean(axis=(2, 4)).reshape(len(x), -1)      # 2x2 average pooling
    y = meta["Finding Labels"].str.contains("Pneumonia").to_numpy()
    train, test = next(GroupShuffleSplit(1, test_size=0.4, random_state=0).split(x, y, meta["Patient ID"]))
    model = LogisticRegression(C=1.0, max_iter=3000).fit(x[train], y[train])
    auc = roc_auc_score(y[test], model.predict_proba(x[test])[:, 1])
    assert 0.8 < auc < 0.97                                           # visible, not trivially separable


def test_cohort_on_demo_writes_synthetic_record(tmp_path, repo_root):
    params = tmp_path / "params.yaml"
    params.write_text("cohort:\n  demo: {seed: 5, n_patients: 30, image_size: 64, pneumonia_prevalence: 0.3}\n"
                      "  nih: {max_age_years: 100}\n")
    assert cohort.main(["--data", "demo", "--out", str(tmp_path / "out"), "--params", str(params)]) == 0
    rec = json.loads((tmp_path / "out" / "evidence" / "cohort.manifest.json").read_text())
    assert rec["synthetic"] is True and rec["data"]["source"]["synthetic"] is True
    assert rec["data"]["source"]["kind"] == "demo" and rec["data"]["source"]["release"] == "demo"
    m = pd.read_csv(tmp_path / "out" / "cohort" / "manifest.csv", dtype={"patient_id": str})
    assert (m["source"] == "demo").all() and m["path"].map(lambda p: isinstance(p, str)).all()
    assert rec["data"]["counts"]["images"] == len(m) == rec["data"]["counts"]["images_with_pixels"]
    assert rec["data"]["counts"]["pneumonia_images"] == int(m["pneumonia"].sum()) > 0
    assert {o["path"] for o in rec["outs"]} >= {"cohort/manifest.csv", "demo/labels.csv"}


@pytest.mark.parametrize("bad", [{"n_patients": 0}, {"pneumonia_prevalence": 1.5}, {"seed": "x"}])
def test_bad_demo_params_give_one_line_error(tmp_path, capsys, bad):
    params = tmp_path / "params.yaml"
    key, value = next(iter(bad.items()))
    params.write_text(f"cohort:\n  demo: {{{key}: {value!r}}}\n")
    assert cohort.main(["--data", "demo", "--out", str(tmp_path / "out"), "--params", str(params)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and f"cohort.demo.{key}" in err and "\n" not in err
    assert not (tmp_path / "out" / "evidence").exists()


def _split_counts(params: dict) -> pd.DataFrame:
    """Positive and negative images per split of the demo cohort `params` makes (metadata only, the
    patient-level split eda.split makes of it: no pixels rendered)."""
    meta = demo.metadata(demo.settings(params["cohort"]["demo"]))
    m = pd.DataFrame({"patient_id": meta["Patient ID"].astype(str),
                      "pneumonia": meta["Finding Labels"].str.split("|").map(lambda f: "Pneumonia" in f).astype(int),
                      "adult": meta["Patient Age"] >= 18})
    seed, fractions = split.check_params(params["split"])
    m["split"] = m["patient_id"].map(split.assign_patients(split.patient_table(m), fractions, seed))
    return m


def test_default_demo_test_split_meets_the_plan_sample_size():
    """The default demo's test split holds at least the positives and negatives the default plan's
    power calculation asks for (and at least 125 of each), adults alone too; the validation split
    carries the operating point."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert demo.settings(params["cohort"]["demo"]) == demo.DEFAULTS          # the code's defaults are the demo's
    v = params["validate"]
    pw = power_design(v, acceptance.check_criteria(v["acceptance"]))
    required = max(pw["positives"], pw["negatives"])      # the default plan's own powered numbers
    assert required >= exact_binomial_n(0.80, 0.90)["n"] == 113
    m = _split_counts(params)
    test, val = m[m["split"] == "test"], m[m["split"] == "val"]
    for part in (test, test[test["adult"]]):
        assert part["pneumonia"].sum() >= max(125, required)
        assert (part["pneumonia"] == 0).sum() >= max(125, required)
    assert val["pneumonia"].sum() >= 100 and (val["pneumonia"] == 0).sum() >= 100
    assert m.groupby("patient_id")["split"].nunique().max() == 1


def test_small_demo_stays_small():
    """The test suite's demo (tests/demo_params.small) stays a fraction of the default."""
    from demo_params import small

    params = small()
    m = _split_counts(params)
    assert len(m) < 300 and params["train"]["epochs"] <= 2
    assert set(m["split"]) == {"train", "val", "test"}
    assert m.groupby("split")["pneumonia"].agg(["min", "max"]).eq([0, 1]).all().all()   # both classes in each split


def test_bench_threshold_is_the_highest_meeting_the_target_sensitivity():
    from bench.demo import target_sensitivity_threshold

    labels = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0]
    scores = [.95, .9, .85, .8, .75, .7, .65, .6, .55, .2, .5, .3, .1]
    assert target_sensitivity_threshold(labels, scores, 0.9) == 0.55      # 9 of 10 positives at >= 0.55
    assert target_sensitivity_threshold(labels, scores, 0.91) == 0.2      # all 10: the lowest positive
    assert target_sensitivity_threshold(labels, scores, 0.5) == 0.75
    with pytest.raises(ValueError):
        target_sensitivity_threshold([0, 0], [0.1, 0.2], 0.9)


def test_bench_goals_match_an_independent_clopper_pearson(tmp_path):
    """bench.demo.goals on hand-made scores: counts, threshold, and exact intervals equal to the beta
    quantiles (scipy) of the Clopper-Pearson definition."""
    from scipy.stats import beta

    from bench.demo import goals

    rng = np.random.default_rng(0)
    (tmp_path / "predictions").mkdir()
    for name, n_pos, n_neg in (("val", 60, 80), ("test", 150, 200)):
        label = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
        score = np.r_[rng.uniform(0.3, 1.0, n_pos), rng.uniform(0.0, 0.5, n_neg)]
        pd.DataFrame({"image_id": [f"{name}{i}" for i in range(len(label))], "patient_id": np.arange(len(label)) // 2,
                      "label": label, "score": score}).to_csv(tmp_path / "predictions" / f"{name}.csv", index=False)
    (tmp_path / "evidence").mkdir()   # the plan's powered numbers, as validation.sample_size records them
    (tmp_path / "evidence" / "validation.sample_size.json").write_text(
        json.dumps({"data": {"power": {"positives": 143, "negatives": 140}}}))
    got = goals(tmp_path, 0.9)
    test = pd.read_csv(tmp_path / "predictions" / "test.csv")
    assert got["counts"]["test"] == {"positives": 150, "negatives": 200, "patients": 175}
    assert got["required_per_class"] == 143 and got["checks"]["test_size"] and got["checks"]["val_size"]
    assert got["val_sensitivity"] >= 0.9
    k = int((test["score"][test["label"] == 1] >= got["threshold"]).sum())
    s = got["test_sensitivity"]
    assert (s["k"], s["n"]) == (k, 150)
    assert s["ci_low"] == pytest.approx(beta.ppf(0.025, k, 150 - k + 1), abs=1e-10)
    assert s["ci_high"] == pytest.approx(beta.ppf(0.975, k + 1, 150 - k) if k < 150 else 1.0, abs=1e-10)
    assert got["passed"] == (s["ci_low"] > 0.8 and got["test_specificity"]["ci_low"] > 0.8)
    assert 0.5 < got["test_auc"] <= 1.0
