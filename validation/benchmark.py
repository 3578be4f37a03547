"""Our F1 beside the published CheXNet radiologist benchmark, with what can and cannot be compared."""
from __future__ import annotations

from pathlib import Path

import yaml

from .predictions import InputError

PUBLISHED = Path(__file__).with_name("published_benchmarks.yml")

REFERENCE_STANDARDS = {
    "nih": "NIH ChestX-ray14 label text-mined from the radiology reports",
    "demo": "label generated with the synthetic demo cohort (known exactly; not a clinical reference standard)",
    "folder": "label supplied with the folder source (labeling method not known to the toolkit)",
}
COMPARABILITY = (
    "Not a head-to-head comparison. The published F1 values were measured on {n_images} {dataset} "
    "images whose reference standard was {published_standard}; our F1 is measured on our own test "
    "split, whose reference standard is the {our_standard}, at a threshold locked on our validation "
    "split, in a population whose prevalence and case mix differ. The values are shown side by side "
    "for orientation only: no superiority or non-inferiority claim can be drawn from them, and the "
    "intervals cannot be used to test a difference."
)


def reference_standard(source_kinds) -> str:
    """Our reference standard, from the cohort manifest's `source` values (demo, nih or folder)."""
    kinds = sorted(set(source_kinds))
    unknown = [k for k in kinds if k not in REFERENCE_STANDARDS]
    if unknown:
        raise InputError(f"cohort manifest source {unknown!r}: expected one of {', '.join(REFERENCE_STANDARDS)}")
    return "; ".join(REFERENCE_STANDARDS[k] for k in kinds)


def _entry(path: Path = PUBLISHED) -> dict:
    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))["chexnet_radiologists_f1"]


def load_published(path: Path = PUBLISHED) -> dict:
    entry = _entry(path)
    values = {}
    for name, v in entry["values"].items():
        values[name] = {"estimate": float(v["estimate"]), "ci_low": float(v["ci_low"]),
                        "ci_high": float(v["ci_high"]), "ci_level": float(entry["ci_level"]),
                        "method": entry["ci_method"], "n": int(entry["n_images"])}
    return {"citation": " ".join(entry["citation"].split()), "url": entry["url"],
            "test_set": " ".join(entry["test_set"].split()), "metric": entry["metric"], "values": values}


def benchmark(our_f1: dict, *, test_n: int, test_positives: int, source_kinds) -> dict:
    """The `validation.benchmark` data. our_f1: the bootstrap F1 estimate (or not estimable);
    source_kinds: the cohort manifest's `source` values."""
    entry = _entry()
    ours = reference_standard(source_kinds)
    return {
        "published": load_published(),
        "published_source": "validation/published_benchmarks.yml (hashed under code.files)",
        "ours": {"f1": our_f1, "test_n": int(test_n), "test_positives": int(test_positives),
                 "reference_standard": ours},
        "comparable": False,
        "comparability": COMPARABILITY.format(
            n_images=int(entry["n_images"]), dataset=entry["dataset"],
            published_standard=entry["reference_standard"], our_standard=ours),
    }
