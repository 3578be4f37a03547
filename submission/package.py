"""The submission package: the eSTAR index's rows, traced to the facts files they come from.

`estar_rows(renderer)` is the template global `estar_index()`: one row per eSTAR section in order
(submission/data/estar.yml), with the submission documents that answer it (the registry's `estar`
lists, submission/data/required_sections.yml) or the reason it does not apply. Every printed value
is a traced fact: a section's number and title, a document's title and file name.
"""
from __future__ import annotations

from dataclasses import dataclass

from . import registry
from .render import Renderer, Traced, TracedText


@dataclass(frozen=True)
class IndexDocument:
    name: str
    title: Traced
    file: TracedText


@dataclass(frozen=True)
class IndexRow:
    number: Traced
    title: Traced
    documents: list[IndexDocument]
    not_applicable: Traced | None


def _registry(renderer: Renderer) -> dict[str, registry.Document]:
    return registry.parse_registry(renderer.fact("required_sections").value)


def _document(renderer: Renderer, name: str) -> IndexDocument:
    entry = renderer.fact(f"required_sections.{name}")
    return IndexDocument(name, entry.child("title"), TracedText(f"{name}.pdf", entry))


def submission_documents(renderer: Renderer) -> list[IndexDocument]:
    """Every document of the submission folder, in registry order (the validation plan included)."""
    return [_document(renderer, d.name) for d in _registry(renderer).values() if d.in_submission]


def template_globals(renderer: Renderer) -> dict:
    """The package's template globals: `estar_index()` and `submission_documents()`."""
    return {"estar_index": lambda: estar_rows(renderer),
            "submission_documents": lambda: submission_documents(renderer)}


def estar_rows(renderer: Renderer) -> list[IndexRow]:
    """The eSTAR index. A section answered by no document and not marked not applicable has neither
    documents nor a reason: the index prints it as unanswered and `python -m submission.check` fails
    it (as it fails a section both answered and marked not applicable)."""
    docs = _registry(renderer)
    sections = registry.parse_estar(renderer.fact("estar").value)
    covered, _ = registry.coverage(docs, sections)
    rows = []
    for i, s in enumerate(covered):
        node = renderer.fact(f"estar.sections.{i}")
        documents = [_document(renderer, name) for name in s.answered_by]
        rows.append(IndexRow(node.child("number"), node.child("title"), documents,
                             node.child("not_applicable") if s.not_applicable else None))
    return rows
