"""Rank statistics against scipy, AUROC against its pairwise definition, the Best-of-N pick."""

import itertools
import math
import random
import warnings

import numpy as np
import pytest

from edgeprm.stats import auroc, best_index, kendall_tau_b, rankdata, spearman


def data(n, seed, ties):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = x + rng.normal(size=n)
    if ties:
        x, y = np.round(x * 2) / 2, np.round(y)
    return x, y


@pytest.mark.parametrize("n", [2, 3, 41, 401, 1271])
@pytest.mark.parametrize("ties", [False, True])
def test_rank_statistics_match_scipy(n, ties):
    stats = pytest.importorskip("scipy.stats", reason="scipy is the reference, not a dependency")
    x, y = data(n, n, ties)
    np.testing.assert_array_equal(rankdata(x), stats.rankdata(x))
    with warnings.catch_warnings():  # scipy warns on constant input (n = 2 with ties)
        warnings.simplefilter("ignore")
        want_s, want_k = stats.spearmanr(x, y).statistic, stats.kendalltau(x, y).statistic
    for got, want in ((spearman(x, y), want_s), (kendall_tau_b(x, y), want_k)):
        assert (math.isnan(got) and math.isnan(want)) or abs(got - want) < 1e-12, (got, want)


def test_rank_statistics_edge_cases():
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1) and kendall_tau_b([1, 2, 3], [3, 2, 1]) == -1
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3])) and math.isnan(kendall_tau_b([2, 2], [1, 2]))
    assert math.isnan(spearman([1], [1]))
    # tau-b by hand: x = (1, 1, 2), y = (1, 2, 2): one concordant pair, a pair tied in x, one tied in y.
    assert kendall_tau_b([1, 1, 2], [1, 2, 2]) == pytest.approx(1 / 2)
    with pytest.raises(ValueError, match=r"x and y must be 1-D of the same length; got \(2,\) and \(3,\)"):
        spearman([1, 2], [1, 2, 3])


def test_auroc_equals_pairwise_definition_with_ties():
    rng = np.random.default_rng()
    scores = rng.integers(0, 6, 60).astype(float)  # many ties
    labels = rng.integers(0, 2, 60)
    pos, neg = scores[labels == 1], scores[labels == 0]
    brute = np.mean([(p > q) + 0.5 * (p == q) for p, q in itertools.product(pos, neg)])
    assert auroc(scores, labels) == pytest.approx(brute, abs=1e-12)
    assert np.isnan(auroc([0.1, 0.2], [1, 1]))


def test_best_index_is_the_first_highest_with_nan_and_none_lowest():
    rng = random.Random()
    scores = [rng.choice([0.1, 0.5, 0.9]) for _ in range(rng.randint(1, 20))]
    want = max(range(len(scores)), key=lambda i: (scores[i], -i))
    assert best_index(scores) == want
    assert best_index([float("nan"), 0.2, None, 0.2]) == 1
    assert best_index([float("nan"), None]) == 0
    with pytest.raises(ValueError, match="best_index needs at least one score; got 0"):
        best_index([])
