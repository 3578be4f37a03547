"""The document registry (`submission/data/required_sections.yml`) and the eSTAR sections
(`submission/data/estar.yml`), read and checked here once.

Registry: each top-level key NAME is a document rendered from `templates/NAME.md.j2` into
`OUT/submission/NAME.{md,html,pdf}` and `NAME_auditor.{md,html,pdf}`, with
- `title`: the document title (HTML title, PDF title metadata);
- `estar`: the eSTAR section numbers (1 to 22) it answers, possibly none;
- `in_submission`: true when `python -m submission` renders it into the submission folder;
- `sections`: the headings the rendered document must contain (`python -m submission.check`).

eSTAR sections: a list, in order, of `{number, title}`, and `not_applicable: <reason>` for a
section no document answers. `coverage()` pairs the two: every section is answered by a document
of the submission or not applicable with a reason, never both and never neither.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from evidence.errors import ToolkitError
from evidence.safeyaml import load_file

DATA = Path(__file__).resolve().parent / "data"
REGISTRY = DATA / "required_sections.yml"
ESTAR = DATA / "estar.yml"
#: rendered and locked by `submission.plan` before any test score, never by `python -m submission`
PLAN = "validation_plan"
#: the eSTAR index, rendered from the registry and estar.yml
INDEX = "estar_index"
N_SECTIONS = 22
KEYS = {"title", "estar", "in_submission", "sections"}


class RegistryError(ToolkitError):
    """required_sections.yml or estar.yml does not have the shape this module reads."""


@dataclass(frozen=True)
class Document:
    name: str
    title: str
    estar: tuple[int, ...]
    in_submission: bool
    sections: tuple[str, ...]

    def files(self, pdf: bool = True) -> list[str]:
        """The file names `write_document` writes for it."""
        suffixes = (".md", ".html", ".pdf") if pdf else (".md", ".html")
        return [f"{self.name}{edition}{s}" for edition in ("", "_auditor") for s in suffixes]


@dataclass(frozen=True)
class Section:
    number: int
    title: str
    not_applicable: str | None
    answered_by: tuple[str, ...]


def _read(path: Path):
    return load_file(path, RegistryError)


def parse_registry(raw, where: str = str(REGISTRY)) -> dict[str, Document]:
    """The registry from its YAML data; every shape error is named with the document and key."""
    if not isinstance(raw, dict) or not raw:
        raise RegistryError(f"{where}: expected a mapping of document names to entries")
    docs = {}
    for name, entry in raw.items():
        at = f"{where}: document {name!r}"
        if not isinstance(name, str) or not name.replace("_", "").isalnum() or name != name.lower():
            raise RegistryError(f"{at}: a document name is a template's base name (lower case, digits, _)")
        if not isinstance(entry, dict):
            raise RegistryError(f"{at}: expected a mapping with {', '.join(sorted(KEYS))}")
        missing, unknown = KEYS - set(entry), set(entry) - KEYS
        if missing or unknown:
            raise RegistryError(f"{at}: " + "; ".join(
                ([f"missing key(s) {', '.join(sorted(missing))}"] if missing else [])
                + ([f"unknown key(s) {', '.join(sorted(map(str, unknown)))}"] if unknown else []))
                + f" (each entry has exactly {', '.join(sorted(KEYS))})")
        title = entry["title"]
        if not isinstance(title, str) or not title.strip():
            raise RegistryError(f"{at}: title must be non-empty text")
        estar = entry["estar"]
        if not isinstance(estar, list) or not all(
                isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= N_SECTIONS for n in estar):
            raise RegistryError(f"{at}: estar must be a list of eSTAR section numbers from 1 to "
                                f"{N_SECTIONS} (an empty list when it answers none), found {estar!r}")
        if len(set(estar)) != len(estar):
            raise RegistryError(f"{at}: estar lists a section twice: {estar!r}")
        if not isinstance(entry["in_submission"], bool):
            raise RegistryError(f"{at}: in_submission must be true or false, found {entry['in_submission']!r}")
        sections = entry["sections"]
        if not isinstance(sections, list) or not all(isinstance(s, str) and s.strip() for s in sections):
            raise RegistryError(f"{at}: sections must be a list of headings (text)")
        docs[name] = Document(name, title.strip(), tuple(estar), entry["in_submission"], tuple(sections))
    return docs


def parse_estar(raw, where: str = str(ESTAR)) -> list[dict]:
    """The eSTAR sections from their YAML data: 1 to 22 in order, each with a title."""
    sections = raw.get("sections") if isinstance(raw, dict) else None
    if not isinstance(sections, list):
        raise RegistryError(f"{where}: expected `sections:`, a list of {{number, title}} entries")
    numbers = [s.get("number") if isinstance(s, dict) else None for s in sections]
    if numbers != list(range(1, N_SECTIONS + 1)):
        raise RegistryError(f"{where}: sections must be numbered 1 to {N_SECTIONS} in order, found {numbers}")
    for s in sections:
        unknown = set(s) - {"number", "title", "not_applicable"}
        if unknown:
            raise RegistryError(f"{where}: section {s['number']}: unknown key(s) {', '.join(sorted(unknown))}")
        if not isinstance(s.get("title"), str) or not s["title"].strip():
            raise RegistryError(f"{where}: section {s['number']}: title must be non-empty text")
        reason = s.get("not_applicable")
        if "not_applicable" in s and (not isinstance(reason, str) or not reason.strip()):
            raise RegistryError(f"{where}: section {s['number']}: not_applicable must give the reason (text)")
    return sections


def registry(path: Path | None = None) -> dict[str, Document]:
    """The registry of `path` (default: submission/data/required_sections.yml)."""
    path = path or REGISTRY
    return parse_registry(_read(path), str(path))


def estar_sections(path: Path | None = None) -> list[dict]:
    """The eSTAR sections of `path` (default: submission/data/estar.yml)."""
    path = path or ESTAR
    return parse_estar(_read(path), str(path))


def submission_documents(docs: dict[str, Document]) -> list[Document]:
    """The documents `python -m submission` renders, in registry order (the locked plan excluded)."""
    return [d for d in docs.values() if d.in_submission and d.name != PLAN]


def coverage(docs: dict[str, Document], sections: list[dict]) -> tuple[list[Section], list[str]]:
    """(every eSTAR section with the submission documents that answer it, the problems): a section
    answered by no document and not marked not applicable, or marked not applicable while a
    document answers it."""
    answering: dict[int, list[str]] = {}
    for d in docs.values():
        if d.in_submission:
            for n in d.estar:
                answering.setdefault(n, []).append(d.name)
    out, problems = [], []
    for s in sections:
        by, na = tuple(answering.get(s["number"], ())), s.get("not_applicable")
        label = f"eSTAR section {s['number']} ({s['title']})"
        if by and na:
            problems.append(f"{label}: answered by {', '.join(by)} and also marked not applicable "
                            f"({na!r}); remove one (submission/data/estar.yml or the registry's estar lists)")
        elif not by and not na:
            problems.append(f"{label}: no submission document answers it and it is not marked not applicable; "
                            "add its number to a document's estar list (submission/data/required_sections.yml) "
                            "or give `not_applicable: <reason>` in submission/data/estar.yml")
        out.append(Section(s["number"], s["title"], na, by))
    return out, problems
