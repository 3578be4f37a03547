"""The held-out sample size record: exact binomial power for each primary performance goal (checked
against scipy's binomial distribution), the totals at the intended-use prevalence and enriched, the
per-stratum minimums, the cited predicates, and Buderer's formula as the precision cross-check."""
import math

import pytest
import yaml
from scipy.stats import binom, norm

from evidence import Store
from evidence.params import ParamsError
from validation.acceptance import CriteriaError
from validation.sample_size import DesignError, known_predicates, run

from demo_params import REPO

pytestmark = pytest.mark.verifies("SRS-023")

CRITERIA = [{"metric": "auc", "bound": "ci_low", "op": ">=", "value": 0.7},
            {"metric": "sensitivity", "bound": "estimate", "op": ">=", "value": 0.8, "method": "wilson"}]


def _validate() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())["validate"]


def _scipy_power(n: int, goal: float, anticipated: float, alpha: float = 0.025) -> tuple[int, float]:
    """The critical count and the power at n, from scipy alone."""
    k = next(k for k in range(n + 2) if binom.sf(k - 1, n, goal) <= alpha)
    return k, float(binom.sf(k - 1, n, anticipated))


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
    # no primary lower-bound goal on sensitivity or specificity: nothing is sized by power, and it says so
    assert d["power"]["endpoints"] == [] and d["power"]["positives"]["estimable"] is False
    assert [g["metric"] for g in d["power"]["not_sized"]] == ["auc", "sensitivity"]
    assert d["power"]["at_prevalence"]["estimable"] is False


def test_default_joint_power_sizes_each_goal_for_the_square_root_of_80_percent(tmp_path):
    """Both primary goals must be met, so the default plan powers them together: on disjoint cases the
    joint power is the product, each goal is sized for 0.8 ** 0.5, and scipy alone finds the same n."""
    pw = run(tmp_path, _validate())["validation.sample_size"]["data"]["power"]
    per_goal = 0.80 ** 0.5
    assert (pw["power_of"], pw["per_goal_power"]) == ("joint", pytest.approx(per_goal))
    powers = [_scipy_power(n, 0.80, 0.90)[1] for n in range(1, 400)]
    stable = 1 + max(i for i, p in enumerate(powers) if p < per_goal) + 1
    assert (pw["positives"], pw["negatives"]) == (stable, stable) == (143, 143)
    assert pw["joint_power"] == pytest.approx(powers[stable - 1] ** 2, abs=1e-12) and pw["joint_power"] >= 0.80


def test_power_of_each_goal_needs_113_positives_and_113_negatives(tmp_path):
    params = _validate()
    params["sample_size"]["power_of"] = "each"
    written = run(tmp_path, params)
    d = written["validation.sample_size"]["data"]
    pw = d["power"]
    assert (pw["positives"], pw["negatives"]) == (113, 113)
    assert [(e["metric"], e["cases"], e["n_first"], e["n"]) for e in pw["endpoints"]] == [
        ("sensitivity", "positives", 107, 113), ("specificity", "negatives", 107, 113)]
    k, each = _scipy_power(113, 0.80, 0.90)
    assert all(e["critical_successes"] == k == 99 for e in pw["endpoints"])
    assert all(e["power_at_planned_n"] == pytest.approx(each, abs=1e-12) for e in pw["endpoints"])
    assert pw["joint_power"] == pytest.approx(each * each, abs=1e-12) and pw["joint_power"] < 0.80
    assert (pw["alpha"], pw["target_power"], pw["one_sided_level"]) == (0.025, 0.80, 0.975)
    # a consecutive series at 1.3% needs 113 / 0.013 images; the enriched half-and-half design 226
    assert pw["at_prevalence"]["total"] == math.ceil(113 / 0.013) == 8693
    assert pw["enrichment"] == {"positives_fraction": 0.5, "total": 226, "positives_expected": 113.0,
                                "negatives_expected": 113.0}
    assert "1,431 of 112,120" in pw["prevalence_source"]
    assert d["subgroups"]["strata"] == ["site", "scanner manufacturer", "sex", "age band", "view"]
    assert (d["subgroups"]["min_positives"], d["subgroups"]["min_negatives"]) == (10, 10)
    design = written["validation.design"]["data"]
    assert design["sample_size"]["positives"] == 113 and design["sample_size"]["total_enriched"] == 226
    assert pw["power_of"] == "each" and pw["per_goal_power"] == 0.80
    assert design["sample_size"]["buderer_cross_check"] == {k: d[k] for k in ("positives", "negatives", "total")}
    assert [g["statement"] for g in design["performance_goals"]] == [
        "sensitivity: lower bound of the two-sided 95% exact (Clopper-Pearson) interval above 0.80",
        "specificity: lower bound of the two-sided 95% exact (Clopper-Pearson) interval above 0.80",
        "AUC: lower bound of the two-sided 95% DeLong interval above 0.85"]
    assert [g["role"] for g in design["performance_goals"]] == ["primary", "primary", "secondary"]


