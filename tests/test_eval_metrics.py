"""Trade-off metrics with known answers: AUC, APGR, CPT on hand-made curves; bootstrap intervals on
known distributions; the Pareto frontier and the oracle curve."""

from __future__ import annotations

import math

import numpy as np
import pytest

from roro_sdk.errors import ConfigError
from roro_sdk.eval import anchored_curve, apgr, auc, bootstrap_ci, cpt, oracle_curve, pareto_frontier, trade_off

# weak 0.5, strong 1.0; hand-computed: AUC = 0.5*(0.5+0.9)/2 + 0.5*(0.9+1.0)/2 = 0.825
CURVE = [(0.0, 0.5), (0.5, 0.9), (1.0, 1.0)]


def test_auc_on_hand_made_curves():
    assert auc(CURVE) == pytest.approx(0.825)
    assert auc([(1.0, 1.0), (0.0, 0.0)]) == pytest.approx(0.5)  # the diagonal, order does not matter
    assert auc([(0.0, 0.7), (1.0, 0.7)]) == pytest.approx(0.7)
    xs, ys = np.linspace(0, 1, 11), np.sqrt(np.linspace(0, 1, 11))
    assert auc(list(zip(xs, ys))) == pytest.approx(float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2)))
    assert auc([(0.3, 0.9)]) == 0.0


def test_apgr_as_routellm_defines_it():
    assert apgr(CURVE, 0.5, 1.0) == pytest.approx((0.825 - 0.5) / (1.0 - 0.5))  # 0.65
    assert apgr([(0, 0.5), (1, 1.0)], 0.5, 1.0) == pytest.approx(0.5)  # the straight line: half the gap on average
    assert apgr([(0, 0.5), (1, 0.5)], 0.5, 1.0) == pytest.approx(0.0)
    assert apgr([(0, 1.0), (1, 1.0)], 0.5, 1.0) == pytest.approx(1.0)
    # RouteLLM code: (AUC - weak_auc) / (strong_auc - weak_auc) with areas over the curve's own x range
    pts = [(0.2, 0.6), (0.6, 0.8), (0.8, 0.95)]
    weak_auc, strong_auc = 0.5 * 0.6, 1.0 * 0.6
    assert apgr(pts, 0.5, 1.0) == pytest.approx((auc(pts) - weak_auc) / (strong_auc - weak_auc))
    assert apgr(CURVE, 0.7, 0.7) is None


def test_cpt_on_hand_made_curves():
    # targets 0.6 / 0.75 / 0.9 on the segment (0, 0.5)-(0.5, 0.9): x = (t - 0.5) / 0.4 * 0.5
    assert cpt(CURVE, 0.5, 1.0, 0.2) == pytest.approx(0.125)
    assert cpt(CURVE, 0.5, 1.0, 0.5) == pytest.approx(0.3125)
    assert cpt(CURVE, 0.5, 1.0, 0.8) == pytest.approx(0.5)
    for f in (0.2, 0.5, 0.8, 1.0):  # on a monotone curve it is RouteLLM's np.interp
        target = 0.5 + f * 0.5
        assert cpt(CURVE, 0.5, 1.0, f) == pytest.approx(np.interp(target, [y for _, y in CURVE], [x for x, _ in CURVE]))
    wiggly = [(0.0, 0.5), (0.2, 0.8), (0.4, 0.6), (1.0, 1.0)]  # non-monotone: the first crossing
    assert cpt(wiggly, 0.5, 1.0, 0.5) == pytest.approx(0.2 * (0.25 / 0.3))
    assert cpt([(0, 0.5), (1, 0.7)], 0.5, 1.0, 0.8) is None  # never reached
    assert cpt(CURVE, 0.9, 0.8, 0.5) is None  # no gap to recover


def test_trade_off_anchors_single_points_at_the_extremes():
    t = trade_off([(0.3, 0.9)], weak=0.5, strong=1.0)
    # (0,0.5)-(0.3,0.9)-(1,1.0): AUC = 0.3*1.4/2 + 0.7*1.9/2 = 0.875
    assert t.auc == pytest.approx(0.875)
    assert t.apgr == pytest.approx(0.75)
    assert t.cpt["50%"] == pytest.approx(0.3 * 0.25 / 0.4)
    assert t.cpt["80%"] == pytest.approx(0.3)
    assert trade_off(CURVE, 0.5, 1.0).auc == pytest.approx(0.825)  # a full curve is unchanged by the anchors
    assert anchored_curve([(-0.2, 0.4), (1.3, 1.0), (0.5, 0.8)], 0.5, 0.9) == [(0.0, 0.5), (0.5, 0.8), (1.0, 0.9)]
    unanchored = trade_off([(0.2, 0.6), (0.6, 0.8)], 0.5, 1.0, anchor=False)
    assert unanchored.auc == pytest.approx(0.4 * 0.7)


def test_bootstrap_interval_on_known_distributions():
    rng = np.random.default_rng(1)
    x = (rng.random(4000) < 0.7).astype(float)
    lo, hi = bootstrap_ci(x, n_boot=3000, seed=3)
    p = x.mean()
    half = 1.96 * math.sqrt(p * (1 - p) / x.size)  # the normal-theory interval of a proportion
    assert lo == pytest.approx(p - half, abs=0.2 * half) and hi == pytest.approx(p + half, abs=0.2 * half)
    assert bootstrap_ci(x, seed=3) == bootstrap_ci(x, seed=3)  # seeded
    # coverage: the 95% interval of a N(2, 1) sample mean holds 2 about 95% of the time
    covered = 0
    trials = 300
    for i in range(trials):
        lo, hi = bootstrap_ci(rng.normal(2.0, 1.0, 100), n_boot=400, seed=i)
        covered += lo <= 2.0 <= hi
    assert 0.90 <= covered / trials <= 0.985
    assert bootstrap_ci([1.0]) == (1.0, 1.0)
    assert all(math.isnan(v) for v in bootstrap_ci([]))
    with pytest.raises(ConfigError):
        bootstrap_ci([1.0, 2.0], level=1.5)


def test_pareto_frontier():
    pts = [(1.0, 0.5, "a"), (2.0, 0.7, "b"), (2.5, 0.6, "c"), (3.0, 0.7, "d"), (4.0, 0.9, "e"), (0.5, 0.4, "f"), (2.0, 0.65, "g")]
    assert [label for _, _, label in pareto_frontier(pts)] == ["f", "a", "b", "e"]


def test_oracle_curve_takes_cheapest_upgrades_first():
    options = [
        [(1.0, True), (3.0, True)],    # cheapest run already right
        [(1.0, False), (2.0, True)],   # +1.0 to fix
        [(1.0, False), (5.0, True)],   # +4.0 to fix
        [(1.0, False), (3.0, False)],  # never right
    ]
    assert oracle_curve(options) == [(1.0, 0.25), (1.25, 0.5), (2.25, 0.75)]
    assert oracle_curve([]) == []
