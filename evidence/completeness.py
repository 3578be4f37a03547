"""Completeness of a run folder: exactly the records the stage table declares, and no file in an
output folder that no record lists.

A run folder (`OUT`) must hold every record of `stages.run_records()` and no other; an assessment
folder (`layout.ASSESSMENT_ROOTS`: `OUT/heldout/<name>`, `OUT/pccp/<name>`) every record of the
stage that writes it (`validation.heldout`, `validation.pccp`), and may hold the documents
(`submission.*`) rendered there. Every file under an output folder (the first folder of
each `outs` pattern of the folder's stages, e.g. `figures/`, `models/`, `submission/`) and under
`evidence/` must be listed by a record, in its `outs` or, for files a stage writes and then
reads (the workflow DICOM files), its `deps.files`; and a record may list as `outs` only files its
stage declares. The audit hashes every listed file, so a file that no record lists is one no hash
vouches for (an edited PDF after its record was deleted, a stray figure).

Files that are not record outputs by design are named in `NOT_OUTPUTS`, each with its reason.
"""
from __future__ import annotations

from fnmatch import fnmatchcase
from pathlib import Path

from . import layout
from .errors import EvidenceError
from .record import record_ids
from .stages import STAGES, Stage, by_name, optional_records, out_declared, run_records, stage_of

#: run-folder paths (patterns; `*` matches across folders) that are not record outputs.
_HERE = Path("")
NOT_OUTPUTS: dict[str, str] = {
    layout.params_stamp(_HERE, "*").as_posix(): "the params stamps `evidence.make prepare` writes (compared with each record's params)",
    layout.stage_rules(_HERE).as_posix(): "the generated stage rules of the Makefile",
    layout.stage_log(_HERE, "*").as_posix(): "stage logs: library warnings, not evidence",
    layout.data_source(_HERE).as_posix(): "the DATA value `evidence.make prepare` records for make",
    layout.input_stamp(_HERE).as_posix(): "the stat fingerprint of the inputs that lets make see a changed image",
    layout.run_lock(_HERE).as_posix(): "the lock that keeps a second make off this run folder",
    (layout.demo(_HERE) / "images" / "*.png").as_posix(): "the generated synthetic images: the cohort's input data, read through the manifest",
    (layout.demo(_HERE) / "README.txt").as_posix(): "a note on the generated synthetic data source",
    layout.evidence_log(_HERE).as_posix(): "the hash-chained log of records, checked by its own audit step",
    (layout.signatures(_HERE) / "*").as_posix(): "signatures of the plan and the documents, checked by their own audit step",
    "*/.*.tmp*": "a temporary file of an atomic write that was interrupted; never read, replaced by the next write",
}


def _excluded(rel: str) -> bool:
    return any(fnmatchcase(rel, pattern) for pattern in NOT_OUTPUTS)


def folder_stages(run_dir: Path, out: Path) -> tuple[Stage, ...]:
    """The stages whose records a folder holds: those of the run, or for an assessment folder the
    stage that writes it (by its root, `layout.ASSESSMENT_ROOTS`) and the on-demand document families."""
    if run_dir == out:
        return tuple(s for s in STAGES if s.in_run or s.optional)
    parent = run_dir.resolve().parent
    roots = {stage: root(out).resolve() for stage, root in layout.ASSESSMENT_ROOTS.items()}
    owner = next((stage for stage, root in roots.items() if root == parent), None)
    if owner is None:
        raise EvidenceError(f"{run_dir}: not an assessment folder of {out} ({', '.join(map(str, roots.values()))})")
    return (by_name(owner), *(s for s in STAGES if not s.in_run and any(r.endswith(".*") for r in s.records)))


def expected_records(stages: tuple[Stage, ...], run_dir: Path, out: Path) -> tuple[list[str], list[str]]:
    """(record ids the folder must hold, record families it may hold; an id without `*` is a record
    of an optional stage, which the run folder may hold)."""
    if run_dir == out:
        return list(run_records()), list(optional_records())
    required = [r for s in stages for r in s.records if not r.endswith("*")]
    families = [r[:-1] for s in stages for r in s.records if r.endswith(".*")]
    return required, families


def _in_family(rid: str, family: str) -> bool:
    """`family` is a prefix ending in `.` (`submission.`) or an exact optional record id."""
    return rid.startswith(family) if family.endswith(".") else rid == family


def output_folders(stages: tuple[Stage, ...]) -> list[str]:
    """The top folders of the stages' `outs` patterns, and `evidence`."""
    tops = {p.split("/", 1)[0] for s in stages for p in s.outs if "/" in p}
    return sorted(tops | {layout.evidence("").as_posix()})


def check(run_dir: str | Path, records: dict[str, dict], out: str | Path | None = None) -> list[str]:
    """Failure lines for one folder, given its readable records (id -> record); `out` is the run
    folder (the folder itself unless it is a held-out folder)."""
    run_dir = Path(run_dir)
    out = run_dir if out is None else Path(out)
    stages = folder_stages(run_dir, out)
    required, families = expected_records(stages, run_dir, out)
    present = record_ids(run_dir)
    failures = [f"record {rid}: field evidence/{rid}.json: expected a record (stage {stage_of(rid).name}) "
                f"found missing record" for rid in required if rid not in present]
    failures += [f"record {rid}: field evidence/{rid}.json: expected one of the records this folder holds "
                 f"({', '.join(required + [f + '*' if f.endswith('.') else f for f in families])}) found an unknown record"
                 for rid in present if rid not in required and not any(_in_family(rid, f) for f in families)]

    listed: set[str] = set()
    for rid, record in records.items():
        stage = _stage(rid)
        for entry in record.get("outs", []):
            listed.add(entry["path"])
            if stage is not None and not out_declared(stage, entry["path"]):
                failures.append(f"record {rid}: field outs[{entry['path']}]: expected a file stage {stage.name} "
                                f"declares ({', '.join(stage.outs) or 'none'}) found an undeclared file")
        listed.update(e["path"] for e in record.get("deps", {}).get("files", []))
    listed.update(layout.record("", rid).as_posix() for rid in present)

    for folder in output_folders(stages):
        root = run_dir / folder
        if not root.is_dir():
            continue
        for path in sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink()):
            rel = path.relative_to(run_dir).as_posix()
            if rel not in listed and not _excluded(rel):
                failures.append(f"file {rel}: field outs: expected a file a record lists found a file no "
                                "record lists (delete it or rerun the stage that writes it)")
    return failures


def _stage(rid: str) -> Stage | None:
    try:
        return stage_of(rid)
    except EvidenceError:  # an unknown record: reported above
        return None
