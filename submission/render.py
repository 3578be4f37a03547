"""The Jinja environment: templates reach numbers only through `ev()` and facts through `fact()`.

Every value that reaches the output is traced (document, text as rendered, value, record id,
JSON pointer, record sha256). Rendering produces two editions from one pass: the plain text
and the auditor edition, in which every number is followed by its evidence reference.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from numbers import Real
from pathlib import Path
from typing import Any

import jinja2
import yaml

from evidence import Store, layout
from evidence.canonical import sha256_file
from evidence.errors import EvidenceError
from evidence.errors import ToolkitError
from evidence.provenance import REPO_ROOT

from . import filters
from .markup import BANNER

TEMPLATES = REPO_ROOT / "templates"
DATA = Path(__file__).resolve().parent / "data"
#: the design files (requirements, hazards, anomalies: `design.spec`), read as facts files too
DESIGN = REPO_ROOT / "design"
APPENDIX_HEADING = "Traceability statement"
#: The full table of traced values: in the auditor edition (a heading below the statement) and in
#: `traceability.{md,html,pdf}` of the submission folder (`submission.documents.write_traceability`).
TRACE_TABLE_HEADING = "Every traced number, by evidence record"
# Tracing markers. During the one rendering pass, `Renderer._finalize` prints every traced value
# as the placeholder MARK_OPEN + n + MARK_CLOSE, n being the decimal index of (text, trace) in
# `Renderer._marks`; the template global `traceability_appendix()` prints APPENDIX_MARK, because
# the appendix can only be written once every value is known. STX and ETX are control characters
# that document text does not hold, so a placeholder is never confused with text. Only
# `Renderer.render` parses them (`_MARK`), right after the pass: each placeholder becomes the
# value's text (plain edition) or the text and its reference `\[record_id@sha256[:8]\]` (auditor
# edition, numbers only), and APPENDIX_MARK the appendix table. No rendered document holds a
# marker; `submission.check` reads `traceability.json`, not markers.
MARK_OPEN, MARK_CLOSE = "\x02", "\x03"
APPENDIX_MARK = f"{MARK_OPEN}APPENDIX{MARK_CLOSE}"
_MARK = re.compile(f"{MARK_OPEN}(\\d+){MARK_CLOSE}")


class RenderError(ToolkitError):
    """A template asked for something the evidence does not hold."""


@dataclass(frozen=True, eq=False)
class Traced:
    """A value taken from a record (or a facts file) with where it came from."""

    value: Any
    record_id: str
    pointer: str
    sha256: str
    source: str = "record"

    def child(self, key: Any) -> "Traced":
        node = self.value
        if isinstance(node, dict) and key in node:
            value = node[key]
        elif isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
            value = node[key]
        else:
            near = ", ".join(sorted(map(str, node))[:20]) if isinstance(node, dict) else type(node).__name__
            raise RenderError(
                f"{self.source} {self.record_id}: no value at {self.pointer}/{key} (keys there: {near})"
            )
        part = str(key).replace("~", "~0").replace("/", "~1")
        return Traced(value, self.record_id, f"{self.pointer}/{part}", self.sha256, self.source)

    def __iter__(self):
        if isinstance(self.value, list):
            return iter([self.child(i) for i in range(len(self.value))])
        if isinstance(self.value, dict):
            return iter([Key(k, self.child(k)) for k in self.value])
        raise RenderError(f"{self.source} {self.record_id}: {self.pointer} is not a list or mapping")

    def items(self):
        return [(Key(k, self.child(k)), self.child(k)) for k in self.value]

    def __len__(self) -> int:
        return len(self.value)

    def __bool__(self) -> bool:
        return bool(self.value)

    def __lt__(self, other: Any) -> bool:
        return self.value < (other.value if isinstance(other, Traced) else other)

    def __str__(self) -> str:  # used only by string concatenation in templates
        return display(self.value)


class TracedText(str):
    """Formatted text of a traced value; carries the trace of its source."""

    trace: Traced

    def __new__(cls, text: str, trace: Traced):
        obj = super().__new__(cls, text)
        obj.trace = trace
        return obj


class Key(TracedText):
    """A mapping key met in a loop (e.g. a package name): printed escaped, traced to its entry."""


def unwrap(value: Any) -> Any:
    return value.value if isinstance(value, Traced) else value


def escape_md(text: str) -> str:
    """Escape Markdown syntax in text that comes from data (file names, DICOM fields); every line
    break (CR and LF included) becomes a space, so data never starts a list, heading or table row."""
    return re.sub(r"[\r\n\f\v\u2028\u2029]+", " ", re.sub(r"([\\`*_\[\]<>|#])", r"\\\1", text))


def display(value: Any) -> str:
    """Default text of a value written without a filter."""
    ne = filters.not_estimable(value)
    if ne:
        return ne
    if value is None:
        raise filters.FormatError("a value is null; a record must say 'not estimable' with a reason")
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Real):
        return filters.num(value)
    if isinstance(value, str):
        if not value.strip():
            raise filters.FormatError("a value is an empty string")
        return escape_md(value)
    raise filters.FormatError(f"a {type(value).__name__} needs a filter or a loop, not direct output")


def is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) or (
        isinstance(value, dict) and "estimate" in value)


class TracingEnvironment(jinja2.Environment):
    """Attribute and item access on a traced value gives a traced child."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, Traced):
            if isinstance(obj.value, dict) and attribute in obj.value:
                return obj.child(attribute)
            if attribute in ("items",):
                return getattr(obj, attribute)
            return obj.child(attribute)
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        if isinstance(obj, Traced):
            return obj.child(argument)
        return super().getitem(obj, argument)


