"""Number formatting, checked against hand-computed strings."""
import math

import pytest

from submission import filters

NE = {"estimable": False, "reason": "no positives in the subgroup"}


def test_pct_and_num_and_count():
    assert filters.pct(0.8234) == "82.3%"
    assert filters.pct(1) == "100.0%"
    assert filters.num(0.84123) == "0.841"
    assert filters.num(23457) == "23,457"
    assert filters.count(1234.0) == "1,234"
    with pytest.raises(filters.FormatError):
        filters.count(2.5)


@pytest.mark.parametrize("fn", [filters.pct, filters.num, filters.count, filters.p_value])
@pytest.mark.parametrize("bad", [None, math.nan, math.inf, True, "0.5"])
def test_refuses_values_a_document_must_not_show(fn, bad):
    with pytest.raises(filters.FormatError):
        fn(bad)


@pytest.mark.parametrize("fn", [filters.pct, filters.num, filters.count, filters.p_value, filters.ci])
def test_not_estimable_renders_its_reason(fn):
    assert fn(NE) == "not estimable (no positives in the subgroup)"


def test_not_estimable_without_reason_is_refused():
    with pytest.raises(filters.FormatError):
        filters.pct({"estimable": False, "reason": ""})


def test_p_value():
    assert filters.p_value(0.0004) == "p < 0.001"
    assert filters.p_value(0.0341) == "p = 0.034"
    with pytest.raises(filters.FormatError):
        filters.p_value(1.2)


def test_ci_text():
    est = {"estimate": 0.8333, "ci_low": 0.6811, "ci_high": 0.9213, "ci_level": 0.95,
           "method": "wilson", "n": 36}
    assert filters.ci(est) == "83.3% (95% CI 68.1% to 92.1%; Wilson score; n = 36)"
    assert filters.ci(est, method=False) == "83.3% (95% CI 68.1% to 92.1%)"
    auc = dict(est, method="delong")
    assert filters.ci(auc, scale="num") == "0.833 (95% CI 0.681 to 0.921; DeLong; n = 36)"
    with pytest.raises(filters.FormatError):
        filters.ci({"estimate": 0.5})


def test_code_span_is_verbatim():
    from submission.filters import code

    assert code("max_f1") == "`max_f1`"
    assert code("a`b") == "``a`b``"
    assert code({"estimable": False, "reason": "no file"}).startswith("not estimable")


@pytest.mark.parametrize("name", [
    "a``b.dcm", "x`` [click](http://evil.example/) ``", "``![i](http://evil.example/x.png)``", "```", "a`\rb\n[l](u)",
    " `` ", "`lead", "trail`"])
def test_code_span_from_data_never_breaks(name):
    """Rendered through the documents' own Markdown parser: one code span holding the text, no link,
    no image, whatever backticks the data holds."""
    from markdown_it import MarkdownIt
    from submission.filters import code

    tokens = MarkdownIt("commonmark").parseInline(f"file {code(name)}: detail")[0].children
    kinds = [t.type for t in tokens]
    assert kinds == ["text", "code_inline", "text"], kinds
    expected = " ".join(name.replace("\r", "\n").split("\n")) if ("\n" in name or "\r" in name) else name
    assert tokens[1].content == expected.replace("\r", " ")


def test_words_prints_a_data_label_without_underscores_and_escaped():
    from submission.filters import words
    assert words("Pleural_Thickening") == "Pleural Thickening"
    assert words("a|b*c") == "a\\|b\\*c"
    assert words({"estimable": False, "reason": "no data"}) == "not estimable (no data)"
    with pytest.raises(filters.FormatError):
        words("  ")
