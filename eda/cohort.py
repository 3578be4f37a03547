"""Cohort manifest: `python -m eda.cohort --data DATA --out OUT --params PARAMS`.

DATA is `demo` (generate the synthetic cohort into OUT/demo), a folder holding `labels.csv`
(folder source), or a folder holding an NIH label file anywhere below it (NIH source). Hashes every
image present (in parallel, `evidence.inputs`), then writes `OUT/cohort/manifest.csv` (with each
image's `sha256`), the make stamp of the inputs and the record `cohort.manifest` (with the Merkle root).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from evidence import atomic, inputs, layout, manifest as contract, write_record
from evidence.params import section
from evidence.cli import stage_main

from . import demo
from .sources import SourceError, SourceResult, folder, nih

RECORD_ID = "cohort.manifest"


def load_source(data: str, out_dir: str | Path, params: dict) -> tuple[SourceResult, list[Path]]:
    """Pick and run the adapter for DATA; return (result, files written by the source)."""
    nih_params = params.get("nih") or {}
    if data == "demo":
        demo.generate(out_dir, params.get("demo") or {})
        folder_ = layout.demo(out_dir).resolve()
        result = nih.load(folder_, nih_params, label_file=folder_ / demo.LABELS, kind="demo", release="demo")
        return result, [folder_ / demo.LABELS, folder_ / demo.STAMP]
    path = Path(data)
    if not path.is_dir():
        raise SourceError(f"--data {data!r}: not 'demo' and not an existing folder; pass DATA=demo or a folder "
                          f"holding labels.csv or an NIH label file ({', '.join(nih.LABEL_PATTERNS)})")
    if (path / folder.LABELS).is_file():
        return folder.load(path, nih_params), []
    return nih.load(path, nih_params), []


def counts(m: pd.DataFrame) -> dict:
    pos = m["pneumonia"] == 1
    return {
        "images": int(len(m)),
        "patients": int(m["patient_id"].nunique()),
        "pneumonia_images": int(pos.sum()),
        "pneumonia_patients": int(m.loc[pos, "patient_id"].nunique()),
        "images_with_pixels": int((m["path"] != "").sum()),
    }


def run(data: str, out_dir: str | Path, params: dict) -> dict:
    """Build the manifest and write it with its record; return the record."""
    out_dir = Path(out_dir)
    result, demo_files = load_source(data, out_dir, params)
    m = result.manifest
    if m.empty:
        raise SourceError(f"data source {result.source['label_file']}: no images listed; add rows to the label file")
    hashes = inputs.hash_files(m["path"])
    m = m.assign(sha256=[sha for sha, _ in hashes])[list(contract.COLUMNS)]
    manifest = layout.manifest(out_dir)
    atomic.write_text(manifest, m.to_csv(index=False, lineterminator="\n"))
    inputs.write_stamp(out_dir)
    data_ = {
        "source": result.source,
        "counts": counts(m),
        "inputs": inputs.summary(m["image_id"], hashes),
        "quality_findings": result.quality_findings,
        **result.extra,
    }
    return write_record(
        out_dir, RECORD_ID, data=data_, params=params,
        deps=result.deps, outs=[manifest, *demo_files],
        synthetic=bool(result.source["synthetic"]),
    )


def main(argv: list[str] | None = None) -> int:
    return stage_main(
        argv, prog="python -m eda.cohort", doc=__doc__,
        add_arguments=lambda p: p.add_argument("--data", required=True, help="demo, or a data folder"),
        call=lambda a: run(a.data, a.out, section(a.params, "cohort")), summary=_summary)


def _summary(record: dict, args) -> str:
    c = record["data"]["counts"]
    return (f"cohort: {c['images']} images, {c['patients']} patients, {c['pneumonia_images']} pneumonia images "
            f"({record['data']['source']['kind']}) -> {layout.manifest(args.out)}")


if __name__ == "__main__":
    sys.exit(main())
