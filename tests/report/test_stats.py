"""The claims table's statistical procedures (cdlbench/report/stats.py) against scipy.stats (an
oracle only here: the package does not import scipy) and closed forms, and the coverage and size
simulations that justify the procedures the report uses at its n (3, 5 and 10 seeds)."""
import itertools
import math

import numpy as np
import pytest

from cdlbench.report import stats

scipy_stats = pytest.importorskip("scipy.stats")

REPORT_NS = (3, 5, 10)            # seeds per cell in the committed runs (3, 5) and the next step (10)
REPLICATES = 4000                 # Monte Carlo standard error of a 95% coverage: sqrt(.95 * .05 / 4000) = 0.0034
BAND = 0.012                      # 3.5 standard errors: a correct 95% interval fails this about once in 2000 runs


# ---------------------------------------------------------------- Student's t
@pytest.mark.parametrize("df", [1, 2, 3, 4, 9, 30, 120])
def test_t_distribution_matches_scipy(df):
    for t in (-40.0, -4.3, -1.0, 0.0, 0.3, 2.1, 12.7):
        assert stats.t_cdf(t, df) == pytest.approx(scipy_stats.t.cdf(t, df), abs=1e-12)
    for p in (0.6, 0.8, 0.975, 0.9995):
        assert stats.t_quantile(p, df) == pytest.approx(scipy_stats.t.ppf(p, df), rel=1e-9)
        assert stats.t_quantile(1 - p, df) == pytest.approx(scipy_stats.t.ppf(1 - p, df), rel=1e-9)


def test_incomplete_beta_matches_scipy():
    special = pytest.importorskip("scipy.special")
    for a, b, x in [(0.5, 0.5, 0.3), (2.0, 3.0, 0.9), (15.0, 0.5, 0.99), (1.0, 1.0, 0.25), (50.0, 40.0, 0.55)]:
        assert stats.regularized_incomplete_beta(a, b, x) == pytest.approx(special.betainc(a, b, x), abs=1e-12)


@pytest.mark.parametrize("alternative", ["two-sided", "less", "greater"])
def test_paired_t_test_matches_scipy(alternative):
    rng = np.random.default_rng(3)
    t, c = rng.normal(1.0, 1.0, 7), rng.normal(1.4, 1.0, 7)
    ours = stats.t_test(t - c, 0.0, alternative)
    ref = scipy_stats.ttest_rel(t, c, alternative=alternative)
    assert ours.statistic == pytest.approx(ref.statistic, rel=1e-12)
    assert ours.p == pytest.approx(ref.pvalue, rel=1e-9)
    shifted = stats.t_test(t - c, 0.25, alternative)            # H0 at a margin: the test of d - 0.25
    assert shifted.p == pytest.approx(scipy_stats.ttest_1samp(t - c, 0.25, alternative=alternative).pvalue, rel=1e-9)


def test_t_interval_matches_scipy_and_is_undefined_for_equal_values():
    d = np.array([0.3, -0.1, 0.8, 0.2, 0.5])
    lo, hi = stats.t_interval(d)
    ref = scipy_stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=scipy_stats.sem(d))
    assert (lo, hi) == pytest.approx(ref, rel=1e-10)
    assert stats.t_interval([1.0]) is None
    flat = stats.t_test([1.0, 1.0, 1.0])            # integer counts all equal: no t statistic, no p
    assert math.isnan(flat.p) and math.isnan(flat.statistic) and flat.interval == (1.0, 1.0)


# ---------------------------------------------------------------- the sign-flip permutation test
def brute_force_sign_flip(d, alternative):
    d = np.asarray(d, dtype=float)
    sums = np.array([np.dot(s, d) for s in itertools.product((-1.0, 1.0), repeat=len(d))])
    obs, tol = d.sum(), 1e-9 * np.abs(d).sum()
    if alternative == "less":
        return float(np.mean(sums <= obs + tol))
    if alternative == "greater":
        return float(np.mean(sums >= obs - tol))
    return float(np.mean(np.abs(sums) >= abs(obs) - tol))


@pytest.mark.parametrize("alternative", ["two-sided", "less", "greater"])
def test_sign_flip_is_exact_by_enumeration_and_matches_scipy(alternative):
    rng = np.random.default_rng(11)
    for n in (1, 3, 6, 9):
        d = rng.normal(0.4, 1.0, n)
        p = stats.sign_flip_test(d, alternative=alternative)
        assert p == pytest.approx(brute_force_sign_flip(d, alternative), abs=1e-15)
    d = rng.normal(0.4, 1.0, 8)                       # scipy: one sample, 'samples' = sign flips
    ref = scipy_stats.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=np.inf,
                                       alternative=alternative).pvalue
    assert stats.sign_flip_test(d, alternative=alternative) == pytest.approx(ref, abs=1e-12)


