"""The pipeline, declared once: every stage, the records it writes and reads, its params section,
the code it hashes and the files it writes.

Everything else is derived from this table:
- `write_record` takes a record's stage and the code it hashes from here (`stage_of`, `code_files`)
  and refuses a record that no stage declares or a dependency the stage does not declare;
- the Makefile's stage rules are generated from here (`python -m evidence.stages prepare`, which
  writes `OUT/.make/stages.mk`): every file a record hashes is a prerequisite of that record;
- ARCHITECTURE.md's record table is generated from here, and a test fails when it differs.

A record id ending in `.*` declares a family (`submission.*`: one record per rendered document);
`*` among a stage's needs means any record of the folder it reads.
File patterns are relative to the repository root (`**` matches any folder depth).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from fnmatch import fnmatchcase
from pathlib import Path

from . import layout
from .errors import EvidenceError
from .provenance import REPO_ROOT

#: code every stage runs: the evidence layer and the schemas that check its records and params.
COMMON_SOURCES = ("evidence",)
COMMON_FILES = ("evidence/*.json",)
SHOWN = 3   # changed files a why line names before "+N more"
#: The records the validation plan is rendered from: none holds a test-split result.
PLAN_INPUTS = ("eda.dataset", "eda.pixels", "eda.quality", "eda.ground_truth", "training.run", "model.predictions",
               "validation.threshold", "validation.sample_size", "validation.design", "workflow.dicom")
#: Records of other pre-specified criteria that the plan lock hashes as plan files
#: (`evidence.prespecified`): the plan stage needs them, so they exist before it locks.
PLAN_LOCKED_RECORDS = ("pccp.plan",)


#: The document registry: the documents `python -m submission` renders (`in_submission`; the
#: validation plan is rendered by `submission.plan`), read here for the submission stage's outs.
REGISTRY = REPO_ROOT / "submission" / "data" / "required_sections.yml"


def registry_outs(path: Path = REGISTRY) -> tuple[str, ...]:
    """`submission/NAME.*` and `submission/NAME_auditor.*` of every registry document marked
    `in_submission` except the validation plan (its shape is checked by submission.registry)."""
    from .safeyaml import load

    docs = load(path.read_text(encoding="utf-8"), str(path)) if path.is_file() else {}
    names = [n for n, e in (docs or {}).items()
             if isinstance(e, dict) and e.get("in_submission") is True and n != "validation_plan"]
    return tuple(f"submission/{n}{edition}.*" for n in names for edition in ("", "_auditor"))


@dataclass(frozen=True)
class Stage:
    name: str                       # also the `stage` field of its records and the module it runs
    records: tuple[str, ...]        # record ids, in the order the stage writes them
    needs: tuple[str, ...] = ()     # records of other stages it reads
    params: str | None = None       # its params.yaml section
    sources: tuple[str, ...] = ()   # top-level folders whose Python code it runs
    files: tuple[str, ...] = ()     # non-Python files it reads as code (facts, templates, schemas)
    outs: tuple[str, ...] = ()      # files it writes besides its records, relative to the run folder
    args: str = ""                  # command-line arguments besides --out and --params
    inputs: tuple[str, ...] = ()    # run-folder files besides records that it reads
    in_run: bool = True             # part of `make submission` (False: run on demand, elsewhere)
    optional: bool = False          # on demand, its records written into the run folder when run
    optional_needs: tuple[str, ...] = ()  # records of optional stages it reads when they are present
    doc: str = ""                   # what else it depends on, in words
    runs: str = ""                  # the module it runs, when not its name

    @property
    def module(self) -> str:
        return self.runs or self.name

    @property
    def command(self) -> str:
        extra = f" {self.args}" if self.args else ""
        return f"python -m {self.module}{extra} --out OUT --params PARAMS"

    @property
    def code_sources(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self.sources, *COMMON_SOURCES)))

    @property
    def code_patterns(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*COMMON_FILES, *self.files)))


STAGES: tuple[Stage, ...] = (
    Stage("eda.cohort", ("cohort.manifest",), params="cohort", sources=("eda",),
          args='--data DATA', inputs=("cohort/source.txt", "cohort/inputs.json"),
          outs=("cohort/manifest.csv", "demo/**"),
          doc="the data source files"),
    Stage("eda.split", ("split.patients",), needs=("cohort.manifest",), params="split", sources=("eda",),
          outs=("cohort/splits.csv",)),
    Stage("eda", ("eda.dataset", "eda.pixels", "eda.quality", "eda.ground_truth"),
          needs=("cohort.manifest", "split.patients"), params="eda", sources=("eda", "model"),
          outs=("figures/eda_*.png",)),
    Stage("model.train", ("training.run",), needs=("split.patients",), params="train", sources=("model",),
          outs=("models/model.keras", "models/preprocessing.json", "figures/training_*.png")),
    Stage("model.predict", ("model.predictions",), needs=("training.run",), params="train", sources=("model",),
          outs=("predictions/val.csv",), doc="(the val split only)"),
    Stage("validation.threshold", ("validation.threshold",), needs=("model.predictions",), params="validate",
          sources=("validation",), doc="(the val split only)"),
    Stage("validation.sample_size", ("validation.sample_size", "validation.design"), params="validate",
          sources=("validation",), files=("submission/data/predicate_performance.yml",),
          doc="(params only, and the published predicate performance the goals cite: the pre-specified design "
              "and the held-out sample size)"),
    Stage("validation.pccp_plan", ("pccp.plan",), params="pccp", sources=("validation",),
          files=("submission/data/pccp.yml", "submission/pccp.schema.json"),
          doc="(params only, and the plan's facts file: the acceptance criteria of the predetermined change "
              "control plan)"),
    Stage("model.workflow", ("workflow.dicom",), needs=("training.run", "validation.threshold", "cohort.manifest"),
          params="workflow", sources=("model",), outs=("workflow/**",)),
    Stage("submission.plan", ("submission.plan", "validation.plan_lock"),
          needs=(*PLAN_INPUTS, *PLAN_LOCKED_RECORDS), params="submission", sources=("submission", "templates"),
          files=("submission/data/*.yml", "templates/validation_plan.md.j2", "templates/partials/*.j2",
                 "templates/*.css"),
          outs=("submission/validation_plan*",),
          doc="(no test-split result: the plan is locked before test scores exist)"),
    Stage("model.score_test", ("model.test_predictions",), needs=("training.run", "validation.plan_lock"),
          params="train", sources=("model",), outs=("predictions/test.csv",),
          doc="(runs only after the plan is locked)"),
    Stage("validation.evaluate",
          ("validation.test", "validation.calibration", "validation.subgroups", "validation.benchmark",
           "validation.acceptance"),
          needs=("validation.threshold", "validation.design", "validation.plan_lock", "model.test_predictions"),
          params="validate", sources=("validation", "model"),
          files=("validation/published_benchmarks.yml",), outs=("figures/*_test.png",)),
    Stage("validation.monitoring_plan", ("monitoring.plan",),
          needs=("model.test_predictions", "validation.threshold", "cohort.manifest", "split.patients", "training.run",
                 "workflow.dicom"),
          params="monitoring", sources=("validation", "model"),
          doc="(the alert limits and the test split's baseline for postmarket monitoring)"),
    # time-to-notification of the DICOM node (model.node) over loopback
    Stage("validation.latency", ("workflow.latency",), needs=("workflow.dicom",), params="latency",
          sources=("validation", "model"), doc="dcmtk or pynetdicom on the machine (the DICOM peers)"),
    # the device's runtime dependencies from the hashed lock (CycloneDX); vulnerability check on request
    Stage("submission.sbom", ("software.sbom",), params="submission", sources=("submission", "requirements"),
          files=("requirements/runtime.txt", "submission/data/sbom_support.yml", "submission/data/device.yml"),
          outs=("submission/sbom.cdx.json",),
          doc="the hashed lock `requirements/runtime.txt`, the installed packages' metadata and the support "
              "facts; the vulnerability source only when params ask for it"),
    # the verification of the requirements by the test suite (`make verify`): on demand
    Stage("design.verify", ("verification.tests",), sources=("design",), files=("design/*.yml", "design/*.json"),
          inputs=("verification/junit.xml",), in_run=False, optional=True, args="[--junit FILE] [--bench FILE]",
          doc="the JUnit XML of the test run `make verify` writes (`OUT/verification/junit.xml`) and the "
              "benchmark results of `make bench` when present; written into the run folder"),
    Stage("submission", ("submission.documents",),
          needs=(*PLAN_INPUTS, "submission.plan", "validation.plan_lock", "model.test_predictions",
                 "validation.test", "validation.calibration", "validation.subgroups", "validation.benchmark",
                 "validation.acceptance", "workflow.latency", "software.sbom",
                 "monitoring.plan", "pccp.plan"),
          optional_needs=("verification.tests",),
          params="submission", sources=("submission", "templates", "design"),
          files=("submission/data/*.yml", "templates/**/*.j2", "templates/*.css", "submission/*.schema.json",
                 "design/*.yml"),
          outs=(*registry_outs(), "submission/device_flowchart.png", "submission/software_architecture.png",
                "submission/data_flow.png",
                "submission/traceability.*", "submission/model_card.json")),
    Stage("validation.heldout",
          ("heldout.plan_lock", "heldout.intake", "heldout.metrics", "heldout.subgroups", "heldout.acceptance"),
          params="heldout", sources=("validation", "model"), args="--heldout DIR", in_run=False,
          outs=("figures/roc_heldout.png", "predictions.csv"),
          doc="the locked model and threshold, and the plan files `validation.plan_lock` lists, re-hashed "
              "(records in `OUT/heldout/<name>/evidence/`)"),
    Stage("validation.monitor", ("monitoring.batch",), params="monitoring", sources=("validation", "model"),
          args="--batch BATCH", in_run=False, outs=("batch.csv",),
          doc="record `monitoring.plan` and the test split's scores, the locked model and threshold "
              "(records in `OUT/monitoring/<batch>/evidence/`)"),
    Stage("validation.pccp", ("pccp.assessment",), params="pccp", sources=("validation", "model"),
          args="--new NEW", in_run=False, outs=("predictions.csv",),
          doc="the cleared run OUT (its `pccp.plan`, locked test split, threshold, header checks, preprocessing "
              "and intended-use facts) and the candidate run NEW (records in `OUT/pccp/<candidate>/evidence/`)"),
    Stage("submission.document", ("submission.*",), needs=("*",), params="submission",
          sources=("submission", "templates", "design"),
          files=("submission/data/*.yml", "templates/**/*.j2", "templates/*.css", "submission/*.schema.json", "design/*.yml"),
          args="--document NAME", in_run=False, outs=("submission/**",), runs="submission",
          doc="the records of the folder it renders (e.g. a held-out report in `OUT/heldout/<name>`)"),
)


def by_name(name: str) -> Stage:
    for stage in STAGES:
        if stage.name == name:
            return stage
    raise EvidenceError(f"stage {name!r} is not declared in evidence/stages.py "
                        f"(stages: {', '.join(s.name for s in STAGES)})")


def stage_of(record_id: str) -> Stage:
    """The stage that writes `record_id` (an exact id wins over a family such as `submission.*`)."""
    for exact in (True, False):
        for stage in STAGES:
            if any(_matches(record_id, r, exact) for r in stage.records):
                return stage
    raise EvidenceError(f"record {record_id}: no stage declares it; add it to a stage in evidence/stages.py")


def _matches(record_id: str, declared: str, exact: bool) -> bool:
    if exact:
        return record_id == declared
    return declared == "*" or (declared.endswith(".*") and record_id.startswith(declared[:-1]))


def run_records() -> tuple[str, ...]:
    """Every record a complete run folder holds, in pipeline order."""
    return tuple(r for s in STAGES if s.in_run for r in s.records)


def optional_records() -> tuple[str, ...]:
    """Records a run folder may hold besides `run_records()`: those of optional stages (`make verify`)."""
    return tuple(r for s in STAGES if s.optional for r in s.records)


def upstream(stage: Stage) -> set[str]:
    """Records `stage` may depend on: its needs, their stages' needs, and so on."""
    seen: set[str] = set()
    todo = [*stage.needs, *stage.optional_needs]
    while todo:
        rid = todo.pop()
        if rid in seen:
            continue
        seen.add(rid)
        if not rid.endswith("*"):
            todo.extend(stage_of(rid).needs)
    return seen


