"""A full, plausible set of evidence records in a temporary run folder, for the render tests.

Layouts follow docs/records/*.md of each stage. Imported by the other submission tests.
"""
from __future__ import annotations

from pathlib import Path

from PIL import Image

from evidence import Store, write_record
from evidence.params import section
from evidence.prespecified import proof
from model.dicom import DEFAULT_RULES

REPO = Path(__file__).resolve().parent.parent
#: The performance goals of the fixture run, each with the estimate it judges.
CRITERIA = [{"metric": "auc", "method": "delong", "bound": "ci_low", "op": ">=", "value": 0.7, "primary": False,
             "justification": ["K191556"]},
            {"metric": "sensitivity", "method": "wilson", "bound": "ci_low", "op": ">=", "value": 0.6,
             "anticipated": 0.8, "justification": ["K191556", "K223491"]},
            {"metric": "specificity", "method": "wilson", "bound": "ci_low", "op": ">=", "value": 0.7,
             "anticipated": 0.85}]



def _at_prevalence(q: float, intended: bool = False) -> dict:
    """A `ppv_npv_at_prevalence` row as validation.evaluate writes it, for the confusion below."""
    from validation.stats import predictive_values_ci
    r = predictive_values_ci(tp=30, fp=28, tn=80, fn=6, prevalence=q)
    return {"prevalence": q, "intended_use": intended, "ppv": r["ppv"]["estimate"], "npv": r["npv"]["estimate"],
            "ppv_interval": r["ppv"], "npv_interval": r["npv"]}

def _png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (32, 24), color=128).save(path)
    return path


def _est(estimate, low, high, method="wilson", n=100, level=0.95):
    return {"estimate": estimate, "ci_low": low, "ci_high": high, "ci_level": level, "method": method, "n": n}


NE = {"estimable": False, "reason": "2 positives, fewer than the pre-specified 10"}


def _group(label, n, pos, se, sp):
    return {"label": label, "n": n, "n_positive": pos, "n_negative": n - pos, "prevalence": pos / n,
            "sensitivity": se, "specificity": sp}


def _htest(p, k=2):
    return ({"method": "fisher-exact", "p_value": p, "n_strata": 2, "n": 36, "min_expected": 3.5} if k == 2 else
            {"method": "pearson-chi-square", "statistic": 1.23, "df": k - 1, "p_value": p, "n_strata": k, "n": 36,
             "min_expected": 2.5})


