"""The paper's claims against the records: paired tests per seed, censoring, margins, Holm
(docs/method.md section 6; the procedures are in cdlbench/report/stats.py, the rules in docs/claims.md).

A claim (baselines/claims.yaml) names a metric, the direction CDL should move it, the cells it
compares (dataset, sampler, parameters) and the treatment and control losses. In each run that
holds those cells, the treatment and the control of one seed share the data, x_T and the
sampler's noise, so the evidence is the per-seed pair (treatment value, control value).

- **Pairing.** Two records pair when they agree on dataset, model, training label, snapshot step,
  sampler label, seed, and every p_* parameter that tells apart records of one metric in one
  cell (e.g. two MMD bandwidths): such parameters never pool.
- **Censoring.** A claim with `censored_at` is a time to event (passes to the MMD threshold). A
  value recorded as censored (never reached the threshold) is right-censored at the cell's
  `censored_at` record (its total passes). With `observed_only_if` (e.g. `converged`), a value
  whose cell has that record at 0 is censored at its own value (a Picard run stopped by max_iters
  did not converge: its pass count is a lower bound); where the cell has no such record, the run
  counts as not converged when p_sampler_max_iters is set and its `censored_at` value reached it.
  A row with any censored value is tested by Gehan scores within pairs
  (`stats.paired_censored_test`); no mean difference is ever computed from stand-in values.
- **Tests.** Uncensored rows: the exact sign-flip permutation test of the mean difference
  (`stats.sign_flip_test`); the Student t interval and t-test p are printed beside it (exact for
  normal differences), not used for the verdict.
- **Margins.** "No worse" (`lower_or_equal` / `higher_or_equal`) is a non-inferiority claim with
  the claim's `margin` (metric units): the two-sided test of H0 "difference = margin on the worse
  side" (= the one-sided non-inferiority test at alpha / 2); `equal` is tested by TOST.
- **Same evidence.** Rows of one claim whose arms have the same training configuration, the same
  metric parameters and the same seeds, and either the same sampler configuration or bit-identical
  per-seed values of both arms, are one row listing their runs.
- **Multiplicity.** Holm's step-down adjustment over every tested row of the table (family-wise
  error rate ALPHA). Verdicts: *supported* / *contradicted* where the Holm-adjusted p <= ALPHA
  (by the side of the effect), else *inconclusive*, with the reason (n too small to reach ALPHA,
  or the adjusted p).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import UserError
from . import stats
from .baselines import read_listing

ALPHA = 0.05                         # family-wise error rate of the claims table (Holm)
POWER = 0.8                          # the power at which detectable effects are stated
DIRECTIONS = ("lower", "higher", "lower_or_equal", "higher_or_equal", "equal")
MARGIN_DIRECTIONS = ("lower_or_equal", "higher_or_equal", "equal")
CLAIM_KEYS = ("id", "statement", "source", "metric", "direction", "cells", "treatment", "control", "censored_at",
              "observed_only_if", "margin", "note")
GROUP_KEYS = ["dataset", "model", "train", "sampler"]
TRAIN_PREFIXES = ("p_dataset_", "p_model_", "p_train_", "p_loss_")
PERMUTATION_SEED = 0                 # the Monte Carlo sign-flip test's generator (only beyond 16 seeds)
MISSING_KEY = "-"                    # merge-key stand-in for an absent parameter (NaN never matches in a merge)


class ClaimsError(UserError, ValueError):
    """A claims file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class Margin:
    value: float                     # in the metric's unit, > 0
    source: str                      # where the margin comes from, or why it is the right size


@dataclass(frozen=True)
class Claim:
    id: str
    statement: str
    source: str
    metric: str
    direction: str
    cells: dict
    treatment: dict
    control: dict
    censored_at: str | None = None        # record holding the censoring time (e.g. iterations)
    observed_only_if: str | None = None   # record that must be 1 for a value to be an observed event
    margin: Margin | None = None
    note: str = ""


@dataclass
class Pair:
    seed: int
    treatment: float                 # value, or the censoring time when not observed
    control: float
    treatment_observed: bool = True
    control_observed: bool = True