def test_goals_sit_below_the_cited_predicates(tmp_path):
    d = run(tmp_path, _validate())["validation.sample_size"]["data"]
    devices = known_predicates()
    for j in d["justification"]:
        published = [devices[c["id"]][j["metric"]]["estimate"] for c in j["cited"]
                     if isinstance(c["estimate"], float)]
        assert j["lowest"]["estimate"] == min(published) and j["below_every_cited"] is (j["value"] < min(published))
    assert d["justification"][0]["lowest"] == {"id": "K223491", "estimate": 0.843}


def test_enrichment_prevalence_alpha_power_and_stratum_minimums_come_from_params(tmp_path):
    p = _validate()
    p["sample_size"].update(alpha=0.05, power=0.9, power_of="each", prevalence=0.1, enrichment={"positives_fraction": 0.3})
    p["acceptance"][1].update(value=0.85, anticipated=0.95)
    p.update(min_subgroup_positives=25, min_subgroup_negatives=40)
    pw = run(tmp_path, p)["validation.sample_size"]["data"]["power"]
    sens, spec = pw["endpoints"]
    assert (sens["n"], spec["n"]) == (pw["positives"], pw["negatives"])
    for e, goal, anticipated in ((sens, 0.80, 0.90), (spec, 0.85, 0.95)):
        k, each = _scipy_power(e["n"], goal, anticipated, alpha=0.05)
        assert e["critical_successes"] == k and each >= 0.9
        assert _scipy_power(e["n_first"] - 1, goal, anticipated, alpha=0.05)[1] < 0.9
    assert pw["at_prevalence"]["total"] == math.ceil(max(sens["n"] / 0.1, spec["n"] / 0.9))
    assert pw["enrichment"]["total"] == math.ceil(max(sens["n"] / 0.3, spec["n"] / 0.7))
    sg = Store(tmp_path).data("validation.sample_size")["subgroups"]
    assert (sg["min_positives"], sg["min_negatives"]) == (25, 40)


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
    sample = written["validation.sample_size"]["data"]
    assert d["sample_size"]["buderer_cross_check"]["total"] == sample["total"]
    assert d["endpoints"]["primary"] == ["sensitivity", "specificity"] and record["params"] == params
    assert d["performance_goals"][0]["statement"] == "AUC: lower bound of the two-sided 90% patient-cluster bootstrap interval at or above 0.70"


def test_stage_hashes_the_predicate_facts_it_checks(tmp_path):
    record = run(tmp_path, _validate())["validation.sample_size"]
    assert "submission/data/predicate_performance.yml" in [f["path"] for f in record["code"]["files"]]


@pytest.mark.parametrize("change, error, match", [
    (lambda p: p["acceptance"][0].update(justification=["K191556", "K999999"]), DesignError,
     r"validate.acceptance\[0\].justification: 'K999999' is not in predicate_performance.yml; known ids: "
     r"K191556, K230899, K230899-PE, K232410, K223491"),
    (lambda p: p["acceptance"][1].pop("anticipated"), DesignError,
     r"validate.acceptance\[1\]: the primary specificity goal needs `anticipated`"),
    (lambda p: p["acceptance"][0].update(anticipated=0.8), CriteriaError,
     r"validate.acceptance\[0\]: anticipated 0.8 must exceed the goal 0.8"),
    (lambda p: p["acceptance"][0].update(anticipated=0.8005), DesignError,
     r"validate.acceptance\[0\] with validate.sample_size alpha 0.025 and power 0.8 \(joint; 0.894 for this goal\): power 0.894\d* is not reached"),
    (lambda p: [g.update(primary=False) for g in p["acceptance"]], CriteriaError, "no goal is primary"),
])
def test_a_design_that_cannot_be_computed_names_the_parameter(tmp_path, change, error, match):
    p = _validate()
    change(p)
    with pytest.raises(error, match=match):
        run(tmp_path, p)
    assert not (tmp_path / "evidence").exists()


@pytest.mark.parametrize("design, match", [
    (None, "validate.sample_size: missing"),
])
def test_bad_design_names_the_parameter(tmp_path, design, match):
    with pytest.raises(ParamsError, match=match):
        run(tmp_path, {"sample_size": design} if design is not None else {})
    assert not (tmp_path / "evidence").exists()
