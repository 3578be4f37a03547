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


# --------------------------------------------------------------------------- the predicate facts

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "submission" / "data"


def _facts(name):
    return yaml.safe_load((DATA / f"{name}.yml").read_text(encoding="utf-8"))


def test_each_predicate_is_declared_once_and_cited_by_id():
    se, devices = _facts("predicates"), _facts("predicate_performance")["devices"]
    assert "devices" not in se                      # no second list of devices
    cited = [se["primary"], *se["secondary"], *se["reference_devices"], *se["considered"],
             *[x for xs in se["same_device"].values() for x in xs]]
    assert set(cited) <= set(devices) and len(cited) == len(set(cited))
    assert se["primary"] == "K191556"               # the only one with CIs and a time to notification
    primary = devices[se["primary"]]
    assert primary["sensitivity"]["ci_low"] is not None and primary["time_to_notification"]["mean_total_seconds"]
    assert all(devices[i]["product_code"] == "QFM" for i in (se["primary"], *se["secondary"]))
    assert all(d["status"] in ("unverified", "verified") for d in devices.values())


def test_predicate_findings_agree_with_the_references():
    """Each device's finding as ../shared/REFERENCES.md lists it (Lunit: effusion and/or pneumothorax)."""
    refs = REPO.parent / "shared" / "REFERENCES.md"
    if not refs.is_file():
        pytest.skip("../shared/REFERENCES.md not present")
    rows = {m.group(1): m.group(2).strip() for m in
            re.finditer(r"^\| [^|]+\| (K\d{6})[^|]*\| ([^|]+)\|", refs.read_text(encoding="utf-8"), flags=re.M)}
    words = lambda text: {w for w in ("pneumothorax", "effusion", "pneumonia") if w in text.lower()}  # noqa: E731
    for key, d in _facts("predicate_performance")["devices"].items():
        finding = rows[d["k_number"]]
        assert words(d["finding"]) and words(d["finding"]) <= words(finding), (key, d["finding"], finding)
    assert words(_facts("predicate_performance")["devices"]["K211733"]["finding"]) == {"effusion", "pneumothorax"}


# --------------------------------------------------------------------------- the two documents

@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    import test_render_evidence as tre
    from submission.render import Renderer
    out = tre.build_run(tmp_path_factory.mktemp("se") / "run")
    r = Renderer(out, extra_figures={"flowchart": tre._png(out / "flowchart.png")})
    return out, {name: r.render(name) for name in ("substantial_equivalence", "labeling", "510k_submission")}


def _table_rows(markdown: str, first_cell: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in markdown.splitlines() if line.startswith(f"| {first_cell}")]


def test_documents_have_their_sections_and_only_traced_numbers(rendered):
    from submission.check import required_sections, untraced_numbers
    registry = _facts("required_sections")
    _, docs = rendered
    for name in ("substantial_equivalence", "labeling"):
        entry = registry[name]
        assert entry["in_submission"] is True and entry["title"]
        assert required_sections(docs[name].plain, entry["sections"]) == [], name
        assert untraced_numbers(docs[name].plain, docs[name].traces) == [], name
    assert registry["substantial_equivalence"]["estar"] == [9] and registry["labeling"]["estar"] == [11]


def test_se_table_names_the_primary_predicate_and_prints_every_status(rendered):
    _, docs = rendered
    se, devices = _facts("predicates"), _facts("predicate_performance")["devices"]
    primary = devices[se["primary"]]
    for md in (docs["substantial_equivalence"].plain, docs["510k_submission"].plain):
        header = _table_rows(md, "characteristic")[0]
        assert header[2] == f"primary predicate: {primary['name']}"
        assert [h.split(": ", 1)[1] for h in header[3:]] == [devices[i]["name"] for i in se["secondary"]]
        status = _table_rows(md, "510(k) number (status)")[0]
        assert status[2:] == [f"{devices[i]['k_number']} ({devices[i]['status']})" for i in (se["primary"], *se["secondary"])]
        sens = _table_rows(md, "sensitivity (interval as published)")[0]
        assert sens[2].startswith("94.65% (91.46% to 96.91%)")            # K191556 as published
    md = docs["substantial_equivalence"].plain
    assert f"Primary predicate: {primary['name']} ({primary['k_number']}, {primary['status']})" in md
    for key in (*se["secondary"], *se["reference_devices"], *se["considered"]):
        assert f"{devices[key]['k_number']}" in md and devices[key]["status"] in md