def load_facts() -> dict[str, tuple[dict, str, str]]:
    """{name: (facts, path relative to the repo, sha256)} for every submission/data/*.yml and
    design/*.yml (a name both folders hold is refused)."""
    facts = {}
    for path in [*sorted(DATA.glob("*.yml")), *sorted(DESIGN.glob("*.yml"))]:
        if path.stem in facts:
            raise RenderError(f"{path}: facts file {path.stem!r} is also {facts[path.stem][1]}; rename one")
        facts[path.stem] = (yaml.safe_load(path.read_text(encoding="utf-8")) or {},
                            path.relative_to(REPO_ROOT).as_posix(), sha256_file(path))
    return facts


@dataclass
class Rendered:
    name: str
    plain: str
    auditor: str
    traces: list[dict] = field(default_factory=list)
    figures: list[dict] = field(default_factory=list)
    records: list[str] = field(default_factory=list)


class Renderer:
    """Renders `templates/<name>.md.j2` against the records of one run folder."""

    def __init__(self, out_dir: str | Path, *, templates: Path = TEMPLATES,
                 submission_dir: Path | None = None, extra_figures: dict[str, Path] | None = None):
        self.out_dir = Path(out_dir)
        self.store = Store(self.out_dir)
        self.submission_dir = submission_dir or layout.submission(self.out_dir)
        self.facts = load_facts()
        self.extra_figures = extra_figures or {}
        self.env = TracingEnvironment(
            loader=jinja2.FileSystemLoader(str(templates)),
            undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True,
            trim_blocks=True, lstrip_blocks=True, finalize=self._finalize,
        )
        for name, fn in filters.FILTERS.items():
            self.env.filters[name] = _traced_filter(fn)
        self.env.tests["estimable"] = lambda v: filters.not_estimable(unwrap(v)) is None
        self.env.tests["number"] = lambda v: is_number(unwrap(v))
        self.env.globals.update(
            ev=self.ev, fact=self.fact, has=self.has, figure=self.figure, term=self.term,
            records=self.records, synthetic=self.synthetic, nih_source=self.nih_source,
            traceability_appendix=lambda: APPENDIX_MARK, banner=BANNER,
        )
        from . import design_docs, package, threat_model
        self.env.globals.update(package.template_globals(self))
        self.env.globals.update(design_docs.template_globals(self))
        self.env.globals.update(threat_model.template_globals(self))
        self._marks: list[tuple[str, Traced | None]] = []
        self._figures: list[dict] = []
        self._used: dict[str, str] = {}
        self._listed: set[str] | None = None

    # -- template API -----------------------------------------------------------------------
    def ev(self, record_id: str, path: str) -> Traced:
        """The value at `path` (dotted, or a JSON pointer from the record root) of a record."""
        try:
            value, pointer, sha = self.store.lookup(record_id, path)
        except EvidenceError as e:
            raise RenderError(f"ev({record_id!r}, {path!r}): {e}") from None
        self._used[record_id] = sha
        return Traced(value, record_id, pointer, sha)

    def fact(self, dotted: str) -> Traced:
        """A hand-written fact: 'device.name' is key `name` of submission/data/device.yml."""
        file, _, path = dotted.partition(".")
        if file not in self.facts:
            raise RenderError(f"fact({dotted!r}): no file submission/data/{file}.yml or design/{file}.yml")
        data, rel, sha = self.facts[file]
        node = Traced(data, rel, "", sha, source="facts")
        for key in [p for p in path.split(".") if p]:
            node = node.child(int(key) if isinstance(node.value, list) and key.isdigit() else key)
        return node

    def term(self, group: str, value: Any, otherwise: Any = None) -> Any:
        """The words for an identifier a record holds (e.g. architecture `small_cnn`), from
        submission/data/terms.yml: documents print words, never the identifier. `otherwise` is
        printed instead for a value that is not an identifier (e.g. the path of a weights file)."""
        key = unwrap(value)
        words = self.fact(f"terms.{group}")
        if not isinstance(words.value, dict) or not isinstance(key, str) or key not in words.value:
            if otherwise is not None:
                return otherwise
            raise RenderError(f"term({group!r}, {key!r}): no words for it in submission/data/terms.yml; "
                              f"add {key!r} under {group!r}")
        return words.child(key)

    def has(self, record_id: str, path: str | None = None) -> bool:
        if not self.store.has(record_id):
            return False
        if path is None:
            return True
        try:
            self.store.lookup(record_id, path)
            return True
        except EvidenceError:
            return False

    def records(self) -> list[dict]:
        """The records this document has used so far (the appendix comes last)."""
        self._listed = set(self._used)
        rows = []
        for rid in sorted(self._used):
            r = self.store.get(rid)
            rows.append({"id": rid, "stage": r["stage"], "sha256": r["sha256"], "short_sha256": r["sha256"][:12],
                         "created_utc": r["created_utc"], "synthetic": r["synthetic"]})
        return rows

    def synthetic(self) -> bool:
        return any(r["synthetic"] for r in self.store.all().values())

    def nih_source(self) -> bool:
        """True when the cohort record names NIH ChestX-ray14 as its source."""
        if not self.store.has("cohort.manifest"):
            return False
        source = self.store.data("cohort.manifest").get("source", {})
        return isinstance(source, dict) and source.get("kind") == "nih"

    def figure(self, record_id: str, name: str, caption: str) -> str:
        """Markdown for the figure whose file name contains `name` among a record's `outs`."""
        if record_id == "submission":
            path = self.extra_figures.get(name)
            if path is None:
                raise RenderError(f"figure({record_id!r}, {name!r}): no such figure of this stage")
            sha, stored = sha256_file(path), Path(path).name
        else:
            record = self.store.get(record_id)
            matches = [o for o in record["outs"] if o["path"].endswith(".png") and name in Path(o["path"]).name]
            if len(matches) != 1:
                raise RenderError(
                    f"figure({record_id!r}, {name!r}): expected one PNG in the record's outs "
                    f"matching {name!r}, found {len(matches)} ({', '.join(o['path'] for o in record['outs'])})")
            stored, sha = matches[0]["path"], matches[0]["sha256"]
            self._used[record_id] = record["sha256"]
            path = Path(stored) if Path(stored).is_absolute() else self.out_dir / stored
        rel = os.path.relpath(Path(path).resolve(), self.submission_dir.resolve())
        self._figures.append({"record_id": record_id, "path": stored, "sha256": sha, "caption": caption})
        return f"![{caption}]({Path(rel).as_posix()})"

    # -- rendering --------------------------------------------------------------------------
    def _finalize(self, obj: Any) -> str:
        if isinstance(obj, jinja2.Undefined):
            return obj  # StrictUndefined raises when it is printed
        if isinstance(obj, Key):
            trace = Traced(str.__str__(obj), obj.trace.record_id, obj.trace.pointer, obj.trace.sha256,
                           obj.trace.source)
            text = escape_md(str.__str__(obj))
        elif isinstance(obj, TracedText):
            trace = obj.trace
            text = str.__str__(obj)
        elif isinstance(obj, Traced):
            trace = obj
            try:
                text = display(obj.value)
            except filters.FormatError as e:
                raise RenderError(f"{obj.source} {obj.record_id} at {obj.pointer}: {e}") from None
        elif obj is None:
            raise RenderError("a template printed None; use ev() and a filter")
        else:
            return str(obj)
        self._marks.append((text, trace))
        return f"{MARK_OPEN}{len(self._marks) - 1}{MARK_CLOSE}"

    def render(self, name: str) -> Rendered:
        self._marks, self._figures, self._used, self._listed = [], [], {}, None
        try:
            template = self.env.get_template(f"{name}.md.j2")
        except jinja2.TemplateNotFound:
            raise RenderError(f"template templates/{name}.md.j2 not found") from None
        try:
            raw = template.render(document=name)
        except jinja2.UndefinedError as e:
            raise RenderError(f"{name}: {e.message} (templates/{name}.md.j2)") from None
        except filters.FormatError as e:
            raise RenderError(f"{name}: {e}") from None
        late = sorted(set(self._used) - self._listed) if self._listed is not None else []
        if late:
            raise RenderError(f"{name}: record(s) {', '.join(late)} used after the records() table; "
                              f"put the appendix at the end of templates/{name}.md.j2")
        traces = []
        for text, t in self._marks:
            traces.append({"document": name, "text": text, "value": t.value, "source": t.source,
                           "record_id": t.record_id, "pointer": t.pointer or "/", "sha256": t.sha256,
                           "numeric": is_number(t.value) or filters.not_estimable(t.value) is not None})
        plain = _MARK.sub(lambda m: self._marks[int(m.group(1))][0], raw)
        auditor = _MARK.sub(lambda m: _with_reference(*self._marks[int(m.group(1))]), raw)
        summary = trace_summary(traces)
        plain = plain.replace(APPENDIX_MARK, summary)
        auditor = auditor.replace(APPENDIX_MARK, f"{summary}\n\n### {TRACE_TABLE_HEADING}\n\n"
                                  + traces_by_record(traces, self.record_info(traces), heading="####"))
        return Rendered(name, plain, auditor, traces, list(self._figures), sorted(self._used))

    def record_info(self, traces: list[dict]) -> dict[str, str]:
        """{record id: 'stage S, created T'} for the records the traces cite (facts files: 'facts file')."""
        info = {}
        for t in traces:
            rid = t["record_id"]
            if rid in info:
                continue
            if t["source"] == "record" and self.store.has(rid):
                r = self.store.get(rid)
                info[rid] = f"Record of stage {r['stage']}, created {r['created_utc']}"
            else:
                info[rid] = "Hand-written facts file of the toolkit"
        return info