@dataclass
class ClaimResult:
    claim: Claim
    suite: str                       # the runs holding this evidence, comma-separated
    where: str                       # dataset · sampler (· model · train · metric parameters)
    treatment: str                   # loss labels
    control: str
    pairs: list = field(default_factory=list)
    dropped: int = 0                 # pairs without a value (a null in a claim without censored_at)
    test: str = ""                   # the test behind p
    null: float = 0.0                # the difference H0 puts (0, or the margin on the worse side)
    p: float = math.nan
    p_holm: float = math.nan
    min_p: float = math.nan          # the smallest p this row's test can give at its n
    effect_sign: int = 0             # -1: treatment below the null, +1 above, 0: none
    mean: float = math.nan           # mean paired difference (uncensored rows only)
    sd: float = math.nan
    t_interval: tuple | None = None
    t_p: float = math.nan            # the t test of the same null (normal differences)
    censored: stats.CensoredPairs | None = None
    verdict: str = "inconclusive"
    reason: str = ""
    power: str = ""
    runs: list = field(default_factory=list)    # (suite, where) of every merged row
    merge_note: str = ""
    note: str = ""                   # how censoring was decided where the claim's record is missing
    evidence: tuple = ()             # the identity used for merging (see `same_evidence`)
    sampler_config: tuple = ()

    @property
    def n(self) -> int:
        return len(self.pairs)

    @property
    def seeds(self) -> list:
        return [p.seed for p in self.pairs]

    @property
    def diffs(self) -> list:
        """Paired differences where both values are observed events (all of them in uncensored rows)."""
        return [p.treatment - p.control for p in self.pairs if p.treatment_observed and p.control_observed]

    @property
    def reached(self) -> tuple[int, int]:
        return (sum(p.treatment_observed for p in self.pairs), sum(p.control_observed for p in self.pairs))


# ---------------------------------------------------------------- the claims file
def _margin(value, where: str) -> Margin:
    if not isinstance(value, dict) or set(value) != {"value", "source"}:
        raise ClaimsError(f"{where}.margin: must be a mapping {{value: a positive number in the metric's unit, "
                          f"source: where the margin comes from}}")
    v, src = value["value"], value["source"]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise ClaimsError(f"{where}.margin.value: must be a positive finite number (the metric's unit), got {v!r}")
    if not isinstance(src, str) or not src.strip():
        raise ClaimsError(f"{where}.margin.source: required (a non-empty string: the margin's source or rationale)")
    return Margin(float(v), src)


def load_claims(path: str | Path) -> list[Claim]:
    path = Path(path)
    data = read_listing(path, "claims", "claims", ClaimsError)
    out = []
    for i, c in enumerate(data["claims"]):
        where = f"{path}: claims[{i}]"
        if not isinstance(c, dict):
            raise ClaimsError(f"{where}: must be a mapping with keys {', '.join(CLAIM_KEYS)}")
        unknown = sorted(set(c) - set(CLAIM_KEYS))
        if unknown:
            raise ClaimsError(f"{where}.{unknown[0]}: unknown key; valid keys: {', '.join(CLAIM_KEYS)}")
        for key in ("id", "statement", "metric"):
            if not isinstance(c.get(key), str) or not c[key]:
                raise ClaimsError(f"{where}.{key}: required (a non-empty string)")
        if c.get("direction") not in DIRECTIONS:
            raise ClaimsError(f"{where}.direction: must be one of {', '.join(DIRECTIONS)}, got {c.get('direction')!r}")
        for key in ("treatment", "control"):
            side = c.get(key)
            loss = side.get("loss") if isinstance(side, dict) else None
            if not (isinstance(loss, str) or (isinstance(loss, list) and loss and all(isinstance(x, str) for x in loss))):
                raise ClaimsError(f"{where}.{key}: must be a mapping with 'loss' (a loss name, e.g. cdl, or a list of names)")
        if not isinstance(c.get("cells", {}), dict):
            raise ClaimsError(f"{where}.cells: must be a mapping (dataset, model, sampler names; p_* parameters)")
        for key in ("censored_at", "observed_only_if"):
            if c.get(key) is not None and (not isinstance(c[key], str) or not c[key]):
                raise ClaimsError(f"{where}.{key}: must be a record name (e.g. iterations, converged)")
        if c.get("observed_only_if") and not c.get("censored_at"):
            raise ClaimsError(f"{where}.observed_only_if: needs censored_at (the record a censored value is "
                              f"censored at)")
        if c["direction"] in MARGIN_DIRECTIONS and "margin" not in c:
            raise ClaimsError(f"{where}.margin: required for direction {c['direction']} (a 'no worse' or 'equal' claim "
                              f"is judged against a margin in the metric's unit, with its source)")
        margin = _margin(c["margin"], where) if "margin" in c else None
        out.append(Claim(c["id"], c["statement"], str(c.get("source", "")), c["metric"], c["direction"],
                         dict(c.get("cells") or {}), dict(c["treatment"]), dict(c["control"]),
                         c.get("censored_at"), c.get("observed_only_if"), margin, str(c.get("note", ""))))
    ids = [c.id for c in out]
    if len(set(ids)) != len(ids):
        raise ClaimsError(f"{path}: claim ids must be unique")
    return out