def test_se_discussion_faces_the_new_finding(rendered):
    md = rendered[1]["substantial_equivalence"].plain
    assert "De Novo" in md and "Pre-Submission" in md
    assert "does not conclude that the subject device is substantially equivalent" in md
    conclusion = md.split("## Conclusion", 1)[1]
    assert "Target finding" in conclusion and "What the reader sees" in conclusion


def test_labeling_prints_the_input_checks_of_record_workflow_dicom(rendered):
    from evidence import Store
    out, docs = rendered
    params = Store(out).get("workflow.dicom")["params"]
    md = docs["labeling"].plain
    cells = {row[0]: row[1] for row in (r for r in (_table_rows(md, c) for c in
             ("modality", "body part examined", "view (", "patient age (years)", "patient age missing",
              "bits stored", "rows and columns")) for r in r)}
    assert cells["modality"] == ", ".join(params["allowed_modalities"])
    assert cells["body part examined"] == ", ".join(params["allowed_body_parts"])
    assert cells["view (ViewPosition, else PatientPosition)"] == ", ".join(params["allowed_views"])
    assert cells["patient age (years)"] == f"{params['min_age_years']} to {params['max_age_years']}"
    assert cells["patient age missing"] == params["missing_age"]
    assert cells["bits stored"] == ", ".join(str(b) for b in params["allowed_bits_stored"])
    assert cells["rows and columns (pixels)"] == f"{params['min_rows_columns']:,} to {params['max_rows_columns']:,}"


def test_labeling_has_each_special_control_and_the_predictive_values_of_the_record(rendered):
    from evidence import Store
    out, docs = rendered
    md = docs["labeling"].plain
    for text in _facts("labeling")["special_controls"].values():
        assert text in md
    assert md.count("Rx only") >= 2
    rows = Store(out).value("validation.test", "ppv_npv_at_prevalence")
    printed = _table_rows(md, "")
    for row in rows:
        line = next(r for r in printed if r[0].startswith(f"{row['prevalence'] * 100:.1f}%"))
        assert f"{row['ppv_interval']['ci_low'] * 100:.1f}% to {row['ppv_interval']['ci_high'] * 100:.1f}%" in line[1]
        assert ("intended-use prevalence" in line[0]) is row["intended_use"]


def test_labeling_states_the_data_source_from_the_records(tmp_path):
    """Synthetic or not comes from the cohort record, never from the template."""
    import test_render_evidence as tre
    from submission.render import Renderer
    md = Renderer(tre.build_run(tmp_path / "a")).render("labeling").plain
    assert "synthetic demonstration cohort" in md
    md = Renderer(tre.build_run(tmp_path / "b", synthetic=False, source="nih")).render("labeling").plain
    assert "synthetic demonstration cohort" not in md
    assert "come from one public dataset" in md and "text-mined" in md      # NIH: its label accuracy


def test_labeling_shows_the_clinician_image_the_device_wrote(tmp_path):
    """What the user sees: the clinician image of a flagged study, taken from record workflow.dicom's outs."""
    import test_render_evidence as tre
    from evidence import Store, write_record
    from submission.render import Renderer
    out = tre.build_run(tmp_path / "run")
    rec = Store(out).get("workflow.dicom")
    png = tre._png(out / "workflow" / "case_01_ab12.png")
    files = [{**rec["data"]["files"][0], "clinician_image": "workflow/case_01_ab12.png"}, *rec["data"]["files"][1:]]
    write_record(out, "workflow.dicom", dep_records=["validation.threshold"], params=rec["params"],
                 data={**rec["data"], "files": files}, outs=[png])
    r = Renderer(out).render("labeling")
    assert "](../workflow/case_01_ab12.png)" in r.plain
    assert [f["record_id"] for f in r.figures] == ["workflow.dicom"]
