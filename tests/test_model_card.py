"""The model card (document and JSON), the performance testing document and the CLAIM 2024 checklist."""
from __future__ import annotations

import copy
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml

from submission import model_card
from submission.check import CLAIM_ITEMS, check, checklist_failures
from submission.__main__ import run
from submission.render import DATA
from test_render_evidence import build_run

REPO = Path(__file__).resolve().parent.parent
DOCUMENTS = ["510k_submission", "model_card", "performance_testing", "checklist"]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    """The fixture run with the full submission stage run (it writes model_card.json) and the documents
    of this test rendered."""
    out = build_run(tmp_path_factory.mktemp("card") / "run")
    run(out, {}, pdf=False)
    run(out, {}, documents=DOCUMENTS, pdf=False)
    return out


def _resolve(doc, pointer: str):
    """An independent JSON pointer resolver (RFC 6901)."""
    node = doc
    for raw in pointer.split("/")[1:] if pointer not in ("", "/") else []:
        key = raw.replace("~1", "/").replace("~0", "~")
        node = node[int(key)] if isinstance(node, list) else node[key]
    return node


def test_card_is_written_valid_and_listed_in_the_trail(rendered):
    path = rendered / "submission" / model_card.FILE
    card = json.loads(path.read_text(encoding="utf-8"))
    model_card.validate(card)
    record = json.loads((rendered / "evidence" / "submission.documents.json").read_text(encoding="utf-8"))
    outs = {o["path"]: o["sha256"] for o in record["outs"]}
    listed = [p for p in outs if p.endswith("submission/model_card.json")]
    assert len(listed) == 1, sorted(outs)
    assert outs[listed[0]] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_value_equals_its_source_at_its_pointer(rendered):
    card = json.loads((rendered / "submission" / model_card.FILE).read_text(encoding="utf-8"))
    leaves = model_card.leaves(card)
    assert len(leaves) > 80
    numeric = 0
    for where, leaf in leaves:
        if leaf["source"] == "record":
            record = json.loads((rendered / "evidence" / f"{leaf['id']}.json").read_text(encoding="utf-8"))
            assert leaf["sha256"] == record["sha256"], where
            assert _resolve(record, leaf["pointer"]) == leaf["value"], where
        else:
            raw = (REPO / leaf["id"]).read_bytes()
            assert leaf["sha256"] == hashlib.sha256(raw).hexdigest(), where
            assert _resolve(yaml.safe_load(raw), leaf["pointer"]) == leaf["value"], where
        numeric += isinstance(leaf["value"], (int, float)) and not isinstance(leaf["value"], bool)
    assert numeric > 20
    # values the fixture run wrote (tests/test_render_evidence.py), not read back through the card's code
    perf = card["performance"]
    assert perf["sensitivity"]["value"]["estimate"] == 0.8333
    assert perf["sensitivity"]["pointer"] == "/data/metrics/sensitivity/wilson"
    assert perf["auc"]["value"]["ci_low"] == 0.77
    assert perf["test_data"]["images"]["value"] == 144
    assert card["development_data"]["training"]["images"]["value"] == 672
    assert card["description"]["input_checks"]["min_age_years"]["value"] == 18
    sex = [g for g in perf["subgroups"] if g["variable"] == "sex"]
    assert {g["stratum"]["value"] for g in sex} == {"male", "female"}


def test_card_missing_a_required_field_is_refused_with_its_place(rendered):
    card = model_card.build(rendered)
    broken = copy.deepcopy(card)
    del broken["performance"]["sensitivity"]
    with pytest.raises(model_card.ModelCardError, match=r"at /performance: 'sensitivity' is a required property"):
        model_card.validate(broken)
    untraced = copy.deepcopy(card)
    del untraced["device_information"]["version"]["pointer"]
    with pytest.raises(model_card.ModelCardError, match=r"/device_information/version: 'pointer' is a required"):
        model_card.validate(untraced)
    wrong = copy.deepcopy(card)
    wrong["performance"]["auc"]["value"] = {"estimate": 0.8}
    with pytest.raises(model_card.ModelCardError, match=r"/performance/auc/value"):
        model_card.validate(wrong)


def test_card_names_the_missing_record(rendered, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(rendered, out)
    before = (out / "submission" / model_card.FILE).read_bytes()
    (out / "evidence" / "workflow.latency.json").unlink()
    with pytest.raises(model_card.ModelCardError, match="workflow.latency"):
        model_card.write(out)
    assert (out / "submission" / model_card.FILE).read_bytes() == before  # the earlier card is left as it was


def test_documents_have_their_sections_and_only_traced_numbers(rendered):
    assert check(rendered) == []
    card = (rendered / "submission" / "model_card.md").read_text(encoding="utf-8")
    assert "83.3% (95% CI 75.3% to 90.3%" in card  # the fixture's Wilson sensitivity interval
    perf = (rendered / "submission" / "performance_testing.md").read_text(encoding="utf-8")
    assert "true positives 30, false positives 28, true negatives 80, false negatives 6" in perf


def test_the_data_source_is_stated_from_the_records(tmp_path):
    synthetic = build_run(tmp_path / "synthetic")
    clinical = build_run(tmp_path / "nih", synthetic=False, source="nih")
    for out in (synthetic, clinical):
        run(out, {}, documents=["model_card", "performance_testing"], pdf=False)
    text = {out: (out / "submission" / "model_card.md").read_text(encoding="utf-8")
            + (out / "submission" / "performance_testing.md").read_text(encoding="utf-8")
            for out in (synthetic, clinical)}
    assert "synthetic demonstration cohort" in text[synthetic]
    for phrase in ("synthetic demonstration", "synthetic data", "no patient data"):
        assert phrase not in text[clinical].lower(), phrase


def _items() -> list[dict]:
    return yaml.safe_load((DATA / "claim_2024.yml").read_text(encoding="utf-8"))["items"]


def test_checklist_holds_the_44_items_once_each():
    items = _items()
    assert CLAIM_ITEMS == 44
    assert sorted(i["number"] for i in items) == list(range(1, 45))
    for i in items:
        assert bool(i.get("document")) != bool(i.get("not_addressed")), i
        assert not i.get("document") or i.get("section"), i


def test_checklist_mappings_exist_in_the_rendered_documents(rendered):
    folder = rendered / "submission"
    assert checklist_failures(folder) == []
    table = (folder / "checklist.md").read_text(encoding="utf-8")
    section = table.split("## Checklist items", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| item ")]
    assert [int(r.split("|")[1]) for r in rows] == list(range(1, 45))


def test_checklist_reports_a_missing_heading_and_bad_items(rendered):
    folder = rendered / "submission"
    items = _items()
    moved = copy.deepcopy(items)
    moved[0]["section"] = "No such heading"
    failures = checklist_failures(folder, moved)
    assert len(failures) == 1 and "item 1" in failures[0] and "'No such heading'" in failures[0]
    unrendered = copy.deepcopy(items)
    unrendered[2]["document"] = "labeling_not_rendered"
    assert any("item 3: document labeling_not_rendered not rendered" in f for f in checklist_failures(folder, unrendered))
    twice = copy.deepcopy(items) + [copy.deepcopy(items[4])]
    assert any("item 5 listed 2 times" in f for f in checklist_failures(folder, twice))
    missing = [i for i in items if i["number"] != 44]
    assert checklist_failures(folder, missing) == [
        "checklist (submission/data/claim_2024.yml): item 44 missing"]
    both = copy.deepcopy(items)
    both[10]["document"], both[10]["section"] = "model_card", "Description"
    assert any("item 11: give either" in f for f in checklist_failures(folder, both))