def build_run(out: Path, *, synthetic: bool = True, source: str = "demo",
              study_description: str = "No Finding", prespecified: bool = True, pdf: bool = False) -> Path:
    """Write every record the submission templates cite, in pipeline order: the records the plan is
    rendered from, the plan and its lock (`submission.plan` stage; its PDF only with `pdf`), the test scores, then the
    test results (carrying the plan lock's proof unless `prespecified` is false); return the run folder."""
    from submission.plan import run as lock_plan
    from validation.acceptance import evaluate as evaluate_goals
    from validation.pccp_plan import run as change_control
    from validation.sample_size import run as design
    out = Path(out)
    ws: dict = {}
    write_record(out, "cohort.manifest", synthetic=synthetic,
                 data={"source": {"kind": source, "synthetic": synthetic}, "n_images": 960, "n_patients": 240}, **ws)
    write_record(out, "split.patients", dep_records=["cohort.manifest"],
                 data={"method": "patient-level random split (seeded)",
                       "leakage": {"patients_in_more_than_one_split": 0}}, **ws)
    split = lambda n, p, pos: {"images": n, "patients": p, "pneumonia_images": pos,  # noqa: E731
                               "pneumonia_patients": pos // 2, "prevalence": _est(pos / n, 0.2, 0.3, n=n),
                               "median_age_years": 47.0, "percent_female": 44.2, "percent_ap": 38.5}
    write_record(out, "eda.dataset", dep_records=["split.patients"], data={
        "splits": {"train": split(672, 168, 168), "val": split(144, 36, 36), "test": split(144, 36, 36)},
        "findings": [{"finding": "Effusion", "images": 51, "with_pneumonia": 12},
                     {"finding": "Infiltration", "images": 80, "with_pneumonia": 30}]}, **ws)
    agreement = {"n": 120, "sensitivity": _est(0.62, 0.5, 0.73, n=40), "ppv": _est(0.55, 0.43, 0.66, n=45),
                 "kappa": _est(0.41, 0.3, 0.52, method="wald-fleiss-cohen-everitt-1969", n=120)}
    quality = ({"citation": "Majkowska et al., Radiology 2019", "reference": "Airspace opacity",
                "matched_images": 120, "pneumonia": agreement,
                "caveats": ["Airspace opacity is not the same finding as pneumonia."]}
               if source == "nih" else {"estimable": False, "reason": "no expert labels for a demo cohort"})
    write_record(out, "eda.ground_truth", dep_records=["split.patients"], data={
        "source_kind": source,
        "labelling": {"method": "text-mined report labels",
                      "description": "labels text-mined from the radiology reports (NIH natural-language processing)."},
        "label_quality": quality}, **ws)
    curves = _png(out / "figures" / "training_curves.png")
    write_record(out, "training.run", dep_records=["split.patients"], outs=[curves],
                 params={"architecture": "small_cnn", "weights": "none", "image_size": 64, "channels": 1,
                         "batch_size": 32, "epochs": 12, "learning_rate": 0.001, "optimizer": "adam",
                         "early_stopping_patience": 4, "balance": "class_weight", "horizontal_flip": False,
                         "augmentation": {"rotation_deg": 5, "shift": 0.05, "zoom": 0.1, "brightness": 0.1,
                                          "contrast": 0.1},
                         "fine_tune": {"frozen_epochs": 0, "unfreeze_from": None,
                                       "fine_tune_learning_rate": 0.0001}, "seed": 7},
                 data={"architecture": "small_cnn", "weights": "none",
                       "parameters": {"total": 23457, "trainable": 23457}, "input_shape": [64, 64, 1],
                       "augmentation": {"rotation_deg": 5.0, "shift": 0.05, "zoom": 0.1, "brightness": 0.1,
                                        "contrast": 0.1, "horizontal_flip": False, "vertical_flip": False,
                                        "horizontal_flip_reason": "cardiac and situs anatomy are lateralized"},
                       "batch_size": 32, "optimizer": "adam", "learning_rate": 0.001,
                       "loss": "binary_crossentropy",
                       "schedule": {"epochs_max": 12, "epochs_run": 9, "steps_per_epoch": 21,
                                    "early_stopping": {"monitor": "val_auc", "mode": "max", "patience": 4},
                                    "frozen_epochs": 0, "unfreeze_from": None, "fine_tune_learning_rate": None},
                       "frozen_layers": {"n": 0, "names": []},
                       "balance": {"method": "class_weight", "description": "loss weights inverse to class frequency.",
                                   "class_weight": {"0": 0.67, "1": 2.0}},
                       "best_epoch": 5, "best_val_auc": 0.66, "seed": 7,
                       "history": [{"epoch": 1, "phase": "train", "loss": 0.7, "auc": 0.6, "val_loss": 0.71,
                                    "val_auc": 0.58}]}, **ws)
    write_record(out, "validation.threshold", dep_records=["training.run"],
                 data={"threshold": 0.4321, "rule": "max_f1", "decision": "positive when score >= threshold",
                       "split": "val"}, **ws)
    write_record(out, "workflow.dicom", dep_records=["validation.threshold"],
                 params={"allowed_modalities": ["DX", "CR"], "allowed_body_parts": ["CHEST"],
                         "allowed_views": ["AP", "PA"], "min_age_years": 18, "max_age_years": 100,
                         "missing_age": "reject", "allowed_bits_stored": [8, 12, 16],
                         "min_rows_columns": 32, "max_rows_columns": 8192},
                 data={"n_files": 2, "accepted": 1, "rejected": 1, "flagged": 1, "checks": dict(DEFAULT_RULES),
                       "controls": {"n": 1, "all_rejected_as_expected": True, "files": [
                           {"file": "workflow/dicom/control_modality_ct.dcm", "targets": "Modality",
                            "rejected_as_expected": True}]},
                       "files": [
                     {"file": "test1.dcm", "study_description": study_description, "accepted": True,
                      "status": "accepted", "prediction": True, "reason": "all header checks passed"},
                     {"file": "test5.dcm", "study_description": "Effusion", "accepted": False,
                      "reason": "Modality CT not in DX, CR"}]}, **ws)
    design(out, {**section(REPO / "params.yaml", "validate"), "acceptance": CRITERIA})
    change_control(out, section(REPO / "params.yaml", "pccp"))
    lock_plan(out, {}, by="Test Engineer", pdf=pdf)
    scores = out / "predictions" / "test.csv"
    scores.parent.mkdir(parents=True, exist_ok=True)
    scores.write_text("image_id,patient_id,label,score\nt1.png,p1,1,0.9\n")
    write_record(out, "model.test_predictions", dep_records=["training.run", "validation.plan_lock"], outs=[scores],
                 data={"test": {"n_images": 1, "n_patients": 1, "n_positive": 1, "score_mean": 0.9}})
    claim = {"prespecified": proof(out)} if prespecified else {}
    ws = {"dep_records": ["validation.threshold", "validation.plan_lock", "model.test_predictions"]}
    roc, pr = _png(out / "figures" / "roc_test.png"), _png(out / "figures" / "pr_test.png")
    metrics = {m: {"wilson": _est(e, e - 0.08, min(e + 0.07, 1.0)),
                   "clopper-pearson": _est(e, e - 0.09, min(e + 0.08, 1.0), method="clopper-pearson"),
                   "bootstrap": _est(e, e - 0.1, min(e + 0.09, 1.0), method="cluster-bootstrap-percentile")}
               for m, e in (("sensitivity", 0.8333), ("specificity", 0.7407), ("ppv", 0.5172),
                            ("npv", 0.9302), ("accuracy", 0.7639))}
    metrics["f1"] = {"bootstrap": _est(0.6383, 0.52, 0.74, method="cluster-bootstrap-percentile")}
    metrics["auc"] = {"delong": _est(0.8412, 0.77, 0.91, method="delong"),
                      "bootstrap": _est(0.8412, 0.76, 0.91, method="cluster-bootstrap-percentile")}
    write_record(out, "validation.test", outs=[roc, pr], **ws, data={**claim,
                     "threshold": 0.4321, "decision": "positive when score >= threshold", "split": "test",
                     "counts": {"n": 144, "n_patients": 36, "positives": 36, "negatives": 108, "prevalence": 0.25},
                     "confusion": {"tp": 30, "fp": 28, "tn": 80, "fn": 6},
                     "metrics": metrics,
                     "bootstrap": {"unit": "patient", "n_resamples": 2000, "seed": 0, "method": "percentile",
                                   "ci_level": 0.95},
                     "ppv_npv_at_prevalence": [_at_prevalence(0.013, intended=True), _at_prevalence(0.2)]})
    forest = _png(out / "figures" / "forest_test.png")
    write_record(out, "validation.subgroups", dep_records=["validation.test"],
                 outs=[forest], data={
                     "threshold": 0.4321, "min_subgroup_positives": 10, "min_subgroup_negatives": 10,
                     "ci_method": "wilson", "ci_level": 0.95,
                     "age_bands": [{"key": "18_40", "label": "18 to under 40 years"},
                                   {"key": "40_60", "label": "40 to under 60 years"}],
                     "groups": {
                         "sex": {"M": _group("male", 80, 20, _est(0.85, 0.64, 0.95, n=20), _est(0.75, 0.63, 0.84, n=60)),
                                 "F": _group("female", 64, 16, _est(0.8125, 0.57, 0.93, n=16), _est(0.73, 0.59, 0.83, n=48))},
                         "age_band": {"18_40": _group("18 to under 40 years", 8, 2, NE, _est(0.5, 0.19, 0.81, n=6))},
                         "age_out_of_scope": {"under_min": _group("younger than the intended use", 3, 1,
                                                                  {**NE, "reason": "1 positive, fewer than the pre-specified 10"},
                                                                  {**NE, "reason": "2 negatives, fewer than the pre-specified 10"}),
                                              "over_max": _group("older than the intended use", 1, 0,
                                                                 {**NE, "reason": "0 positives, fewer than the pre-specified 10"},
                                                                 {**NE, "reason": "1 negative, fewer than the pre-specified 10"}),
                                              "unknown": _group("age unknown", 2, 1,
                                                                {**NE, "reason": "1 positive, fewer than the pre-specified 10"},
                                                                {**NE, "reason": "1 negative, fewer than the pre-specified 10"})},
                         "view": {"AP": _group("AP", 56, 18, _est(0.83, 0.61, 0.94, n=18), _est(0.71, 0.55, 0.83, n=38))},
                         "finding": {"Effusion": {"with": _group("with Effusion", 20, 6, NE, _est(0.64, 0.39, 0.84, n=14)),
                                                  "without": _group("without Effusion", 124, 30, _est(0.8, 0.63, 0.9, n=30),
                                                                    _est(0.75, 0.65, 0.83, n=94))}}},
                     "heterogeneity": {"sex": {"sensitivity": _htest(0.71), "specificity": _htest(0.83)},
                                       "age_band": {"sensitivity": {"estimable": False, "reason": "1 stratum with an "
                                                                    "estimate: a heterogeneity test needs at least two"},
                                                    "specificity": _htest(0.41, 3)},
                                       "view": {"sensitivity": _htest(0.33), "specificity": _htest(0.52)},
                                       "finding": {"Effusion": {"sensitivity": _htest(0.2), "specificity": _htest(0.0004)}}},
                     "heterogeneity_statement": "descriptive: one test per variable and metric, without adjustment "
                                                "for multiplicity; no claim rests on it"})
    rel = _png(out / "figures" / "reliability_test.png")
    hist = _png(out / "figures" / "scores_test.png")
    write_record(out, "validation.calibration", dep_records=["validation.test"],
                 outs=[rel, hist], data={"n": 144, "brier_score": 0.1623, "ece": 0.0712,
                                         "ece_ci": _est(0.0712, 0.05, 0.12, method="cluster-bootstrap-percentile", n=144),
                                         "ece_bins": {"count": 9, "requested": 10, "binning": "quantile",
                                                      "scheme": "equal-count, tied scores share a bin"},
                                         "concentration": {"threshold": 0.4321, "window": 0.05, "n_within_window": 98,
                                                           "share_within_window": 0.6806, "share_rule": 0.5,
                                                           "equal_width_tenths_occupied": 1,
                                                           "all_in_threshold_tenth": True, "score_min": 0.41,
                                                           "score_q1": 0.42, "score_median": 0.43, "score_q3": 0.44,
                                                           "score_max": 0.47, "concentrated": True,
                                                           "definition": "at least half of the scores within the window"}})
    write_record(out, "validation.benchmark", dep_records=["validation.test"], data={
        "published": {"citation": "Rajpurkar et al., CheXNet, arXiv:1711.05225 (2017)", "url": "https://arxiv.org/abs/1711.05225",
                      "test_set": "420 NIH images read by 4 radiologists", "metric": "F1",
                      "values": {"radiologist average": _est(0.387, 0.330, 0.442, method="bootstrap", n=420),
                                 "CheXNet": _est(0.435, 0.387, 0.481, method="bootstrap", n=420)}},
        "ours": {"f1": _est(0.6383, 0.52, 0.74, method="cluster-bootstrap-percentile", n=144)},
        "comparable": False, "comparability": "different test sets and reference standards."})
    write_record(out, "validation.acceptance", dep_records=["validation.test"], data={**claim,
        **evaluate_goals(CRITERIA, metrics)})
    write_record(out, "workflow.latency", dep_records=["workflow.dicom"], data={
        "n_files": 2, "repeats": 5, "n_studies": 10,
        "median_seconds": _est(0.812, 0.75, 0.9, method="bootstrap-percentile", n=10),
        "p95_seconds": _est(1.42, 1.1, 1.6, method="bootstrap-percentile", n=10),
        "analyzed": {"n": 5, "median_seconds": _est(1.01, 0.9, 1.2, method="bootstrap-percentile", n=5),
                     "p95_seconds": _est(1.5, 1.2, 1.6, method="bootstrap-percentile", n=5)},
        "mean_seconds": 0.9, "max_seconds": 1.6, "throughput_per_minute": 70.5,
        "statuses": {"flagged": 2, "not_flagged": 3, "rejected": 5, "error": 0}, "all_results_delivered": True,
        "sender": {"software": "dcmtk storescu", "version": "3.6.7"},
        "receiver": {"software": "dcmtk storescp", "version": "3.6.7"},
        "platform": {"python": "3.11.7", "machine": "x86_64", "cpus": 2},
        "measurement": {"start": "the data set is received", "end": "the notification is written", "load": "one at a time"}},
    )
    from submission.sbom import run as write_sbom
    write_sbom(out, {})   # the real SBOM stage: it reads the lock and the installed metadata only
    from validation.monitoring_plan import DEFAULTS
    numeric = {"available": True, "kind": "numeric", "source": "manifest", "n": 144, "n_missing": 0,
               "edges": [0.2, 0.4], "shares": [0.3, 0.4, 0.3], "mean": 0.41, "sd": 0.2}
    write_record(out, "monitoring.plan", dep_records=["model.test_predictions", "workflow.dicom"], data={
        "limits": dict(DEFAULTS), "threshold": 0.5,
        "baseline": {"split": "test", "n_images": 144,
                     "scores": {"source": "predictions/test.csv", "n": 144, "edges": [0.2, 0.4], "shares": [0.3, 0.4, 0.3],
                                "mean": 0.38},
                     "flag_rate": {"flagged": 40, "n": 144, "estimate": 40 / 144, "threshold": 0.5},
                     "headers": {"view": {"available": True, "kind": "categorical", "source": "manifest", "n": 144,
                                          "shares": {"AP": 0.4, "PA": 0.6}},
                                 "sex": {"available": True, "kind": "categorical", "source": "manifest", "n": 144,
                                         "shares": {"F": 0.5, "M": 0.5}},
                                 "age_years": numeric,
                                 "pixel_spacing": {"available": False, "reason": "no value", "source": "manifest"},
                                 "manufacturer": {"available": False, "reason": "not in the manifest", "source": "manifest"}},
                     "rejection": {"n": 144, "outside": 3, "estimate": 3 / 144, "by_reason": {"age": 3, "view": 0},
                                   "source": "manifest"},
                     "image": {"mean": numeric, "std": numeric}}})
    return out


def test_builder_writes_valid_records(tmp_path):
    out = build_run(tmp_path)
    store = Store(out)
    assert "validation.test" in store.ids() and "pccp.plan" in store.ids() and len(store.ids()) == 21
    assert store.value("validation.test", "confusion.tp") == 30
    assert store.get("validation.test")["synthetic"] is True
