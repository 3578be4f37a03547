"""validation.heldout end to end: a held-out DICOM set built from real NIH 64px images, a tiny
model trained on other NIH images, a locked plan; plus plan tampering and labels.csv problems."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from statsmodels.stats.proportion import proportion_confint

from evidence import atomic, layout, read_record, write_record
from model import dicom
from validation import heldout
from test_infer import make_device, nih_64px_table

CRITERIA = [{"metric": "auc", "bound": "ci_low", "op": ">=", "value": 0.7},
            {"metric": "sensitivity", "bound": "estimate", "op": ">=", "value": 0.0}]


def _pixels(path: str) -> np.ndarray:
    from PIL import Image
    return np.asarray(Image.open(path).convert("L"), dtype=np.uint8)


def _lock_plan(out: Path) -> None:
    from validation_runs import lock_plan, params_file

    (out.parent / "params").mkdir(exist_ok=True)
    params = params_file(out.parent / "params", Path(__file__).resolve().parent.parent, acceptance=CRITERIA)
    lock_plan(out, params)


@pytest.fixture(scope="module")
def nih(nih_dir):
    return nih_64px_table(nih_dir)


@pytest.fixture(scope="module")
def locked_run(tmp_path_factory, nih):
    """A run folder: a tiny CNN trained briefly on NIH images of patients not in the held-out set."""
    import keras

    out = make_device(tmp_path_factory.mktemp("main"), threshold=0.5)
    held_patients = set(_heldout_rows(nih)["patient_id"])
    train = nih[~nih["patient_id"].isin(held_patients)].head(300)
    x = np.stack([_pixels(p) for p in train["path"]])[..., None].astype(np.float32) / 255.0
    y = train["pneumonia"].to_numpy()
    model = keras.models.load_model(out / "models" / "model.keras")
    model.compile(optimizer="adam", loss="binary_crossentropy")
    model.fit(x, y, epochs=2, batch_size=32, verbose=0, class_weight={0: 1.0, 1: float(len(y) / max(1, y.sum()))})
    model.save(out / "models" / "model.keras")
    write_record(out, "training.run", data={"architecture": "tiny", "n_train": int(len(y))},
                 outs=[out / "models" / "model.keras", out / "models" / "preprocessing.json"],
                 dep_records=["cohort.manifest"])
    write_record(out, "validation.threshold", data={"threshold": 0.5},
                 dep_records=["training.run"])
    _lock_plan(out)
    return out


def _hout(out: Path, folder: Path) -> Path:
    return layout.heldout(out, heldout.folder_name(folder))


def _heldout_rows(nih: pd.DataFrame) -> pd.DataFrame:
    pos = nih[nih["pneumonia"] == 1]
    neg = nih[(nih["pneumonia"] == 0) & ~nih["patient_id"].isin(pos["patient_id"])].head(30)
    return pd.concat([pos, neg])


def build_heldout(folder: Path, rows: pd.DataFrame) -> pd.DataFrame:
    """DICOMs at two depths from the images, labels.csv with the NIH labels and one reader column."""
    records = []
    for i, r in enumerate(rows.itertuples()):
        sub = folder / ("site_a" if i % 2 else "site_b/day1")
        ds = dicom.build_dataset(_pixels(r.path), view=r.view, age=dicom.age_string(r.age_years), sex=r.sex,
                                 patient_id=r.patient_id, study_description=r.finding_labels)
        name = f"{Path(r.image_id).stem}.dcm"
        dicom.save(ds, sub / name)
        records.append({"file": (sub / name).relative_to(folder).as_posix(), "label": int(r.pneumonia),
                        "patient_id": r.patient_id, "reader_a": int(r.pneumonia) if i % 3 else 1 - int(r.pneumonia)})
    labels = pd.DataFrame(records)
    labels.to_csv(folder / "labels.csv", index=False)
    return labels


@pytest.mark.verifies("SRS-021")
@pytest.mark.slow
def test_heldout_end_to_end(locked_run, nih, tmp_path):
    folder = tmp_path / "site_x"
    rows = _heldout_rows(nih)
    labels = build_heldout(folder, rows)
    # a lateral view, a child and a hostile body part: rejected by the header checks
    extra = nih[~nih["image_id"].isin(rows["image_id"])].head(3)
    for r, kw in zip(extra.itertuples(), ({"view": "LL", "age": "050Y"}, {"view": "PA", "age": "010Y"},
                                          {"view": "PA", "age": "050Y", "body_part": "<script>"})):
        dicom.save(dicom.build_dataset(_pixels(r.path), patient_id=r.patient_id, **kw), folder / f"x_{r.image_id}.dcm")
        labels.loc[len(labels)] = {"file": f"x_{r.image_id}.dcm", "label": 0, "patient_id": r.patient_id, "reader_a": 0}
    labels.to_csv(folder / "labels.csv", index=False)

    params = tmp_path / "params.yaml"
    params.write_text("validate: {ci_level: 0.95, bootstrap_resamples: 200, bootstrap_seed: 3, min_subgroup_positives: 5, min_subgroup_negatives: 5}\n"
                      "workflow: {allowed_modalities: [DX, CR]}\nsubmission: {}\n")
    from submission import render  # noqa: F401  (the renderer must exist for the report)
    template = Path(heldout.__file__).resolve().parent.parent / "templates" / "heldout_report.md.j2"
    assert template.is_file()
    assert heldout.main(["--out", str(locked_run), "--heldout", str(folder), "--params", str(params)]) == 0

    hout = _hout(locked_run, folder)
    assert hout.name.startswith("site_x-") and len(hout.name) == len("site_x-") + 12
    intake = read_record(hout, "heldout.intake")["data"]
    assert intake["counts"] == {"accepted": len(rows), "rejected": 3, "error": 0}
    assert intake["label_problems"] == [] and intake["unlabelled_files"] == []
    rejected = {f["file"]: f["reasons"] for f in intake["files"] if f["status"] == "rejected"}
    assert any("view LL" in r[0] for r in rejected.values()) and any("PatientAge 10" in r[0] for r in rejected.values())

    m = read_record(hout, "heldout.metrics")["data"]
    # independent recomputation: scores from model.infer on the same files, then sklearn/statsmodels
    from model.infer import classify, load_device
    device = load_device(locked_run)
    scores = {Path(r["file"]).relative_to(folder).as_posix(): r["probability"]
              for r in classify([folder / f for f in labels["file"][:len(rows)]], device)}
    y = labels["label"][:len(rows)].to_numpy()
    s = np.array([scores[f] for f in labels["file"][:len(rows)]])
    assert m["counts"]["n"] == len(rows) and m["counts"]["positives"] == int(y.sum())
    assert m["metrics"]["auc"]["delong"]["estimate"] == pytest.approx(roc_auc_score(y, s), abs=1e-9)
    tp = int(((s >= 0.5) & (y == 1)).sum())
    lo, hi = proportion_confint(tp, int(y.sum()), alpha=0.05, method="wilson")
    sens = m["metrics"]["sensitivity"]["wilson"]
    assert (sens["estimate"], sens["ci_low"], sens["ci_high"]) == pytest.approx((tp / y.sum(), lo, hi), abs=1e-9)
    assert m["metrics"]["sensitivity"]["bootstrap"]["n_resamples"] == 200
    assert m["readers"]["reader_a"]["n_reads"] == len(rows)

    verdict = read_record(hout, "heldout.acceptance")["data"]
    assert [c["metric"] for c in verdict["criteria"]] == ["auc", "sensitivity"]
    assert verdict["criteria"][1]["passed"] is True
    auc_method = verdict["criteria"][0]["method"]
    assert verdict["criteria"][0]["observed"] == m["metrics"]["auc"][auc_method]["ci_low"]
    assert verdict["all_passed"] == (m["metrics"]["auc"][auc_method]["ci_low"] >= 0.7)
    lock = read_record(hout, "heldout.plan_lock")
    plan_lock = read_record(locked_run, "validation.plan_lock")
    assert lock["data"]["acceptance_criteria"] == [{**c, "value": float(c["value"]), "method": "bootstrap"} for c in CRITERIA]
    assert lock["data"]["plan_record"] == "validation.plan_lock" and lock["data"]["plan_record_sha256"] == plan_lock["sha256"]
    assert lock["data"]["plan_files"] == plan_lock["data"]["plan_files"] and lock["data"]["plan_locked_by"] == "Test Engineer"
    assert lock["created_utc"] <= read_record(hout, "heldout.intake")["created_utc"]
    dep_paths = {d["path"] for d in read_record(hout, "heldout.metrics")["deps"]["files"]}
    assert str((locked_run / "models" / "model.keras").resolve()) in dep_paths
    sub = read_record(hout, "heldout.subgroups")["data"]["groups"]
    assert sub["sex"]["M"]["n"] + sub["sex"]["F"]["n"] + sub["sex"]["unknown"]["n"] == len(rows)
    # DICOM headers carry no finding labels; the site and scanner strata come from InstitutionName / Manufacturer
    assert set(sub) == {"sex", "age_band", "age_out_of_scope", "view", "site", "manufacturer"}
    assert sum(g["n"] for g in sub["manufacturer"].values()) == len(rows)
    het = read_record(hout, "heldout.subgroups")["data"]["heterogeneity"]
    assert {"site", "manufacturer", "sex", "view"} <= set(het)

    # per-image predictions: one row per labelled file, hashed, recomputed by the audit
    pred = pd.read_csv(hout / "predictions.csv", dtype=str, keep_default_na=False)
    assert list(pred["file"]) == list(labels["file"])
    assert (pred.loc[pred["status"] != "accepted", "score"] == "").all()
    assert {f: float(x) for f, x in zip(pred["file"], pred["score"]) if x} == pytest.approx(scores, abs=1e-6)  # batched float32
    assert "predictions.csv" in {o["path"] for o in read_record(hout, "heldout.intake")["outs"]}
    assert "predictions.csv" in {d["path"] for d in read_record(hout, "heldout.metrics")["deps"]["files"]}
    from evidence import recompute
    from evidence.audit import audit_run
    assert recompute.check_heldout(hout, 0.5) == []
    assert audit_run(hout, check_code=False, out=locked_run)[0] == []
    rej = intake["rejection"]
    assert (rej["n"], rej["rejected"], rej["error"]) == (len(rows) + 3, 3, 0)
    lo, hi = proportion_confint(3, len(rows) + 3, alpha=0.05, method="beta")
    assert (rej["rate"]["rejected"]["ci_low"], rej["rate"]["rejected"]["ci_high"]) == pytest.approx((lo, hi), abs=1e-9)
    assert {k: v["n_files"] for k, v in rej["by_reason"].items()} == {"body_part": 1, "view": 1, "age": 1}
    ae = m["all_enrolled"]
    assert ae["counts"]["negatives_not_analyzed"] == 3 and ae["confusion"]["tn"] == m["confusion"]["tn"] + 3
    assert ae["confusion"]["tp"] == m["confusion"]["tp"] and ae["confusion"]["fn"] == m["confusion"]["fn"]

    report = (hout / "submission" / "heldout_report.md").read_text()
    assert "Held-out Clinical Revalidation Report" in report
    assert "### Input-rejection rate" in report and "### All enrolled beside per protocol" in report
    assert "| rejected by the header checks | 3 of " in report and "Clopper-Pearson exact" in report
    assert ("did not meet" in report) != verdict["all_passed"]
    assert "view LL (from ViewPosition)" in report and "roc_heldout.png" in report and "(accepted)" not in report
    from submission.check import check
    # every number in the report is traced, no empty cells, no nan/None/undefined
    assert check(hout) == []
    page = (hout / "submission" / "heldout_report.html").read_text()
    assert "BodyPartExamined" in page and "<SCRIPT>" not in page.upper().replace("&LT;SCRIPT&GT;", "")


@pytest.mark.verifies("SRS-021")
def test_tampered_plan_is_refused_before_reading(locked_run, tmp_path, capsys):
    out = tmp_path / "main"
    shutil.copytree(locked_run, out, ignore=shutil.ignore_patterns("heldout"))
    (out / "submission" / "validation_plan.md").write_text("edited after locking\n")
    folder = tmp_path / "set"
    folder.mkdir()  # no labels.csv: the plan check must fail first
    params = tmp_path / "p.yaml"
    params.write_text("validate: {}\n")
    assert heldout.main(["--out", str(out), "--heldout", str(folder), "--params", str(params)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: record validation.plan_lock: plan file submission/validation_plan.md: expected")
    assert err.endswith("refusing to run the held-out set") and "\n" not in err
    assert list((out / "heldout").iterdir()) == []   # no record, no folder, no staging folder left


def test_labels_csv_problems(locked_run, nih, tmp_path):
    folder = tmp_path / "messy"
    rows = _heldout_rows(nih).head(14)
    labels = build_heldout(folder, rows)
    first, second = labels["file"][0], labels["file"][1]
    labels = labels.drop(index=[2])                                 # a DICOM without a label
    labels.loc[len(labels) + 10] = {"file": first, "label": 1, "patient_id": "p", "reader_a": 1}  # duplicate
    labels.loc[len(labels) + 11] = {"file": "missing.dcm", "label": 0, "patient_id": "p", "reader_a": 0}
    labels.loc[len(labels) + 12] = {"file": f"./{second}", "label": labels["label"][1], "patient_id": "p",
                                    "reader_a": 0}   # the same file by another path, the same label
    labels["label"] = labels["label"].astype(object)
    labels.loc[labels.index[3], "label"] = "yes"
    labels.to_csv(folder / "labels.csv", index=False)
    (folder / "notes.txt").write_text("<script>alert(1)</script>")   # not a DICOM, not labelled
    params = tmp_path / "p.yaml"
    params.write_text("validate: {bootstrap_resamples: 100, min_subgroup_positives: 5, min_subgroup_negatives: 5}\n")
    heldout.run(locked_run, folder, params, render=False)
    intake = read_record(_hout(locked_run, folder), "heldout.intake")["data"]
    kinds = sorted(q["problem"] for q in intake["label_problems"])
    assert kinds == ["bad_label", "duplicate", "duplicate", "unknown_file"]   # each duplicate kept once
    unlabelled = {q["file"]: q["status"] for q in intake["unlabelled_files"]}
    assert unlabelled == {labels_file_of(rows, 2): "accepted", "notes.txt": "error"}
    assert intake["n_labelled_files"] == len(rows) - 1 - 1  # minus unlabelled and bad label; duplicates counted once
    dup = [q for q in intake["label_problems"] if q["problem"] == "duplicate"]
    assert [q["file"] for q in dup] == [first, f"./{second}"]
    assert dup[0]["detail"].startswith("same file as line 2 (")
    json.dumps(intake, allow_nan=False)


def test_reader_column_that_is_not_an_identifier(locked_run, nih, tmp_path):
    folder = tmp_path / "readers"
    labels = build_heldout(folder, _heldout_rows(nih).head(8)).rename(columns={"reader_a": "Reader 1"})
    labels.to_csv(folder / "labels.csv", index=False)
    params = tmp_path / "p.yaml"
    params.write_text("validate: {bootstrap_resamples: 100, min_subgroup_positives: 5, min_subgroup_negatives: 5}\n")
    heldout.run(locked_run, folder, params, render=False)
    readers = read_record(_hout(locked_run, folder), "heldout.metrics")["data"]["readers"]
    assert list(readers) == ["Reader 1"] and readers["Reader 1"]["n_reads"] == len(labels)


def test_rows_naming_files_the_run_skips_are_unknown_files(locked_run, nih, tmp_path):
    folder = tmp_path / "skipped"
    rows = _heldout_rows(nih).head(6)
    labels = build_heldout(folder, rows)
    shutil.copy(folder / labels["file"][0], folder / ".hid.dcm")
    (folder / ".hid").mkdir()
    shutil.copy(folder / labels["file"][0], folder / ".hid" / "a.dcm")
    for name in (".hid/a.dcm", ".hid.dcm", "labels.csv", "site_a"):
        labels.loc[len(labels)] = {"file": name, "label": 0, "patient_id": "p", "reader_a": 0}
    labels.to_csv(folder / "labels.csv", index=False)
    params = tmp_path / "p.yaml"
    params.write_text("validate: {bootstrap_resamples: 100, min_subgroup_positives: 5, min_subgroup_negatives: 5}\n")
    heldout.run(locked_run, folder, params, render=False)
    intake = read_record(_hout(locked_run, folder), "heldout.intake")["data"]
    assert [(q["file"], q["problem"]) for q in intake["label_problems"]] == [
        (".hid/a.dcm", "unknown_file"), (".hid.dcm", "unknown_file"), ("labels.csv", "unknown_file"),
        ("site_a", "unknown_file")]
    assert intake["n_labelled_files"] == len(rows) and intake["unlabelled_files"] == []


def labels_file_of(rows: pd.DataFrame, i: int) -> str:
    sub = "site_a" if i % 2 else "site_b/day1"
    return f"{sub}/{Path(rows['image_id'].iloc[i]).stem}.dcm"


def test_missing_labels_csv_is_one_line_error(locked_run, tmp_path, capsys):
    folder = tmp_path / "nolabels"
    folder.mkdir()
    params = tmp_path / "p.yaml"
    params.write_text("validate: {}\n")
    assert heldout.main(["--out", str(locked_run), "--heldout", str(folder), "--params", str(params)]) == 2
    err = capsys.readouterr().err.strip()
    assert "labels.csv: not found" in err and "\n" not in err
    assert not [p for p in (locked_run / "heldout").iterdir() if p.name.startswith((".nolabels", "nolabels"))]


def test_a_set_already_run_is_never_overwritten_and_a_changed_set_gets_its_own_folder(locked_run, nih, tmp_path, capsys):
    folder = tmp_path / "again"
    labels = build_heldout(folder, _heldout_rows(nih).head(8))
    params = tmp_path / "p.yaml"
    params.write_text("validate: {bootstrap_resamples: 100, min_subgroup_positives: 5, min_subgroup_negatives: 5}\n")
    heldout.run(locked_run, folder, params, render=False)
    first = _hout(locked_run, folder)
    before = {p: p.read_bytes() for p in first.rglob("*") if p.is_file()}
    assert read_record(first, "heldout.intake")["data"]["content_sha256"].startswith(first.name[-12:])
    argv = ["--out", str(locked_run), "--heldout", str(folder), "--params", str(params), "--no-report"]
    assert heldout.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {first}: exists: this held-out set (same files and labels.csv) has been run; its "
                   "evidence is never overwritten (remove that folder to run the set again)")
    assert {p: p.read_bytes() for p in first.rglob("*") if p.is_file()} == before
    labels.loc[0, "label"] = 1 - int(labels.loc[0, "label"])     # one label changed: another set
    labels.to_csv(folder / "labels.csv", index=False)
    heldout.run(locked_run, folder, params, render=False)
    assert _hout(locked_run, folder) != first and _hout(locked_run, folder).is_dir() and first.is_dir()
    assert not [p for p in (locked_run / "heldout").iterdir() if p.name.startswith(".")]


def test_content_hash_follows_files_and_names_not_creation_order(tmp_path):
    a, b = tmp_path / "set", tmp_path / "other" / "set"
    for folder, order in ((a, ("x.dcm", "y/z.dcm")), (b, ("y/z.dcm", "x.dcm"))):
        for name in order:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(name.encode())
        (folder / "labels.csv").write_text("file,label\nx.dcm,1\ny/z.dcm,0\n")
    assert heldout.folder_name(a) == heldout.folder_name(b)
    (b / "y" / "z.dcm").write_bytes(b"changed")
    assert heldout.folder_name(a) != heldout.folder_name(b)
    (b / "y" / "z.dcm").write_bytes(b"y/z.dcm")
    (b / "labels.csv").write_text("file,label\nx.dcm,1\ny/z.dcm,1\n")
    assert heldout.folder_name(a) != heldout.folder_name(b)


def test_a_failed_run_leaves_no_record_and_no_folder(locked_run, nih, tmp_path, capsys):
    folder = tmp_path / "badlabels"
    build_heldout(folder, _heldout_rows(nih).head(4))
    (folder / "labels.csv").write_text("file,diagnosis\nsite_a/x.dcm,1\n")
    params = tmp_path / "p.yaml"
    params.write_text("validate: {}\n")
    before = set((locked_run / "heldout").iterdir()) if (locked_run / "heldout").is_dir() else set()
    assert heldout.main(["--out", str(locked_run), "--heldout", str(folder), "--params", str(params)]) == 2
    assert "missing column(s) label" in capsys.readouterr().err
    assert set((locked_run / "heldout").iterdir()) == before


def _est(x, lo, hi, method):
    return {"estimate": x, "ci_low": lo, "ci_high": hi, "ci_level": 0.95, "method": method, "n": 100}


@pytest.mark.verifies("SRS-021")
def test_heldout_judges_with_the_method_the_plan_locked(tmp_path):
    from test_render_evidence import build_run
    from validation.acceptance import evaluate

    out = build_run(tmp_path / "run")
    lock, _ = heldout.lock_plan(out, tmp_path / "hout")
    criteria = lock["data"]["acceptance_criteria"]
    metrics = {"auc": {"delong": _est(0.8, 0.72, 0.88, "delong"), "bootstrap": _est(0.8, 0.65, 0.9, "x")},
               "sensitivity": {"wilson": _est(0.8, 0.7, 0.9, "wilson"), "bootstrap": _est(0.8, 0.5, 0.9, "x")},
               "specificity": {"wilson": _est(0.8, 0.71, 0.9, "wilson"), "bootstrap": _est(0.8, 0.5, 0.9, "x")}}
    verdict = evaluate(criteria, metrics)
    assert [c["method"] for c in verdict["criteria"]] == ["delong", "wilson", "wilson"]
    assert [c["observed"] for c in verdict["criteria"]] == [0.72, 0.7, 0.71] and verdict["all_passed"]


def test_patient_id_taken_from_the_inference_result():
    row = {"file": "a.dcm", "row": 2}
    result = {"file": "/no/such/a.dcm", "status": "accepted", "patient_id": "P7"}
    assert heldout._patient_id(row, result) == "P7"
    assert heldout._patient_id(row, {**result, "patient_id": ""}) == "file:a.dcm"
    assert heldout._patient_id({"file": "a.dcm", "patient_id": "L1"}, result) == "L1"


def test_reader_metrics_count_each_read():
    df = pd.DataFrame({"label": [1, 1, 0, 0, 0], "reader_a": ["1", "0", "0", "1", "x"]})
    r = heldout.reader_metrics(df, ["reader_a"], 0.95)["reader_a"]
    assert r["confusion"] == {"tp": 1, "fp": 1, "tn": 1, "fn": 1}
    assert r["n_reads"] == 4 and r["n_missing_or_invalid"] == 1
    assert r["sensitivity"]["estimate"] == 0.5 and r["specificity"]["estimate"] == 0.5


def test_heldout_params_use_the_shared_checker(tmp_path):
    from evidence.params import ParamsError
    params = tmp_path / "params.yaml"
    params.write_text("heldout: {ci_level: true}\n")
    with pytest.raises(ParamsError, match=r"heldout\.ci_level must be a number in \(0, 1\)"):
        heldout.heldout_params(params)
    params.write_text("validate: {bootstrap_resamples: 50}\n")
    with pytest.raises(ParamsError, match=r"validate\.bootstrap_resamples must be an integer >= 100"):
        heldout.heldout_params(params)
    params.write_text("heldout: {min_subgroup_positives: 3}\n")
    p, name = heldout.heldout_params(params)
    assert name == "heldout" and p["min_subgroup_positives"] == 3 and p["bootstrap_resamples"] == 2000


def test_roc_figure_is_written(tmp_path):
    df = pd.DataFrame({"label": [0, 0, 1, 1, 0, 1], "score": [0.1, 0.4, 0.35, 0.8, 0.2, 0.9]})
    path = heldout.roc_figure(df, 0.5, tmp_path / "figures" / "roc_heldout.png", "site_$x_")
    assert path.read_bytes()[:4] == b"\x89PNG"


# ----------------------------------------------------------------------------- inputs and failures counted

def test_reason_categories_of_the_header_checks_own_messages():
    pixels = np.full((96, 96), 100, dtype=np.uint8)
    cases = [({"view": "LL", "age": "010Y"}, ["view", "age"]),
             ({"modality": "CT", "body_part": None}, ["modality", "body_part"]),
             ({"view": None, "age": "3 years"}, ["view", "age"])]
    for kw, expected in cases:
        check = dicom.check_header(dicom.build_dataset(pixels, **{"age": "050Y", **kw}))
        assert check.status == "rejected"
        assert heldout.reason_categories(check.status, check.codes) == expected, check.reasons
    small = dicom.check_header(dicom.build_dataset(np.full((8, 8), 1, dtype=np.uint8), age="050Y"))
    assert heldout.reason_categories(small.status, small.codes) == ["image_format"]   # Rows and Columns: once
    assert heldout.reason_categories("error", ["not_dicom"]) == ["unreadable"]
    assert heldout.reason_categories("error", ["decode_error"]) == ["decode_error"]
    assert heldout.reason_categories("rejected", ["blank_image"]) == ["blank_image"]
    assert heldout.reason_categories("rejected", ["something new"]) == ["other"]
    # grouped by code, not by message: a reworded message keeps its category
    assert heldout.reason_categories("rejected", ["view_missing"]) == ["view"]
    assert heldout.reason_categories("accepted", []) == []


def test_rejection_rate_exact_interval_against_scipy_and_statsmodels():
    from scipy.stats import binomtest

    files = ([{"label": 1, "status": "rejected", "reason_categories": ["view", "age"]}] * 3
             + [{"label": 0, "status": "rejected", "reason_categories": ["view"]}] * 4
             + [{"label": 0, "status": "error", "reason_categories": ["unreadable"]}] * 2
             + [{"label": 1, "status": "accepted", "reason_categories": []}] * 17
             + [{"label": 0, "status": "accepted", "reason_categories": []}] * 24)
    r = heldout.rejection_data(files, 0.95)
    assert (r["n"], r["rejected"], r["error"], r["not_analyzed"]) == (50, 7, 2, 9)
    for key, k, n in (("rejected", 7, 50), ("error", 2, 50), ("not_analyzed", 9, 50)):
        e = r["rate"][key]
        exact = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
        lo, hi = proportion_confint(k, n, alpha=0.05, method="beta")
        assert e["method"] == "clopper-pearson" and e["n"] == n
        assert (e["estimate"], e["ci_low"], e["ci_high"]) == pytest.approx((k / n, exact.low, exact.high), abs=1e-9)
        assert (e["ci_low"], e["ci_high"]) == pytest.approx((lo, hi), abs=1e-9)
    # a file with reasons in two categories counts once in each: the categories sum to more than the files
    assert {k: v["n_files"] for k, v in r["by_reason"].items()} == {"view": 7, "age": 3, "unreadable": 2}
    assert sum(v["n_files"] for v in r["by_reason"].values()) > r["not_analyzed"]
    assert r["by_reason"]["age"]["rate"]["estimate"] == pytest.approx(3 / 50)
    pos, neg = r["by_label"]["positives"], r["by_label"]["negatives"]
    assert (pos["n"], pos["not_analyzed"], neg["n"], neg["not_analyzed"]) == (20, 3, 30, 6)
    lo, hi = proportion_confint(3, 20, alpha=0.05, method="beta")
    assert (pos["rate"]["not_analyzed"]["ci_low"], pos["rate"]["not_analyzed"]["ci_high"]) == pytest.approx((lo, hi))
    empty = heldout.rejection_data([], 0.95)
    assert empty["rate"]["rejected"]["estimable"] is False and empty["by_reason"] == {}


def test_all_enrolled_counts_not_analyzed_positives_as_misses():
    df = pd.DataFrame({"label": [1, 1, 1, 1, 0, 0, 0, 0, 0],
                       "status": ["accepted", "accepted", "rejected", "error", "accepted", "accepted", "accepted",
                                  "rejected", "error"],
                       "score": [0.9, 0.2, None, None, 0.7, 0.1, 0.3, None, None]})
    ae = heldout.all_enrolled_data(df, 0.5, 0.95)
    assert ae["per_protocol"]["confusion"] == {"tp": 1, "fp": 1, "tn": 2, "fn": 1}
    assert ae["confusion"] == {"tp": 1, "fp": 1, "tn": 4, "fn": 3}
    sens = ae["metrics"]["sensitivity"]["clopper-pearson"]
    lo, hi = proportion_confint(1, 4, alpha=0.05, method="beta")
    assert (sens["estimate"], sens["ci_low"], sens["ci_high"]) == pytest.approx((0.25, lo, hi))
    assert ae["metrics"]["specificity"]["wilson"]["estimate"] == pytest.approx(4 / 5)
    assert ae["per_protocol"]["metrics"]["sensitivity"]["wilson"]["estimate"] == pytest.approx(1 / 2)
    assert ae["counts"] == {"n": 9, "positives": 4, "negatives": 5, "positives_not_analyzed": 2,
                            "negatives_not_analyzed": 2}
    none = heldout.all_enrolled_data(df.assign(status="rejected", score=None), 0.5, 0.95)
    assert none["per_protocol"]["metrics"]["sensitivity"]["wilson"]["estimable"] is False
    assert none["metrics"]["sensitivity"]["wilson"]["estimate"] == 0.0


def _small_params(tmp_path: Path) -> Path:
    params = tmp_path / "p.yaml"
    params.write_text("validate: {bootstrap_resamples: 100, min_subgroup_positives: 5, min_subgroup_negatives: 5}\n")
    return params


@pytest.mark.parametrize("how", ["dot", "double_slash", "symlink", "symlink_loop", "copy"])
def test_one_image_named_twice_with_opposite_labels_is_an_error_naming_both_rows(locked_run, nih, tmp_path, capsys, how):
    folder = tmp_path / f"twice_{how}"
    labels = build_heldout(folder, _heldout_rows(nih).head(6))
    first = labels["file"][0]
    other = {"dot": f"./{first}", "double_slash": first.replace("/", "//", 1), "symlink": "alias.dcm",
             "symlink_loop": f"loop/{first}", "copy": "copy.dcm"}[how]
    if how == "symlink":
        (folder / "alias.dcm").symlink_to(folder / first)
    elif how == "symlink_loop":
        (folder / "loop").symlink_to(folder)
    elif how == "copy":
        shutil.copy(folder / first, folder / "copy.dcm")
    labels.loc[len(labels)] = {"file": other, "label": 1 - int(labels["label"][0]), "patient_id": "p", "reader_a": 0}
    labels.to_csv(folder / "labels.csv", index=False)
    argv = ["--out", str(locked_run), "--heldout", str(folder), "--params", str(_small_params(tmp_path)), "--no-report"]
    assert heldout.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"error: {folder / 'labels.csv'}: line 2 ({first}, label ")
    assert f"and line {len(labels) + 1} ({other}, label " in err and "with different labels" in err
    assert not [p for p in (locked_run / "heldout").iterdir() if p.name.startswith((f"twice_{how}", f".twice_{how}"))]


def test_an_image_reached_twice_with_one_label_is_counted_once(locked_run, nih, tmp_path):
    folder = tmp_path / "once"
    rows = _heldout_rows(nih).head(6)
    labels = build_heldout(folder, rows)
    first = labels["file"][0]
    (folder / "alias.dcm").symlink_to(folder / first)          # a second path in the folder, also labelled
    shutil.copy(folder / labels["file"][1], folder / "copy.dcm")   # the same bytes, unlabelled
    labels.loc[len(labels)] = {"file": "alias.dcm", "label": labels["label"][0], "patient_id": "p", "reader_a": 0}
    labels.to_csv(folder / "labels.csv", index=False)
    heldout.run(locked_run, folder, _small_params(tmp_path), render=False)
    hout = _hout(locked_run, folder)
    intake = read_record(hout, "heldout.intake")["data"]
    assert intake["n_labelled_files"] == len(rows) and sum(intake["counts"].values()) == len(rows)
    assert [(q["file"], q["problem"]) for q in intake["label_problems"]] == [("alias.dcm", "duplicate")]
    assert [q["file"] for q in intake["unlabelled_files"]] == ["copy.dcm"]
    assert len(pd.read_csv(hout / layout.HELDOUT_PREDICTIONS)) == len(rows)


def test_paths_outside_the_set_are_refused_unless_allowed(locked_run, nih, tmp_path, capsys):
    folder = tmp_path / "inside"
    rows = _heldout_rows(nih).head(6)
    labels = build_heldout(folder, rows)
    outside = tmp_path / "outside.dcm"
    shutil.copy(folder / labels["file"][0], outside)
    (folder / labels["file"][0]).unlink()
    labels.loc[0, "file"] = "../outside.dcm"
    labels.to_csv(folder / "labels.csv", index=False)
    params = _small_params(tmp_path)
    argv = ["--out", str(locked_run), "--heldout", str(folder), "--params", str(params), "--no-report"]
    assert heldout.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {folder / 'labels.csv'}: line 2: '../outside.dcm' resolves to {outside.resolve()}, "
                          "outside the data folder") and err.endswith("--allow-outside") and "\n" not in err
    assert heldout.main([*argv, "--allow-outside"]) == 0
    out = capsys.readouterr()
    hout = _hout(locked_run, folder).parent / [p.name for p in _hout(locked_run, folder).parent.iterdir()
                                              if p.name.startswith("inside-")][0]
    assert f"records in {hout / 'evidence'}" in out.out + out.err
    intake = read_record(hout, "heldout.intake")["data"]
    assert intake["n_labelled_files"] == len(rows) and intake["label_problems"] == []
    assert intake["files"][0]["file"] == "../outside.dcm"


def test_labels_csv_with_no_usable_row_exits_2_with_the_reasons(locked_run, nih, tmp_path, capsys):
    folder = tmp_path / "allbad"
    labels = build_heldout(folder, _heldout_rows(nih).head(3))
    labels["label"] = ["yes", "2", ""]
    labels.loc[3] = {"file": "missing.dcm", "label": "1", "patient_id": "p", "reader_a": 0}
    labels.to_csv(folder / "labels.csv", index=False)
    argv = ["--out", str(locked_run), "--heldout", str(folder), "--params", str(_small_params(tmp_path))]
    assert heldout.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"error: {folder / 'labels.csv'}: no usable row (4 rows: line 2 ")
    assert "label 'yes' is not 0 or 1" in err and "label '2' is not 0 or 1" in err and "line 5 'missing.dcm': not a file" in err
    assert not [p for p in (locked_run / "heldout").iterdir() if "allbad" in p.name]


@pytest.mark.verifies("SRS-029")
@pytest.mark.slow
def test_hostile_file_names_cannot_put_links_or_images_in_the_report(locked_run, nih, tmp_path, capsys):
    """A labels.csv naming files with double backticks, Markdown links and images, raw HTML: the report
    shows them as text; its PDF has no link annotation (/URI) and no image from data."""
    from pypdf import PdfReader

    folder = tmp_path / "hostile"
    labels = build_heldout(folder, _heldout_rows(nih).head(12))
    hostile = ["a``[click](http://evil.example/x)``.dcm", "``![i](http://evil.example/p.png)``",
               "<a href=\"http://evil.example/\">x</a>", "b`` <http://evil.example/> ``\r\n# heading"]
    for name in hostile:
        labels.loc[len(labels)] = {"file": name, "label": 0, "patient_id": "p", "reader_a": 0}
    labels.to_csv(folder / "labels.csv", index=False)
    params = _small_params(tmp_path)
    params.write_text(params.read_text() + "submission: {}\n")
    argv = ["--out", str(locked_run), "--heldout", str(folder), "--params", str(params)]
    assert heldout.main(argv) == 0
    out = capsys.readouterr()
    hout = [p for p in (locked_run / "heldout").iterdir() if p.name.startswith("hostile-")][0]
    report = hout / "submission" / "heldout_report.pdf"
    assert f"report {report}" in out.out + out.err
    html = (hout / "submission" / "heldout_report.html").read_text()
    assert "evil.example" in html and 'href="http://evil' not in html and "<img src=\"http://evil" not in html
    assert "<a href=\"http://evil" not in html
    reader = PdfReader(report)
    for page in reader.pages:
        for annot in page.get("/Annots") or []:
            action = annot.get_object().get("/A") or {}
            assert "evil" not in str(action.get("/URI", "")), action
    text = " ".join(p.extract_text() or "" for p in reader.pages)
    assert "evil.example" in text                       # shown as text
    md = (hout / "submission" / "heldout_report.md").read_text()
    from markdown_it import MarkdownIt
    tokens = [t for block in MarkdownIt("commonmark").enable("table").parse(md) for t in (block.children or [])]
    assert not [t for t in tokens if t.type in ("link_open", "image") and "evil" in str(t.attrs)]
