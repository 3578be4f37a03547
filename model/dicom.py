"""DICOM intake: header checks against the intended use, then pixels in display units 0..255.

The header is checked before any pixel is decoded. A file that is not a readable DICOM is an
`error`; a readable DICOM outside the intended use (modality, body part, view, age, frames,
photometric interpretation, size, bit depth, transfer syntax) is `rejected` with its reasons.

Pixel pipeline (`read_pixels`): modality LUT (RescaleSlope/Intercept or Modality LUT Sequence),
then the first VOI window when present (linear, DICOM PS3.3 C.11.2.1.2), else min-max of the
pixel values present, scaled to 0..255; MONOCHROME1 is inverted so that bright means dense.
An 8-bit unsigned MONOCHROME2 image without rescale or VOI is returned unchanged.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError


#: Values used when the `workflow` params section does not set a key (listed in the record).
DEFAULT_RULES: dict[str, Any] = {
    "allowed_modalities": ["DX", "CR"],
    "allowed_body_parts": ["CHEST"],
    "allowed_views": ["AP", "PA"],
    "min_age_years": 18,
    "max_age_years": 100,
    "missing_age": "reject",
    "min_rows_columns": 32,
    "max_rows_columns": 8192,
    "allowed_bits_stored": [8, 10, 12, 14, 16],
}

#: workflow.missing_age: what a file without a usable Patient's Age gets.
MISSING_AGE = ("reject", "accept_with_warning")
ACCEPTED, REJECTED, ERROR = "accepted", "rejected", "error"
_AGE_UNITS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Rules(dict):
    """Header-check rules already resolved by `rules_from` (used as they are, not resolved again)."""


def rules_from(params: dict | None) -> Rules:
    """The header-check rules: DEFAULT_RULES overridden by the `workflow` params section (checked
    by evidence.params) or by the checks a `workflow.dicom` record locked."""
    if isinstance(params, Rules):
        return params
    rules = Rules(DEFAULT_RULES)
    for key in DEFAULT_RULES:
        if params and key in params and params[key] is not None:
            rules[key] = params[key]
    return rules


@dataclass
class HeaderCheck:
    """Outcome of the header checks for one file."""

    status: str
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    modality: str | None = None
    body_part: str | None = None
    view: str | None = None
    view_source: str | None = None
    age: float | None = None
    sex: str | None = None
    manufacturer: str | None = None     # Manufacturer (0008,0070): the scanner stratum of the subgroups
    institution: str | None = None      # InstitutionName (0008,0080): the site stratum
    rows: int | None = None
    columns: int | None = None
    transfer_syntax: str | None = None

    def as_dict(self) -> dict:
        return {
            "status": self.status, "reasons": list(self.reasons), "warnings": list(self.warnings),
            "modality": self.modality, "body_part": self.body_part, "view": self.view,
            "view_source": self.view_source, "age": self.age, "sex": self.sex,
            "manufacturer": self.manufacturer, "institution": self.institution,
            "rows": self.rows, "columns": self.columns, "transfer_syntax": self.transfer_syntax,
        }


def clean_text(value: Any, limit: int = 64) -> str | None:
    """Header text safe to show: str, control characters removed, trimmed, at most `limit` chars."""
    if value is None:
        return None
    text = _CONTROL.sub("", str(value)).strip()
    if not text:
        return None
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_age(value: Any) -> float | None:
    """PatientAge in years: DICOM AS ('045Y', '018M', '010W', '003D') or a bare number (years).

    Raises ValueError for text that is neither; returns None when absent or empty.
    """
    if value is None:
        return None
    text = str(value).strip().upper()
    if not text:
        return None
    m = re.fullmatch(r"(\d{1,3})\s*([DWMY])?", text)
    if not m:
        raise ValueError(f"PatientAge {clean_text(value)!r} is not a DICOM age (e.g. 045Y) or a number")
    return round(int(m.group(1)) * _AGE_UNITS[m.group(2) or "Y"], 3)


def _get(ds: Dataset, keyword: str) -> Any:
    try:
        elem = ds.get(keyword)
    except Exception:  # a malformed element must not stop the check
        return None
    return elem


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def check_header(ds: Dataset, rules: dict | None = None) -> HeaderCheck:
    """Check a dataset's header against the intended use. Never raises; never decodes pixels.

    `rules`: the result of `rules_from` (used as is), or a `workflow` params section to resolve."""
    if not isinstance(rules, Rules):
        rules = rules_from(rules)
    try:
        return _check_header(ds, rules)
    except Exception as e:  # defensive: a header this code did not foresee is rejected, not a crash
        return HeaderCheck(status=REJECTED, reasons=[f"header could not be checked: {type(e).__name__}: {clean_text(e, 200)}"])


def _upper(value: Any) -> str | None:
    text = clean_text(value)
    return text.upper() if text else None


def _check_header(ds: Dataset, rules: dict) -> HeaderCheck:
    res = HeaderCheck(status=ACCEPTED)
    reasons = res.reasons

    res.modality = _upper(_get(ds, "Modality"))
    allowed = [str(m).upper() for m in rules["allowed_modalities"]]
    if res.modality is None:
        reasons.append("Modality missing (0008,0060)")
    elif res.modality not in allowed:
        reasons.append(f"Modality {res.modality} is not one of {', '.join(allowed)}")

    res.body_part = _upper(_get(ds, "BodyPartExamined"))
    allowed = [str(b).upper() for b in rules["allowed_body_parts"]]
    if res.body_part is None:
        reasons.append("BodyPartExamined missing (0018,0015)")
    elif res.body_part not in allowed:
        reasons.append(f"BodyPartExamined {res.body_part} is not one of {', '.join(allowed)}")

    allowed = [str(v).upper() for v in rules["allowed_views"]]
    for keyword in ("ViewPosition", "PatientPosition"):
        value = _upper(_get(ds, keyword))
        if value is not None:
            res.view, res.view_source = value, keyword
            break
    if res.view is None:
        reasons.append("view missing: neither ViewPosition (0018,5101) nor PatientPosition (0018,5100) is set")
    elif res.view not in allowed:
        reasons.append(f"view {res.view} (from {res.view_source}) is not one of {', '.join(allowed)}")

    res.sex = _upper(_get(ds, "PatientSex"))
    res.manufacturer = clean_text(_get(ds, "Manufacturer"))
    res.institution = clean_text(_get(ds, "InstitutionName"))
    try:
        res.age = parse_age(_get(ds, "PatientAge"))
    except ValueError as e:
        reasons.append(str(e))
    else:
        lo, hi = float(rules["min_age_years"]), float(rules["max_age_years"])
        if res.age is None:
            message = "PatientAge missing: the intended use (adults) cannot be verified"
            (reasons if rules["missing_age"] == "reject" else res.warnings).append(message)
        elif not lo <= res.age <= hi:
            reasons.append(f"PatientAge {res.age:g} years is outside the intended use {lo:g}-{hi:g} years")

    _check_image_module(ds, rules, res)
    if reasons:
        res.status = REJECTED
    return res


def _check_image_module(ds: Dataset, rules: dict, res: HeaderCheck) -> None:
    reasons = res.reasons
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        reasons.append("no Pixel Data (7FE0,0010): not an image")
    elif "PixelData" not in ds:
        reasons.append("float pixel data is not supported (integer Pixel Data required)")

    frames = _as_int(_get(ds, "NumberOfFrames"))
    if frames is not None and frames != 1:
        reasons.append(f"NumberOfFrames {frames}: a single-frame radiograph is required")

    samples = _as_int(_get(ds, "SamplesPerPixel"))
    photometric = _upper(_get(ds, "PhotometricInterpretation"))
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        reasons.append(f"PhotometricInterpretation {photometric or 'missing'} is not MONOCHROME1/MONOCHROME2")
    if samples not in (1, None):
        reasons.append(f"SamplesPerPixel {samples}: a grayscale image (1) is required")

    lo, hi = int(rules["min_rows_columns"]), int(rules["max_rows_columns"])
    res.rows, res.columns = _as_int(_get(ds, "Rows")), _as_int(_get(ds, "Columns"))
    for name, value in (("Rows", res.rows), ("Columns", res.columns)):
        if value is None:
            reasons.append(f"{name} missing")
        elif not lo <= value <= hi:
            reasons.append(f"{name} {value} is outside the accepted range {lo}-{hi}")

    allocated, stored = _as_int(_get(ds, "BitsAllocated")), _as_int(_get(ds, "BitsStored"))
    if allocated not in (8, 16):
        reasons.append(f"BitsAllocated {allocated if allocated is not None else 'missing'} is not 8 or 16")
    if stored is None or stored not in [int(b) for b in rules["allowed_bits_stored"]] or (
        allocated is not None and stored > allocated
    ):
        reasons.append(f"BitsStored {stored if stored is not None else 'missing'} is not supported "
                       f"(allowed {', '.join(map(str, rules['allowed_bits_stored']))}, at most BitsAllocated)")

    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    if uid is None:
        reasons.append("TransferSyntaxUID missing from the file meta information")
        return
    res.transfer_syntax = clean_text(getattr(uid, "name", uid), 120)
    if not _decodable(uid):
        reasons.append(f"transfer syntax {res.transfer_syntax} ({uid}) cannot be decoded by the installed "
                       "pixel handlers (supported: uncompressed, RLE, JPEG baseline/lossless, JPEG-LS, JPEG 2000)")


def _decodable(uid: Any) -> bool:
    from pydicom.pixels import get_decoder
    try:
        return bool(get_decoder(pydicom.uid.UID(str(uid))).is_available)
    except (NotImplementedError, ValueError, TypeError):
        return False


def read_dataset(path: str | Path) -> Dataset:
    """Read a DICOM file (header and pixel bytes, no decoding). Raises ValueError with the reason."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ValueError("empty file (0 bytes)")
        ds = pydicom.dcmread(path)
        if len(ds) == 0:
            raise ValueError("no data elements after the file meta information (truncated file?)")
        return ds
    except InvalidDicomError:
        raise ValueError("not a DICOM file (no 'DICM' marker after the 128-byte preamble)") from None
    except ValueError:
        raise
    except OSError as e:
        raise ValueError(f"cannot read file: {e.strerror or e}") from None
    except Exception as e:
        raise ValueError(f"unreadable DICOM ({type(e).__name__}: {clean_text(e, 200)})") from None