def _with_reference(text: str, trace: Traced) -> str:
    if not (is_number(trace.value) or filters.not_estimable(trace.value) is not None):
        return text
    return f"{text} \\[{trace.record_id}@{trace.sha256[:8]}\\]"


def _traced_filter(fn):
    def wrapper(value, *args, **kwargs):
        trace = value if isinstance(value, Traced) else getattr(value, "trace", None)
        try:
            text = fn(unwrap(value), *args, **kwargs)
        except filters.FormatError as e:
            where = f"{trace.source} {trace.record_id} at {trace.pointer}: " if trace is not None else ""
            raise RenderError(f"{where}{e}") from None
        return TracedText(text, trace) if trace is not None else text
    wrapper.__name__ = fn.__name__
    return wrapper


def numeric_traces(traces: list[dict]) -> list[dict]:
    """The traces of numbers, each (document, text, record, pointer) once, in order of appearance."""
    seen, rows = set(), []
    for t in traces:
        key = (t["document"], t["text"], t["record_id"], t["pointer"])
        if t["numeric"] and key not in seen:
            seen.add(key)
            rows.append(t)
    return rows


def trace_summary(traces: list[dict]) -> str:
    """The one-table traceability statement of a document: how many numbers, how many records,
    where the full table is (the table lines are generated from the traces themselves)."""
    rows = numeric_traces(traces)
    records = {t["record_id"] for t in rows}
    return ("| distinct numbers traced | evidence records and facts files they come from | the full table |\n"
            "|---|---|---|\n"
            f"| {len(rows)} | {len(records)} | `traceability.pdf` (also `.md` and `.html`), by record; "
            "the auditor edition of this document |")


def traces_by_record(traces: list[dict], info: dict[str, str], *, heading: str = "##",
                     documents: bool = False) -> str:
    """Every traced number grouped under its record: a heading per record, its full sha256 once,
    then one row per value (document when `documents`, text as printed, JSON pointer)."""
    rows = numeric_traces(traces)
    if not rows:
        return "No number in this document."
    groups: dict[str, list[dict]] = {}
    for t in rows:
        groups.setdefault(t["record_id"], []).append(t)
    parts = []
    for rid in sorted(groups):
        first = groups[rid][0]
        parts.append(f"{heading} {escape_md(rid)}\n\n{info.get(rid, '')}; the auditor editions cite it by its "
                     f"id and the first eight hex digits of its sha256, `{first['sha256'][:8]}`. Full sha256:\n\n"
                     f"`{first['sha256']}`\n")
        head = "| document | value as printed | JSON pointer |\n|---|---|---|" if documents else \
            "| value as printed | JSON pointer |\n|---|---|"
        lines = [head]
        for t in groups[rid]:
            cells = [escape_md(t["document"].replace("_", " "))] if documents else []
            cells += [t["text"], f"`{t['pointer']}`"]
            lines.append("| " + " | ".join(cells) + " |")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts).rstrip("\n")
