"""Substantial equivalence and labeling (issue 14): predictive values with intervals at clinical
prevalences, the predicate facts and the two documents rendered from them."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from validation import stats
from validation.design import check_params, predictive_value_prevalences


# --------------------------------------------------------------------------- PPV / NPV with intervals

def _bayes(se, sp, p):
    return se * p / (se * p + (1 - sp) * (1 - p)), sp * (1 - p) / (sp * (1 - p) + (1 - se) * p)


def _delta_logit_interval(f, se, sp, n1, n0, level=0.95, h=1e-6):
    """An independent reference: the delta-method interval of logit f(Se, Sp) with the partial
    derivatives taken numerically and binomial variances Se(1-Se)/n1, Sp(1-Sp)/n0 (no closed form)."""
    g = lambda a, b: math.log(f(a, b) / (1 - f(a, b)))  # noqa: E731
    d_se = (g(se + h, sp) - g(se - h, sp)) / (2 * h)
    d_sp = (g(se, sp + h) - g(se, sp - h)) / (2 * h)
    var = d_se ** 2 * se * (1 - se) / n1 + d_sp ** 2 * sp * (1 - sp) / n0
    z = sps.norm.ppf(0.5 + level / 2)
    expit = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    return expit(g(se, sp) - z * math.sqrt(var)), expit(g(se, sp) + z * math.sqrt(var))


@pytest.mark.parametrize("tp,fn,tn,fp,p", [(90, 10, 90, 10, 0.013), (141, 9, 260, 40, 0.05), (45, 15, 380, 20, 0.3)])
def test_predictive_values_match_bayes_and_an_independent_delta_method(tp, fn, tn, fp, p):
    got = stats.predictive_values_ci(tp=tp, fp=fp, tn=tn, fn=fn, prevalence=p)
    se, sp = tp / (tp + fn), tn / (tn + fp)
    ppv, npv = _bayes(se, sp, p)
    assert got["ppv"]["estimate"] == pytest.approx(ppv) and got["npv"]["estimate"] == pytest.approx(npv)
    for key, f in (("ppv", lambda a, b: _bayes(a, b, p)[0]), ("npv", lambda a, b: _bayes(a, b, p)[1])):
        lo, hi = _delta_logit_interval(f, se, sp, tp + fn, tn + fp)
        assert (got[key]["ci_low"], got[key]["ci_high"]) == pytest.approx((lo, hi), rel=1e-5)
        assert got[key]["method"] == "mercaldo-logit" and got[key]["n"] == tp + fn + tn + fp


def test_ppv_at_nih_prevalence_is_the_published_figure():
    """REFERENCES.md: at a prevalence of 1.3% with Se = Sp = 0.90, PPV is about 10%."""
    got = stats.predictive_values_ci(tp=900, fn=100, tn=900, fp=100, prevalence=0.013)
    assert got["ppv"]["estimate"] == pytest.approx(0.106, abs=0.001)
    assert got["ppv"]["ci_low"] < got["ppv"]["estimate"] < got["ppv"]["ci_high"]


def test_interval_covers_the_true_value_at_the_nominal_rate():
    """Simulated case-control samples: the 95% logit interval holds the true PPV about 95% of the time."""
    rng = np.random.default_rng(3)
    se, sp, p, n1, n0 = 0.85, 0.9, 0.05, 200, 400
    true_ppv = _bayes(se, sp, p)[0]
    hits = 0
    for _ in range(2000):
        tp, tn = rng.binomial(n1, se), rng.binomial(n0, sp)
        r = stats.predictive_values_ci(tp=tp, fn=n1 - tp, tn=tn, fp=n0 - tn, prevalence=p)["ppv"]
        hits += r["ci_low"] <= true_ppv <= r["ci_high"]
    assert 0.93 < hits / 2000 < 0.97


def test_perfect_specificity_uses_the_adjusted_interval_and_keeps_the_estimate():
    got = stats.predictive_values_ci(tp=95, fn=5, tn=100, fp=0, prevalence=0.013)
    assert got["ppv"]["estimate"] == 1.0 and got["ppv"]["method"] == "mercaldo-logit-adjusted"
    assert 0 < got["ppv"]["ci_low"] < 1.0 and got["ppv"]["ci_high"] == 1.0
    z = sps.norm.ppf(0.975)
    se_adj, sp_adj = (95 + z * z / 2) / (100 + z * z), (100 + z * z / 2) / (100 + z * z)
    assert got["npv"]["ci_low"] < _bayes(se_adj, sp_adj, 0.013)[1] < got["npv"]["ci_high"]


def test_no_positives_is_not_estimable():
    got = stats.predictive_values_ci(tp=0, fn=0, tn=50, fp=5, prevalence=0.1)
    assert got["ppv"]["estimable"] is False and "no positives" in got["ppv"]["reason"]


@pytest.mark.parametrize("bad", [0, 1, 0.0, 1.0, -0.1, 1.5])
def test_a_prevalence_of_0_or_1_is_a_clear_error(bad):
    with pytest.raises(stats.StatsError, match=r"prevalence must be a number strictly between 0 and 1.*not defined"):
        stats.predictive_values_ci(tp=9, fn=1, tn=9, fp=1, prevalence=bad)
    with pytest.raises(stats.StatsError, match="prevalence"):
        stats.ppv_npv_at_prevalence(0.9, 0.9, bad)


@pytest.mark.parametrize("bad", [0, 1])
def test_params_with_a_prevalence_of_0_or_1_are_refused_naming_the_parameter(bad, tmp_path):
    import yaml
    from pathlib import Path
    from evidence.params import ParamsError, load_all as load
    params = yaml.safe_load((Path(__file__).resolve().parent.parent / "params.yaml").read_text())
    params["validate"]["prevalences"] = [0.05, bad]
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ParamsError, match=r"validate\.prevalences\[1\]"):
        load(path)


def test_the_intended_use_prevalence_is_read_from_the_sample_size_not_copied():
    p = {"prevalences": [0.2, 0.05], "sample_size": {"prevalence": 0.013}}
    assert predictive_value_prevalences(p) == [0.013, 0.05, 0.2]
    assert predictive_value_prevalences({"prevalences": [0.013], "sample_size": {"prevalence": 0.013}}) == [0.013]
    import yaml
    from pathlib import Path
    params = yaml.safe_load((Path(__file__).resolve().parent.parent / "params.yaml").read_text())["validate"]
    assert params["sample_size"]["prevalence"] not in params["prevalences"]      # declared once
    assert params["sample_size"]["prevalence"] in check_params(params)["predictive_value_prevalences"]