def read_pixels(path_or_dataset: str | Path | Dataset) -> np.ndarray:
    """Pixels as a 2-D array in display units 0..255 (see the module docstring): the stored uint8
    array itself when it is 8-bit unsigned MONOCHROME2 with no modality LUT or VOI window (its values
    already are display units), else float32."""
    ds = path_or_dataset if isinstance(path_or_dataset, Dataset) else pydicom.dcmread(path_or_dataset)
    stored = ds.pixel_array
    if stored.ndim != 2:
        raise ValueError(f"expected one grayscale frame, got pixel array of shape {stored.shape}")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(f"PhotometricInterpretation {photometric} is not MONOCHROME1/MONOCHROME2")
    has_rescale = _has_modality_lut(ds)
    has_voi = _has_voi(ds)
    bits = _as_int(ds.get("BitsStored")) or 8
    signed = _as_int(ds.get("PixelRepresentation")) == 1
    if bits == 8 and not signed and not has_rescale and not has_voi:
        if photometric == "MONOCHROME2" and stored.dtype == np.uint8:
            return np.ascontiguousarray(stored)
        out = stored.astype(np.float32)
    else:
        values = _modality(ds, stored) if has_rescale else stored.astype(np.float64)
        out = _window(ds, values) if has_voi else _minmax(values)
    if photometric == "MONOCHROME1":
        out = 255.0 - out
    return np.ascontiguousarray(out, dtype=np.float32)


