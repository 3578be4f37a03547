"""The params schema: every params file is checked when read, with one-line errors naming the
file, the dotted key and the fix; the YAML loader refuses dates, tags and alias bombs."""
from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from evidence import params as P
from evidence.params import ParamsError, allowed, check, load_all

pytestmark = pytest.mark.verifies("SRS-044")

REPO = Path(__file__).resolve().parent.parent
BASE = yaml.safe_load((REPO / "params.yaml").read_text())


def write(tmp_path, params=None, text=None, name="params.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text if text is not None else yaml.safe_dump(params, sort_keys=False))
    return path


def error(path) -> str:
    with pytest.raises(ParamsError) as e:
        load_all(path)
    message = str(e.value)
    assert "\n" not in message
    return message


def changed(change) -> dict:
    p = copy.deepcopy(BASE)
    change(p)
    return p


def key_paths(node, prefix=()):
    """Every mapping key of params.yaml as a path, nested ones and those inside list items too."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield prefix + (key,)
            yield from key_paths(value, prefix + (key,))
    elif isinstance(node, list) and node and isinstance(node[0], dict):
        yield from key_paths(node[0], prefix + (0,))


def rename(params, path, new):
    parent = params
    for key in path[:-1]:
        parent = parent[key]
    parent[new] = parent.pop(path[-1])


# ----------------------------------------------------------------------------- valid files

def test_the_repository_params_files_validate():
    base, gpu = load_all(REPO / "params.yaml"), load_all(REPO / "params_nih_gpu.yaml")
    assert base["submission"] == {"pdf": True, "signing": {"key": "demo"},
                                  "vulnerabilities": {"check": False, "url": "https://api.osv.dev/v1/querybatch",
                                                      "timeout_s": 10}}
    assert set(base) == set(P.schema()["properties"])
    assert gpu["train"]["architecture"] == "densenet121" and gpu["validate"] == base["validate"]


def test_stage_defaults_are_valid_parameters():
    """The defaults a stage fills in for a key left out obey the same schema."""
    from eda import __main__ as eda_main, demo, split  # noqa: F401
    from model import dicom, train
    from validation import evaluate

    check({"cohort": {"demo": demo.DEFAULTS}, "eda": {"pixel_sample_max": 1, **eda_main.DEFAULTS},
           "train": train.DEFAULTS, "workflow": dicom.DEFAULT_RULES, "heldout": evaluate.STATISTICS,
           "validate": evaluate.STATISTICS})


def _walk(schema, where="params"):
    schema = P._resolve(schema)
    yield where, schema
    for name, prop in schema.get("properties", {}).items():
        yield from _walk(prop, f"{where}.{name}")
    if schema.get("items", {}).get("type") == "object":
        yield from _walk(schema["items"], f"{where}[]")


def test_every_parameter_is_described_and_every_mapping_closed():
    nodes = list(_walk(P.schema()))
    assert len(nodes) > 80
    for where, node in nodes:
        assert node.get("description"), f"{where} has no description"
        if node.get("type") == "object":
            assert node.get("additionalProperties") is False, f"{where} allows unknown keys"


def test_every_keyword_the_schema_uses_has_its_own_message():
    """A keyword added to the schema without a message in evidence.params would fall back to
    jsonschema's wording; this lists the keywords the messages are written for."""
    def keywords(node):
        if isinstance(node, dict):
            for key, value in node.items():
                yield key
                if key not in ("properties", "$defs", "examples", "enum"):
                    yield from keywords(value)
                elif key in ("properties", "$defs"):
                    for sub in value.values():
                        yield from keywords(sub)
        elif isinstance(node, list):
            for item in node:
                yield from keywords(item)

    annotations = {"$schema", "$id", "title", "description", "examples", "properties", "$defs", "$ref", "items",
                   "allOf", "if", "then"}
    messages = {"type", "enum", "const", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "required",
                "additionalProperties", "minItems", "uniqueItems", "minLength", "anyOf", "pattern"}
    used = set(keywords(P.schema())) - annotations
    assert {"additionalProperties", "anyOf", "required", "exclusiveMaximum"} <= used <= messages


@pytest.mark.parametrize("dotted, constant", [
    ("train.architecture", "model.architectures:ARCHITECTURES"),
    ("train.optimizer", "model.train:OPTIMIZERS"),
    ("train.balance", "model.data:BALANCE"),
    ("validate.threshold_rule", "validation.threshold:RULES"),
    ("validate.target_bound", "validation.threshold:TARGET_BOUNDS"),
    ("validate.bootstrap_method", "validation.stats:BOOTSTRAP_METHODS"),
    ("heldout.bootstrap_method", "validation.stats:BOOTSTRAP_METHODS"),
    ("validate.acceptance.metric", "validation.stats:ALL_METRICS"),
    ("validate.acceptance.bound", "validation.acceptance:BOUNDS"),
    ("validate.acceptance.op", "validation.acceptance:OPS"),
    ("validate.acceptance.method", "validation.acceptance:METHODS"),
    ("workflow.missing_age", "model.dicom:MISSING_AGE"),
])
def test_schema_enums_equal_the_code_constants(dotted, constant):
    import importlib

    module, name = constant.split(":")
    assert allowed(dotted) == list(getattr(importlib.import_module(module), name))


def test_acceptance_methods_allowed_per_metric_are_those_validation_reports():
    """Each (metric, method) pair the schema accepts is reported by validation.evaluate, and no other."""
    import numpy as np
    import pandas as pd
    from validation import evaluate

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"label": np.tile([0, 1], 30), "score": rng.random(60), "patient_id": np.arange(60) // 2})
    p = {**evaluate.STATISTICS, "bootstrap_resamples": 100}
    reported = {(m, method) for m, by in evaluate.test_metrics(df, 0.5, p)["metrics"].items() for method in by}
    accepted = set()
    for metric in allowed("validate.acceptance.metric"):
        for method in allowed("validate.acceptance.method"):
            try:
                check({"validate": {"acceptance": [{"metric": metric, "bound": "estimate", "op": ">=",
                                                    "value": 0.5, "method": method}]}})
                accepted.add((metric, method))
            except ParamsError:
                pass
    assert accepted == reported and ("auc", "delong") in accepted and ("f1", "wilson") not in accepted


def test_weights_keywords_equal_the_code_and_other_values_must_look_like_paths():
    from model.architectures import WEIGHTS

    assert allowed("train.weights") == list(WEIGHTS[:2])
    for ok in ("none", "imagenet", "weights/densenet121.h5", "base.keras", "/abs/file"):
        check({"train": {"architecture": "densenet121", "weights": ok}})


# ----------------------------------------------------------------------------- unknown keys

@pytest.mark.parametrize("path", list(key_paths(BASE)), ids=lambda p: ".".join(map(str, p)))
def test_a_misspelled_key_anywhere_names_it_and_the_right_one(tmp_path, path):
    typo = path[-1] + path[-1][-1]
    file = write(tmp_path, changed(lambda p: rename(p, path, typo)))
    where = P.dotted(list(path[:-1]) + [typo])
    if len(path) == 1:
        expected = f"{file}: {typo} is not a params section (did you mean {path[-1]}?)"
    elif path[-1] in ("fractions", "sample_size", "pixel_sample_max") or (path[-2] == 0):
        expected = None  # also required: the typo or the missing key is reported, both by name
    else:
        expected = f"{file}: {where} is not a parameter (did you mean {path[-1]}?)"
    message = error(file)
    if expected:
        assert message == expected
    else:
        assert message.startswith(f"{file}: ") and (typo in message or f"lacks {path[-1]}" in message)


@pytest.mark.parametrize("section, key, real", [
    ("validate", "bootsrap_resamples", "bootstrap_resamples"),
    ("eda", "pixel_sedd", "pixel_seed"),
    ("workflow", "min_age_yeras", "min_age_years"),
])
def test_the_typos_from_the_bug_report(tmp_path, section, key, real):
    file = write(tmp_path, changed(lambda p: rename(p, (section, real), key)))
    assert error(file) == f"{file}: {section}.{key} is not a parameter (did you mean {real}?)"


def test_a_key_far_from_any_parameter_lists_the_section(tmp_path):
    file = write(tmp_path, changed(lambda p: p["submission"].update(device_facts="submission/data/device.yml")))
    assert error(file) == (f"{file}: submission.device_facts is not a parameter "
                           "(parameters of submission: pdf, signing, locked_by, vulnerabilities)")
    file = write(tmp_path, changed(lambda p: p["split"].update(zzz=1)))
    assert error(file) == (f"{file}: split.zzz is not a parameter "
                           "(parameters of split: seed, fractions, use_official_lists, min_val_positives, "
                           "min_val_negatives, allow_inadequate_val)")


# ----------------------------------------------------------------------------- values

BAD_VALUES = [
    (lambda p: p["workflow"].update(allowed_modalities="DX"),
     "workflow.allowed_modalities must be a list (got 'DX'), e.g. [DX, CR]"),
    (lambda p: p["workflow"].update(min_rows_columns="abc"),
     "workflow.min_rows_columns must be an integer >= 1 (got 'abc')"),
    (lambda p: p["workflow"].update(min_age_years=200, max_age_years=10),
     "workflow.min_age_years (200) must be less than workflow.max_age_years (10)"),
    (lambda p: p["workflow"].update(min_rows_columns=512, max_rows_columns=256),
     "workflow.min_rows_columns (512) must be at most workflow.max_rows_columns (256)"),
    (lambda p: p["validate"]["acceptance"][1].update(metric="aucc"),
     "validate.acceptance[1].metric 'aucc' is not one of sensitivity, specificity, ppv, npv, accuracy, f1, auc "
     "(did you mean auc?)"),
    (lambda p: p["validate"]["acceptance"][1].update(method="delong"),
     "validate.acceptance[1].metric must be auc (got 'specificity') (delong intervals are reported for auc only)"),
    (lambda p: p["validate"]["acceptance"][2].update(method="wilson"),
     "validate.acceptance[2].metric 'auc' is not one of sensitivity, specificity, ppv, npv, accuracy (wilson "
     "intervals are reported for the proportions only)"),
    (lambda p: p["validate"]["acceptance"][0].pop("value"),
     "validate.acceptance[0] lacks value (set metric, bound, op, value)"),
    (lambda p: p["validate"].update(acceptance=[]),
     "validate.acceptance must list at least 1 item (got []), e.g. [{metric: sensitivity, bound: ci_low, op: >, "
     "value: 0.8, method: clopper-pearson, anticipated: 0.9, primary: true, justification: [K191556]}]"),
    (lambda p: p["validate"]["acceptance"][2].update(method="clopper-pearson"),
     "validate.acceptance[2].metric 'auc' is not one of sensitivity, specificity, ppv, npv, accuracy "
     "(clopper-pearson intervals are reported for the proportions only)"),
    (lambda p: p["validate"]["acceptance"][0].update(anticipated=1.0),
     "validate.acceptance[0].anticipated must be a number in (0, 1) (got 1.0)"),
    (lambda p: p["validate"]["sample_size"].update(enrichment={"positives_fraction": 0}),
     "validate.sample_size.enrichment.positives_fraction must be a number in (0, 1) (got 0)"),
    (lambda p: p["validate"].update(bootstrap_method="bac"),
     "validate.bootstrap_method 'bac' is not one of percentile, bca (did you mean bca?)"),
    (lambda p: p["validate"].update(threshold_rule="youdn"),
     "validate.threshold_rule 'youdn' is not one of max_f1, youden, target_sensitivity (did you mean youden?)"),
    (lambda p: p["validate"].update(threshold_rule="target_sensitivity", target_sensitivity=None),
     "validate.target_sensitivity must be a number in (0, 1] (got null)"),
    (lambda p: (p["validate"].update(threshold_rule="target_sensitivity"), p["validate"].pop("target_sensitivity")),
     "validate.threshold_rule target_sensitivity needs validate.target_sensitivity (e.g. 0.90)"),
    (lambda p: p["validate"].update(ci_level=95),
     "validate.ci_level must be a number in (0, 1) (got 95)"),
    (lambda p: p["validate"].update(calibration_bins=1),
     "validate.calibration_bins must be an integer from 2 to 100 (got 1)"),
    (lambda p: p["validate"].update(bootstrap_resamples=50),
     "validate.bootstrap_resamples must be an integer >= 100 (got 50)"),
    (lambda p: p["validate"]["sample_size"].pop("half_width"),
     "validate.sample_size lacks half_width (set sensitivity, specificity, prevalence, half_width)"),
    (lambda p: p["validate"]["sample_size"].update(half_width=0.2),
     "validate.sample_size.half_width (0.2) must be less than 0.1, the distance of the planned sensitivity and "
     "specificity from 0 and 1"),
    (lambda p: p["heldout"].update(prevalences=[0.01, 1.5]),
     "heldout.prevalences[1] must be a number in (0, 1) (got 1.5)"),
    (lambda p: p["heldout"].update(ci_level=True),
     "heldout.ci_level must be a number in (0, 1) (got true), e.g. 0.95"),
    (lambda p: p["train"].update(batch_size=True), "train.batch_size must be an integer >= 1 (got true)"),
    (lambda p: p["train"].update(batch_size="8"), "train.batch_size must be an integer >= 1 (got '8')"),
    (lambda p: p["train"].update(seed=1.5), "train.seed must be an integer >= 0 (got 1.5)"),
    (lambda p: p["train"].update(learning_rate=0), "train.learning_rate must be a number > 0 (got 0)"),
    (lambda p: p["train"].update(channels=2), "train.channels 2 is not one of 1, 3"),
    (lambda p: p["train"].update(optimizer="adagrad"),
     "train.optimizer 'adagrad' is not one of adam, adamw, sgd, rmsprop"),
    (lambda p: p["train"].update(architecture="alexnet"),
     "train.architecture 'alexnet' is not one of small_cnn, vgg16, resnet50, densenet121"),
    (lambda p: p["train"].update(architecture="densenet121", weights="imagnet"),
     "train.weights 'imagnet' is not none or imagenet or a weights file path (containing a / or ending in .h5 "
     "or .keras) (did you mean imagenet?)"),
    (lambda p: p["train"].update(weights="imagenet"),
     "train.weights 'imagenet' needs a pretrained architecture; small_cnn has none (set weights: none, or "
     "architecture: densenet121)"),
    (lambda p: p["train"].update(cache="memroy"),
     "train.cache 'memroy' is not memory or none or a file path prefix containing a / (did you mean memory?)"),
    (lambda p: p["train"].update(epochs=12, fine_tune={**p["train"]["fine_tune"], "frozen_epochs": 12}),
     "train.fine_tune.frozen_epochs (12) must be less than train.epochs (12), or 0 to train the whole network "
     "from the start"),
    (lambda p: p["train"]["fine_tune"].update(unfreeze_from=[3]),
     "train.fine_tune.unfreeze_from must be text, an integer or null (got [3])"),
    (lambda p: p["train"]["augmentation"].update(zoom=1),
     "train.augmentation.zoom must be a number in [0, 1) (got 1)"),
    (lambda p: p["split"]["fractions"].update(train=0.8),
     "split.fractions sum to 1.1; make train + val + test sum to 1"),
    (lambda p: p["split"]["fractions"].pop("test"), "split.fractions lacks test (set train, val, test)"),
    (lambda p: p["split"].update(use_official_lists="yes please"),
     "split.use_official_lists must be true or false (got 'yes please')"),
    (lambda p: p["eda"].update(pixel_sample_max=0), "eda.pixel_sample_max must be an integer >= 1 (got 0)"),
    (lambda p: p["cohort"]["demo"].update(n_patients=5),
     "cohort.demo.n_patients must be an integer from 10 to 100000 (got 5)"),
    (lambda p: p["cohort"]["nih"].update(label_file_preference="sample_labels.csv"),
     "cohort.nih.label_file_preference must be a list (got 'sample_labels.csv'), e.g. "
     "[Data_Entry_2017_v2020.csv.gz, sample_labels.csv]"),
    (lambda p: p["workflow"].update(allowed_views=["AP", "PA", "AP"]),
     "workflow.allowed_views lists 'AP' more than once; list each value once"),
    (lambda p: p["workflow"].update(allowed_bits_stored=[8, 32]),
     "workflow.allowed_bits_stored[1] must be an integer from 1 to 16 (got 32)"),
    (lambda p: p["workflow"].update(missing_age="maybe"),
     "workflow.missing_age 'maybe' is not one of reject, accept_with_warning"),
    (lambda p: p["workflow"].update(dicom_dirs=[""]), "workflow.dicom_dirs[0] must not be empty text"),
    (lambda p: p.update(heldout=[1]), "heldout must be a mapping (got [1])"),
]


@pytest.mark.parametrize("change, message", BAD_VALUES, ids=[m.split(" ")[0] for _, m in BAD_VALUES])
def test_a_bad_value_names_the_key_and_the_fix(tmp_path, change, message):
    file = write(tmp_path, changed(change))
    assert error(file) == f"{file}: {message}"


def test_an_error_names_the_file_of_the_chain_that_sets_the_key(tmp_path):
    base = write(tmp_path, changed(lambda p: p["eda"].update(pixel_sedd=1)), name="base.yaml")
    profile = write(tmp_path, text="extends: base.yaml\ntrain: {epochs: 3}\n", name="gpu.yaml")
    assert error(profile) == f"{base}: eda.pixel_sedd is not a parameter (did you mean pixel_seed?)"
    write(tmp_path, BASE, name="base.yaml")
    profile.write_text("extends: base.yaml\ntrain: {epochs: 3, fine_tune: {frozen_epochs: 3}}\n")
    assert error(profile).startswith(f"{profile}: train.fine_tune.frozen_epochs (3) must be less than")
    profile.write_text("extends: base.yaml\nworkflow: {allowed_views: PA}\n")
    assert error(profile) == f"{profile}: workflow.allowed_views must be a list (got 'PA'), e.g. [AP, PA]"


# ----------------------------------------------------------------------------- YAML

BILLION_LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{n}: &{n} [{', '.join(['*' + p] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi"))


@pytest.mark.parametrize("text, message", [
    ("split:\n  seed: 2024-06-01\n",
     'line 2: seed: 2024-06-01 is read as a date; quote it ("2024-06-01") to keep it as text'),
    ("workflow:\n  dicom_dirs: [2024-06-01 10:00:00]\n", "line 2: 2024-06-01 10:00:00 is read as a date"),
    ("train: !!python/object:os.system {}\n", "line 1: the tag !!python/object:os.system is not allowed"),
    ("train: {epochs: !foo 3}\n", "line 1: the tag !foo is not allowed"),
    ("train: {weights: !!binary aGk=}\n", "line 1: the tag !!binary is not allowed"),
    ("train:\n  epochs: 3\n  epochs: 4\n", "line 3: epochs is given twice in one mapping (first on line 2); keep one"),
    ("train: {epochs: [3}\n", "line 1: "),
    (BILLION_LAUGHS, "aliases expand this value to more than 100,000 items"),
])
def test_the_loader_refuses_what_plain_settings_never_need(tmp_path, text, message):
    file = write(tmp_path, text=text)
    got = error(file)
    assert got.startswith(f"{file}: line ") and message in got


def test_aliases_within_the_budget_and_merge_keys_still_work(tmp_path):
    file = write(tmp_path, text="heldout: &stats {ci_level: 0.9, min_subgroup_positives: 4}\n"
                                "validate: {<<: *stats, ci_level: 0.95}\n")
    assert load_all(file) == {"heldout": {"ci_level": 0.9, "min_subgroup_positives": 4},
                              "validate": {"ci_level": 0.95, "min_subgroup_positives": 4}}


# ----------------------------------------------------------------------------- command line and stages

def run_cli(*args, timeout=20):
    return subprocess.run([sys.executable, "-m", "evidence.params", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("bad", ["typo", "string_for_list", "min_max", "metric", "date", "laughs", "python_object"])
def test_cli_exits_non_zero_with_one_line_and_writes_nothing(tmp_path, bad):
    texts = {"date": "split:\n  seed: 2024-06-01\n", "laughs": BILLION_LAUGHS,
             "python_object": "train: !!python/object/apply:os.system [echo hi]\n"}
    changes = {"typo": lambda p: rename(p, ("validate", "bootstrap_resamples"), "bootsrap_resamples"),
               "string_for_list": lambda p: p["workflow"].update(allowed_modalities="DX"),
               "min_max": lambda p: p["workflow"].update(min_age_years=200, max_age_years=10),
               "metric": lambda p: p["validate"]["acceptance"][0].update(metric="aucc")}
    file = write(tmp_path, changed(changes[bad]) if bad in changes else None, texts.get(bad))
    result = run_cli(file, tmp_path / "out")
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {file}: ")
    assert not (tmp_path / "out").exists()


def test_cli_stamps_a_valid_file_and_rejects_bad_usage(tmp_path):
    ok = run_cli(REPO / "params.yaml", tmp_path / "out")
    assert ok.returncode == 0 and ok.stderr == ""
    assert {p.stem for p in (tmp_path / "out" / "params").glob("*.json")} == set(BASE)
    usage = run_cli("params.yaml")
    assert usage.returncode == 2 and len(usage.stderr.splitlines()) == 1


def test_a_stage_refuses_a_bad_params_file_before_writing_a_record(tmp_path, capsys):
    from validation import sample_size

    file = write(tmp_path, changed(lambda p: p["heldout"].update(bootstrap_sed=1)))
    assert sample_size.main(["--out", str(tmp_path / "run"), "--params", str(file)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {file}: heldout.bootstrap_sed is not a parameter (did you mean bootstrap_seed?)\n"
    assert not (tmp_path / "run" / "evidence").exists()


def test_the_committed_parameter_reference_is_generated_from_the_schema(tmp_path):
    committed = (REPO / "docs" / "params.md").read_text()
    assert committed == P.reference(), f"docs/params.md is stale: run {P.DOC_COMMAND}"
    result = run_cli("--doc", tmp_path / "params.md")
    assert result.returncode == 0 and (tmp_path / "params.md").read_text() == committed
    for name, section in P.schema()["properties"].items():
        assert f"## {name}\n\n{section['description']}" in committed
    assert "| `validate.acceptance[].metric` | `sensitivity` \\| `specificity`" in committed
