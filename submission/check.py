"""python -m submission.check --out OUT: the rendered documents hold only traced numbers.

Failures: a number in a rendered Markdown document that no trace in traceability.json
accounts for; a Markdown file changed since it was traced; a required section missing
(the document registry, submission/data/required_sections.yml); a 'nan', 'None', 'null' or empty
table cell; a missing synthetic-data banner or NIH attribution. In a submission folder (one that
record `submission.documents` lists): a registry document marked `in_submission` not rendered and
traced; an eSTAR section (submission/data/estar.yml) answered by no document and not marked not
applicable, or both; an eSTAR index that does not list the 22 sections in order with the files that
answer them or the reason they do not apply; a British spelling (BRITISH, whole
words); a raw comparison operator (`>=`, `<=`, `!=`, `==`) or an internal identifier in snake_case
in the text (`identifier_problems`: code spans, link targets, file names and paths, and dotted
record ids such as `validation.plan_lock` are not text).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import yaml

from evidence import layout
from evidence.canonical import sha256_bytes
from evidence.cli import EXIT_FAILED, EXIT_OK, guarded
from evidence.errors import ToolkitError

from . import registry
from .markup import BANNER
from .render import APPENDIX_HEADING, DATA

NUMBER = re.compile(r"(?<![A-Za-z_\d])\d+(?:[.,]\d+)*")
# The only numbers a document may print without a trace: the name of the submission type and
# the hash algorithm's name. Digits inside a word (F1, ChestX-ray14) are not numbers.
ALLOWED = [
    re.compile(r"510\(k\)"),
    re.compile(r"SHA-256"),
]
LINK_TARGET = re.compile(r"\]\([^)]*\)")
BAD_WORDS = re.compile(r"(?<![\w-])(nan|NaN|None|null|undefined|inf)(?![\w-])")
EMPTY_CELL = re.compile(r"\|\s*\|")
# British spellings a US submission must not hold (whole words, any case): the forms met in this
# project's templates, facts and records, and their usual neighbors.
BRITISH = re.compile(r"\b(" + "|".join([
    "prioritis(?:e|es|ed|ing|ation)", "paediatric(?:s)?", "oedema", "labell(?:ing|ed|er|ers)",
    "unlabelled", "optimis(?:e|es|ed|er|ers|ing|ation)", "analys(?:e|ed|ing)", "colour(?:s|ed)?",
    "behaviour(?:s|al)?", "centre(?:s|d)?", "tumour(?:s)?", "haemorrhage", "randomis(?:e|ed|ation)",
    "normalis(?:e|ed|ing|ation)", "organisation(?:s)?", "lateralised", "modelling", "licence",
    "practising", "characteris(?:e|ed|ing)", "minimis(?:e|ed|ing)", "maximis(?:e|ed|ing)",
    "standardis(?:e|ed|ation)", "utilis(?:e|ed|ation)", "summaris(?:e|ed)", "visualis(?:e|ed|ation)",
    "artefact(?:s)?", "programme(?:s)?", "whilst", "judgement",
]) + r")\b", re.I)
OPERATOR = re.compile(r"(?:>=|<=|!=|==)")
SNAKE = re.compile(r"(?<![\w.\-/])[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)+(?![\w/]|\.\w)")
# Names with an underscore that are words in their own right, not identifiers.
SNAKE_ALLOWED = {"x86_64"}
CODE_SPAN = re.compile(r"(`+).+?\1")
AUTOLINK = re.compile(r"<[a-z]+://[^>]*>")


def untraced_numbers(markdown: str, traces: list[dict]) -> list[str]:
    """Numbers left after removing every traced text (once per trace) and the allow-list."""
    head, sep, appendix = markdown.partition(f"## {APPENDIX_HEADING}")
    # The appendix tables are generated from traceability.json itself; its prose is checked.
    text = head + sep + "\n".join(l for l in appendix.splitlines() if not l.lstrip().startswith("|"))
    for t in sorted(traces, key=lambda t: -len(t["text"])):
        if t["text"]:
            pattern = r"(?<![A-Za-z0-9._])" + re.escape(t["text"]) + r"(?![0-9]|\.[0-9])"
            text = re.sub(pattern, "\x00", text, count=1)
    text = LINK_TARGET.sub("]()", text)
    for pattern in ALLOWED:
        text = pattern.sub(" ", text)
    found = []
    for line in text.splitlines():
        for m in NUMBER.finditer(line):
            found.append(f"{m.group(0)!r} in: {line.strip()[:100]}")
    return found


def prose(line: str) -> str:
    """The text of a Markdown line as a reader sees it: code spans, link targets and autolinks
    removed, backslash escapes undone."""
    line = CODE_SPAN.sub(" ", line)
    line = AUTOLINK.sub(" ", LINK_TARGET.sub("]()", line))
    return re.sub(r"\\(.)", r"\1", line)


def identifier_problems(markdown: str) -> list[str]:
    """British spellings, raw comparison operators and snake_case identifiers in the text of a
    document, one line each. A snake_case word counts only when it stands alone: joined by a dot
    or a slash to another word it is a file name, a path or a record id (`validation_plan.pdf`,
    `workflow/dicom/control_age_child.dcm`, `validation.plan_lock`), which documents cite."""
    found = []
    for i, line in enumerate(markdown.splitlines(), 1):
        text = prose(line)
        where = f"line {i}: {line.strip()[:100]}"
        for m in BRITISH.finditer(text):
            found.append(f"British spelling {m.group(0)!r} (use US English), {where}")
        for m in OPERATOR.finditer(text):
            found.append(f"operator {m.group(0)!r} in the text (write it in words), {where}")
        for m in SNAKE.finditer(text):
            if m.group(0) not in SNAKE_ALLOWED:
                found.append(f"identifier {m.group(0)!r} in the text (print its words: "
                             f"submission/data/terms.yml), {where}")
    return found


def required_sections(markdown: str, headings: list[str]) -> list[str]:
    present = {re.sub(r"\s+", " ", m.group(1)).strip().lower()
               for m in re.finditer(r"^#{1,6}\s+(.+?)\s*$", markdown, flags=re.M)}
    return [h for h in headings if h.lower() not in present]


class TraceabilityError(ToolkitError):
    """traceability.json cannot be read as the renderer writes it."""


def _traceability(path: Path) -> dict:
    """traceability.json, its shape checked: {"documents": {name: {markdown, markdown_sha256, traces}}}."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TraceabilityError(f"{path}: not valid JSON ({e}); rerun `make submission`") from None
    documents = doc.get("documents") if isinstance(doc, dict) else None
    entries = documents.values() if isinstance(documents, dict) else [None]
    keys = ("markdown", "markdown_sha256", "traces")
    if not all(isinstance(e, dict) and all(k in e for k in keys) for e in entries):
        raise TraceabilityError(f"{path}: expected documents: {{name: {{{', '.join(keys)}}}}}; "
                                "rerun `make submission`")
    return doc