def test_sign_flip_closed_forms():
    # n = 3, all one side: 2 of the 8 patterns are as extreme: p = 0.25 (two-sided), 0.125 (one-sided)
    assert stats.sign_flip_test([1.0, 2.0, 3.0]) == 0.25
    assert stats.sign_flip_test([1.0, 2.0, 3.0], alternative="greater") == 0.125
    assert stats.sign_flip_test([1.0, 1.0, 1.0]) == 0.25          # zero-width t interval, still p = 0.25
    assert stats.sign_flip_test([2.0, 2.0, 2.0], null=2.0) == 1.0  # all at H0
    assert stats.min_attainable_p(3) == 0.25 and stats.min_attainable_p(5) == 0.0625
    assert stats.min_attainable_p(3, "less") == 0.125 and stats.min_attainable_p(0) == 1.0
    assert stats.sign_flip_seeds_needed(0.05) == 6 and stats.sign_flip_seeds_needed(0.05 / 54) == 12
    # ties across patterns from floating-point sums: 0.1 + 0.2 vs 0.3 must count as equal
    assert stats.sign_flip_test([0.1, 0.2, -0.3]) == 1.0


def test_sign_flip_monte_carlo_is_seeded_and_close_to_exact():
    d = np.random.default_rng(5).normal(0.5, 1.0, 18)
    exact = brute_force_sign_flip(d[:12], "two-sided")
    assert stats.sign_flip_test(d[:12]) == pytest.approx(exact)
    with pytest.raises(ValueError, match="seeded"):
        stats.sign_flip_test(d)
    a = stats.sign_flip_test(d, rng=np.random.default_rng(1), draws=20000)
    b = stats.sign_flip_test(d, rng=np.random.default_rng(1), draws=20000)
    assert a == b
    signs = stats.sign_patterns(18)                                   # 262,144 patterns: the exact value
    sums = signs @ d
    truth = float(np.mean(np.abs(sums) >= abs(d.sum()) - 1e-9 * np.abs(d).sum()))
    assert abs(a - truth) < 4 * math.sqrt(truth * (1 - truth) / 20000) + 1 / 20001


# ---------------------------------------------------------------- censored pairs
def test_gehan_pair_scores():
    # (T time, T observed, C time, C observed) -> score of T against C
    cases = [((20, True, 25, True), -1), ((30, True, 25, True), 1), ((25, True, 25, True), 0),
             ((32, False, 24, True), 1),     # T never reached by pass 32, C at 24: T later
             ((32, False, 32, True), 1),     # C at its last pass 32, T not by 32: T later
             ((20, False, 24, True), 0),     # T stopped at 20 without reaching, C at 24: order unknown
             ((24, True, 32, False), -1),    # C never reached by 32, T at 24: T earlier
             ((33, True, 32, False), 0),     # T at 33, C censored at 32: unknown
             ((32, False, 35, False), 0)]    # both censored: nothing known
    for (t, to, c, co), want in cases:
        assert stats.gehan_pair_scores([t], [to], [c], [co])[0] == want, (t, to, c, co)
    # a margin moves the treatment: T - 1 against C
    assert stats.gehan_pair_scores([26], [True], [25], [True], shift=1.0)[0] == 0
    assert stats.gehan_pair_scores([33], [False], [32], [True], shift=1.0)[0] == 1
    assert stats.gehan_pair_scores([32], [False], [32], [True], shift=1.0)[0] == 0


def test_censored_test_is_the_sign_test_on_ordered_pairs():
    t_time = [24, 22, 25, 26, 23, 30, 31, 28]
    t_obs = [True] * 5 + [False, True, True]
    c_time = [32, 32, 32, 24, 32, 35, 27, 29]
    c_obs = [False, False, False, True, False, False, True, True]
    res = stats.paired_censored_test(t_time, t_obs, c_time, c_obs)
    # pairs: -1 -1 -1 +1 -1, both censored, +1, -1  -> 2 later, 5 earlier, 1 without information
    assert (res.later, res.earlier, res.both_censored, res.unknown, res.ties) == (2, 5, 1, 0, 0)
    assert res.p == pytest.approx(scipy_stats.binomtest(2, 7, 0.5).pvalue, abs=1e-12)
    none = stats.paired_censored_test([30, 30], [False, False], [32, 31], [False, False])
    assert math.isnan(none.p) and none.both_censored == 2


