"""Subgroups: estimability by positives and negatives, half-open age bands inside the intended use,
out-of-scope strata apart, and the heterogeneity tests against independent references."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats as sps
from statsmodels.stats.proportion import proportion_confint, proportions_chisquare

from model.dicom import DEFAULT_RULES
from validation import stats, subgroups
from validation.subgroups import AGE_BAND_EDGES, group_metrics, heterogeneity

pytestmark = pytest.mark.verifies("SRS-025")

REPO = Path(__file__).resolve().parent.parent


def _frame(n, *, ages=None, pos=None, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.zeros(n, dtype=int) if pos is None else np.r_[np.ones(pos, dtype=int), np.zeros(n - pos, dtype=int)]
    return pd.DataFrame({"label": labels, "score": rng.random(n),
                         "sex": rng.choice(["M", "F"], n), "view": rng.choice(["AP", "PA"], n),
                         "age_years": ages if ages is not None else rng.uniform(18, 100, n)})


@pytest.mark.parametrize("n_pos, estimable", [(9, False), (10, True)])
def test_sensitivity_needs_min_positives(n_pos, estimable):
    y = np.r_[np.ones(n_pos, dtype=int), np.zeros(200, dtype=int)]
    s = np.r_[np.linspace(0.2, 0.9, n_pos), np.linspace(0.0, 0.6, 200)]
    g = group_metrics(y, s, 0.5, label="x", min_positives=10, min_negatives=10, level=0.95)
    assert (g["n_positive"], g["n_negative"], g["n"]) == (n_pos, 200, n_pos + 200)
    assert stats.is_estimable(g["specificity"]) and g["estimable"] is estimable
    if estimable:
        tp = int(np.sum(s[:n_pos] >= 0.5))
        assert (g["sensitivity"]["ci_low"], g["sensitivity"]["ci_high"]) == pytest.approx(
            proportion_confint(tp, n_pos, alpha=0.05, method="wilson"))
    else:
        assert g["sensitivity"] == {"estimable": False, "reason": "9 positives, fewer than the pre-specified 10"}
        assert g["reason"].startswith("sensitivity: 9 positives")


def test_specificity_needs_min_negatives_and_singular_reason():
    g = group_metrics(np.r_[np.ones(30, dtype=int), 0], np.linspace(0, 1, 31), 0.5, label="x",
                      min_positives=10, min_negatives=5, level=0.95)
    assert stats.is_estimable(g["sensitivity"])
    assert g["specificity"]["reason"] == "1 negative, fewer than the pre-specified 5"


def test_age_bands_half_open_inside_the_intended_use_out_of_scope_apart():
    ages = [17.99, 18, 39.99, 40, 59.5, 60, 79.9, 80, 100, 100.5, np.nan, 25]
    groups = subgroups.subgroups(_frame(len(ages), ages=np.array(ages)), 0.5, min_positives=1,
                                 min_negatives=1, level=0.95)
    n = {k: g["n"] for k, g in groups["age_band"].items()}
    assert n == {"18_40": 3, "40_60": 2, "60_80": 2, "80_100": 2}  # 40, 60, 80 start their band; 100 is in
    out = {k: g["n"] for k, g in groups["age_out_of_scope"].items()}
    assert out == {"under_min": 1, "over_max": 1, "unknown": 1}
    assert sum(n.values()) + sum(out.values()) == len(ages)
    labels = [b[1] for b in subgroups.AGE_BANDS]
    assert labels == ["18 to under 40 years", "40 to under 60 years", "60 to under 80 years", "80 to 100 years"]


def test_age_band_limits_are_the_intended_use_limits():
    workflow = yaml.safe_load((REPO / "params.yaml").read_text())["workflow"]
    assert (AGE_BAND_EDGES[0], AGE_BAND_EDGES[-1]) == (workflow["min_age_years"], workflow["max_age_years"])
    assert (AGE_BAND_EDGES[0], AGE_BAND_EDGES[-1]) == (DEFAULT_RULES["min_age_years"], DEFAULT_RULES["max_age_years"])
    assert list(AGE_BAND_EDGES) == sorted(set(AGE_BAND_EDGES))


def test_chi_square_homogeneity_matches_statsmodels():
    k, n = [18, 25, 9], [30, 33, 20]
    got = stats.homogeneity_test(k, n)
    chi2, p, _ = proportions_chisquare(np.array(k), np.array(n))
    assert got["method"] == "pearson-chi-square" and got["df"] == 2 and got["n_strata"] == 3
    assert got["statistic"] == pytest.approx(chi2, rel=1e-12) and got["p_value"] == pytest.approx(p, rel=1e-12)
    # and by the formula: sum (O - E)^2 / E over the k x 2 table
    table = np.array([k, np.subtract(n, k)]).T
    e = np.outer(n, table.sum(0)) / sum(n)
    assert got["statistic"] == pytest.approx(((table - e) ** 2 / e).sum(), rel=1e-12)
    assert got["min_expected"] == pytest.approx(e.min())


def test_fisher_exact_for_two_strata_matches_the_tea_tasting_example():
    """Fisher (1935), the lady tasting tea: 3 of 4 right in each arm -> two-sided p = 34/70 = 0.4857."""
    got = stats.homogeneity_test([3, 1], [4, 4])
    assert got["method"] == "fisher-exact" and got["p_value"] == pytest.approx(34 / 70, rel=1e-12)
    # and by hypergeometric sums for another table: every table no more likely than the observed one
    k, n = [2, 9], [12, 11]
    total, succ = sum(n), sum(k)
    prob = lambda a: math.comb(succ, a) * math.comb(total - succ, n[0] - a) / math.comb(total, n[0])  # noqa: E731
    observed = prob(k[0])
    p = sum(prob(a) for a in range(max(0, n[0] - (total - succ)), min(succ, n[0]) + 1)
            if prob(a) <= observed * (1 + 1e-7))
    assert stats.homogeneity_test(k, n)["p_value"] == pytest.approx(p, rel=1e-9)


@pytest.mark.parametrize("k, n, reason", [([5], [9], "needs at least two"),
                                          ([5, 7], [5, 7], "same outcome"), ([0, 0, 0], [3, 4, 5], "same outcome")])
def test_homogeneity_not_estimable(k, n, reason):
    got = stats.homogeneity_test(k, n)
    assert got["estimable"] is False and reason in got["reason"]


def test_heterogeneity_uses_estimable_named_strata_only():
    rng = np.random.default_rng(4)
    n = 600
    df = pd.DataFrame({"label": rng.integers(0, 2, n), "score": rng.random(n),
                       "sex": rng.choice(["M", "F", ""], n, p=[0.48, 0.48, 0.04]),
                       "view": rng.choice(["AP", "PA"], n), "age_years": rng.choice([10, 30, 50, 70, 90, np.nan], n)})
    df.loc[(df["age_years"] == 90) & (df["label"] == 1), "label"] = 0  # no positives aged 80-100
    df.loc[df.index[:3], ["age_years", "label"]] = [90, 1]
    groups = subgroups.subgroups(df, 0.5, min_positives=10, min_negatives=10, level=0.95)
    het = heterogeneity(groups)
    assert "finding" not in het  # no finding_labels column
    sens = het["age_band"]["sensitivity"]
    assert sens["strata"] == ["18_40", "40_60", "60_80"] and sens["method"] == "pearson-chi-square"
    bands = [groups["age_band"][k] for k in sens["strata"]]
    ref = proportions_chisquare(np.array([g["confusion"]["tp"] for g in bands]),
                                np.array([g["n_positive"] for g in bands]))
    assert sens["p_value"] == pytest.approx(ref[1])
    assert het["sex"]["sensitivity"]["strata"] == ["M", "F"]  # "unknown" left out
    assert het["age_band"]["specificity"]["n_strata"] == 4


def test_findings_get_a_with_without_test():
    rng = np.random.default_rng(2)
    n = 300
    df = _frame(n, pos=100, seed=2)
    df["finding_labels"] = rng.choice(["Effusion", "No Finding", "Effusion|Pneumonia"], n)
    groups = subgroups.subgroups(df, 0.5, min_positives=10, min_negatives=10, level=0.95)
    het = heterogeneity(groups)
    assert list(het["finding"]) == ["Effusion"]
    t = het["finding"]["Effusion"]["specificity"]
    w, wo = groups["finding"]["Effusion"]["with"], groups["finding"]["Effusion"]["without"]
    table = [[w["confusion"]["tn"], w["confusion"]["fp"]], [wo["confusion"]["tn"], wo["confusion"]["fp"]]]
    assert t["method"] == "fisher-exact" and t["p_value"] == pytest.approx(sps.fisher_exact(table)[1])


def test_site_and_scanner_strata_come_from_their_columns_with_a_heterogeneity_test():
    """The held-out set's site (InstitutionName) and scanner manufacturer strata: one per value, a
    missing value apart, and a homogeneity test across the known values (checked against scipy)."""
    df = _frame(120, pos=60, seed=4)
    df["site"] = ["A"] * 50 + ["B"] * 50 + [None] * 20
    df["manufacturer"] = (["GE", "Siemens"] * 60)
    out = subgroups.subgroups(df, 0.5, min_positives=5, min_negatives=5, level=0.95)
    assert set(out["site"]) == {"A", "B", "unknown"} and out["site"]["unknown"]["n"] == 20
    assert out["site"]["A"]["label"] == "site: A" and out["manufacturer"]["GE"]["n"] == 60
    het = heterogeneity(out)
    assert {"site", "manufacturer"} <= set(het)
    tp = [out["site"][k]["confusion"]["tp"] for k in ("A", "B")]
    pos = [out["site"][k]["n_positive"] for k in ("A", "B")]
    expected = sps.fisher_exact([[tp[0], pos[0] - tp[0]], [tp[1], pos[1] - tp[1]]]).pvalue
    assert het["site"]["sensitivity"]["p_value"] == pytest.approx(expected)
    assert "site" not in subgroups.subgroups(df.drop(columns=["site"]), 0.5, min_positives=5,
                                             min_negatives=5, level=0.95)


def test_header_check_reads_site_and_manufacturer():
    from pydicom.dataset import Dataset
    from model.dicom import check_header

    ds = Dataset()
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition, ds.PatientAge, ds.PatientSex = "DX", "CHEST", "PA", "045Y", "F"
    ds.Manufacturer, ds.InstitutionName = "  Acme Imaging\x07 ", "General Hospital"
    d = check_header(ds).as_dict()
    assert (d["manufacturer"], d["institution"]) == ("Acme Imaging", "General Hospital")
    assert check_header(Dataset()).as_dict()["manufacturer"] is None
