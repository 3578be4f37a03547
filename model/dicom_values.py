"""DICOM values written back (the Secondary Capture of `model.infer`, the node's SC and SR): each
value copied from an input is re-formed to its VR, so a result object never carries an invalid value
from its source (a hash in a UID field, a 64-character SH, a sex of "unknown").

`conform(keyword, value)` gives the value to write, or None to leave the attribute empty:
- UI: kept when it is a valid UID (digits and dots, no leading zero in a component, at most 64
  characters); otherwise a UID derived from the invalid value (`generate_uid` with it as entropy),
  so every object made from one source still shares one study;
- SH, LO, ST, LT: control characters and backslashes removed, truncated to the VR's length;
  several values of an attribute that allows one joined by a space;
- CS: upper-cased, characters outside A-Z, 0-9, space and underscore removed, at most 16; PatientSex
  only M, F or O;
- DA: kept when a real date YYYYMMDD; TM: kept when HHMMSS(.ffffff) is valid; else empty;
- PN: each component group at most 64 characters, control characters and backslashes removed;
- SpecificCharacterSet: kept when pydicom knows every term, else empty (ISO_IR 6, the default).
Each result is checked with pydicom's own VR validation (`pydicom.valuerep.validate_value`).
"""
from __future__ import annotations

import datetime
import re
from typing import Any

_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")
_LENGTH = {"SH": 16, "LO": 64, "ST": 1024, "LT": 10240, "CS": 16, "AE": 16}
_SEX = {"M", "F", "O"}


def vr_of(keyword: str) -> str:
    from pydicom.datadict import dictionary_VR

    return dictionary_VR(keyword)


def valid_uid(value: str) -> bool:
    return 0 < len(value) <= 64 and bool(_UID.match(value))


def conform(keyword: str, value: Any) -> Any:
    """The value of `keyword` to write back, re-formed to its VR; None when nothing valid is left."""
    if value is None:
        return None
    vr = vr_of(keyword)
    if keyword == "SpecificCharacterSet":
        return _charset(value)
    if vr == "PN":
        return _person_name(value)
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        from pydicom.datadict import dictionary_VM

        if dictionary_VM(keyword) == "1":       # several values where one is allowed: one value
            return conform_one(keyword, vr, " ".join(str(v) for v in value))
        items = [conform_one(keyword, vr, v) for v in value]
        items = [v for v in items if v]
        return items or None
    return conform_one(keyword, vr, value)


def conform_one(keyword: str, vr: str, value: Any) -> str | None:
    text = str(value).strip().strip("\x00")
    if not text:
        return None
    if vr == "UI":
        if valid_uid(text):
            return text
        from pydicom.uid import generate_uid

        return generate_uid(entropy_srcs=[keyword, text])
    if vr == "DA":
        try:
            datetime.datetime.strptime(text, "%Y%m%d")
        except ValueError:
            return None
        return text if len(text) == 8 else None
    if vr == "TM":
        return text if re.fullmatch(r"([01][0-9]|2[0-3])([0-5][0-9]([0-5][0-9](\.[0-9]{1,6})?)?)?", text) else None
    if vr == "CS":
        text = re.sub(r"[^A-Z0-9 _]", "", text.upper())[: _LENGTH["CS"]].strip()
        if keyword == "PatientSex":
            return text if text in _SEX else None
        return text or None
    text = _CONTROL.sub("", text).strip()
    limit = _LENGTH.get(vr)
    return (text[:limit].rstrip() if limit else text) or None


def _person_name(value: Any) -> str | None:
    groups = str(value).split("=")[:3]
    groups = [_CONTROL.sub("", g).strip()[:64] for g in groups]
    while groups and not groups[-1]:
        groups.pop()
    return "=".join(groups) or None


def _charset(value: Any) -> Any:
    from pydicom.charset import python_encoding

    terms = [value] if isinstance(value, str) else list(value)
    terms = [str(t).strip() for t in terms]
    if all(t in python_encoding or t == "" for t in terms) and any(terms):
        return terms[0] if len(terms) == 1 else terms
    return None


def copy_conformed(source, target, keywords) -> None:
    """Set each of `keywords` present in `source` on `target`, conformed; one with nothing valid left
    is left out (its module may add it empty)."""
    for keyword in keywords:
        if source is None or keyword not in source:
            continue
        value = conform(keyword, source.data_element(keyword).value)
        if value is not None:
            setattr(target, keyword, value)


def problems(ds) -> list[str]:
    """pydicom's VR validation of every element of `ds` (top level): '<keyword>: <message>' each."""
    from pydicom import config
    from pydicom.valuerep import validate_value

    found = []
    for element in ds:
        if element.VR in ("SQ", "OB", "OW", "OD", "OF", "OL", "OV", "UN") or element.value is None:
            continue
        values = element.value if element.VM > 1 else [element.value]
        for v in values:
            try:
                validate_value(element.VR, str(v) if element.VR in ("IS", "DS") else v, config.RAISE)
            except (ValueError, TypeError) as e:
                found.append(f"{element.keyword}: {e}")
    return found
