"""Person names and the fonts that can draw them, for the clinician image.

A DICOM PN holds up to three component groups separated by `=` (alphabetic, ideographic, phonetic),
each with components separated by `^` (family, given, middle, prefix, suffix). `person_name`
formats them as "Family, Given Middle" (never the raw `^`/`=`): the ideographic group, when a font
on this system draws every character of it, followed by the alphabetic (romanized) group in
parentheses; else the alphabetic group when a font draws it; else a marked placeholder that says the
name is not shown, never boxes. `font_family(text)` gives the fonts that draw a line: matplotlib's
default, then, for the characters it lacks, installed fonts that have them (Noto Sans CJK from the
`fonts-noto-cjk` package, Droid Sans Fallback, ...), as a matplotlib fallback list.
"""
from __future__ import annotations

import functools
import re
from pathlib import Path

NOT_SHOWN = "[name not shown: no installed font draws its characters; identify the patient by ID]"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: Fonts tried first for text the default font does not draw (their file names, lower case).
PREFERRED = ("notosanscjk", "notoserifcjk", "sourcehansans", "droidsansfallback", "wqy", "unifont")
#: Fonts whose glyphs are placeholders (a box per Unicode block), never used to draw a name.
PLACEHOLDER_FONTS = ("lastresort",)


def format_group(group: str) -> str:
    """'Family^Given^Middle^Prefix^Suffix' -> 'Family, Prefix Given Middle, Suffix' (empty parts left out)."""
    parts = [_CONTROL.sub("", p).strip() for p in (str(group).split("^") + [""] * 5)[:5]]
    family, given, middle, prefix, suffix = parts
    rest = " ".join(p for p in (prefix, given, middle) if p)
    text = ", ".join(p for p in (family, rest) if p)
    return f"{text}, {suffix}" if suffix and text else (text or suffix)


def person_name(value, *, drawable=None) -> str:
    """The name to show for a PN value (module docstring); '' for no name."""
    drawable = drawable or globals()["drawable"]
    groups = (str(value or "").split("=") + ["", ""])[:3]
    alphabetic, ideographic = format_group(groups[0]), format_group(groups[1])
    if ideographic and drawable(ideographic):
        return f"{ideographic} ({alphabetic})" if alphabetic and drawable(alphabetic) else ideographic
    if alphabetic and drawable(alphabetic):
        return alphabetic
    return NOT_SHOWN if alphabetic or ideographic else ""


@functools.lru_cache(maxsize=None)
def _charmap(path: str) -> frozenset[int]:
    from matplotlib.ft2font import FT2Font

    try:
        return frozenset(FT2Font(path).get_charmap())
    except Exception:          # a font file matplotlib cannot open draws nothing here
        return frozenset()


@functools.lru_cache(maxsize=1)
def _fonts() -> tuple[str, ...]:
    """The default font first, then the preferred fallbacks, then every other installed font."""
    from matplotlib import font_manager

    default = font_manager.findfont(font_manager.FontProperties())
    paths = sorted(p for p in {f.fname for f in font_manager.fontManager.ttflist} | set(_fc_list())
                   if not any(k in Path(p).name.lower().replace("-", "") for k in PLACEHOLDER_FONTS))
    rank = lambda p: next((i for i, k in enumerate(PREFERRED) if k in Path(p).name.lower().replace("-", "")),  # noqa: E731
                          len(PREFERRED))
    default = str(default)
    return (default, *sorted((p for p in paths if p != default), key=lambda p: (rank(p), p)))


def _fc_list() -> list[str]:
    """Font files fontconfig knows (matplotlib does not list .ttc collections on every version)."""
    import shutil
    import subprocess

    if not shutil.which("fc-list"):
        return []
    try:
        out = subprocess.run(["fc-list", "--format", "%{file}\n"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line for line in out.splitlines() if line.lower().endswith((".ttf", ".otf", ".ttc"))]


def fonts_for(text: str) -> list[str] | None:
    """The fonts that together draw every character of `text`: the default font, then (`_fonts`
    order) each font that draws a character the ones before it do not; None when a character is
    drawn by no installed font."""
    needed = {ord(c) for c in text if not c.isspace()}
    chosen = []
    for path in _fonts():
        covered = needed & _charmap(path)
        if covered or not chosen:
            chosen.append(path)
            needed -= covered
        if not needed:
            return chosen
    return None


def font_family(text: str) -> list[str] | None:
    """matplotlib family names (with fallback, in order) that draw `text`; each font registered with
    matplotlib's font manager; None when no installed font draws some character."""
    from matplotlib import font_manager

    paths = fonts_for(text)
    if paths is None:
        return None
    families = []
    for path in paths:
        font_manager.fontManager.addfont(path)
        families.append(font_manager.FontProperties(fname=path).get_name())
    return list(dict.fromkeys(families))


def drawable(text: str) -> bool:
    return fonts_for(text) is not None