# ---------------------------------------------------------------- multiplicity, equivalence, power
def test_holm_known_answer():
    # sorted 0.005 0.01 0.03 0.04 (m = 4): 0.02, 0.03, 0.06, max(0.04, 0.06) = 0.06; nan stays out
    adj = stats.holm([0.01, 0.04, 0.03, math.nan, 0.005])
    assert adj[[0, 1, 2, 4]] == pytest.approx([0.03, 0.06, 0.06, 0.02]) and math.isnan(adj[3])
    assert list(stats.holm([0.5, 0.9])) == [1.0, 1.0]
    assert stats.holm([]).size == 0


def test_holm_controls_the_family_wise_error_rate():
    """10 true nulls with uniform p-values: P(any adjusted p <= 0.05) <= 0.05 (+ 3 MC SE)."""
    p = np.random.default_rng(7).uniform(size=(4000, 10))
    rejected = np.array([np.any(stats.holm(row) <= 0.05) for row in p])
    assert rejected.mean() <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 4000)


def test_tost_is_the_larger_one_sided_p():
    d = np.array([0.1, -0.05, 0.02, 0.08, -0.03, 0.04, 0.0, 0.06])
    lo = stats.sign_flip_test(d, -0.2, "greater")
    hi = stats.sign_flip_test(d, 0.2, "less")
    assert stats.tost(d, -0.2, 0.2) == max(lo, hi) == pytest.approx(1 / 256)
    assert stats.tost(d, -0.01, 0.01) > 0.05                     # not shown equal within a tiny margin


def test_detectable_effect_has_the_stated_power():
    """The approximation (t_{1-a/2} + t_{power}) sd / sqrt(n) gives about 80% power (noncentral t)."""
    for n in (5, 10, 30):
        delta = stats.t_detectable_effect(1.0, n, 0.05, 0.8)
        crit = scipy_stats.t.ppf(0.975, n - 1)
        nc = delta * math.sqrt(n)
        power = scipy_stats.nct.sf(crit, n - 1, nc) + scipy_stats.nct.cdf(-crit, n - 1, nc)
        assert 0.77 <= power <= 0.83, (n, power)
    n = stats.t_seeds_needed(0.5, 1.0)
    assert stats.t_detectable_effect(1.0, n) <= 0.5 < stats.t_detectable_effect(1.0, n - 1)
    assert stats.t_seeds_needed(0.0, 1.0) is None and stats.t_seeds_needed(1.0, 0.0) == 2


# ---------------------------------------------------------------- coverage and size at the report's n
@pytest.mark.parametrize("n", REPORT_NS)
def test_t_interval_covers_95_percent_at_the_reports_n(n):
    """The interval the report prints (Student t) covers the mean in 95% +- BAND of 4000 normal
    samples of n paired differences (seeded)."""
    d = np.random.default_rng(100 + n).normal(0.7, 2.0, size=(REPLICATES, n))
    lo, hi = stats.t_interval(d)
    coverage = float(np.mean((lo <= 0.7) & (0.7 <= hi)))
    assert abs(coverage - 0.95) <= BAND, coverage


@pytest.mark.parametrize("n, at_most", [(3, 0.82), (5, 0.89), (10, 0.925)])
def test_percentile_bootstrap_undercovers_at_the_reports_n(n, at_most):
    """Why the report no longer prints the percentile bootstrap: about 75% / 85% / 90% at n = 3 /
    5 / 10 (1000 replicates of 1000 bootstrap resamples, seeded; MC standard error 0.007)."""
    rng = np.random.default_rng(200 + n)
    d = rng.normal(0.0, 1.0, size=(1000, n))
    idx = rng.integers(0, n, size=(1000, 1000, n), dtype=np.int32)
    means = np.take_along_axis(d[:, None, :], idx, axis=2).mean(axis=2)
    lo, hi = np.quantile(means, 0.025, axis=1), np.quantile(means, 0.975, axis=1)
    coverage = float(np.mean((lo <= 0) & (0 <= hi)))
    assert coverage <= at_most, coverage


@pytest.mark.parametrize("draw", ["normal", "t3", "uniform"])
def test_sign_flip_keeps_its_level_under_symmetric_nulls(draw):
    """Rejection rate at 0.05 under H0 (symmetric differences, n = 10, 4000 seeded replicates) at
    most 0.05 + 3 MC standard errors, heavy tails included."""
    rng = np.random.default_rng(300)
    shape = (REPLICATES, 10)
    d = {"normal": rng.normal(size=shape), "t3": rng.standard_t(3, size=shape),
         "uniform": rng.uniform(-1, 1, size=shape)}[draw]
    p = stats.sign_flip_test(d)
    assert float(np.mean(p <= 0.05)) <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / REPLICATES)