# ---------------------------------------------------------------- matching
def component_name(label) -> str:
    return str(label).split("[", 1)[0]


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _matches(value, want) -> bool:
    wants = want if isinstance(want, list) else [want]
    for w in wants:
        if isinstance(w, (int, float)) and not isinstance(w, bool):
            try:
                if math.isclose(float(value), float(w), rel_tol=1e-9, abs_tol=1e-12):
                    return True
            except (TypeError, ValueError):
                continue
        elif value == w:
            return True
    return False


def _select(df: pd.DataFrame, spec: dict) -> pd.Series:
    """Rows whose labels (component names) and p_* columns match `spec` (a list: any of)."""
    keep = pd.Series(True, index=df.index)
    for key, want in spec.items():
        if key in ("dataset", "model", "loss", "sampler"):
            have = df[key].map(component_name) if key in df.columns else pd.Series("", index=df.index)
        elif key in df.columns:
            have = df[key]
        else:
            return pd.Series(False, index=df.index)
        keep &= have.map(lambda v, w=want: _matches(v, w))
    return keep


def distinguishing_parameters(rows: pd.DataFrame) -> list[str]:
    """p_* columns that tell apart records of one metric in one cell (e.g. p_metric_bandwidth when
    MMD is measured at two bandwidths), and every p_metric_* column the rows carry."""
    pcols = [c for c in rows.columns if c.startswith("p_") and c != "p_train_step" and rows[c].notna().any()]
    keep = [c for c in pcols if c.startswith("p_metric_")]
    if len(rows) and pcols:
        per_cell = rows[pcols].astype(str).groupby([rows["suite"], rows["cell"], rows["metric"]]).nunique()
        keep += [c for c in pcols if c not in keep and (per_cell[c] > 1).any()]
    return keep


def _key_text(v) -> str:
    """A parameter as merge-key text: absent -> '-', integral floats as integers (1000.0 == 1000)."""
    if _missing(v):
        return MISSING_KEY
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


# ---------------------------------------------------------------- censoring
def _cell_record(df: pd.DataFrame, name: str) -> pd.Series:
    rows = df[df["metric"] == name].drop_duplicates(["suite", "cell"])
    return pd.to_numeric(rows.set_index(["suite", "cell"])["value"], errors="coerce")


def arm_values(df: pd.DataFrame, rows: pd.DataFrame, claim: Claim) -> pd.DataFrame:
    """Per record: `_time` (the value, or its censoring time), `_observed` (an observed event, or a
    plain value), and `_usable` (False: no value and nothing to censor it at)."""
    vals = pd.to_numeric(rows["value"], errors="coerce")
    flagged = rows["censored"].map(lambda v: v is True or v == 1) if "censored" in rows.columns else False
    censored = vals.isna() | flagged
    if not claim.censored_at:
        return rows.assign(_time=vals, _observed=True, _usable=~censored)
    keys = list(zip(rows["suite"], rows["cell"]))
    at = _cell_record(df, claim.censored_at)
    total = pd.Series([at.get(k, math.nan) for k in keys], index=rows.index, dtype=float)
    time = vals.where(~censored, total)
    if claim.observed_only_if:
        flag = _cell_record(df, claim.observed_only_if)
        status = pd.Series([flag.get(k, math.nan) for k in keys], index=rows.index, dtype=float)
        if "p_sampler_max_iters" in rows.columns:    # no such record: stopped at max_iters = not converged
            cap = pd.to_numeric(rows["p_sampler_max_iters"], errors="coerce")
            derived = (~(total >= cap)).astype(float).where(cap.notna(), 1.0)
            status = status.fillna(derived)
        censored = censored | (status.fillna(1.0) == 0)     # not converged: censored at its value (or total)
    return rows.assign(_time=time, _observed=~censored, _usable=time.notna())