def _has_modality_lut(ds: Dataset) -> bool:
    if "ModalityLUTSequence" in ds:
        return True
    slope = ds.get("RescaleSlope")
    intercept = ds.get("RescaleIntercept")
    return (slope is not None and float(slope) != 1.0) or (intercept is not None and float(intercept) != 0.0)


def _has_voi(ds: Dataset) -> bool:
    return ("WindowCenter" in ds and "WindowWidth" in ds) or "VOILUTSequence" in ds


def _modality(ds: Dataset, stored: np.ndarray) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut
    return np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)


def _first(value: Any) -> float:
    if isinstance(value, (list, tuple)) or hasattr(value, "__getitem__") and not isinstance(value, str):
        value = value[0]
    return float(value)


def _window(ds: Dataset, values: np.ndarray) -> np.ndarray:
    """The first VOI window (linear) mapped to 0..255; a VOI LUT sequence via pydicom, then min-max."""
    if "WindowCenter" in ds and "WindowWidth" in ds:
        center, width = _first(ds.WindowCenter), _first(ds.WindowWidth)
        function = str(ds.get("VOILUTFunction", "LINEAR")).upper()
        if width >= 1 and function in ("LINEAR", "LINEAR_EXACT", ""):
            if function == "LINEAR_EXACT":
                y = (values - center) / width + 0.5
            else:
                y = (values - (center - 0.5)) / (width - 1) + 0.5 if width > 1 else (values >= center) * 1.0
            return np.clip(y, 0.0, 1.0) * 255.0
    from pydicom.pixels import apply_voi_lut
    return _minmax(np.asarray(apply_voi_lut(values, ds), dtype=np.float64))


