"""The held-out sample size record: Buderer's formula from the planned design in params."""
import math

import pytest
from scipy.stats import norm

from evidence import Store
from evidence.params import ParamsError
from validation.sample_size import run


def test_record_matches_buderer_by_hand(tmp_path):
    params = {"ci_level": 0.95, "sample_size": {"sensitivity": 0.9, "specificity": 0.85,
                                                "prevalence": 0.2, "half_width": 0.05}}
    run(tmp_path, params)
    d = Store(tmp_path).data("validation.sample_size")
    z = norm.ppf(0.975)
    assert d["positives"] == 139 == math.ceil(z * z * 0.9 * 0.1 / 0.05 ** 2)
    assert d["negatives"] == math.ceil(z * z * 0.85 * 0.15 / 0.05 ** 2) == 196
    assert d["total"] == math.ceil(max(139 / 0.2, 196 / 0.8)) == 695
    assert d["design"]["prevalence"] == 0.2


@pytest.mark.parametrize("design, match", [
    (None, "validate.sample_size: missing"),
])
def test_bad_design_names_the_parameter(tmp_path, design, match):
    with pytest.raises(ParamsError, match=match):
        run(tmp_path, {"sample_size": design} if design is not None else {})
    assert not (tmp_path / "evidence").exists()