def check_dependency(record_id: str, dep_id: str) -> None:
    """A record may depend on records upstream of its stage, or written earlier by its own stage."""
    stage = stage_of(record_id)
    allowed = upstream(stage) | set(stage.records)
    if dep_id in allowed or any(_matches(dep_id, a, False) for a in allowed):
        return
    raise EvidenceError(f"record {record_id}: depends on {dep_id}, which stage {stage.name} does not declare "
                        f"(declare it under `needs` of {stage.name} in evidence/stages.py)")


def code_files(stage: Stage, root: Path = REPO_ROOT) -> list[Path]:
    """Every file whose content is the stage's code: the .py files of its source folders and the
    non-Python files its patterns name, sorted and without repeats (listed once per process and
    stage: a stage writes several records)."""
    return list(_code_files(stage, root))


@lru_cache(maxsize=None)
def _code_files(stage: Stage, root: Path) -> tuple[Path, ...]:
    files: set[Path] = set()
    for pkg in stage.code_sources:
        folder = root / pkg
        if not folder.is_dir():
            raise EvidenceError(f"stage {stage.name}: source folder {pkg!r} not found under {root}")
        files.update(f for f in folder.rglob("*.py") if "__pycache__" not in f.parts)
    for pattern in stage.code_patterns:
        found = [f for f in root.glob(pattern) if f.is_file()]
        if not found:
            raise EvidenceError(f"stage {stage.name}: file pattern {pattern!r} matches no file under {root}")
        files.update(found)
    return tuple(sorted(files))