def check(out: str | Path) -> list[str]:
    folder = layout.submission(out)
    trace_file = layout.traceability(out)
    if not trace_file.is_file():
        return [f"{trace_file}: missing (run `make submission` first)"]
    doc = _traceability(trace_file)
    docs = registry.registry()
    nih_link = yaml.safe_load((DATA / "references.yml").read_text(encoding="utf-8"))["nih_link"]
    failures = []
    for name, entry in sorted(doc.get("documents", {}).items()):
        md_path = folder / entry["markdown"]
        if not md_path.is_file():
            failures.append(f"{name}: {md_path} missing")
            continue
        md = md_path.read_text(encoding="utf-8")
        if sha256_bytes(md.encode("utf-8")) != entry["markdown_sha256"]:
            failures.append(f"{name}: {md_path.name} changed since it was rendered (rerun make submission)")
        traces = entry["traces"]
        failures += [f"{name}: untraced number {u}" for u in untraced_numbers(md, traces)]
        failures += [f"{name}: {p}" for p in identifier_problems(md)]
        failures += [f"{name}: required section missing: {h!r}"
                     for h in required_sections(md, list(docs[name].sections) if name in docs else [])]
        for i, line in enumerate(md.splitlines(), 1):
            body = LINK_TARGET.sub("]()", line)
            if BAD_WORDS.search(body):
                failures.append(f"{name}: line {i}: {BAD_WORDS.search(body).group(0)!r} in output: {line.strip()[:100]}")
            if line.lstrip().startswith("|") and EMPTY_CELL.search(line):
                failures.append(f"{name}: line {i}: empty table cell: {line.strip()[:100]}")
        if entry.get("synthetic") and BANNER not in md:
            failures.append(f"{name}: synthetic evidence but no banner {BANNER!r}")
        if entry.get("nih") and nih_link not in md:
            failures.append(f"{name}: NIH data but no link to the NIH download site")
    if layout.record(out, "submission.documents").is_file():
        failures += package(folder, doc, docs, registry.estar_sections())
    if CHECKLIST in doc.get("documents", {}):
        failures += checklist_failures(folder)
    return failures


INDEX_ROW = re.compile(r"^\|\s*(\d+)\s*\|(.*)\|\s*$")


