"""DICOM intake: header checks against the intended use, then pixels in display units 0..255.

The header is checked before any pixel is decoded. A file that is not a readable DICOM is an
`error`; a readable DICOM outside the intended use (modality, body part, view, age, frames,
photometric interpretation, size, aspect ratio, bit depth, transfer syntax, the pixel and byte
budget of `max_megapixels`, `max_decoded_mb`, `max_file_mb`) is `rejected` with its reasons, and
a decoded image that is blank or near-constant (`min_display_std`) is rejected after decoding.
Every reason carries a code declared once in `REASONS` (reports group by code, not by message).
A file without the Part 10 preamble and 'DICM' marker is read as a bare data set when it parses
as one (with a warning); "not a DICOM file" is said only when it does not.

The intensity rule (`read_pixels`, `INTENSITY_RULE`; the same for training and inference):
modality LUT (RescaleSlope/Intercept or Modality LUT Sequence), then the first VOI window when
present (linear, DICOM PS3.3 C.11.2.1.2) or the VOI LUT Sequence scaled by its output range;
without a VOI, the range the encoding can hold (0..2^BitsStored-1, or its signed range, through
the modality LUT) is scaled to 0..255, never the range of the values present; MONOCHROME1 is
inverted so that bright means dense. An 8-bit unsigned MONOCHROME2 image without rescale or VOI
is returned unchanged (the rule is the identity there). PNG images follow the same rule
(`model.images`: value * 255 / (2^bit depth - 1)).
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
    "allowed_bits_stored": list(range(1, 17)),
    "max_aspect_ratio": 3.0,
    "max_megapixels": 40.0,
    "max_decoded_mb": 80.0,
    "max_file_mb": 256.0,
    "min_display_std": 2.0,
    "read_ahead_mb": 512.0,
}

#: The one intensity rule from a stored image to display units 0..255, for every encoding (DICOM
#: 8/12/15/16-bit, MONOCHROME1/2, compressed; PNG 8/16-bit), in training and inference alike
#: (`read_pixels`, `model.images.decode_display`); stored in the preprocessing spec hashed with the model
#: (`model.preprocess.PreprocessingSpec.intensity_rule`).
INTENSITY_RULE = ("intensity/1: DICOM modality LUT; then the first VOI window (linear) or VOI LUT when present, "
                  "else the range BitsStored can hold (0..2^BitsStored-1, or the signed range; through the "
                  "modality LUT) scaled to 0..255, never the range of the values present; MONOCHROME1 inverted; "
                  "PNG value*255/(2^bit depth-1)")
#: Reason codes: code -> (group, message template). The one place a reason is declared; a check
#: result carries the codes beside the messages, and reports group by code (`group` is the
#: category of the held-out rejection table).
REASONS: dict[str, tuple[str, str]] = {
    "empty_file": ("unreadable", "empty file (0 bytes)"),
    "file_too_large": ("image_format", "file of {mb:.1f} MB is larger than max_file_mb {limit:g} MB "
                                       "(not read)"),
    "not_dicom": ("unreadable", "not a DICOM file: no 'DICM' marker after the 128-byte preamble, and the "
                                "content does not parse as a DICOM data set"),
    "no_elements": ("unreadable", "no data elements after the file meta information (truncated file?)"),
    "cannot_read": ("unreadable", "cannot read file: {detail}"),
    "unreadable_dicom": ("unreadable", "unreadable DICOM ({detail})"),
    "modality_missing": ("modality", "Modality missing (0008,0060)"),
    "modality_not_allowed": ("modality", "Modality {value} is not one of {allowed}"),
    "body_part_missing": ("body_part", "BodyPartExamined missing (0018,0015)"),
    "body_part_not_allowed": ("body_part", "BodyPartExamined {value} is not one of {allowed}"),
    "view_missing": ("view", "view missing: neither ViewPosition (0018,5101) nor a view in "
                             "PatientPosition (0018,5100) is set"),
    "view_not_allowed": ("view", "view {value} (from {source}) is not one of {allowed}"),
    "age_unreadable": ("age", "{detail}"),
    "age_missing": ("age", "PatientAge missing: the intended use (adults) cannot be verified"),
    "age_out_of_range": ("age", "PatientAge {value:g} years is outside the intended use {lo:g}-{hi:g} years"),
    "no_pixel_data": ("image_format", "no Pixel Data (7FE0,0010): not an image"),
    "float_pixel_data": ("image_format", "float pixel data is not supported (integer Pixel Data required)"),
    "frames": ("image_format", "NumberOfFrames {value}: a single-frame radiograph is required"),
    "photometric": ("image_format", "PhotometricInterpretation {value} is not MONOCHROME1/MONOCHROME2"),
    "samples": ("image_format", "SamplesPerPixel {value}: a grayscale image (1) is required"),
    "size_missing": ("image_format", "{name} missing"),
    "size_out_of_range": ("image_format", "{name} {value} is outside the accepted range {lo}-{hi}"),
    "aspect_ratio": ("image_format", "aspect ratio {ratio:.2f} ({rows} x {columns}) is above max_aspect_ratio "
                                     "{limit:g}: not a radiograph of the chest"),
    "bits_allocated": ("image_format", "BitsAllocated {value} is not 8 or 16"),
    "bits_stored": ("image_format", "BitsStored {value} is not supported (allowed {allowed}, at most "
                                    "BitsAllocated {allocated})"),
    "high_bit": ("image_format", "HighBit {value} does not match BitsStored {stored} (HighBit must be "
                                 "BitsStored - 1 = {expected})"),
    "pixel_budget": ("image_format", "{rows} x {columns} x {frames} frame(s) = {mp:.1f} megapixels is above "
                                     "max_megapixels {limit:g} (not decoded)"),
    "byte_budget": ("image_format", "decoded size {mb:.1f} MB ({rows} x {columns} x {frames} frame(s) x "
                                    "{bits} bits) is above max_decoded_mb {limit:g} MB (not decoded)"),
    "transfer_syntax_missing": ("image_format", "TransferSyntaxUID missing from the file meta information"),
    "transfer_syntax": ("image_format", "transfer syntax {name} ({uid}) cannot be decoded by the installed "
                                        "pixel handlers (supported: uncompressed, RLE, JPEG baseline/lossless, "
                                        "JPEG-LS, JPEG 2000)"),
    "header_error": ("header_unreadable", "header could not be checked: {detail}"),
    "blank_image": ("blank_image", "blank or near-constant image: standard deviation {std:.2f} grey levels "
                                   "(0..255 after the intensity rule) is below min_display_std {limit:g} "
                                   "(check the window and BitsStored)"),
    "decode_error": ("decode_error", "pixel data could not be decoded ({syntax}): {detail}"),
    "model_error": ("model_error", "the model returned no finite probability"),
}


def reason(code: str, **fields) -> str:
    """The message of reason `code` (a key of REASONS) with its fields."""
    return REASONS[code][1].format(**fields)


class IntakeFailure(ValueError):
    """A file cannot be read as DICOM: the message and its code (a key of REASONS)."""

    def __init__(self, code: str, **fields):
        super().__init__(reason(code, **fields))
        self.code = code

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
    codes: list[str] = field(default_factory=list)  # the code (key of REASONS) of each reason, in order
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
            "status": self.status, "reasons": list(self.reasons), "codes": list(self.codes),
            "warnings": list(self.warnings),
            "modality": self.modality, "body_part": self.body_part, "view": self.view,
            "view_source": self.view_source, "age": self.age, "sex": self.sex,
            "manufacturer": self.manufacturer, "institution": self.institution,
            "rows": self.rows, "columns": self.columns, "transfer_syntax": self.transfer_syntax,
        }

    def add(self, code: str, **fields) -> None:
        """Add the reason `code` (a key of REASONS) with its message."""
        self.reasons.append(reason(code, **fields))
        self.codes.append(code)


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
        check = HeaderCheck(status=REJECTED)
        check.add("header_error", detail=f"{type(e).__name__}: {clean_text(e, 200)}")
        return check


def _upper(value: Any) -> str | None:
    text = clean_text(value)
    return text.upper() if text else None


def _check_header(ds: Dataset, rules: dict) -> HeaderCheck:
    res = HeaderCheck(status=ACCEPTED)

    res.modality = _upper(_get(ds, "Modality"))
    allowed = [str(m).upper() for m in rules["allowed_modalities"]]
    modality_ok = res.modality in allowed
    if res.modality is None:
        res.add("modality_missing")
    elif not modality_ok:
        res.add("modality_not_allowed", value=res.modality, allowed=", ".join(allowed))

    res.body_part = _upper(_get(ds, "BodyPartExamined"))
    allowed = [str(b).upper() for b in rules["allowed_body_parts"]]
    if res.body_part is None:
        res.add("body_part_missing")
    elif res.body_part not in allowed:
        res.add("body_part_not_allowed", value=res.body_part, allowed=", ".join(allowed))

    _check_view(ds, rules, res, modality_ok)

    res.sex = _upper(_get(ds, "PatientSex"))
    res.manufacturer = clean_text(_get(ds, "Manufacturer"))
    res.institution = clean_text(_get(ds, "InstitutionName"))
    try:
        res.age = parse_age(_get(ds, "PatientAge"))
    except ValueError as e:
        res.add("age_unreadable", detail=str(e))
    else:
        lo, hi = float(rules["min_age_years"]), float(rules["max_age_years"])
        if res.age is None:
            if rules["missing_age"] == "reject":
                res.add("age_missing")
            else:
                res.warnings.append(reason("age_missing"))
        elif not lo <= res.age <= hi:
            res.add("age_out_of_range", value=res.age, lo=lo, hi=hi)

    _check_image_module(ds, rules, res)
    if res.reasons:
        res.status = REJECTED
    return res


#: PatientPosition (0018,5100) values that name a patient position of cross-sectional imaging
#: (PS3.3 C.7.3.1.1.2: HFS, FFP, ...), not a radiographic view.
_PATIENT_POSITIONS = re.compile(r"^(HF|FF)(S|P|DR|DL|V|I)$|^(LFP|LFS|RFP|RFS|AFDR|AFDL|PFDR|PFDL|SITTING)$")


def _check_view(ds: Dataset, rules: dict, res: HeaderCheck, modality_ok: bool) -> None:
    """The view from ViewPosition, else from PatientPosition when it holds a view. A patient position
    (HFS, ...) is not taken as a view; when the modality is already outside the intended use (CT,
    MR), a missing view is not reported as a second reason."""
    allowed = [str(v).upper() for v in rules["allowed_views"]]
    position = None
    for keyword in ("ViewPosition", "PatientPosition"):
        value = _upper(_get(ds, keyword))
        if value is None:
            continue
        if keyword == "PatientPosition" and _PATIENT_POSITIONS.match(value):
            position = value
            continue
        res.view, res.view_source = value, keyword
        break
    if res.view is None:
        if modality_ok or res.modality is None:
            res.add("view_missing")
            if position is not None:
                res.reasons[-1] += f" (PatientPosition {position} is a patient position, not a view)"
    elif res.view not in allowed:
        res.add("view_not_allowed", value=res.view, source=res.view_source, allowed=", ".join(allowed))


def _check_image_module(ds: Dataset, rules: dict, res: HeaderCheck) -> None:
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        res.add("no_pixel_data")
    elif "PixelData" not in ds:
        res.add("float_pixel_data")

    frames = _as_int(_get(ds, "NumberOfFrames"))
    if frames is not None and frames != 1:
        res.add("frames", value=frames)

    samples = _as_int(_get(ds, "SamplesPerPixel"))
    photometric = _upper(_get(ds, "PhotometricInterpretation"))
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        res.add("photometric", value=photometric or "missing")
    if samples not in (1, None):
        res.add("samples", value=samples)

    lo, hi = int(rules["min_rows_columns"]), int(rules["max_rows_columns"])
    res.rows, res.columns = _as_int(_get(ds, "Rows")), _as_int(_get(ds, "Columns"))
    for name, value in (("Rows", res.rows), ("Columns", res.columns)):
        if value is None:
            res.add("size_missing", name=name)
        elif not lo <= value <= hi:
            res.add("size_out_of_range", name=name, value=value, lo=lo, hi=hi)
    if res.rows and res.columns and res.rows > 0 and res.columns > 0:
        ratio = max(res.rows, res.columns) / min(res.rows, res.columns)
        if ratio > float(rules["max_aspect_ratio"]):
            res.add("aspect_ratio", ratio=ratio, rows=res.rows, columns=res.columns,
                    limit=float(rules["max_aspect_ratio"]))

    allocated, stored = _as_int(_get(ds, "BitsAllocated")), _as_int(_get(ds, "BitsStored"))
    if allocated not in (8, 16):
        res.add("bits_allocated", value=allocated if allocated is not None else "missing")
    allowed_bits = [int(b) for b in rules["allowed_bits_stored"]]
    if stored is None or stored not in allowed_bits or (allocated is not None and stored > allocated):
        res.add("bits_stored", value=stored if stored is not None else "missing", allowed=_ranges(allowed_bits),
                allocated=allocated if allocated is not None else "missing")
    else:
        high = _as_int(_get(ds, "HighBit"))
        if high is not None and high != stored - 1:
            res.add("high_bit", value=high, stored=stored, expected=stored - 1)

    _check_budget(ds, rules, res, frames or 1, allocated)

    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    if uid is None:
        res.add("transfer_syntax_missing")
        return
    res.transfer_syntax = clean_text(getattr(uid, "name", uid), 120)
    if not _decodable(uid):
        res.add("transfer_syntax", name=res.transfer_syntax, uid=uid)


def _check_budget(ds: Dataset, rules: dict, res: HeaderCheck, frames: int, allocated: int | None) -> None:
    """The pixel and byte budget, from the header alone: rows x columns x frames (megapixels) and
    x BitsAllocated (decoded bytes), checked before any decoding, so that a small compressed file
    declaring a huge image (a decompression bomb) is refused without allocating it."""
    rows, columns = res.rows or 0, res.columns or 0
    if rows <= 0 or columns <= 0:
        return
    frames = max(1, frames)
    pixels = rows * columns * frames
    limit = float(rules["max_megapixels"])
    if pixels / 1e6 > limit:
        res.add("pixel_budget", rows=rows, columns=columns, frames=frames, mp=pixels / 1e6, limit=limit)
    bits = allocated if allocated in (8, 16, 32) else 16
    decoded = pixels * bits / 8
    limit = float(rules["max_decoded_mb"])
    if decoded / 2**20 > limit:
        res.add("byte_budget", mb=decoded / 2**20, rows=rows, columns=columns, frames=frames, bits=bits, limit=limit)


def _ranges(values: list[int]) -> str:
    """[1, 2, 3, 8] -> '1-3, 8'."""
    values, parts = sorted(set(values)), []
    for v in values:
        if parts and v == parts[-1][1] + 1:
            parts[-1][1] = v
        else:
            parts.append([v, v])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in parts)


def _decodable(uid: Any) -> bool:
    from pydicom.pixels import get_decoder
    try:
        return bool(get_decoder(pydicom.uid.UID(str(uid))).is_available)
    except (NotImplementedError, ValueError, TypeError):
        return False


#: Elements whose presence shows that a file without the Part 10 header parsed as a DICOM data set.
_DATASET_EVIDENCE = ("PixelData", "SOPClassUID", "SOPInstanceUID", "Modality", "StudyInstanceUID",
                     "PatientID", "Rows", "Columns", "PhotometricInterpretation")


def read_dataset(path: str | Path, max_file_mb: float | None = None) -> Dataset:
    """Read a DICOM file (header and pixel bytes, no decoding). Raises IntakeFailure (a ValueError)
    with the reason and its code. A file larger than `max_file_mb` is not read. A file without the
    Part 10 preamble and 'DICM' marker is read as a bare data set (pydicom `force`) when it parses
    into one (`ds.part10 is False`; its transfer syntax set from the encoding pydicom found)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size == 0:
            raise IntakeFailure("empty_file")
        if max_file_mb is not None and size / 2**20 > float(max_file_mb):
            raise IntakeFailure("file_too_large", mb=size / 2**20, limit=float(max_file_mb))
        try:
            ds = pydicom.dcmread(path)
            ds.part10 = True
        except InvalidDicomError:
            ds = _read_bare(path)
        if len(ds) == 0:
            raise IntakeFailure("no_elements")
        return ds
    except IntakeFailure:
        raise
    except OSError as e:
        raise IntakeFailure("cannot_read", detail=e.strerror or str(e)) from None
    except Exception as e:
        raise IntakeFailure("unreadable_dicom", detail=f"{type(e).__name__}: {clean_text(e, 200)}") from None


