"""The held-out sample size record: Buderer's formula from the planned design in params."""
import math

import pytest
from scipy.stats import norm

from evidence import Store
from evidence.params import ParamsError
from validation.sample_size import run


CRITERIA = [{"metric": "auc", "bound": "ci_low", "op": ">=", "value": 0.7},
            {"metric": "sensitivity", "bound": "estimate", "op": ">=", "value": 0.8, "method": "wilson"}]


def test_record_matches_buderer_by_hand(tmp_path):
    params = {"ci_level": 0.95, "sample_size": {"sensitivity": 0.9, "specificity": 0.85,
                                                "prevalence": 0.2, "half_width": 0.05}, "acceptance": CRITERIA}
    run(tmp_path, params)
    d = Store(tmp_path).data("validation.sample_size")
    z = norm.ppf(0.975)
    assert d["positives"] == 139 == math.ceil(z * z * 0.9 * 0.1 / 0.05 ** 2)
    assert d["negatives"] == math.ceil(z * z * 0.85 * 0.15 / 0.05 ** 2) == 196
    assert d["total"] == math.ceil(max(139 / 0.2, 196 / 0.8)) == 695
    assert d["design"]["prevalence"] == 0.2


def test_design_record_fixes_the_analysis_from_params_alone(tmp_path):
    params = {"ci_level": 0.9, "threshold_rule": "youden", "bootstrap_resamples": 500, "bootstrap_method": "bca",
              "min_subgroup_positives": 20, "prevalences": [0.01, 0.2], "acceptance": CRITERIA,
              "sample_size": {"sensitivity": 0.9, "specificity": 0.85, "prevalence": 0.2, "half_width": 0.05}}
    written = run(tmp_path, params)
    record = written["validation.design"]
    d = record["data"]
    assert record["deps"] == {"files": [], "records": []} and record["synthetic"] is False  # params alone
    assert [c["method"] for c in d["acceptance_criteria"]] == ["bootstrap", "wilson"]
    assert [(c["metric"], c["bound"], c["op"], c["value"]) for c in d["acceptance_criteria"]] == [
        ("auc", "ci_low", ">=", 0.7), ("sensitivity", "estimate", ">=", 0.8)]
    assert d["operating_point"]["rule"] == "youden" and d["ci_level"] == 0.9
    assert d["analysis"]["clustering"] == "cluster-bootstrap-bca" and d["bootstrap"]["n_resamples"] == 500
    assert d["analysis"]["subgroups"]["min_subgroup_positives"] == 20 and d["analysis"]["prevalences"] == [0.01, 0.2]
    assert d["sample_size"]["total"] == written["validation.sample_size"]["data"]["total"]
    assert d["endpoints"]["primary"] == ["sensitivity", "specificity"] and record["params"] == params


@pytest.mark.parametrize("design, match", [
    (None, "validate.sample_size: missing"),
])
def test_bad_design_names_the_parameter(tmp_path, design, match):
    with pytest.raises(ParamsError, match=match):
        run(tmp_path, {"sample_size": design} if design is not None else {})
    assert not (tmp_path / "evidence").exists()
