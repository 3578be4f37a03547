"""Number formatting for the documents: plain functions of a value, each tested.

A value that is `{"estimable": false, "reason": ...}` renders as "not estimable (reason)" in
every filter. None, NaN, infinities and booleans are refused: a document never shows them.
"""
from __future__ import annotations

import math
import re
from numbers import Integral, Real
from typing import Any

from evidence.errors import ToolkitError

METHOD_NAMES = {
    "wilson": "Wilson score",
    "clopper-pearson": "Clopper-Pearson exact",
    "cluster-bootstrap-percentile": "patient-cluster bootstrap, percentile",
    "cluster-bootstrap-bca": "patient-cluster bootstrap, BCa",
    "delong": "DeLong",
    "bootstrap-percentile": "bootstrap, percentile",
    "mercaldo-logit": "logit, for an enriched sample (Mercaldo, Lau and Zhou)",
    "mercaldo-logit-adjusted": "adjusted logit, for an enriched sample (Mercaldo, Lau and Zhou)",
}


class FormatError(ToolkitError, ValueError):
    """A value that cannot be shown in a document."""


def not_estimable(value: Any) -> str | None:
    """'not estimable (reason)' for a not-estimable marker, else None."""
    if isinstance(value, dict) and value.get("estimable") is False:
        reason = str(value.get("reason") or "").strip()
        if not reason:
            raise FormatError("a not-estimable value must carry a reason")
        return f"not estimable ({reason})"
    return None


def _number(value: Any, what: str) -> float:
    if isinstance(value, dict) and "estimate" in value:
        value = value["estimate"]
    if isinstance(value, bool) or not isinstance(value, Real):
        raise FormatError(f"{what}: expected a number, got {value!r}")
    if not math.isfinite(float(value)):
        raise FormatError(f"{what}: expected a finite number, got {value!r}")
    return float(value)


def pct(value: Any, digits: int = 1) -> str:
    """0.8234 -> '82.3%'. An estimate dict shows its estimate."""
    ne = not_estimable(value)
    if ne:
        return ne
    return f"{_number(value, 'pct') * 100:.{digits}f}%"


def num(value: Any, digits: int = 3) -> str:
    """A float with `digits` decimals; an integer with thousands separators."""
    ne = not_estimable(value)
    if ne:
        return ne
    if isinstance(value, Integral) and not isinstance(value, bool):
        return f"{int(value):,}"
    return f"{_number(value, 'num'):,.{digits}f}"


def count(value: Any) -> str:
    """An integer count with thousands separators; refuses fractions."""
    ne = not_estimable(value)
    if ne:
        return ne
    x = _number(value, "count")
    if x != int(x):
        raise FormatError(f"count: expected a whole number, got {value!r}")
    return f"{int(x):,}"


def p_value(value: Any) -> str:
    """'p < 0.001' or 'p = 0.034'; refuses values outside [0, 1]."""
    ne = not_estimable(value)
    if ne:
        return ne
    p = _number(value, "p_value")
    if not 0.0 <= p <= 1.0:
        raise FormatError(f"p_value: expected a probability in [0, 1], got {value!r}")
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def method_name(method: str) -> str:
    return METHOD_NAMES.get(str(method).lower(), str(method))


def ci(value: Any, scale: str = "pct", digits: int | None = None, method: bool = True) -> str:
    """An interval estimate: '82.3% (95% CI 74.1% to 88.6%; Wilson score; n = 120)'.

    scale 'pct' shows percentages, 'num' plain numbers (e.g. AUC).
    """
    ne = not_estimable(value)
    if ne:
        return ne
    if not isinstance(value, dict):
        raise FormatError(f"ci: expected an interval estimate, got {value!r}")
    missing = [k for k in ("estimate", "ci_low", "ci_high", "ci_level") if k not in value]
    if missing:
        raise FormatError(f"ci: interval estimate lacks {', '.join(missing)}")
    if scale == "pct":
        fmt = lambda x: pct(x, 1 if digits is None else digits)  # noqa: E731
    elif scale == "num":
        fmt = lambda x: num(_number(x, "ci"), 3 if digits is None else digits)  # noqa: E731
    else:
        raise FormatError(f"ci: scale must be 'pct' or 'num', got {scale!r}")
    level = _number(value["ci_level"], "ci_level") * 100
    level_text = f"{level:.0f}%" if abs(level - round(level)) < 1e-9 else f"{level:g}%"
    text = f"{fmt(value['estimate'])} ({level_text} CI {fmt(value['ci_low'])} to {fmt(value['ci_high'])}"
    details = []
    if method and value.get("method"):
        details.append(method_name(value["method"]))
    if method and "n" in value:
        details.append(f"n = {count(value['n'])}")
    return text + ("; " + "; ".join(details) if details else "") + ")"


def code(value: Any) -> str:
    """A value as a Markdown code span, verbatim (no Markdown escaping applies inside one).

    The fence is one backtick longer than the longest run of backticks in the text (CommonMark
    closes a span only at a run of exactly the fence's length), so text from data (a file name
    with a double backtick) can never end the span early and turn the rest into links or images.
    Line breaks become spaces (a span cannot hold a blank line)."""
    ne = not_estimable(value)
    if ne:
        return ne
    if value is None or (isinstance(value, str) and not value.strip()):
        raise FormatError("a code value is null or empty")
    text = re.sub(r"[\r\n\f\v\u2028\u2029]+", " ", str(value))
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or (
        text.startswith(" ") and text.endswith(" ") and text.strip()) else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def words(value: Any) -> str:
    """A data label as words: underscores become spaces ('Pleural_Thickening' -> 'Pleural Thickening'),
    Markdown syntax escaped as for any text from data."""
    ne = not_estimable(value)
    if ne:
        return ne
    if not isinstance(value, str) or not value.strip():
        raise FormatError(f"words: expected a non-empty text, got {value!r}")
    text = " ".join(value.replace("_", " ").split())
    return re.sub(r"([\\`*\[\]<>|#])", r"\\\1", text)


FILTERS = {"pct": pct, "num": num, "count": count, "p_value": p_value, "ci": ci,
           "method_name": method_name, "code": code, "words": words}


def day(value: Any) -> str:
    """The calendar date (YYYY-MM-DD) of an ISO 8601 UTC time such as a record's `created_utc`."""
    import datetime as _dt

    if not isinstance(value, str):
        raise FormatError(f"a date needs an ISO 8601 time, found {type(value).__name__}")
    try:
        return _dt.datetime.fromisoformat(value.replace("Z", "+00:00")).date().isoformat()
    except ValueError:
        raise FormatError(f"{value!r} is not an ISO 8601 time") from None


FILTERS["day"] = day