def _read_bare(path: Path) -> Dataset:
    """A file without the Part 10 header, read with pydicom `force` when it parses as a data set."""
    import warnings

    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, force=True)
            known = sum(1 for keyword in _DATASET_EVIDENCE if keyword in ds)
    except Exception:
        known = 0
    if known < 2:
        raise IntakeFailure("not_dicom")
    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        implicit, little = getattr(ds, "original_encoding", (None, None))
        if implicit is not None:
            meta = meta if meta is not None else FileMetaDataset()
            meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit else
                                      ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
            ds.file_meta = meta
    ds.part10 = False
    return ds


def read_pixels(path_or_dataset: str | Path | Dataset) -> np.ndarray:
    """Pixels as a 2-D array in display units 0..255 by the intensity rule (module docstring,
    `INTENSITY_RULE`): the stored uint8 array itself when it is 8-bit unsigned MONOCHROME2 with no
    modality LUT or VOI (the rule is the identity there), else float32."""
    ds = path_or_dataset if isinstance(path_or_dataset, Dataset) else read_dataset(path_or_dataset)
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
    if bits == 8 and not signed and not has_rescale and not has_voi and stored.dtype == np.uint8:
        if photometric == "MONOCHROME2":
            return np.ascontiguousarray(stored)
        out = stored.astype(np.float32)
    else:
        values = _modality(ds, stored) if has_rescale else stored.astype(np.float64)
        out = _window(ds, values) if has_voi else _encodable_range(ds, values, bits, signed, has_rescale)
    if photometric == "MONOCHROME1":
        out = 255.0 - out
    return np.ascontiguousarray(out, dtype=np.float32)