# ---------------------------------------------------------------- pairing and one row's test
def evaluate(claim: Claim, records: pd.DataFrame) -> list[ClaimResult]:
    """One result per (run, compared cells, treatment label, control label) holding the claim's
    cells, each with its test and unadjusted p (no merging, no Holm: see `evaluate_all`)."""
    from .tables import with_train_labels       # late: tables imports the report's other modules

    df = records
    rows = df[(df["metric"] == claim.metric) & _select(df, claim.cells)]
    if not rows.empty and claim.censored_at and not (df["metric"] == claim.censored_at).any():
        raise ClaimsError(f"claim {claim.id}.censored_at: no record named {claim.censored_at!r} in the runs given "
                          f"(the record of the same cells that holds the censoring time, e.g. iterations)")
    status_note = ""
    if claim.observed_only_if and not (df["metric"] == claim.observed_only_if).any():
        status_note = (f"no {claim.observed_only_if!r} record: a run counts as not converged when it reached "
                       f"p_sampler_max_iters")
    out = []
    for suite, g in rows.groupby("suite", sort=False):
        g = with_train_labels(g.drop(columns="train", errors="ignore"))   # what differs within this run
        treat = g[_select(g, claim.treatment)]
        ctrl = g[_select(g, claim.control)]
        if treat.empty or ctrl.empty:
            continue
        params = distinguishing_parameters(g)
        keys = GROUP_KEYS + (["p_train_step"] if "p_train_step" in g.columns else []) + params
        for t_label, t_rows in treat.groupby("loss", sort=False):
            for c_label, c_rows in ctrl.groupby("loss", sort=False):
                out += _paired(claim, df, suite, t_label, c_label, t_rows, c_rows, keys, params)
    for r in out:
        r.note = status_note
    return out


def _config(rows: pd.DataFrame, columns) -> tuple:
    """The (column, value) pairs the rows share (values as text; absent ones left out)."""
    out = []
    for c in sorted(columns):
        vals = {_key_text(v) for v in rows[c]} if c in rows.columns else {MISSING_KEY}
        if vals != {MISSING_KEY}:
            out.append((c, "|".join(sorted(vals))))
    return tuple(out)


def _paired(claim, df, suite, t_label, c_label, t_rows, c_rows, keys, params) -> list[ClaimResult]:
    t, c = arm_values(df, t_rows, claim), arm_values(df, c_rows, claim)
    key_cols = [k for k in keys if k in t.columns and k in c.columns]
    t, c = (x.assign(_row=x.index, **{f"_k{i}": x[k].map(_key_text) for i, k in enumerate(key_cols)}) for x in (t, c))
    merge_on = [f"_k{i}" for i in range(len(key_cols))] + ["seed"]
    for side, x in (("treatment", t), ("control", c)):
        dup = x.duplicated(merge_on)
        if dup.any():
            raise ValueError(f"claim {claim.id}, run {suite}: two {side} records of {claim.metric} share every "
                             f"pairing key ({', '.join(key_cols)}, seed), e.g. cell {x.loc[dup, 'cell'].iloc[0]}")
    merged = t.merge(c, on=merge_on, suffixes=("_t", "_c"))
    out = []
    for _, m in merged.groupby(merge_on[:-1], sort=False):
        usable = m["_usable_t"] & m["_usable_c"]
        m_ok = m[usable].sort_values("seed")
        if m_ok.empty:
            continue
        first = m_ok.iloc[0]
        labels = {k: first[f"{k}_t"] if f"{k}_t" in m_ok.columns else first.get(k) for k in key_cols}
        where = " · ".join(str(labels[k]) for k in key_cols if k in ("dataset", "sampler", "model") or
                           (k == "train" and labels[k]))
        step = labels.get("p_train_step")
        if not _missing(step) and f"step={int(float(step))}" not in where:
            where += f" · step {int(float(step))}"
        shown = [f"{k.removeprefix('p_metric_')}={labels[k]}" for k in params
                 if k.startswith("p_metric_") and not _missing(labels.get(k))
                 and t_rows[k].map(_key_text).nunique() + c_rows[k].map(_key_text).nunique() > 2]
        if shown:
            where += f" · {claim.metric}[{','.join(shown)}]"
        pairs = [Pair(int(s), float(tv), float(cv), bool(to), bool(co)) for s, tv, cv, to, co in
                 zip(m_ok["seed"], m_ok["_time_t"], m_ok["_time_c"], m_ok["_observed_t"], m_ok["_observed_c"])]
        res = ClaimResult(claim, str(suite), where, str(t_label), str(c_label), pairs, int((~usable).sum()))
        arms = (t_rows.loc[m_ok["_row_t"]], c_rows.loc[m_ok["_row_c"]])    # this row's records, per arm
        res.evidence = _evidence(claim, m_ok, arms)
        res.sampler_config = tuple((tuple(sorted(set(a["sampler"].map(component_name)))),
                                    _config(a, [x for x in a.columns if x.startswith("p_sampler_")])) for a in arms)
        analyse(res)
        out.append(res)
    return out


