"""Statistical procedures of the claims table (cdlbench/report/claims.py): one function per test.

Everything here works on the per-seed paired values of one comparison (treatment and control of
one seed share the data, x_T and the sampler's noise). The tests are chosen to keep their level at
the small n of the committed runs (3 to 5 seeds):

- `sign_flip_test`: the paired sign-flip permutation test of the mean difference (Fisher 1935,
  section 21; Pitman 1937). Exact by enumeration of all 2^n sign patterns up to n = 16, Monte Carlo
  with a seeded generator and the (1 + hits) / (1 + draws) p-value (Phipson and Smyth 2010) beyond.
  Its only assumption is that, under the null, each difference is as likely to have either sign
  (treatment and control exchangeable within a seed). Its smallest attainable p is 2 / 2^n
  (two-sided): 0.25 at n = 3, 0.0625 at n = 5, so it cannot decide at level 0.05 below n = 6.
- `t_test` / `t_interval`: Student's paired t test and interval (Student 1908); exact only for
  normal differences, printed beside the permutation test, not used for verdicts.
- `paired_censored_test`: right-censored paired times (passes to a threshold that may never be
  reached). Each pair gets the Gehan (1965) score of the treatment against its own control: +1
  when the treatment's time is known to be larger, -1 when known to be smaller, 0 when tied or
  when censoring hides the order (both censored, or one censored before the other's event). The
  scores are tested by the same sign-flip permutation (the randomisation distribution of Gehan
  scores within pairs, as in the paired rank tests for censored data of Woolson and Lachenbruch
  1980 and O'Brien and Fleming 1987); with scores +-1 it is the exact two-sided sign test on the
  pairs whose order is known.
- `holm`: Holm's (1979) step-down adjustment, controlling the family-wise error rate under any
  dependence between the tests.
- `tost`: two one-sided tests for equivalence within [low, high] (Schuirmann 1987).
- `t_detectable_effect` / `t_seeds_needed`: power of the paired t test from the normal-theory
  approximation delta = (t_{1-alpha/2, n-1} + t_{power, n-1}) sd / sqrt(n) (e.g. Julious 2004).

No scipy at run time: Student's t distribution comes from the regularised incomplete beta function
(`t_cdf`, DLMF 8.17.22 continued fraction, modified Lentz algorithm) and its quantile by bisection.
tests/report/test_stats.py checks every function against scipy.stats and closed forms.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ALTERNATIVES = ("two-sided", "less", "greater")
EXACT_MAX_N = 16                      # 2^16 = 65,536 sign patterns: enumerated at once
MONTE_CARLO_DRAWS = 100_000


# ---------------------------------------------------------------- Student's t distribution
def _incomplete_beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b) (DLMF 8.17.22), by the modified Lentz algorithm."""
    tiny, eps = 1e-300, 1e-15
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, 10_000):
        # even step d_{2m}, then odd step d_{2m+1} (DLMF 8.17.23)
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            f *= c * d
        if abs(c * d - 1.0) < eps:
            break
    return f


def regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b) (DLMF 8.17.2): the fraction where it converges fast, else the symmetry 8.17.4."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _incomplete_beta_fraction(a, b, x) / a
    return 1.0 - front * _incomplete_beta_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` degrees of freedom: 1 - I_x(df/2, 1/2) / 2 with
    x = df / (df + t^2) for t > 0 (DLMF 8.17 and Abramowitz and Stegun 26.7.1)."""
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t (bisection on `t_cdf` to 1e-12)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"t quantile: p must be in (0, 1), got {p}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    hi = 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    lo = 0.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def _one_or_two_sided(p_less: float, p_greater: float, alternative: str) -> float:
    if alternative == "less":
        return p_less
    if alternative == "greater":
        return p_greater
    return min(1.0, 2.0 * min(p_less, p_greater))


# ---------------------------------------------------------------- the paired t test
@dataclass(frozen=True)
class TTest:
    mean: float
    sd: float
    n: int
    statistic: float          # nan when sd = 0 (all differences equal: the t test is undefined)
    p: float
    interval: tuple | None    # the (1 - alpha) two-sided interval of the mean


def t_interval(diffs, level: float = 0.95):
    """Student's t interval of the mean of paired differences, mean -+ t_{(1+level)/2, n-1} sd / sqrt(n)
    (Student 1908); None below 2 values. `diffs` (batch, n) gives two arrays (lower, upper), one
    interval per row, from one quantile."""
    d = np.asarray(diffs, dtype=float)
    n = d.shape[-1]
    if n < 2:
        return None
    half = t_quantile(0.5 + level / 2.0, n - 1) * d.std(axis=-1, ddof=1) / math.sqrt(n)
    mean = d.mean(axis=-1)
    if d.ndim == 1:
        return float(mean - half), float(mean + half)
    return mean - half, mean + half


def t_test(diffs, null: float = 0.0, alternative: str = "two-sided", level: float = 0.95) -> TTest:
    """Paired t test of H0: mean difference = `null` (Student 1908); p is nan when all
    differences are equal (sd = 0: the statistic is undefined, not infinitely significant)."""
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}")
    d = np.asarray(diffs, dtype=float)
    n = int(d.size)
    if n < 2:
        return TTest(float(d.mean()) if n else math.nan, math.nan, n, math.nan, math.nan, None)
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    if sd == 0.0:
        return TTest(mean, 0.0, n, math.nan, math.nan, (mean, mean))
    stat = (mean - null) / (sd / math.sqrt(n))
    p = _one_or_two_sided(t_cdf(stat, n - 1), 1.0 - t_cdf(stat, n - 1), alternative)
    return TTest(mean, sd, n, stat, p, t_interval(d, level))


# ---------------------------------------------------------------- the sign-flip permutation test
def sign_patterns(n: int) -> np.ndarray:
    """All 2^n patterns of signs, (2^n, n) of +-1."""
    bits = (np.arange(2 ** n, dtype=np.int64)[:, None] >> np.arange(n)) & 1
    return (1 - 2 * bits).astype(float)


def sign_flip_test(diffs, null: float = 0.0, alternative: str = "two-sided", rng: np.random.Generator | None = None,
                   draws: int = MONTE_CARLO_DRAWS) -> np.ndarray | float:
    """p-value of the paired sign-flip permutation test of H0: the differences are symmetric about
    `null` (Fisher 1935; Pitman 1937), with the mean as statistic.

    `diffs` is (n,) or (batch, n) (each row its own sample, all tested at once). Exact for
    n <= 16 (every sign pattern); beyond, `draws` random patterns from `rng` (required then) and
    p = (1 + hits) / (1 + draws) (Phipson and Smyth 2010), never 0. Equal statistics count as hits
    within a relative tolerance of 1e-9, so floating-point rounding of sums never drops a tie."""
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}")
    d = np.asarray(diffs, dtype=float) - null
    single = d.ndim == 1
    d = np.atleast_2d(d)
    n = d.shape[1]
    if n == 0:
        return math.nan if single else np.full(d.shape[0], math.nan)
    tol = 1e-9 * np.abs(d).sum(axis=1, keepdims=True)
    observed = d.sum(axis=1, keepdims=True)
    if n <= EXACT_MAX_N:
        signs = sign_patterns(n)
        sums = d @ signs.T                                       # (batch, 2^n)
        count, total = None, sums.shape[1]
    else:
        if rng is None:
            raise ValueError(f"the sign-flip test of n = {n} > {EXACT_MAX_N} values draws random patterns: pass a "
                             f"seeded numpy Generator as rng")
        signs = 1.0 - 2.0 * rng.integers(0, 2, size=(draws, n))
        sums = d @ signs.T
        count, total = 1, draws + 1
    if alternative == "less":
        hits = (sums <= observed + tol).sum(axis=1)
    elif alternative == "greater":
        hits = (sums >= observed - tol).sum(axis=1)
    else:
        hits = (np.abs(sums) >= np.abs(observed) - tol).sum(axis=1)
    p = (hits + (count or 0)) / total
    return float(p[0]) if single else p


def min_attainable_p(n_nonzero: int, alternative: str = "two-sided") -> float:
    """The smallest p the sign-flip test can give with `n_nonzero` non-zero differences: 2 / 2^n
    two-sided, 1 / 2^n one-sided (all signs alike); zeros do not change under a flip."""
    if n_nonzero <= 0:
        return 1.0
    return min(1.0, (1.0 if alternative != "two-sided" else 2.0) / 2.0 ** n_nonzero)


def sign_flip_seeds_needed(alpha: float, alternative: str = "two-sided") -> int:
    """The smallest n at which the sign-flip test can reach p <= alpha (all n differences alike)."""
    n = 1
    while min_attainable_p(n, alternative) > alpha:
        n += 1
    return n


# ---------------------------------------------------------------- censored pairs
@dataclass(frozen=True)
class CensoredPairs:
    scores: tuple             # per pair: +1 treatment later, -1 earlier, 0 tie or order unknown
    later: int                # pairs whose treatment time is known to be larger
    earlier: int
    ties: int                 # both observed, equal
    unknown: int              # one censored before the other's event could be ordered
    both_censored: int
    p: float


def gehan_pair_scores(t_time, t_observed, c_time, c_observed, shift: float = 0.0) -> np.ndarray:
    """Gehan's (1965) score of each treatment time against its own control, on times that may be
    right-censored (observed False: the event happens after the recorded time).

    The treatment time is first moved by -`shift` (a non-inferiority margin: compare T - shift
    with C). +1: T - shift is known to exceed C; -1: known to be below; 0: equal, or the order is
    hidden by censoring. With T censored at t and C observed at c, T > t, so T - shift > C is known
    when c <= t - shift; likewise the other way round; both censored: never known."""
    t = np.asarray(t_time, dtype=float) - shift
    c = np.asarray(c_time, dtype=float)
    to = np.asarray(t_observed, dtype=bool)
    co = np.asarray(c_observed, dtype=bool)
    both = to & co
    scores = np.where(both, np.sign(t - c), 0.0)
    scores = np.where(~to & co & (c <= t), 1.0, scores)        # T censored at t, C's event at c <= t: T later
    scores = np.where(to & ~co & (t <= c), -1.0, scores)       # C censored at c, T's event at t <= c: T earlier
    return scores


def paired_censored_test(t_time, t_observed, c_time, c_observed, shift: float = 0.0,
                         alternative: str = "two-sided") -> CensoredPairs:
    """Paired test of right-censored times: Gehan scores within pairs (`gehan_pair_scores`) under
    the sign-flip randomisation (Woolson and Lachenbruch 1980; O'Brien and Fleming 1987). With
    +-1 scores this is the exact sign test on the pairs whose order is known; pairs censored in
    both arms, and pairs whose order censoring hides, score 0 and carry no information."""
    scores = gehan_pair_scores(t_time, t_observed, c_time, c_observed, shift)
    to = np.asarray(t_observed, dtype=bool)
    co = np.asarray(c_observed, dtype=bool)
    both_cens = int((~to & ~co).sum())
    ties = int(((scores == 0) & to & co).sum())
    unknown = int(((scores == 0) & (to ^ co)).sum())
    informative = scores[scores != 0]
    p = sign_flip_test(informative, 0.0, alternative) if informative.size else math.nan
    return CensoredPairs(tuple(float(s) for s in scores), int((scores > 0).sum()), int((scores < 0).sum()),
                         ties, unknown, both_cens, p)


# ---------------------------------------------------------------- equivalence and multiplicity
def tost(diffs, low: float, high: float) -> float:
    """Two one-sided tests of equivalence (Schuirmann 1987): H0 mean <= low or mean >= high, by the
    sign-flip test (exact for n <= 16): p = max(p(greater than low), p(less than high))."""
    return max(sign_flip_test(diffs, low, "greater"), sign_flip_test(diffs, high, "less"))


def holm(pvalues) -> np.ndarray:
    """Holm's (1979) step-down adjusted p-values: sorted ascending, p_(i) * (m - i + 1), made
    monotone and capped at 1. nan p-values (rows without a test) are not part of the family and
    stay nan. Rejecting where adjusted p <= alpha controls the family-wise error rate at alpha."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, math.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = ok.size
    if not m:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out[order] = adjusted
    return out


# ---------------------------------------------------------------- power
def t_detectable_effect(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest mean difference the two-sided paired t test at level alpha detects with the
    given power, by the approximation (t_{1-alpha/2, n-1} + t_{power, n-1}) sd / sqrt(n) (Julious
    2004); nan below n = 2 or without an sd."""
    if n < 2 or not math.isfinite(sd):
        return math.nan
    return (t_quantile(1 - alpha / 2, n - 1) + t_quantile(power, n - 1)) * sd / math.sqrt(n)


def t_seeds_needed(effect: float, sd: float, alpha: float = 0.05, power: float = 0.8,
                   limit: int = 10_000) -> int | None:
    """The smallest n (>= 2) at which `t_detectable_effect` reaches |effect|; None when effect is 0
    or more than `limit` seeds would be needed. sd = 0 needs n = 2 for any non-zero effect."""
    if effect == 0 or not math.isfinite(effect) or not math.isfinite(sd):
        return None
    if sd == 0:
        return 2
    if t_detectable_effect(sd, limit, alpha, power) > abs(effect):
        return None
    lo, hi = 1, limit          # the detectable effect falls with n: bisect for the first n that reaches |effect|
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if mid >= 2 and t_detectable_effect(sd, mid, alpha, power) <= abs(effect):
            hi = mid
        else:
            lo = mid
    return hi