def stored_range(bits: int, signed: bool) -> tuple[int, int]:
    """The values BitsStored bits can hold: 0..2^bits-1, or -2^(bits-1)..2^(bits-1)-1 when signed."""
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


def _encodable_range(ds: Dataset, values: np.ndarray, bits: int, signed: bool, has_rescale: bool) -> np.ndarray:
    """The range the encoding can hold, through the modality LUT, scaled to 0..255 (clipped)."""
    lo, hi = stored_range(bits, signed)
    if has_rescale:
        if "ModalityLUTSequence" in ds:
            lut_bits = _as_int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) or 16
            lo, hi = 0, (1 << lut_bits) - 1
        else:
            slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
            intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
            lo, hi = sorted((lo * slope + intercept, hi * slope + intercept))
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.float64)
    return np.clip((values - lo) * (255.0 / (hi - lo)), 0.0, 255.0)


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
    """The first VOI window (linear) mapped to 0..255; a VOI LUT Sequence via pydicom, its output
    range (0..2^bits-1 of its LUT Descriptor) scaled to 0..255."""
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
    out = np.asarray(apply_voi_lut(values, ds), dtype=np.float64)
    if "VOILUTSequence" in ds:
        lut_bits = _as_int(ds.VOILUTSequence[0].LUTDescriptor[2]) or 16
        return np.clip(out * (255.0 / ((1 << lut_bits) - 1)), 0.0, 255.0)
    return _minmax(out)  # a window pydicom applies (e.g. SIGMOID): its output range is the window's