def hashed_by(path: str) -> list[Stage]:
    """The stages whose records hash the repository file `path` (relative to the repository root)."""
    return [s for s in STAGES if any(f.relative_to(REPO_ROOT).as_posix() == path for f in code_files(s))]


def out_declared(stage: Stage, relpath: str) -> bool:
    """Is `relpath` (relative to the run folder) among the files `stage` declares it writes?"""
    return any(fnmatchcase(relpath, pattern.replace("**", "*")) for pattern in stage.outs)


def why(stage_name: str, out: str | Path, changed: list[str]) -> str:
    """Why a stage runs, from the prerequisites make found newer than its records (`$?`):
    no record yet, or what changed (params sections, DATA, input images, records it needs, code)."""
    stage = by_name(stage_name)
    if any(not layout.record(out, r).is_file() for r in stage.records if not r.endswith("*")):
        return "no record yet"
    params, records, code, data, images = [], [], [], False, False
    for item in changed:
        p = Path(item)
        if p == layout.params_stamp(out, p.stem):
            params.append(p.stem)
        elif p == layout.record(out, p.stem):
            records.append(p.stem)
        elif p == layout.data_source(out):
            data = True
        elif p == layout.input_stamp(out):
            images = True
        else:
            code.append(item)
    parts = [f"params section {', '.join(params)} changed"] if params else []
    parts += ["DATA changed"] if data else []
    parts += ["input images changed"] if images else []
    parts += [f"record {', '.join(sorted(set(records)))} changed"] if records else []
    if code:
        more = f" (+{len(code) - SHOWN} more)" if len(code) > SHOWN else ""
        parts.append(f"code changed: {', '.join(code[:SHOWN])}{more}")
    return "; ".join(parts) or "nothing it depends on changed (forced)"


def markdown() -> str:
    """ARCHITECTURE.md's record table (between its `stages:begin`/`stages:end` markers)."""
    rows = ["| records | stage (command) | params | depends on | in the run |", "|---|---|---|---|---|"]
    for s in STAGES:
        records = ", ".join(f"`{r}`" for r in s.records)
        needs = ", ".join(f"`{r}`" for r in s.needs if r != "*")
        if s.optional_needs:
            needs += "; when present: " + ", ".join(f"`{r}`" for r in s.optional_needs)
        depends = "; ".join(x for x in (needs, s.doc) if x) or "(nothing)"
        params = f"`{s.params}`" if s.params else "(none)"
        rows.append(f"| {records} | `{s.name}`: `{s.command}` | {params} | {depends} | "
                    f"{'yes' if s.in_run else 'on demand, in the run folder' if s.optional else 'on demand'} |")
    return "\n".join(rows) + "\n"