def package(folder: Path, doc: dict, docs: dict[str, registry.Document], sections: list[dict]) -> list[str]:
    """The submission folder as a whole: every registry document marked `in_submission` rendered and
    traced; every eSTAR section answered by a document or not applicable with a reason (never both,
    never neither); the eSTAR index listing the sections in order, each with the files that answer
    it or "not applicable"."""
    failures = []
    traced = doc.get("documents", {})
    for d in docs.values():
        if d.in_submission and d.name not in traced:
            failures.append(f"{d.name}: in the registry (in_submission) but not rendered and traced in "
                            f"{layout.TRACEABILITY}; rerun `make submission`")
    covered, problems = registry.coverage(docs, sections)
    failures += problems
    index = folder / f"{registry.INDEX}.md"
    if not index.is_file():
        return failures + [f"{registry.INDEX}: {index} missing (rerun `make submission`)"]
    found = [m for m in map(INDEX_ROW.match, index.read_text(encoding="utf-8").splitlines()) if m]
    rows = {int(m.group(1)): m.group(2) for m in found}
    numbers = [s.number for s in covered]
    if [int(m.group(1)) for m in found] != numbers:
        failures.append(f"{registry.INDEX}: lists sections {[int(m.group(1)) for m in found]}, expected "
                        f"{numbers[0]} to {numbers[-1]} in order, each once")
    for s in covered:
        text = rows.get(s.number, "")
        if s.answered_by:
            missing = [n for n in s.answered_by if f"{n}.pdf" not in text]
            if missing:
                failures.append(f"{registry.INDEX}: section {s.number} ({s.title}) does not name "
                                f"{', '.join(f'{n}.pdf' for n in missing)}")
        elif s.not_applicable and "not applicable" not in text:
            failures.append(f"{registry.INDEX}: section {s.number} ({s.title}) does not say it is not applicable")
    return failures


CHECKLIST = "checklist"
CLAIM_ITEMS = 44   # CLAIM 2024 (Tejani et al., Radiology: Artificial Intelligence 2024;6(4):e240300)


def checklist_failures(folder: Path, items: list[dict] | None = None) -> list[str]:
    """The CLAIM 2024 checklist (submission/data/claim_2024.yml): items 1 to 44 each present once, each
    either mapped to a document and section or marked not addressed with a reason, and every mapped
    section a heading of the rendered document (folder/<document>.md)."""
    if items is None:
        items = (yaml.safe_load((DATA / "claim_2024.yml").read_text(encoding="utf-8")) or {}).get("items") or []
    where = "checklist (submission/data/claim_2024.yml)"
    numbers = [i.get("number") for i in items if isinstance(i, dict)]
    failures = [f"{where}: item {n} listed {numbers.count(n)} times" for n in sorted(set(numbers), key=str)
                if numbers.count(n) > 1]
    failures += [f"{where}: item {n} missing" for n in range(1, CLAIM_ITEMS + 1) if n not in numbers]
    failures += [f"{where}: item {n!r} is not one of the {CLAIM_ITEMS} items" for n in sorted(set(numbers), key=str)
                 if n not in range(1, CLAIM_ITEMS + 1)]
    documents: dict[str, str | None] = {}
    for item in items:
        n = item.get("number")
        mapped, reason = item.get("document"), str(item.get("not_addressed") or "").strip()
        if bool(mapped) == bool(reason):
            failures.append(f"{where}: item {n}: give either document and section, or not_addressed with the reason")
            continue
        if not mapped:
            continue
        if mapped not in documents:
            path = folder / f"{mapped}.md"
            documents[mapped] = path.read_text(encoding="utf-8") if path.is_file() else None
        md = documents[mapped]
        if md is None:
            failures.append(f"{where}: item {n}: document {mapped} not rendered ({folder / (mapped + '.md')} missing)")
        elif required_sections(md, [str(item.get("section", ""))]):
            failures.append(f"{where}: item {n}: document {mapped} has no section {item.get('section')!r} "
                            "(fix the section name or the document's heading)")
    return failures


def main(argv: list[str] | None = None) -> int:
    """0 when every check passes, 1 when a check fails (FAIL lines), 2 when the run folder cannot
    be read, 70 on a bug (`evidence.cli.guarded`)."""
    parser = argparse.ArgumentParser(prog="python -m submission.check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="build", help="run folder (default: build)")
    args = parser.parse_args(argv)
    return guarded(lambda: _report(check(args.out), args.out))


def _report(failures: list[str], out: str) -> int:
    for f in failures:
        print(f"FAIL {f}")
    if failures:
        print(f"submission check: {len(failures)} failure(s)", file=sys.stderr)
        return EXIT_FAILED
    print(f"submission check: OK, every number in {out}/submission traced")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
