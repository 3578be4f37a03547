"""Calibration: equal-count bins (ties deterministic), ECE and its cluster-bootstrap interval, the
concentration of the scores around the threshold, and the score histogram."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from validation import calibration, figures
from validation.stats import StatsError

pytestmark = pytest.mark.verifies("SRS-026")


def test_quantile_bins_hold_equal_counts_with_distinct_scores():
    rng = np.random.default_rng(0)
    s = rng.permutation(np.linspace(0.01, 0.99, 200))
    y = rng.integers(0, 2, 200)
    bins = calibration.reliability_bins(y, s, 10, "quantile")
    assert [b["n"] for b in bins] == [20] * 10
    # each bin is [low, high): the bin of a score is the one whose limits hold it
    for b in bins:
        inside = (s >= b["low"]) & ((s < b["high"]) | (b["high"] == 1.0))
        assert int(inside.sum()) == b["n"] and b["mean_score"] == pytest.approx(s[inside].mean())
        assert b["observed_rate"] == pytest.approx(y[inside].mean())
    # equal counts as pandas.qcut makes them (its intervals are (low, high]; no score sits on an edge here)
    assert [b["n"] for b in bins] == pd.Series(pd.qcut(s, 10)).value_counts(sort=False).tolist()


def test_tied_scores_share_a_bin_whatever_the_row_order():
    s = np.r_[np.full(60, 0.3), np.linspace(0.4, 0.9, 40)]
    y = (np.arange(100) % 3 == 0).astype(int)
    bins = calibration.reliability_bins(y, s, 10, "quantile")
    order = np.random.default_rng(1).permutation(100)
    assert calibration.reliability_bins(y[order], s[order], 10, "quantile") == bins
    holding = [b for b in bins if b["low"] <= 0.3 < b["high"]]
    assert len(holding) == 1 and holding[0]["n"] == 60  # the 60 tied scores are never split
    assert sum(b["n"] for b in bins) == 100 and len(bins) < 10  # coinciding edges merged bins
    d = calibration.calibration(y, s, n_bins=10, n_resamples=20)
    assert d["ece_bins"]["count"] == len(bins) and d["ece_bins"]["requested"] == 10


def test_scores_in_one_equal_width_bin_are_spread_by_quantile_bins_and_flagged():
    """The issue's run: all test scores between 0.4 and 0.5, the threshold inside that bin."""
    rng = np.random.default_rng(2)
    s = rng.uniform(0.42, 0.48, 115)
    y = (rng.random(115) < 0.2).astype(int)
    uniform = calibration.reliability_bins(y, s, 10, "uniform")
    assert [b["n"] for b in uniform if b["n"]] == [115] and len(uniform) == 10
    assert len(calibration.reliability_bins(y, s, 10, "quantile")) == 10
    c = calibration.concentration(s, 0.45)
    assert c["all_in_threshold_tenth"] is True and c["equal_width_tenths_occupied"] == 1
    assert c["n_within_window"] == 115 and c["share_within_window"] == 1.0 and c["concentrated"] is True
    spread = calibration.concentration(np.linspace(0, 1, 101), 0.503)
    assert spread["n_within_window"] == 10 and spread["concentrated"] is False
    assert spread["equal_width_tenths_occupied"] == 10 and spread["all_in_threshold_tenth"] is False


def test_ece_bootstrap_is_a_patient_cluster_bootstrap():
    rng = np.random.default_rng(3)
    s = rng.random(150)
    y = (rng.random(150) < s).astype(int)
    edges = calibration.bin_edges(s, 10)
    one = calibration.ece_bootstrap(y, s, edges, np.arange(150), n_resamples=500, seed=4)
    assert one["estimate"] == pytest.approx(calibration.expected_calibration_error(
        calibration.reliability_bins(y, s, 10, "quantile")))
    # three identical images per patient: the same patients are drawn, so the same interval
    y3, s3 = np.repeat(y, 3), np.repeat(s, 3)
    same = calibration.ece_bootstrap(y3, s3, edges, np.repeat(np.arange(150), 3), n_resamples=500, seed=4)
    assert (same["ci_low"], same["ci_high"]) == pytest.approx((one["ci_low"], one["ci_high"]))
    assert same["unit"] == "patient" and same["n_clusters"] == 150
    rows = calibration.ece_bootstrap(y3, s3, edges, None, n_resamples=500, seed=4)
    assert rows["unit"] == "image" and rows["ci_high"] - rows["ci_low"] < same["ci_high"] - same["ci_low"]


def test_ece_bootstrap_close_to_scipy_bootstrap_when_unclustered():
    rng = np.random.default_rng(6)
    s = rng.random(300)
    y = (rng.random(300) < 0.8 * s).astype(int)
    edges = calibration.bin_edges(s, 10)
    got = calibration.ece_bootstrap(y, s, edges, np.arange(300), n_resamples=4000, seed=1)

    def ece(yy, ss, axis=-1):
        idx = calibration.bin_index(ss, edges)
        resid = np.stack([np.sum((yy - ss) * (idx == b), axis=axis) for b in range(len(edges) - 1)])
        return np.abs(resid).sum(axis=0) / yy.shape[axis]

    ref = sps.bootstrap((y.astype(float), s), ece, paired=True, vectorized=True, n_resamples=4000,
                        method="percentile", random_state=np.random.default_rng(2)).confidence_interval
    assert got["ci_low"] == pytest.approx(ref.low, abs=0.01) and got["ci_high"] == pytest.approx(ref.high, abs=0.01)


def test_bad_binning_is_a_clear_error():
    with pytest.raises(StatsError, match="calibration binning 'equal' unknown; use quantile or uniform"):
        calibration.calibration([0, 1], [0.2, 0.8], binning="equal")


def test_score_histogram_written(tmp_path):
    rng = np.random.default_rng(0)
    path = figures.score_histogram(rng.integers(0, 2, 50), rng.uniform(0.4, 0.5, 50), 0.45,
                                   tmp_path / "scores_test.png", window=0.05)
    assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