def _evidence(claim, m, arms) -> tuple:
    """What a row's numbers rest on: per arm the training configuration (dataset, model, loss and
    the p_dataset/p_model/p_train/p_loss parameters) and the metric parameters; the seeds."""
    seeds = tuple(int(s) for s in m["seed"])
    out = []
    for mine in arms:
        train = _config(mine, [x for x in mine.columns if x.startswith(TRAIN_PREFIXES)])
        names = tuple(sorted({component_name(v) for col in ("dataset", "model", "loss") for v in mine[col]}))
        metric = _config(mine, [x for x in mine.columns if x.startswith("p_metric_")])
        out.append((names, train, metric))
    return (claim.id, tuple(out), seeds)


def _worse_side_null(claim: Claim) -> float:
    """The difference H0 sits at: 0 for lower/higher; the margin on the worse side for 'no worse'."""
    if claim.direction == "lower_or_equal":
        return claim.margin.value
    if claim.direction == "higher_or_equal":
        return -claim.margin.value
    return 0.0


def analyse(res: ClaimResult) -> None:
    """One row's test (before Holm): censored rows by Gehan pair scores, others by the exact
    sign-flip test of the mean difference, with the t interval and t p beside it."""
    claim, pairs = res.claim, res.pairs
    res.null = _worse_side_null(claim)
    any_censored = any(not (p.treatment_observed and p.control_observed) for p in pairs)
    if any_censored:
        res.censored = cp = stats.paired_censored_test([p.treatment for p in pairs],
                                                       [p.treatment_observed for p in pairs],
                                                       [p.control for p in pairs], [p.control_observed for p in pairs],
                                                       shift=res.null)
        k = cp.later + cp.earlier
        if claim.direction == "equal":
            res.test, res.reason = "none", "equivalence with censored values is not tested"
            return
        res.test = "sign test on Gehan pair scores (censored pairs)"
        res.p, res.min_p = cp.p, stats.min_attainable_p(k)
        res.effect_sign = int(np.sign(cp.later - cp.earlier))
        return
    d = np.array(res.diffs, dtype=float)
    res.mean = float(d.mean())
    res.sd = float(d.std(ddof=1)) if d.size > 1 else math.nan
    if claim.direction == "equal":
        m = claim.margin.value
        res.test = f"TOST, sign-flip (margin ±{_num(m)})"
        res.p = stats.tost(d, -m, m)
        res.min_p = stats.min_attainable_p(int(d.size), "less")
        lo, hi = stats.t_test(d, -m, "greater"), stats.t_test(d, m, "less")
        res.t_p = max(lo.p, hi.p)
        res.t_interval = stats.t_interval(d) if d.size > 1 else None
        res.effect_sign = -1                      # a rejection means "inside the margins": supported
        return
    res.test = "sign-flip permutation (exact)" if d.size <= stats.EXACT_MAX_N else "sign-flip permutation (Monte Carlo)"
    if res.null:
        res.test += f", H0: difference = {_num(res.null)} (margin)"
    rng = np.random.default_rng(PERMUTATION_SEED)   # per row, so a row's p never depends on the others
    res.p = stats.sign_flip_test(d, res.null, "two-sided", rng=rng)
    res.min_p = stats.min_attainable_p(int(np.count_nonzero(d - res.null)))
    tt = stats.t_test(d, res.null)
    res.t_p, res.t_interval = tt.p, tt.interval
    res.effect_sign = int(np.sign(res.mean - res.null))


