"""Demo cohort: a deterministic synthetic NIH-like cohort (metadata + small radiograph-like PNGs).

Everything here is synthetic and says so: the label file has a `Synthetic` column, every PNG carries
a text chunk, and `demo.json` stamps the generator. The label file uses the NIH 2020 columns so the
demo flows through the NIH adapter. Patients have several follow-up images; pneumonia patients are
older and more often imaged AP, as in NIH; ages are mostly adult with a small share under 18 (as in
NIH; outside the intended use, so the out-of-scope strata have rows); the 14 NIH findings co-occur
(infiltration, effusion, atelectasis, consolidation more often with pneumonia). Pneumonia adds a patchy
consolidation-like opacity inside a lung field, of varying size and density (faint ones are hard);
cardiomegaly, effusion, nodules, masses and infiltration also leave (confounding) marks.

The default cohort is enriched (`pneumonia_prevalence` is per patient, and a pneumonia patient has
pneumonia on `PNEUMONIA_IMAGE_SHARE` of its images, at least one) and sized (`n_patients`) so that
the patient-level test split holds at least 125 positive and 125 negative images, above the 113 of
each that the default validation plan requires (exact binomial test of sensitivity and specificity
above 0.80 at an anticipated 0.90, one-sided alpha 0.025, power 0.80), and the validation split
enough of both for the operating point; `tests/test_demo.py` checks it without rendering.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, PngImagePlugin
from scipy import ndimage

from evidence import atomic, layout, sha256_file
from evidence.errors import ToolkitError

GENERATOR = "eda.demo/2"
LABELS = "labels.csv"
STAMP = "demo.json"
COLUMNS = ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender",
           "View Position", "OriginalImage[Width", "Height]", "OriginalImagePixelSpacing[x", "y]", "Synthetic"]
# Per-patient (chronic) and per-image (acute) findings: base probability, extra probability with pneumonia.
CHRONIC = {"Cardiomegaly": 0.05, "Emphysema": 0.04, "Fibrosis": 0.03, "Nodule": 0.06, "Mass": 0.04,
           "Pleural_Thickening": 0.04, "Hernia": 0.005}
ACUTE = {"Infiltration": (0.15, 0.35), "Effusion": (0.10, 0.20), "Atelectasis": (0.09, 0.15),
         "Consolidation": (0.03, 0.12), "Edema": (0.02, 0.08), "Pneumothorax": (0.04, 0.0)}
# Share of a pneumonia patient's images that show pneumonia (NIH: pneumonia is on some follow-ups only).
PNEUMONIA_IMAGE_SHARE = 0.7
DEFAULTS = {"seed": 20240601, "n_patients": 800, "image_size": 64, "pneumonia_prevalence": 0.6}


class DemoError(ToolkitError, ValueError):
    pass


def settings(params: dict) -> dict:
    """The demo settings: the `cohort.demo` params (checked by evidence.params) over DEFAULTS."""
    return {k: (params or {}).get(k, v) for k, v in DEFAULTS.items()}


def metadata(s: dict) -> pd.DataFrame:
    """One NIH-like label row per synthetic image (deterministic from the seed)."""
    rng = np.random.default_rng([s["seed"], 0])
    rows = []
    for pid in range(1, s["n_patients"] + 1):
        pneu_patient = rng.random() < s["pneumonia_prevalence"]
        n_images = 1 + min(int(rng.poisson(1.9)), 9)
        sex = "M" if rng.random() < 0.565 else "F"
        age0 = float(np.clip(rng.normal(55 if pneu_patient else 46, 17), 2, 92))
        chronic = [f for f, p in CHRONIC.items() if rng.random() < p]
        pneu = rng.random(n_images) < PNEUMONIA_IMAGE_SHARE if pneu_patient else np.zeros(n_images, bool)
        if pneu_patient and not pneu.any():
            pneu[rng.integers(n_images)] = True
        spacing = float(rng.choice([0.143, 0.139, 0.168], p=[0.6, 0.2, 0.2]))
        for fu in range(n_images):
            age = int(min(age0 + fu * rng.uniform(0, 0.6), 95))
            findings = list(chronic)
            for f, (base, extra) in ACUTE.items():
                if rng.random() < base + extra * pneu[fu]:
                    findings.append(f)
            if pneu[fu]:
                findings.append("Pneumonia")
            p_ap = 0.30 + 0.30 * pneu[fu] + 0.10 * (age > 60)
            rows.append({
                "Image Index": f"{pid:08d}_{fu:03d}.png",
                "Finding Labels": "|".join(sorted(findings)) or "No Finding",
                "Follow-up #": fu, "Patient ID": pid, "Patient Age": age, "Patient Gender": sex,
                "View Position": "AP" if rng.random() < p_ap else "PA",
                "OriginalImage[Width": int(np.clip(rng.normal(2600, 300), 1800, 3056)),
                "Height]": int(np.clip(rng.normal(2550, 300), 1800, 3056)),
                "OriginalImagePixelSpacing[x": spacing, "y]": spacing, "Synthetic": "true",
            })
    return pd.DataFrame(rows, columns=COLUMNS)


def _ellipse(yy, xx, cy, cx, ry, rx, soft=0.04):
    d = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
    return 1 / (1 + np.exp((d - 1) / soft))


def render(row: pd.Series, s: dict) -> np.ndarray:
    """A radiograph-like uint8 image for one label row (deterministic from seed, patient, follow-up)."""
    n = s["image_size"]
    pid, fu = int(row["Patient ID"]), int(row["Follow-up #"])
    anat = np.random.default_rng([s["seed"], 1, pid])          # patient anatomy: same for all follow-ups
    rng = np.random.default_rng([s["seed"], 2, pid, fu])       # this image
    findings = set(row["Finding Labels"].split("|"))
    ap = row["View Position"] == "AP"
    yy, xx = np.mgrid[0:n, 0:n] / n
    yy = yy + rng.normal(0, 0.015)
    xx = xx + rng.normal(0, 0.015)
    width = anat.uniform(0.85, 1.05)
    lung_rx, lung_ry = 0.15 * width, anat.uniform(0.26, 0.32) * (0.94 if ap else 1.0)
    body = _ellipse(yy, xx, 0.58, 0.5, 0.62, 0.45 * width, 0.08)
    img = 0.08 + 0.50 * body
    lungs = np.zeros_like(img)
    centres = [(0.45, 0.5 - 0.19 * width), (0.45, 0.5 + 0.19 * width)]
    for cy, cx in centres:
        lungs = np.maximum(lungs, _ellipse(yy, xx, cy, cx, lung_ry, lung_rx, 0.06))
    img -= 0.32 * lungs
    ribs = 0.5 + 0.5 * np.cos(2 * np.pi * (yy * 9 + 2.2 * (xx - 0.5) ** 2 + anat.uniform(0, 1)))
    img += 0.07 * ribs * lungs
    img += 0.30 * _ellipse(yy, xx, 0.45, 0.5, 0.42, 0.055, 0.1)                     # mediastinum, spine
    heart_r = (0.13 if "Cardiomegaly" not in findings else 0.18) * (1.12 if ap else 1.0) * width
    img += 0.28 * _ellipse(yy, xx, 0.63, 0.55, 0.11, heart_r, 0.08)
    img += 0.30 * np.clip((yy - (0.74 + 0.02 * np.cos(6 * xx))) * 12, 0, 1) * body     # diaphragm
    img += 0.12 * _ellipse(yy, xx, 0.16 if ap else 0.2, 0.5, 0.02, 0.35 * width, 0.3)  # clavicles
    if ap:
        for side in (0.08, 0.92):                                                      # scapulae
            img += 0.08 * _ellipse(yy, xx, 0.35, side, 0.16, 0.08, 0.15)

    def lesion(radius, amplitude, patchy, lower=True):
        cy, cx = centres[rng.integers(2)]
        ang = rng.uniform(0, 2 * np.pi)
        rr = np.sqrt(rng.uniform(0, 0.55))
        oy = lung_ry * rr * (abs(np.sin(ang)) if lower else np.sin(ang))
        blob = _ellipse(yy, xx, cy + oy, cx + lung_rx * rr * np.cos(ang), radius, radius * rng.uniform(0.7, 1.3), 0.25)
        if patchy:
            tex = ndimage.gaussian_filter(rng.normal(size=img.shape), n / 40)
            blob *= np.clip(0.6 + tex / (tex.std() + 1e-9) * 0.35, 0, 1.4)
        return amplitude * blob * lungs

    if "Pneumonia" in findings:
        img += lesion(rng.uniform(0.08, 0.14), rng.uniform(0.20, 0.46), True)
    if "Infiltration" in findings:
        img += lesion(rng.uniform(0.10, 0.16), rng.uniform(0.06, 0.14), True, lower=False)
    if "Nodule" in findings:
        img += lesion(0.025, 0.25, False, lower=False)
    if "Mass" in findings:
        img += lesion(0.05, 0.22, False, lower=False)
    if "Effusion" in findings:
        img += 0.20 * np.clip((yy - 0.62) * 10, 0, 1) * lungs * (xx < 0.5 if rng.random() < 0.5 else xx >= 0.5)
    if "Emphysema" in findings:
        img -= 0.05 * lungs
    img = ndimage.gaussian_filter(img, n / 96)
    contrast, brightness, gamma = rng.uniform(0.8, 1.2), rng.uniform(-0.08, 0.08), rng.uniform(0.8, 1.25)
    if ap:
        contrast *= 0.9
    img = np.clip(img * contrast + brightness, 0, 1) ** gamma
    img += rng.normal(0, 0.025, img.shape)
    return np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)


def png_bytes(pixels: np.ndarray) -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "SYNTHETIC demonstration image generated by eda.demo; not a radiograph")
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def _up_to_date(folder: Path, s: dict) -> bool:
    stamp = folder / STAMP
    labels = folder / LABELS
    if not (stamp.is_file() and labels.is_file()):
        return False
    try:
        got = json.loads(stamp.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    if (got.get("generator") != GENERATOR or got.get("code_sha256") != sha256_file(__file__)
            or got.get("settings") != s or got.get("labels_sha256") != sha256_file(labels)):
        return False
    ids = pd.read_csv(labels, usecols=["Image Index"], dtype=str)["Image Index"]
    return all((folder / "images" / i).is_file() for i in ids)


def generate(out_dir: str | Path, params: dict) -> dict:
    """Write `OUT/demo/labels.csv`, `OUT/demo/images/*.png` and `OUT/demo/demo.json` unless they are
    already up to date for these settings; return the stamp."""
    s = settings(params)
    folder = layout.demo(out_dir)
    if _up_to_date(folder, s):
        return json.loads((folder / STAMP).read_text())
    meta = metadata(s)
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    wanted = set(meta["Image Index"])
    for old in images.glob("*.png"):
        if old.name not in wanted:
            old.unlink()
    for _, row in meta.iterrows():
        atomic.write_bytes(images / row["Image Index"], png_bytes(render(row, s)))
    atomic.write_text(folder / LABELS, meta.to_csv(index=False, lineterminator="\n"))
    atomic.write_text(folder / "README.txt",
                      "SYNTHETIC DEMONSTRATION DATA generated by eda.demo. Not patient data, not radiographs.\n")
    stamp = {"generator": GENERATOR, "code_sha256": sha256_file(__file__), "synthetic": True,
             "settings": s, "n_images": len(meta),
             "labels_sha256": sha256_file(folder / LABELS)}
    atomic.write_text(folder / STAMP, json.dumps(stamp, indent=2, sort_keys=True) + "\n")
    return stamp
