"""Our F1 beside the published CheXNet radiologist benchmark, with what can and cannot be compared."""
from __future__ import annotations

from pathlib import Path

import yaml

PUBLISHED = Path(__file__).with_name("published_benchmarks.yml")

COMPARABILITY = (
    "Not a head-to-head comparison. The published F1 values were measured on 420 ChestX-ray14 "
    "images whose reference standard was a majority vote of practising radiologists; our F1 is "
    "measured on our own test split, whose reference standard is the NIH text-mined label, at "
    "a threshold locked on our validation split, in a population whose prevalence and case mix "
    "differ. The numbers place our result in the range reported in the literature; no "
    "superiority or non-inferiority claim can be drawn from them, and the intervals cannot be "
    "used to test a difference."
)


def load_published(path: Path = PUBLISHED) -> dict:
    entry = yaml.safe_load(Path(path).read_text(encoding="utf-8"))["chexnet_radiologists_f1"]
    values = {}
    for name, v in entry["values"].items():
        values[name] = {"estimate": float(v["estimate"]), "ci_low": float(v["ci_low"]),
                        "ci_high": float(v["ci_high"]), "ci_level": float(entry["ci_level"]),
                        "method": entry["ci_method"], "n": int(entry["n_images"])}
    return {"citation": " ".join(entry["citation"].split()), "url": entry["url"],
            "test_set": " ".join(entry["test_set"].split()), "metric": entry["metric"], "values": values}


def benchmark(our_f1: dict, *, test_n: int, test_positives: int) -> dict:
    """The `validation.benchmark` data. our_f1: the bootstrap F1 estimate (or not estimable)."""
    pub = load_published()
    return {
        "published": pub,
        "published_source": "validation/published_benchmarks.yml (hashed under code.files)",
        "ours": {"f1": our_f1, "test_n": int(test_n), "test_positives": int(test_positives),
                 "reference_standard": "NIH ChestX-ray14 text-mined label (or the demo cohort's label)"},
        "comparable": False,
        "comparability": COMPARABILITY,
    }