# ---------------------------------------------------------------- the family: merging, Holm, verdicts
def same_evidence(a: ClaimResult, b: ClaimResult) -> bool:
    """Same claim, same training configuration and metric parameters of both arms, same seeds, and
    either the same sampler configuration (so the same x_T and noise) or bit-identical per-seed
    values of both arms (a sampler parameter that changed nothing, e.g. S_noise at S_churn = 0)."""
    if a.evidence != b.evidence:            # labels may differ between runs; the configuration decides
        return False
    values = lambda r: [(p.seed, p.treatment, p.control, p.treatment_observed, p.control_observed)  # noqa: E731
                        for p in r.pairs]
    return a.sampler_config == b.sampler_config or values(a) == values(b)


def merge_same_evidence(results: list[ClaimResult]) -> list[ClaimResult]:
    """Rows resting on the same evidence (`same_evidence`) become one row that lists their runs."""
    out: list[ClaimResult] = []
    for r in results:
        r.runs = r.runs or [(r.suite, r.where)]
        for kept in out:
            if same_evidence(kept, r):
                kept.runs.append((r.suite, r.where))
                if [(p.treatment, p.control) for p in kept.pairs] != [(p.treatment, p.control) for p in r.pairs]:
                    kept.merge_note = "same configuration in every run, values differ: the first run's are used"
                break
        else:
            out.append(r)
    for r in out:
        if len(r.runs) > 1:
            r.suite = ", ".join(dict.fromkeys(s for s, _ in r.runs))
            wheres = list(dict.fromkeys(w for _, w in r.runs))
            r.where = " / ".join(wheres)
    return out


def _supports(res: ClaimResult) -> bool:
    """Whether the effect's side (below / above the null) is the claimed one."""
    if res.claim.direction == "equal":
        return True
    want = -1 if res.claim.direction in ("lower", "lower_or_equal") else 1
    return res.effect_sign == want


def judge(results: list[ClaimResult], alpha: float = ALPHA) -> None:
    """Holm over every row with a test, then each row's verdict, its reason and its power."""
    adjusted = stats.holm([r.p for r in results])
    m = int(np.count_nonzero(~np.isnan(adjusted)))
    for r, q in zip(results, adjusted):
        r.p_holm = float(q)
        r.power = power_text(r, alpha, m)
        if math.isnan(r.p):
            r.verdict = "no test"
            if r.censored is not None and r.censored.both_censored == r.n:
                r.reason = f"censored in both arms in all {r.n} pairs: no information on the difference"
            elif r.censored is not None:
                r.reason = "no pair whose order is known"
            r.reason = r.reason or "no test"
            continue
        if q <= alpha:
            r.verdict = "supported" if _supports(r) else "contradicted"
            r.reason = f"Holm-adjusted p = {_p(q)} <= {alpha}"
        else:
            r.verdict = "inconclusive"
            r.reason = (f"n too small: minimum attainable p = {_p(r.min_p)}" if r.min_p > alpha
                        else f"Holm-adjusted p = {_p(q)} > {alpha}")


def power_text(r: ClaimResult, alpha: float, m: int) -> str:
    """How far the row is from conclusive: the seeds its test needs to reach alpha (and alpha / m,
    Holm's first step), and for uncensored rows the smallest effect the t test detects at this n
    with 80% power given the observed SD, and the n the observed effect would need."""
    holm_alpha = alpha / max(m, 1)
    if r.censored is not None:
        k = r.censored.later + r.censored.earlier
        return (f"{k} pair(s) ordered; the sign test needs >= {stats.sign_flip_seeds_needed(alpha)} ordered pairs "
                f"all one way for p <= {alpha}, >= {stats.sign_flip_seeds_needed(holm_alpha)} for Holm's "
                f"alpha/m = {_p(holm_alpha)}")
    parts = []
    need, need_holm = stats.sign_flip_seeds_needed(alpha), stats.sign_flip_seeds_needed(holm_alpha)
    if r.n < need:
        parts.append(f"cannot reach {alpha} at n = {r.n} (needs n >= {need}; >= {need_holm} for alpha/m = "
                     f"{_p(holm_alpha)})")
    if r.n >= 2 and r.sd == 0:
        parts.append("all differences equal (sd 0)")
    elif r.n >= 2 and math.isfinite(r.sd):
        mde = stats.t_detectable_effect(r.sd, r.n, alpha, POWER)
        parts.append(f"t test detects |mean - H0| >= {_num(mde)} at n = {r.n}")
        effect = r.mean - r.null
        n_eff = stats.t_seeds_needed(effect, r.sd, holm_alpha, POWER)
        if r.claim.direction != "equal":
            parts.append(f"observed effect needs n ~ {max(n_eff, need_holm) if n_eff else '>10^4'} at alpha/m"
                         if effect else "observed effect 0")
    return "; ".join(parts)


