"""Markdown -> a self-contained HTML page (title page, table of contents, running header).

Raw HTML in the Markdown is escaped (markdown-it with html disabled): text from data, such as
a DICOM StudyDescription, can never inject markup. Figures become numbered <figure>s.
"""
from __future__ import annotations

import html
import re

from markdown_it import MarkdownIt

from evidence.provenance import REPO_ROOT

BANNER = "DEMONSTRATION \u2014 synthetic data, not a regulatory submission"
CSS = REPO_ROOT / "templates" / "pdf.css"


def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "typographer": False}).enable("table")

    def image(self, tokens, idx, options, env):
        token = tokens[idx]
        src = html.escape(token.attrGet("src") or "", quote=True)
        caption = html.escape(token.content or "")
        return (f'<figure><img src="{src}" alt="{caption}"/>'
                f'<figcaption>{caption}</figcaption></figure>')

    md.add_render_rule("image", image)
    return md


def slug(text: str, used: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
    candidate, i = base, 1
    while candidate in used:
        i += 1
        candidate = f"{base}-{i}"
    used.add(candidate)
    return candidate


def to_html(markdown: str, *, device: str, version: str, manufacturer: str,
            synthetic: bool, edition: str = "", title: str | None = None) -> str:
    """The HTML page of one document. The first level-one heading is the title on the title page;
    `title` (default: that heading) is the page's <title>, the PDF's title metadata."""
    md = _parser()
    tokens = md.parse(markdown)
    heading, toc, used = "", [], set()
    drop = set()
    for i, tok in enumerate(tokens):
        if tok.type != "heading_open":
            continue
        text = tokens[i + 1].content
        if tok.tag == "h1" and not heading:
            heading = text
            drop.update({i, i + 1, i + 2})
            continue
        anchor = slug(text, used)
        tok.attrSet("id", anchor)
        if tok.tag in ("h2", "h3"):
            toc.append((tok.tag, anchor, text))
    body = md.renderer.render([t for i, t in enumerate(tokens) if i not in drop], md.options, {})
    # Section headings inside figures' paragraphs: unwrap <p><figure>..</figure></p>.
    body = re.sub(r"<p>(<figure>.*?</figure>)</p>", r"\1", body, flags=re.S)
    esc = html.escape
    meta_title = f"{title or heading} \u2014 {device}" if device else (title or heading)
    toc_html = "\n".join(
        f'<li class="toc-{tag}"><a href="#{anchor}">{esc(text)}</a></li>' for tag, anchor, text in toc)
    banner = f'<div class="banner">{esc(BANNER)}</div>\n' if synthetic else ""
    css = CSS.read_text(encoding="utf-8")
    edition_line = f'<p class="edition">{esc(edition)}</p>' if edition else ""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{esc(meta_title)}</title>
<style>
{css}
</style>
</head>
<body class="{'synthetic' if synthetic else 'real'}">
{banner}<div class="running">{esc(device)} {esc(version)}</div>
<section class="title-page">
<p class="device">{esc(device)}</p>
<h1 class="title">{esc(heading)}</h1>
<p class="version">Software version {esc(version)}</p>
<p class="manufacturer">{esc(manufacturer)}</p>
{edition_line}
</section>
<nav class="toc">
<h2 class="toc-title">Contents</h2>
<ol>
{toc_html}
</ol>
</nav>
<main>
{body}
</main>
</body>
</html>
"""
