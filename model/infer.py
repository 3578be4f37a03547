"""Classify DICOM files with the locked device: header checks, decoding, preprocessing, prediction
at the locked threshold, and the clinician image for every accepted file.

    python -m model.infer [--run RUN] [--params PARAMS] [--no-images] [--secondary-capture] [-v|-q] FILE_OR_DIR...
    python -m model.infer --shard K/N ... FILE_OR_DIR...   then   python -m model.infer --merge N ... FILE_OR_DIR...

RUN is the run folder that holds the locked model (default build); the clinician images go to
RUN/infer/. `--out` is the old name of `--run` and still works.

One JSON line per file on stdout (`file`, `status` accepted|rejected|error, `reasons`,
`probability`, `prediction`, `threshold`, `model_sha256`, `clinician_image`, header fields),
then one summary line. One image is classified once: a file reached again (a symlink, `./x` and
`x`) or a copy with the same bytes gets a line with status `duplicate` and `duplicate_of` (the
file classified in its place) and counts in the summary's `duplicates` (`evidence.unique`). Progress goes to stderr (`-q`: none); library warnings to
`OUT/logs/model.infer.log` (`-v`: also to stderr). A bad file never stops the batch; the exit code
is 2 only when the tool itself cannot run (no model, no locked threshold, no files), 70 on a bug.

Header checks (`header_rules`): the `checks` of the run's `workflow.dicom` record when OUT has one
(the rules the workflow check locked; --params is then not read), else the `workflow` section of
--params, else `model.dicom.DEFAULT_RULES`.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from evidence import Store, EvidenceError, console, layout, sha256_file
from evidence.cli import guarded
from evidence.params import ParamsError, load_all
from evidence.errors import ToolkitError

from . import dicom

BATCH = 64
# Threads reading and decoding files ahead of prediction: one core is left to TensorFlow. On 2 cores
# one thread measured faster than 2 or 4 (`make bench BENCH=inference`); pydicom's parsing holds
# the GIL, so more than a few threads would not help.
INTAKE_WORKERS = max(1, min(4, (os.cpu_count() or 2) - 1))
# The model and spec paths relative to the run folder, as `training.run` lists them in its outs.
MODEL_FILE = layout.model_file("").as_posix()
SPEC_FILE = layout.preprocessing_spec("").as_posix()
WORKFLOW_RECORD = "workflow.dicom"
STATUSES = (dicom.ACCEPTED, dicom.REJECTED, dicom.ERROR)


class DeviceError(ToolkitError, RuntimeError):
    """The locked device (model, spec, threshold) cannot be loaded; the message names the fix."""


@dataclass
class LockedDevice:
    model: object
    spec: object
    threshold: float
    model_sha256: str
    model_path: Path
    out: Path
    rules: dicom.Rules = field(default_factory=lambda: dicom.rules_from(None))
    rules_source: str = "defaults"

    def record_files(self) -> list[Path]:
        """The files that pin this device: model, spec and the two records it came from."""
        return [self.model_path, layout.preprocessing_spec(self.out), layout.record(self.out, "training.run"),
                layout.record(self.out, "validation.threshold")]


def load_device(out: str | Path, params_file: str | Path | None = None, *, rules: dict | None = None) -> LockedDevice:
    """The model, its preprocessing spec, the locked threshold, the recorded model sha256 (model and
    spec checked against `training.run`, `trained_sha256`) and the header checks: `rules` when given
    (model.workflow, which writes the record), else `header_rules(out, params_file)`."""
    out = Path(out)
    model_path = out / MODEL_FILE
    if not model_path.is_file() or not (out / SPEC_FILE).is_file():
        raise DeviceError(f"no model in {out}: {model_path} or {out / SPEC_FILE} is missing "
                          "(run `make train` or pass --run (model.infer) or --out (other stages) a run folder with a trained model)")
    recorded = trained_sha256(out)
    try:
        threshold = Store(out).value("validation.threshold", "threshold")
    except EvidenceError as e:
        raise DeviceError(str(e)) from None
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise DeviceError(f"record validation.threshold: data.threshold is {threshold!r}, not a number")
    rules, source = (dicom.rules_from(rules), "given") if rules is not None else header_rules(out, params_file)
    model, spec = _load_model(out)
    return LockedDevice(model, spec, float(threshold), recorded[MODEL_FILE], model_path, out, rules, source)


def header_rules(out: str | Path, params_file: str | Path | None = None) -> tuple[dicom.Rules, str]:
    """(header-check rules, their source): the `checks` of the run's `workflow.dicom` record when
    present, else the `workflow` section of `params_file`, else `model.dicom.DEFAULT_RULES`."""
    store = Store(out)
    if store.has(WORKFLOW_RECORD):
        try:
            checks = store.value(WORKFLOW_RECORD, "checks")
        except EvidenceError as e:
            raise DeviceError(f"{e} (rerun `make workflow`)") from None
        return dicom.rules_from(checks), f"record {WORKFLOW_RECORD}"
    if params_file is None:
        return dicom.rules_from(None), "defaults"
    section = load_all(params_file).get("workflow") or {}
    if not isinstance(section, dict):
        raise ParamsError(f"params file {params_file}: section 'workflow' must be a mapping")
    return dicom.rules_from(section), "params workflow"


def trained_sha256(out: str | Path) -> dict[str, str]:
    """{MODEL_FILE: sha256, SPEC_FILE: sha256} from the outs of the run's `training.run` record;
    each file is re-hashed and must match, so that neither the model nor its preprocessing changed
    after training."""
    out = Path(out)
    try:
        recorded = {o["path"]: o["sha256"] for o in Store(out).get("training.run")["outs"]}
    except EvidenceError as e:
        raise DeviceError(str(e)) from None
    for name in (MODEL_FILE, SPEC_FILE):
        if name not in recorded:
            raise DeviceError(f"record training.run in {out} does not list {name} in its outs (rerun `make train`)")
        if sha256_file(out / name) != recorded[name]:
            raise DeviceError(f"{out / name} does not match the sha256 recorded by training.run "
                              "(the file changed after training; rerun `make train`)")
    return {name: recorded[name] for name in (MODEL_FILE, SPEC_FILE)}


def _load_model(out: Path):
    from .train import load_model

    try:
        return load_model(out)
    except Exception as e:
        raise DeviceError(f"cannot load the model in {out / 'models'}: {type(e).__name__}: {e}") from None


def expand(inputs: Iterable[str | Path], *, skip: Iterable[Path] = ()) -> list[Path]:
    """Files named, plus every non-hidden file below each folder named (sorted, recursive)."""
    skip = {Path(p).resolve() for p in skip}
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += sorted(p for p in item.rglob("*") if p.is_file() and not any(
                part.startswith(".") for part in p.relative_to(item).parts))
        else:
            files.append(item)
    return [f for f in dict.fromkeys(files) if f.resolve() not in skip]


def predict(model, batch: np.ndarray) -> np.ndarray:
    """Pneumonia probabilities for a preprocessed batch (N, H, W, C)."""
    from .saliency import probability_of

    return np.asarray(probability_of(model(batch, training=False)), dtype=np.float64)


def image_name(path: Path) -> str:
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]
    return f"{path.stem[:60]}_{digest}"


def classify(files: Iterable[str | Path], device: LockedDevice, rules: dict | None = None, *,
             image_dir: Path | None = None, secondary_capture: bool = False, batch_size: int = BATCH,
             workers: int = INTAKE_WORKERS, progress: Callable[[int], None] | None = None) -> Iterator[dict]:
    """Yield one result dict per file, in order, checked with `rules` (default: the device's).
    Files are read and checked on intake threads (`intakes`) while the accepted ones are
    preprocessed and predicted in batches. Memory: at most two batches of decoded images (the
    batch being predicted and the one being read), each bounded by `workflow.read_ahead_mb`."""
    rules = dicom.rules_from(device.rules if rules is None else rules)
    budget = read_ahead_bytes(rules)
    pending: list[dicom.Intake] = []
    ready = held = done = 0
    for item in intakes(map(Path, files), rules, ahead=batch_size, workers=workers, ahead_bytes=budget):
        pending.append(item)
        ready += item.pixels is not None
        held += item.nbytes
        if ready >= batch_size or held >= budget:
            yield from _flush(pending, device, image_dir, secondary_capture)
            done += len(pending)
            pending, ready, held = [], 0, 0
            if progress:
                progress(done)
    if pending:
        yield from _flush(pending, device, image_dir, secondary_capture)
        if progress:
            progress(done + len(pending))


def read_ahead_bytes(rules: dict) -> int:
    """The read-ahead budget in bytes (`workflow.read_ahead_mb`)."""
    return int(float(rules["read_ahead_mb"]) * 2**20)


def intakes(files: Iterable[Path], rules: dict, *, ahead: int = BATCH, workers: int = INTAKE_WORKERS,
            ahead_bytes: int | None = None) -> Iterator[dicom.Intake]:
    """`model.dicom.intake` of each file, in order, run by `workers` threads ahead of the consumer,
    so that reading and decoding overlap with prediction (TensorFlow, file reads and NumPy release
    the GIL). Read-ahead is bounded in bytes, not files: a file is started only while the decoded
    pixels held (finished files not yet consumed) plus a reservation for each file still being read
    (the largest image the header checks accept, `max_megapixels` x 4 bytes, at most the budget)
    stay within `ahead_bytes` (default `read_ahead_bytes(rules)`); at most `ahead` files, and
    always at least one."""
    rules = dicom.rules_from(rules)
    budget = read_ahead_bytes(rules) if ahead_bytes is None else int(ahead_bytes)
    reserve = min(budget, int(float(rules["max_megapixels"]) * 1e6 * 4))
    files = iter(files)

    def held(queue) -> int:
        return sum(f.result().nbytes if f.done() and not f.cancelled() and f.exception() is None else reserve
                   for f in queue)

    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="intake") as pool:
        queue: deque = deque()
        try:
            while True:
                while len(queue) < max(1, ahead) and (not queue or held(queue) + reserve <= budget):
                    path = next(files, None)
                    if path is None:
                        break
                    queue.append(pool.submit(dicom.intake, path, rules))
                if not queue:
                    return
                yield queue.popleft().result()
        finally:
            for future in queue:
                future.cancel()


def _flush(pending: list[dicom.Intake], device: LockedDevice, image_dir, secondary_capture) -> Iterator[dict]:
    from .preprocess import preprocess_batch

    accepted = [i for i, item in enumerate(pending) if item.pixels is not None]
    probs, saliency = {}, {}
    if accepted:
        batch = preprocess_batch([pending[i].pixels for i in accepted], device.spec)
        probs = dict(zip(accepted, map(float, predict(device.model, batch))))
        if image_dir is not None:
            saliency = _saliency(device.model, batch, accepted, probs)
    for i, item in enumerate(pending):
        yield _result(item, probs.get(i), saliency.get(i), device, image_dir, secondary_capture)


def _saliency(model, batch: np.ndarray, accepted: list[int], probs: dict) -> dict:
    """{pending index: (map, method, layer)} for the batch (one pass per chunk), or the exception
    for every index when no map could be made."""
    from .saliency import saliency_maps

    try:
        maps, method, layer = saliency_maps(model, batch, [probs[i] for i in accepted])
    except Exception as e:
        return {i: e for i in accepted}
    return {i: (m, method, layer) for i, m in zip(accepted, maps)}


def _result(item: dicom.Intake, probability, saliency, device, image_dir, secondary_capture) -> dict:
    check, header = item.check, item.header
    row = {"file": item.file, **check.as_dict(),
           "study_description": dicom.clean_text(header.get("StudyDescription")) if header is not None else None,
           "patient_id": dicom.clean_text(header.get("PatientID")) if header is not None else None,
           "probability": None, "prediction": None, "threshold": device.threshold,
           "model_sha256": device.model_sha256, "clinician_image": None, "secondary_capture": None,
           "saliency_method": None, "saliency_layer": None}
    if probability is None or not np.isfinite(probability):
        if check.status == dicom.ACCEPTED:
            check.status = dicom.ERROR
            check.add("model_error")
        row.update(status=check.status, reasons=list(check.reasons), codes=list(check.codes))
        return row
    row["probability"] = probability
    row["prediction"] = bool(probability >= device.threshold)
    if image_dir is not None:
        try:
            row.update(_clinician_outputs(item, probability, saliency, device, image_dir, secondary_capture))
        except Exception as e:
            row["warnings"] = row["warnings"] + [f"clinician image not written: {type(e).__name__}: "
                                                 f"{dicom.clean_text(e, 200)}"]
    return row


def _clinician_outputs(item, probability, saliency, device, image_dir: Path, secondary_capture) -> dict:
    from . import clinician
    from .names import person_name

    if isinstance(saliency, Exception):
        raise saliency
    header = item.header
    heat, method, layer = saliency
    name = image_name(Path(item.file))
    lines = []
    if header is not None:
        who = person_name(dicom.clean_text(header.get("PatientName"), 324) or "")   # "Family, Given"
        pid = dicom.clean_text(header.get("PatientID")) or ""
        study = dicom.clean_text(header.get("StudyDescription")) or ""
        lines.append(f"Patient {who} {('(ID ' + pid + ')') if pid else ''}  Study: {study}".strip())
    png = clinician.render_png(image_dir / f"{name}.png", item.pixels, heat, probability=probability,
                               threshold=device.threshold, view=item.check.view,
                               saliency_method=f"{method} on {layer}" if layer else method,
                               intended=clinician.intended_use(device.rules), header_lines=lines)
    out = {"clinician_image": str(png), "saliency_method": method, "saliency_layer": layer}
    if secondary_capture:
        out["secondary_capture"] = str(clinician.secondary_capture(png, image_dir / f"{name}_sc.dcm", header))
    return out


def summary(rows: list[dict]) -> dict:
    """Files per status and the number flagged (prediction true) of result rows."""
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    flagged = sum(bool(r.get("prediction")) for r in rows)
    return {"summary": True, "files": len(rows), **counts, "flagged": flagged}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.infer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", "--out", dest="out", default="build", metavar="RUN",
                        help="the run folder that holds the locked model (default build); clinician images go "
                             "to RUN/infer/ (--out: the old name of this option)")
    parser.add_argument("--params", default=None, help="params file; its workflow section sets the header checks "
                        "when the run has no workflow.dicom record")
    parser.add_argument("--no-images", action="store_true", help="do not write clinician PNGs")
    parser.add_argument("--secondary-capture", action="store_true", help="also write a DICOM Secondary Capture")
    scale = parser.add_mutually_exclusive_group()   # model/sharding.py
    scale.add_argument("--shard", metavar="K/N", help="classify share K of N of the files (also kept in "
                       "OUT/infer/.shards/); then --merge N with the same files")
    scale.add_argument("--merge", metavar="N", type=int, help="print the N shards' results as one run would")
    console.add_arguments(parser)
    parser.add_argument("inputs", nargs="+", help="DICOM files or folders (searched recursively)")
    args = parser.parse_args(argv)
    command = " ".join(["python -m model.infer", *(sys.argv[1:] if argv is None else argv)])

    def body() -> int:
        with console.session(args.out, "model.infer", command=command, verbose=args.verbose, quiet=args.quiet):
            return _infer(args)

    return guarded(body)


def _infer(args: argparse.Namespace) -> int:
    from . import sharding
    from .batching import fixed_batch

    device = fixed_batch(load_device(args.out, args.params))  # a file's probability is that of any batch
    files, duplicates = unique_files(args.inputs)
    if not files:
        raise ToolkitError(f"no files found in {' '.join(args.inputs)} (pass DICOM files or folders)")
    shard = sharding.parse_shard(args.shard) if args.shard else None
    if not shard:   # a shard's output is not read; the merge prints them as one run does
        for row in duplicate_rows(duplicates):
            print(json.dumps(row, ensure_ascii=False), flush=True)
    image_dir = None if args.no_images else layout.inference(args.out)
    if args.merge is not None:
        rows = sharding.merged_rows(args.out, files, args.merge, (device.model_sha256, device.threshold))
        for row in rows:
            print(json.dumps(row, ensure_ascii=False, allow_nan=False), flush=True)
    else:
        rows = _classify_printed(sharding.select(files, *shard) if shard else files, device, image_dir, args)
    if shard:
        sharding.write_shard(args.out, *shard, rows)
    if image_dir is not None and not shard and any(r["clinician_image"] for r in rows):
        from evidence import atomic
        from .clinician import html_index, intended_use
        atomic.write_text(image_dir / "index.html", html_index(rows, intended_use(device.rules)))
    print(json.dumps({**summary(rows), "duplicates": len(duplicates)}), flush=True)
    if args.merge is not None:
        sharding.remove(args.out, args.merge)
    return 0


def _classify_printed(files: list[Path], device: LockedDevice, image_dir, args) -> list[dict]:
    """Classify `files`, printing each result line as it comes; return the rows."""
    bar = console.Progress("infer", len(files))
    rows = []
    try:
        for row in classify(files, device, image_dir=image_dir,
                            secondary_capture=args.secondary_capture, progress=bar.update):
            rows.append(row)
            print(json.dumps(row, ensure_ascii=False, allow_nan=False), flush=True)
    finally:
        bar.close()
    return rows


def unique_files(inputs: list[str]):
    """(each image once, in order; the duplicates left out, under the names as given: `./x` after
    `x` is reported, not silently merged): `evidence.unique.dedupe_paths` over the files named and
    the files found in the folders named."""
    from evidence.unique import dedupe_paths

    named: list[str] = []
    for item in inputs:
        named += [str(p) for p in expand([item])] if Path(item).is_dir() else [str(item)]
    return dedupe_paths(named)


def duplicate_rows(duplicates) -> list[dict]:
    """The output line of each file left out as a duplicate of one that is classified."""
    from evidence.unique import SAME_CONTENT

    return [{"file": d.item.name, "status": "duplicate", "duplicate_of": d.first.name,
             "reasons": [f"{d.how} as {d.first.name}" + (f" (sha256 {d.item.sha256[:12]})" if d.how == SAME_CONTENT else "")
                         + "; classified once, under that name"]} for d in duplicates]


if __name__ == "__main__":
    sys.exit(main())