def _minmax(values: np.ndarray) -> np.ndarray:
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.float64)
    return (values - lo) * (255.0 / (hi - lo))


def display_std(pixels: np.ndarray) -> float:
    """Standard deviation of display-unit pixels, on every pixel of every `step`-th row and column
    (at most about 250,000 pixels: a blank or near-constant image is so on any such grid)."""
    step = max(1, int(np.ceil(np.sqrt(pixels.size / 250_000))))
    return float(np.std(pixels[::step, ::step], dtype=np.float64))


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

    @property
    def nbytes(self) -> int:
        """Bytes held by the decoded pixels (0 when none)."""
        return 0 if self.pixels is None else int(self.pixels.nbytes)


def intake(path: str | Path, rules: dict | None = None) -> Intake:
    """Read, check the header (budget included), then decode the pixels of an accepted file and
    reject a blank one. Never raises."""
    path = Path(path)
    if not isinstance(rules, Rules):
        rules = rules_from(rules)
    try:
        ds = read_dataset(path, rules["max_file_mb"])
    except IntakeFailure as e:
        return Intake(str(path), HeaderCheck(status=ERROR, reasons=[str(e)], codes=[e.code]))
    check = check_header(ds, rules)
    if getattr(ds, "part10", True) is False:
        check.warnings.append("not a DICOM Part 10 file (no preamble and 'DICM' marker): read as a bare data set "
                              f"in {check.transfer_syntax or 'an unknown transfer syntax'}")
    if check.status != ACCEPTED:
        return Intake(str(path), check, header=_without_pixels(ds))
    try:
        pixels = read_pixels(ds)
        if pixels.shape != (check.rows, check.columns) or (
                pixels.dtype.kind == "f" and not np.isfinite(pixels).all()):
            raise ValueError(f"decoded shape {pixels.shape} does not match Rows x Columns or has non-finite values")
    except Exception as e:
        check.status = ERROR
        check.add("decode_error", syntax=check.transfer_syntax, detail=f"{type(e).__name__}: {clean_text(e, 200)}")
        return Intake(str(path), check, header=_without_pixels(ds))
    limit = float(rules["min_display_std"])
    std = display_std(pixels) if limit > 0 else limit
    if std < limit:
        check.status = REJECTED
        check.add("blank_image", std=std, limit=limit)
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
