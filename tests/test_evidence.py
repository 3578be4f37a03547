"""The evidence record: schema, canonical hashing, atomic writes, store look-ups and the audit."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from evidence import EvidenceError, MissingRecord, MissingValue, Store, canonical_json, write_record
from evidence.audit import audit
from evidence.atomic import atomic_path, write_text
from evidence.record import record_path


def _estimate(x, n=50):
    return {"estimate": x, "ci_low": x - 0.1, "ci_high": x + 0.05, "ci_level": 0.95, "method": "wilson", "n": n}


@pytest.fixture()
def run(tmp_path):
    out = tmp_path / "build"
    (out / "predictions").mkdir(parents=True)
    (out / "figures").mkdir()
    pred = out / "predictions" / "test.csv"
    pred.write_text("image_id,patient_id,label,score\na,p1,1,0.9\nb,p2,0,0.2\n")
    fig = out / "figures" / "roc.png"
    fig.write_bytes(b"\x89PNG fake figure bytes")
    src = tmp_path / "labels.csv"
    src.write_text("x,y\n1,2\n")
    write_record(out, "cohort.manifest", data={"images": 2}, deps=[src], synthetic=True)
    write_record(
        out, "eda.dataset", data={"sensitivity": {"wilson": _estimate(0.8)}, "zero": 0, "flag": False},
        params={"ci_level": 0.95}, dep_records=["cohort.manifest"], deps=[pred], outs=[fig],
    )
    return out


def test_canonical_json_is_sorted_compact_and_rejects_nan():
    assert canonical_json({"b": 1, "a": [1.5, "é"]}) == '{"a":[1.5,"é"],"b":1}'.encode()
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


@pytest.mark.verifies("SRS-034")
def test_record_hash_is_sha256_of_canonical_body(run):
    record = json.loads(record_path(run, "eda.dataset").read_text())
    body = {k: v for k, v in record.items() if k != "sha256"}
    expected = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"),
                                         ensure_ascii=False).encode()).hexdigest()
    assert record["sha256"] == expected


def test_provenance_fields_and_synthetic_inheritance(run):
    record = Store(run).get("eda.dataset")
    assert record["synthetic"] is True  # inherited from the synthetic cohort record
    assert record["deps"]["records"][0]["id"] == "cohort.manifest"
    assert [f["path"] for f in record["deps"]["files"]] == ["predictions/test.csv"]
    assert record["outs"][0]["path"] == "figures/roc.png" and record["outs"][0]["size"] == 22
    assert any(f["path"].startswith("evidence/") for f in record["code"]["files"])
    assert "jsonschema" in record["environment"]["runtime_packages"]
    assert record["data"]["zero"] == 0 and record["data"]["flag"] is False  # falsy values kept


def test_store_lookup_returns_value_pointer_and_hash(run):
    store = Store(run)
    value, pointer, sha = store.lookup("eda.dataset", "sensitivity.wilson.estimate")
    assert value == 0.8 and pointer == "/data/sensitivity/wilson/estimate"
    assert sha == store.get("eda.dataset")["sha256"]
    with pytest.raises(MissingValue, match=r"eda.dataset.*/data/sensitivity/bootstrap"):
        store.value("eda.dataset", "sensitivity.bootstrap.estimate")
    with pytest.raises(MissingRecord, match="validation.nothing"):
        store.value("validation.nothing", "x")


@pytest.mark.parametrize("bad, match", [
    ({"m": {"estimate": 0.5, "ci_low": 0.4, "ci_high": 0.6}}, "estimate lacks ci_level, method, n"),
    ({"m": {**_estimate(0.5), "estimate": "0.5"}}, "not of type 'number'"),
    ({"m": {**_estimate(0.5), "ci_low": 0.9}}, "ci_low > ci_high"),
    ({"m": float("nan")}, "never NaN"),
    ({"m": object()}, "not plain JSON"),
])
@pytest.mark.verifies("SRS-040")
def test_invalid_data_is_refused_and_nothing_is_written(tmp_path, bad, match):
    with pytest.raises(EvidenceError, match=match):
        write_record(tmp_path, "validation.test", data=bad)
    assert not record_path(tmp_path, "validation.test").exists()
    assert not list((tmp_path / "evidence").glob("*")) if (tmp_path / "evidence").exists() else True


def test_unknown_top_level_key_and_bad_id_are_rejected(run):
    path = record_path(run, "eda.dataset")
    record = json.loads(path.read_text())
    record["extra"] = 1
    path.write_text(json.dumps(record))
    with pytest.raises(EvidenceError, match="Additional properties"):
        Store(run).get("eda.dataset")
    with pytest.raises(EvidenceError, match="no stage declares it"):
        write_record(run, "NoDots", data={})


@pytest.mark.verifies("SRS-040")
def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "a.txt"
    write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


@pytest.mark.verifies("SRS-034")
def test_audit_passes_on_untouched_run(run):
    failures, n = audit(run, complete=False)
    assert failures == [] and n == 2


@pytest.mark.verifies("SRS-034")
def test_audit_names_a_changed_evidence_value(run):
    path = record_path(run, "eda.dataset")
    record = json.loads(path.read_text())
    record["data"]["sensitivity"]["wilson"]["estimate"] = 0.81
    path.write_text(json.dumps(record))
    failures, _ = audit(run, complete=False)
    assert len(failures) == 1
    assert failures[0].startswith("record eda.dataset: field sha256: expected ")


@pytest.mark.parametrize("rel, field", [
    ("figures/roc.png", "outs[figures/roc.png]"),
    ("predictions/test.csv", "deps[predictions/test.csv]"),
])
@pytest.mark.verifies("SRS-034")
def test_audit_names_one_changed_byte_in_a_file(run, rel, field):
    path = run / rel
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    failures, _ = audit(run, complete=False)
    assert len(failures) == 1 and f"record eda.dataset: field {field}: expected" in failures[0]


@pytest.mark.verifies("SRS-034")
def test_audit_names_a_replaced_parent_record(run, tmp_path):
    src = tmp_path / "labels.csv"
    src.write_text("x,y\n1,3\n")
    write_record(run, "cohort.manifest", data={"images": 3}, deps=[src], synthetic=True)
    failures, _ = audit(run, complete=False)
    assert any("field deps.records[cohort.manifest]" in f for f in failures)


def test_audit_cli_exit_codes(run):
    ok = subprocess.run([sys.executable, "-m", "evidence", "audit", "--out", str(run), "--partial"],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    (run / "figures" / "roc.png").write_bytes(b"changed")
    bad = subprocess.run([sys.executable, "-m", "evidence", "audit", "--out", str(run), "--partial"],
                         capture_output=True, text=True)
    assert bad.returncode == 1
    assert "FAIL record eda.dataset: field outs[figures/roc.png]" in bad.stdout


@pytest.mark.verifies("SRS-042")
def test_stage_main_turns_bad_input_into_one_error_line(tmp_path, capsys):
    from evidence.cli import stage_main
    from evidence.params import ParamsError, section

    params = tmp_path / "params.yaml"
    params.write_text("train: {epochs: 1}\n")

    def call(args):
        return section(args.params, args.which)

    ok = stage_main(["--out", str(tmp_path), "--params", str(params), "--which", "train"], prog="p", doc="Doc.", call=call,
                    add_arguments=lambda p: p.add_argument("--which"),
                    summary=lambda result, args: f"epochs {result['epochs']}")
    assert ok == 0 and capsys.readouterr().out == "epochs 1\n"
    bad = stage_main(["--out", str(tmp_path), "--params", str(params), "--which", "eda"], prog="p", doc="Doc.", call=call,
                     add_arguments=lambda p: p.add_argument("--which"), summary=str)
    err = capsys.readouterr().err
    assert bad == 2 and err.startswith("error: params file") and "no section 'eda'" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert issubclass(ParamsError, ValueError)


@pytest.mark.verifies("SRS-034")
def test_audit_names_a_record_copied_over_another_name(run):
    record_path(run, "eda.copy").write_text(record_path(run, "eda.dataset").read_text())
    failures, _ = audit(run, complete=False)
    assert failures == ["record eda.copy: field id: expected eda.copy found eda.dataset"]


def test_code_files_hashed_once_per_process(monkeypatch):
    from evidence import provenance
    calls = []
    real = provenance.sha256_file
    monkeypatch.setattr(provenance, "sha256_file", lambda p: calls.append(p) or real(p))
    provenance._code_files.cache_clear()
    from evidence.stages import by_name, code_files
    files = tuple(code_files(by_name("eda.split")))
    first = provenance.code_entry(files)
    assert provenance.code_entry(files) == first
    assert len(calls) == len(first["files"]) == len(set(calls))
    provenance._code_files.cache_clear()


def test_audit_hashes_each_code_file_once(run, monkeypatch):
    from evidence import audit as audit_module
    calls = []
    real = audit_module.sha256_file
    monkeypatch.setattr(audit_module, "sha256_file", lambda p: calls.append(str(p)) or real(p))
    failures, n = audit(run, complete=False)
    code = [c for c in calls if "/evidence/" in c and c.endswith(".py")]
    assert failures == [] and n == 2 and code and len(code) == len(set(code))


def test_audit_hashes_a_file_shared_by_records_once(run, monkeypatch):
    from evidence import audit as audit_module
    write_record(run, "eda.quality", data={}, dep_records=["eda.dataset"],
                 deps=[run / "predictions" / "test.csv"], outs=[run / "figures" / "roc.png"])
    calls = []
    real = audit_module.sha256_file
    monkeypatch.setattr(audit_module, "sha256_file", lambda p: calls.append(str(p)) or real(p))
    failures, n = audit(run, check_code=False, complete=False)
    assert failures == [] and n == 3
    assert sorted(Path(c).name for c in calls) == ["labels.csv", "roc.png", "test.csv"]


def test_params_profile_extends_its_base(tmp_path):
    from evidence.params import load_all, section

    (tmp_path / "base.yaml").write_text(
        "train: {epochs: 12, learning_rate: 0.001, fine_tune: {frozen_epochs: 0, fine_tune_learning_rate: 0.0001}}\n"
        "workflow: {allowed_views: [AP, PA]}\neda: {pixel_sample_max: 9, pixel_seed: 0}\n")
    (tmp_path / "profiles").mkdir()
    profile = tmp_path / "profiles" / "gpu.yaml"
    profile.write_text("extends: ../base.yaml\ntrain: {epochs: 30, fine_tune: {frozen_epochs: 2}}\n"
                       "workflow: {allowed_views: [PA]}\n")
    assert load_all(profile) == {
        "train": {"epochs": 30, "learning_rate": 0.001, "fine_tune": {"frozen_epochs": 2, "fine_tune_learning_rate": 0.0001}},
        "workflow": {"allowed_views": ["PA"]}, "eda": {"pixel_sample_max": 9, "pixel_seed": 0}}
    assert section(profile, "eda") == {"pixel_sample_max": 9, "pixel_seed": 0}
    (tmp_path / "twice.yaml").write_text("extends: profiles/gpu.yaml\neda: {pixel_seed: 5}\n")
    assert load_all(tmp_path / "twice.yaml")["train"]["epochs"] == 30
    assert load_all(tmp_path / "twice.yaml")["eda"] == {"pixel_sample_max": 9, "pixel_seed": 5}


@pytest.mark.parametrize("text,message", [
    ("extends: missing.yaml\n", "params file not found: {tmp}/missing.yaml (extended by {tmp}/p.yaml)"),
    ("extends: p.yaml\n", "extends itself"),
    ("extends: [a.yaml, b.yaml]\n", "'extends' must name one params file"),
])
def test_params_extends_errors_name_the_file(tmp_path, text, message):
    from evidence.params import ParamsError, load_all

    (tmp_path / "p.yaml").write_text(text)
    with pytest.raises(ParamsError) as e:
        load_all(tmp_path / "p.yaml")
    assert message.format(tmp=tmp_path) in str(e.value)


def test_gpu_profile_has_every_setting_of_params_yaml():
    """params_nih_gpu.yaml extends params.yaml: every section and key of the base is there, and the
    profile changes only the training of the model."""
    from evidence.params import load_all

    root = Path(__file__).resolve().parent.parent
    base, gpu = load_all(root / "params.yaml"), load_all(root / "params_nih_gpu.yaml")

    def keys(d, prefix=""):
        return {prefix + k for k in d} | {x for k, v in d.items() if isinstance(v, dict)
                                          for x in keys(v, prefix + k + ".")}
    assert keys(gpu) == keys(base)
    assert {k: v for k, v in gpu.items() if k != "train"} == {k: v for k, v in base.items() if k != "train"}
    assert (gpu["train"]["architecture"], gpu["train"]["image_size"], gpu["train"]["channels"]) == ("densenet121", 224, 3)


def test_params_stamps_resolve_the_profile(tmp_path):
    from evidence.params import load_all, stamp

    root = Path(__file__).resolve().parent.parent
    stamp(root / "params_nih_gpu.yaml", tmp_path)
    assert {p.stem for p in (tmp_path / "params").glob("*.json")} == set(load_all(root / "params.yaml"))
    assert json.loads((tmp_path / "params" / "train.json").read_text())["architecture"] == "densenet121"


@pytest.mark.verifies("SRS-040")
@pytest.mark.parametrize("where", ["write", "fsync"])
def test_a_full_disk_names_the_file_being_written(tmp_path, monkeypatch, capsys, where):
    """ENOSPC while writing or syncing: one error line naming the file (not the temporary one) and the
    fix, exit 2, the previous file unchanged and no temporary file left."""
    import errno as errno_
    import os as os_
    from pathlib import Path as Path_

    from evidence import atomic
    from evidence.cli import guarded

    target = tmp_path / "evidence" / "x.json"
    atomic.write_text(target, "old")

    def full(*args, **kwargs):
        raise OSError(errno_.ENOSPC, os_.strerror(errno_.ENOSPC))

    monkeypatch.setattr(*((Path_, "write_bytes", full) if where == "write" else (os_, "fsync", full)))
    assert guarded(lambda: atomic.write_text(target, "new") and 0) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {target}: No space left on device while writing this file") and "\n" not in err
    assert "[Errno" not in err and "df -h" in err and "another disk" in err
    assert target.read_text() == "old" and [p.name for p in target.parent.iterdir()] == ["x.json"]