def _minmax(values: np.ndarray) -> np.ndarray:
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.float64)
    return (values - lo) * (255.0 / (hi - lo))


@dataclass
class Intake:
    """One file through intake: its header check and, when accepted, its pixels (0..255)."""

    file: str
    check: HeaderCheck
    pixels: np.ndarray | None = None  # display units 0..255, uint8 or float32 (`read_pixels`)
    header: Dataset | None = None  # the dataset without its pixel data, when it could be read

    @property
    def status(self) -> str:
        return self.check.status


def intake(path: str | Path, rules: dict | None = None) -> Intake:
    """Read, check the header, then decode the pixels of an accepted file. Never raises."""
    path = Path(path)
    try:
        ds = read_dataset(path)
    except ValueError as e:
        return Intake(str(path), HeaderCheck(status=ERROR, reasons=[str(e)]))
    check = check_header(ds, rules)
    if check.status != ACCEPTED:
        return Intake(str(path), check, header=_without_pixels(ds))
    try:
        pixels = read_pixels(ds)
        if pixels.shape != (check.rows, check.columns) or (
                pixels.dtype.kind == "f" and not np.isfinite(pixels).all()):
            raise ValueError(f"decoded shape {pixels.shape} does not match Rows x Columns or has non-finite values")
    except Exception as e:
        check.status = ERROR
        check.reasons.append(f"pixel data could not be decoded ({check.transfer_syntax}): "
                             f"{type(e).__name__}: {clean_text(e, 200)}")
        return Intake(str(path), check, header=_without_pixels(ds))
    return Intake(str(path), check, pixels, header=_without_pixels(ds))


def _without_pixels(ds: Dataset) -> Dataset:
    for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
        if keyword in ds:
            delattr(ds, keyword)
    return ds


def build_dataset(pixels: np.ndarray, *, modality: str | None = "DX", body_part: str | None = "CHEST",
                  view: str | None = "PA", age: str | None = None, sex: str | None = None,
                  patient_id: str = "", patient_name: str = "", study_description: str = "",
                  comments: str | None = None) -> Dataset:
    """A single-frame MONOCHROME2 Digital X-Ray dataset of 8- or 16-bit pixels (for workflow files
    made from cohort images, and for tests). A None header value leaves the tag out."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    pixels = np.asarray(pixels)
    if pixels.ndim != 2 or pixels.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"build_dataset: expected a 2-D uint8/uint16 array, got {pixels.dtype} {pixels.shape}")
    sop_class = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName, ds.StudyDescription = patient_id, patient_name, study_description
    for keyword, value in (("Modality", modality), ("BodyPartExamined", body_part), ("ViewPosition", view),
                           ("PatientAge", age), ("PatientSex", sex), ("ImageComments", comments)):
        if value is not None:
            setattr(ds, keyword, value)
    bits = 8 if pixels.dtype == np.uint8 else 16
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    return ds


def age_string(years: float | None) -> str | None:
    """Years -> DICOM AS ('045Y'); None for unknown."""
    if years is None or not np.isfinite(years) or years < 0:
        return None
    return f"{min(int(years), 999):03d}Y"


def save(ds: Dataset, path: str | Path) -> Path:
    """Write a dataset as a DICOM Part 10 file, atomically."""
    from evidence import atomic

    with atomic.atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return Path(path)
