"""What the clinician sees: the image, its saliency overlay, the probability and the decision in
plain words with the intended use and its limits; optionally a DICOM Secondary Capture for PACS.

Header text (patient, study) is drawn as plain text (never parsed as math or markup) on the PNG
and HTML-escaped wherever it goes into HTML (`html_index`).
"""
from __future__ import annotations

import datetime
import html
import io
import textwrap
from pathlib import Path

import numpy as np

from evidence import atomic

TRIAGE_ONLY = "For triage: prioritizes the study for radiologist review; not for diagnosis."


def intended_use(rules: dict) -> str:
    """The intended-use line, worded from the header-check rules the device applies."""
    views = "/".join(rules["allowed_views"])
    parts = "/".join(rules["allowed_body_parts"]).lower()
    modalities = "/".join(rules["allowed_modalities"])
    return (f"{TRIAGE_ONLY} Patients aged {rules['min_age_years']:g} to {rules['max_age_years']:g} years, "
            f"{views} {parts} radiographs ({modalities}) only.")


def decision_words(probability: float, threshold: float) -> str:
    if probability >= threshold:
        return "Pneumonia suspected: prioritize for radiologist review"
    return "No pneumonia flagged: routine radiologist review still required"


def render_png(path: str | Path, pixels: np.ndarray, saliency: np.ndarray, *, probability: float,
               threshold: float, view: str | None, saliency_method: str, intended: str,
               header_lines: list[str] = ()) -> Path:
    """Write the clinician PNG atomically: image, image with saliency overlay, the words below."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 5.6), dpi=100)
    ax_img, ax_map = fig.add_axes([0.02, 0.30, 0.47, 0.66]), fig.add_axes([0.51, 0.30, 0.47, 0.66])
    image = np.asarray(pixels, dtype=np.float32)
    heat = _resize(saliency, image.shape)
    for ax, title in ((ax_img, f"Radiograph ({view or 'view unknown'})"), (ax_map, f"Saliency ({saliency_method})")):
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        ax.set_title(title, fontsize=9, parse_math=False)
        ax.axis("off")
    ax_map.imshow(np.ma.masked_less(heat, 0.2), cmap="jet", alpha=0.45, vmin=0, vmax=1)
    wrapped = [part for line in header_lines for part in textwrap.wrap(line, 110)][:2]
    lines = [
        f"Pneumonia probability {probability:.3f} (operating threshold {threshold:.3f})",
        decision_words(probability, threshold),
        *wrapped,
        *textwrap.wrap(intended, 110),
    ]
    for i, line in enumerate(lines):
        line, family = drawable_line(line)
        fig.text(0.02, 0.25 - i * 0.045, line, fontsize=9 if i else 11, weight="bold" if i < 2 else "normal",
                 parse_math=False, **({"fontfamily": family} if family else {}))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return atomic.write_bytes(path, buffer.getvalue())


def drawable_line(line: str) -> tuple[str, list[str] | None]:
    """(the line, the font family list that draws it): header text in a script the default font
    lacks (CJK names) is drawn with an installed font that has it (`model.names`); a character no
    installed font draws becomes '?', never a box."""
    from .names import font_family, fonts_for

    if fonts_for(line) is None:
        from .names import _fonts, _charmap

        every = set().union(*(_charmap(p) for p in _fonts()))
        line = "".join(c if c.isspace() or ord(c) in every else "?" for c in line)
    return line, font_family(line)


def _resize(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    img = Image.fromarray(np.asarray(a, dtype=np.float32), mode="F")
    return np.asarray(img.resize((shape[1], shape[0]), Image.BILINEAR), dtype=np.float32)


def secondary_capture(png_path: str | Path, out_path: str | Path, source=None) -> Path:
    """A DICOM Secondary Capture (RGB, burned-in annotation) of the clinician PNG, linked to the
    source study (patient and study identifiers copied, each re-formed to its VR by
    `model.dicom_values.conform`), written atomically."""
    from PIL import Image
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    from .dicom import save
    from .dicom_values import copy_conformed

    rgb = np.asarray(Image.open(png_path).convert("RGB"), dtype=np.uint8)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    copy_conformed(source, ds, ("SpecificCharacterSet", "PatientName", "PatientID", "PatientBirthDate",
                                "PatientSex", "StudyInstanceUID", "StudyDate", "StudyID", "AccessionNumber",
                                "StudyDescription"))
    ds.StudyInstanceUID = ds.get("StudyInstanceUID") or generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality, ds.ConversionType, ds.BurnedInAnnotation = "OT", "WSD", "YES"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.SeriesDescription = "Pneumonia triage result (not for diagnosis)"
    ds.SeriesNumber, ds.InstanceNumber = 999, 1
    ds.ContentDate = datetime.date.today().strftime("%Y%m%d")
    ds.Rows, ds.Columns = rgb.shape[:2]
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = rgb.tobytes()
    return save(ds, out_path)


def html_index(rows: list[dict], intended: str) -> str:
    """A plain HTML table of a batch (every header-derived value escaped)."""
    esc = lambda v: html.escape("" if v is None else str(v), quote=True)  # noqa: E731
    body = []
    for r in rows:
        image = (f'<img src="{esc(Path(r["clinician_image"]).name)}" width="320">'
                 if r.get("clinician_image") else "")
        probability = "" if r.get("probability") is None else f"{r['probability']:.3f}"
        body.append("<tr>" + "".join(f"<td>{c}</td>" for c in (
            esc(r.get("file")), esc(r.get("status")), esc("; ".join(r.get("reasons") or [])),
            esc(r.get("study_description")), esc(probability),
            esc("" if r.get("prediction") is None else ("flagged" if r["prediction"] else "not flagged")), image,
        )) + "</tr>")
    return ("<!doctype html><meta charset=\"utf-8\"><title>Pneumonia triage results</title>"
            f"<p>{esc(intended)}</p><table border=\"1\"><tr><th>file</th><th>status</th><th>reasons</th>"
            "<th>study</th><th>probability</th><th>decision</th><th>image</th></tr>" + "".join(body) + "</table>\n")
