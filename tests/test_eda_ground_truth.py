"""eda.ground_truth: NIH label versus radiologists' airspace opacity, checked against pandas,
statsmodels, scikit-learn and the Fleiss-Cohen-Everitt variance written out here."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.proportion import proportion_confint

from bench.eda import manifest_from_label_file
from eda import ground_truth


@pytest.fixture(scope="module")
def manifest(nih_metadata):
    return manifest_from_label_file(nih_metadata / "Data_Entry_2017_v2020.csv.gz")


@pytest.fixture(scope="module")
def assessed(manifest, nih_dir):
    source = {"kind": "nih", "data_dir": str(nih_dir), "label_file": None}
    return ground_truth.assess(manifest, source)


@pytest.fixture(scope="module")
def joined(nih_metadata):
    labels = pd.read_csv(nih_metadata / "Data_Entry_2017_v2020.csv.gz")
    expert = pd.read_csv(nih_metadata / "google2019_nih-chest-xray-labels.csv.gz")
    out = expert[["Image Index", "Airspace opacity"]].merge(
        labels[["Image Index", "Finding Labels"]], on="Image Index")
    out["nih"] = out["Finding Labels"].str.split("|").apply(lambda f: "Pneumonia" in f)
    out["expert"] = out["Airspace opacity"] == "YES"
    return out


def fleiss_kappa_ci(tp, fp, fn, tn, level=0.95):
    """Cohen's kappa and the Fleiss, Cohen & Everitt (1969) large-sample Wald interval, by hand."""
    p = np.array([[tp, fp], [fn, tn]], float)
    n = p.sum()
    p /= n
    r, c = p.sum(1), p.sum(0)
    po, pe = np.trace(p), (r * c).sum()
    k = (po - pe) / (1 - pe)
    a = sum(p[i, i] * (1 - (r[i] + c[i]) * (1 - k)) ** 2 for i in range(2))
    b = (1 - k) ** 2 * sum(p[i, j] * (c[i] + r[j]) ** 2 for i in range(2) for j in range(2) if i != j)
    var = (a + b - (k - pe * (1 - k)) ** 2) / ((1 - pe) ** 2 * n)
    z = norm.ppf(0.5 + level / 2)
    return k, k - z * np.sqrt(var), k + z * np.sqrt(var)


def test_two_by_two_matches_crosstab(assessed, joined):
    data, files = assessed
    assert {f.name for f in files} == {"google2019_nih-chest-xray-labels.csv.gz", "BBox_List_2017.csv.gz"}
    quality = data["label_quality"]
    assert quality["matched_images"] == len(joined) == 4376
    tab = pd.crosstab(joined["nih"], joined["expert"])
    t = quality["pneumonia"]["table"]
    assert t == {"nih_pos_expert_pos": tab.loc[True, True], "nih_pos_expert_neg": tab.loc[True, False],
                 "nih_neg_expert_pos": tab.loc[False, True], "nih_neg_expert_neg": tab.loc[False, False]}
    assert sum(t.values()) == 4376


def test_ppv_npv_sensitivity_specificity_are_statsmodels_wilson(assessed, joined):
    q = assessed[0]["label_quality"]["pneumonia"]
    nih, exp = joined["nih"], joined["expert"]
    cases = {"ppv": (exp[nih].sum(), nih.sum()), "npv": ((~exp)[~nih].sum(), (~nih).sum()),
             "sensitivity": (nih[exp].sum(), exp.sum()), "specificity": ((~nih)[~exp].sum(), (~exp).sum())}
    for name, (k, n) in cases.items():
        low, high = proportion_confint(k, n, alpha=0.05, method="wilson")
        got = q[name]
        assert got["estimate"] == pytest.approx(k / n), name
        assert (got["ci_low"], got["ci_high"]) == pytest.approx((low, high)), name
        assert got["n"] == n and got["method"] == "wilson"


def test_kappa_against_sklearn_and_hand_formula(assessed, joined):
    kappa = assessed[0]["label_quality"]["pneumonia"]["kappa"]
    assert kappa["estimate"] == pytest.approx(cohen_kappa_score(joined["nih"], joined["expert"]))
    t = assessed[0]["label_quality"]["pneumonia"]["table"]
    k, low, high = fleiss_kappa_ci(t["nih_pos_expert_pos"], t["nih_pos_expert_neg"],
                                   t["nih_neg_expert_pos"], t["nih_neg_expert_neg"])
    assert (kappa["ci_low"], kappa["ci_high"]) == pytest.approx((low, high))
    assert kappa["ci_low"] < kappa["estimate"] < kappa["ci_high"]


def test_kappa_on_a_worked_example():
    # 20 agree-yes, 5 disagree, 10 disagree, 15 agree-no (Wikipedia "Cohen's kappa" example): kappa 0.4
    a = np.array([1] * 20 + [1] * 5 + [0] * 10 + [0] * 15, bool)
    b = np.array([1] * 20 + [0] * 5 + [1] * 10 + [0] * 15, bool)
    got = ground_truth.agreement(a, b)["kappa"]
    assert got["estimate"] == pytest.approx(0.4)
    assert got["estimate"] == pytest.approx(cohen_kappa_score(a, b))


def test_kappa_interval_stays_within_minus_one_to_one():
    table = {"nih_pos_expert_pos": 10, "nih_pos_expert_neg": 1, "nih_neg_expert_pos": 0, "nih_neg_expert_neg": 10}
    got = ground_truth.kappa(table)
    k, low, high = fleiss_kappa_ci(10, 1, 0, 10)
    assert high > 1  # the unclamped Wald interval leaves kappa's range here
    assert got["estimate"] == pytest.approx(k)
    assert got["ci_low"] == pytest.approx(low) and got["ci_high"] == 1.0
    assert "clamped to [-1, 1]" in got["method"]


def test_bounding_boxes(assessed, nih_metadata):
    boxes = pd.read_csv(nih_metadata / "BBox_List_2017.csv.gz")
    pneu = boxes[boxes["Finding Label"] == "Pneumonia"]
    got = assessed[0]["bounding_boxes"]
    assert got["pneumonia_boxes"] == len(pneu) == 120
    assert got["pneumonia_box_width_px"]["median"] == pytest.approx(pneu.iloc[:, 4].median())
    assert got["pneumonia_box_height_px"]["max"] == pytest.approx(pneu.iloc[:, 5].max())


def test_method_and_implication(assessed):
    data = assessed[0]
    assert "Wang" in data["labelling"]["citation"] and "text mining" in data["labelling"]["method"]
    assert "90" not in data["labelling"]["description"]  # the claim is cited once, from references.yml
    assert "radiologist" in data["implication_for_validation"]


def test_demo_and_folder_sources_are_not_estimable(manifest):
    for kind in ("demo", "folder"):
        data, files = ground_truth.assess(manifest.head(10), {"kind": kind})
        assert data["label_quality"]["estimable"] is False and data["label_quality"]["reason"]
        assert files == []


def test_missing_or_malformed_expert_file(tmp_path, manifest):
    data, _ = ground_truth.assess(manifest.head(10), {"kind": "nih", "data_dir": str(tmp_path)})
    assert data["label_quality"]["estimable"] is False
    assert "google2019" in data["label_quality"]["reason"]
    (tmp_path / "google2019_nih-chest-xray-labels.csv").write_text("Image Index,Foo\nx.png,1\n")
    data, files = ground_truth.assess(manifest.head(10), {"kind": "nih", "data_dir": str(tmp_path)})
    assert "missing column" in data["label_quality"]["reason"]
    assert len(files) == 1