def evaluate_all(claims: list[Claim], records: pd.DataFrame, alpha: float = ALPHA) -> list[ClaimResult]:
    """Every claim's rows, merged where they rest on the same evidence, judged with Holm."""
    results = []
    for c in claims:
        results += merge_same_evidence(evaluate(c, records))
    judge(results, alpha)
    return results


# ---------------------------------------------------------------- the table
def _num(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if v == 0 or 1e-3 <= abs(v) < 1e5:
        return f"{v:.4g}"
    return f"{v:.3e}"


def _p(p) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "-"
    return f"{p:.2g}" if p < 0.001 else f"{p:.3g}"


def _interval(iv) -> str:
    return "-" if iv is None else f"[{_num(iv[0])}, {_num(iv[1])}]"


CLAIM_DIRECTION_TEXT = {"lower": "lower", "higher": "higher", "lower_or_equal": "not higher",
                        "higher_or_equal": "not lower", "equal": "equal"}


def reached_text(r: ClaimResult) -> str:
    if not r.claim.censored_at:
        return ""
    t, c = r.reached
    return f"{t}/{r.n} · {c}/{r.n}"


def estimate_text(r: ClaimResult) -> str:
    """Mean [95% t interval] for uncensored rows; the order counts of censored pairs otherwise."""
    if r.censored is not None:
        cp = r.censored
        return (f"CDL later {cp.later}, earlier {cp.earlier}, tied {cp.ties}, order unknown {cp.unknown}, "
                f"both censored {cp.both_censored} (no mean: censored)")
    if r.n < 2:
        return _num(r.mean)
    return f"{_num(r.mean)} {_interval(r.t_interval)}"


def claims_frame(results: list[ClaimResult]) -> pd.DataFrame:
    """One row per (merged) result: where, the pairs, the tests, Holm and the verdict."""
    rows = []
    for r in results:
        margin = f"{_num(r.claim.margin.value)}" if r.claim.margin else ""
        rows.append({"claim": r.claim.id, "runs": r.suite, "cells": r.where,
                     "treatment - control": f"{r.treatment} - {r.control} ({r.claim.metric}, "
                                            f"CDL should be {CLAIM_DIRECTION_TEXT[r.claim.direction]})",
                     "n": r.n, "reached (CDL · control)": reached_text(r),
                     "per-seed differences": ", ".join(_num(d) for d in r.diffs) if r.censored is None else "",
                     "mean [95% t interval]": estimate_text(r), "t p (same H0)": _p(r.t_p), "margin": margin,
                     "test": r.test, "p": _p(r.p), "Holm p": _p(r.p_holm), "verdict": r.verdict,
                     "why": r.reason + (f"; {r.merge_note}" if r.merge_note else "")
                            + (f"; {r.dropped} pair(s) without a value left out" if r.dropped else "")
                            + (f"; {r.note}" if r.note else ""),
                     "power": r.power})
    return pd.DataFrame(rows)


def legend(results: list[ClaimResult], alpha: float = ALPHA) -> str:
    m = sum(not math.isnan(r.p) for r in results)
    return (f"Family-wise error rate {alpha} by Holm's step-down adjustment over the {m} tested rows (Holm 1979). "
            f"p: exact sign-flip permutation test of the mean paired difference (uncensored rows; against the "
            f"margin for 'no worse' claims, two-sided, i.e. one-sided non-inferiority at {alpha / 2}), or the exact "
            f"sign test on Gehan pair scores where a value is censored (never reached, or not converged). The t "
            f"interval and t p assume normal differences and are shown, not used for the verdict. Rows resting on "
            f"the same evidence are merged (docs/claims.md).")


def claim_notes(results: list[ClaimResult]) -> list[str]:
    """The legend, then each claim shown, with its statement, source and margin (once)."""
    seen, out = set(), [legend(results)]
    for r in results:
        if r.claim.id in seen:
            continue
        seen.add(r.claim.id)
        note = f" ({r.claim.note})" if r.claim.note else ""
        margin = f" Margin {_num(r.claim.margin.value)}: {r.claim.margin.source}." if r.claim.margin else ""
        out.append(f"{r.claim.id}: {r.claim.statement} [{r.claim.source}]{note}{margin}")
    return out
