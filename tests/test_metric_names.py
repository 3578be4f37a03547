"""One list of metric names (`validation.stats`): the modules that may not import it (the
audit's recomputation, the templates) are tied to it here."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np

from evidence import recompute
from validation import acceptance, evaluate, stats

REPO = Path(__file__).resolve().parent.parent


def test_the_lists_nest():
    assert stats.COUNT_METRICS[:len(stats.PROPORTION_METRICS)] == stats.PROPORTION_METRICS
    assert stats.ALL_METRICS == stats.COUNT_METRICS + ("auc",)
    assert len(set(stats.ALL_METRICS)) == len(stats.ALL_METRICS)


def test_recompute_recomputes_every_metric():
    y, s = np.array([0, 1, 1, 0, 1]), np.array([0.1, 0.8, 0.4, 0.6, 0.9])
    assert set(recompute.expected_metrics(y, s, 0.5)["values"]) == set(stats.ALL_METRICS)


def test_validation_test_reports_every_metric():
    import pandas as pd

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"label": np.repeat([0, 1], 20), "score": rng.random(40), "patient_id": np.arange(40)})
    p = evaluate.check_params({"bootstrap_resamples": 100, "acceptance": [
        {"metric": "auc", "bound": "estimate", "op": ">=", "value": 0.5}]})
    metrics = evaluate.test_metrics(df, 0.5, p)["metrics"]
    assert tuple(metrics) == stats.ALL_METRICS
    assert [m for m, v in metrics.items() if "wilson" in v] == list(stats.PROPORTION_METRICS)


def test_submission_template_lists_the_proportions_in_order():
    text = (REPO / "templates" / "510k_submission.md.j2").read_text(encoding="utf-8")
    loops = re.findall(r"\{% for name in (\[[^\]]*\]) %\}\n\| \{\{ name \}\} \| \{\{ m\[name\]\.wilson", text)
    assert [tuple(ast.literal_eval(x)) for x in loops] == [stats.PROPORTION_METRICS]


def test_acceptance_rejects_an_unknown_metric():
    import pytest

    with pytest.raises(acceptance.CriteriaError, match=r"metric 'aucc' unknown; use one of sensitivity, .*auc"):
        acceptance.check_criteria([{"metric": "aucc", "bound": "estimate", "op": ">=", "value": 0.5}])
