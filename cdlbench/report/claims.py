"""The paper's claims against the records: paired statistics per seed (docs/method.md section 6).

A claim (baselines/claims.yaml) names a metric, the direction CDL should move it, the cells it
compares (dataset, sampler, parameters) and the treatment and control losses. In each run that
holds those cells, the treatment and the control of one seed share the data, x_T and the
sampler's noise, so the evidence is the per-seed paired difference d_s = treatment - control:

    mean d,  95% interval  mean d -+ t_{0.975, n-1} sd(d) / sqrt(n)        (Student t, n >= 2)
    95% percentile bootstrap of the mean of d (10,000 resamples, seeded), where n >= 5

and a verdict from the t interval: *supported* when it excludes 0 on the claimed side,
*contradicted* when it excludes 0 on the other side, else *inconclusive*. A claim of "no worse"
(`direction: lower_or_equal` / `higher_or_equal`) is supported when the interval does not reach
beyond 0 on the worse side (an interval [0, 0], all seeds equal, supports it).

Censored values (a threshold never reached) are never dropped: a claim's `censored_as` names the
record that stands for them (for passes to the MMD threshold: the sampler's total passes, a lower
bound on the passes it would need), and the row says how many of its values were censored.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import UserError
from .baselines import read_listing

DIRECTIONS = ("lower", "higher", "lower_or_equal", "higher_or_equal")
CLAIM_KEYS = ("id", "statement", "source", "metric", "direction", "cells", "treatment", "control", "censored_as",
              "note")
GROUP_KEYS = ["dataset", "model", "train", "sampler"]
BOOTSTRAP_MIN_N = 5
BOOTSTRAP_RESAMPLES = 10_000

# t_{0.975, df} for df = 1..30 (two-sided 95%); beyond, the Cornish-Fisher expansion below
T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281, 2.2010, 2.1788, 2.1604,
        2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555,
        2.0518, 2.0484, 2.0452, 2.0423)


class ClaimsError(UserError, ValueError):
    """A claims file that cannot be used; the message names the file and the field."""


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
    censored_as: str | None = None
    note: str = ""


@dataclass
class ClaimResult:
    claim: Claim
    suite: str
    where: str                          # dataset · sampler (· model · train) of the compared cells
    treatment: str                      # loss labels
    control: str
    seeds: list
    diffs: list
    censored: int = 0                   # values replaced by `censored_as`
    mean: float = math.nan
    t_interval: tuple | None = None
    bootstrap_interval: tuple | None = None
    verdict: str = "inconclusive"
    pairs: list = field(default_factory=list)   # (seed, treatment value, control value)

    @property
    def n(self) -> int:
        return len(self.diffs)


# ---------------------------------------------------------------- statistics
def t_quantile_975(df: int) -> float:
    """t_{0.975, df}: the table to 30 degrees of freedom, then the Cornish-Fisher expansion
    (Abramowitz and Stegun 26.7.5), accurate to 1e-4 there."""
    if df < 1:
        raise ValueError("the t interval needs at least 2 paired values")
    if df <= len(T975):
        return T975[df - 1]
    z = 1.959963984540054
    g1 = (z ** 3 + z) / 4
    g2 = (5 * z ** 5 + 16 * z ** 3 + 3 * z) / 96
    g3 = (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / 384
    return z + g1 / df + g2 / df ** 2 + g3 / df ** 3


def t_interval(diffs) -> tuple[float, float] | None:
    """95% Student-t interval of the mean paired difference (None for fewer than 2 values)."""
    d = np.asarray(diffs, dtype=float)
    if d.size < 2:
        return None
    half = t_quantile_975(d.size - 1) * d.std(ddof=1) / math.sqrt(d.size)
    return float(d.mean() - half), float(d.mean() + half)


def bootstrap_interval(diffs, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> tuple[float, float] | None:
    """95% percentile bootstrap interval of the mean (None below BOOTSTRAP_MIN_N values): all
    resamples drawn at once from a seeded generator."""
    d = np.asarray(diffs, dtype=float)
    if d.size < BOOTSTRAP_MIN_N:
        return None
    idx = np.random.default_rng(seed).integers(0, d.size, size=(resamples, d.size))
    means = d[idx].mean(axis=1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def verdict(direction: str, interval: tuple | None) -> str:
    """supported | contradicted | inconclusive from the interval of treatment - control."""
    if interval is None:
        return "inconclusive"
    lo, hi = interval
    if direction == "lower":
        return "supported" if hi < 0 else "contradicted" if lo > 0 else "inconclusive"
    if direction == "higher":
        return "supported" if lo > 0 else "contradicted" if hi < 0 else "inconclusive"
    if direction == "lower_or_equal":
        return "supported" if hi <= 0 else "contradicted" if lo > 0 else "inconclusive"
    return "supported" if lo >= 0 else "contradicted" if hi < 0 else "inconclusive"


# ---------------------------------------------------------------- the claims file
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
        out.append(Claim(c["id"], c["statement"], str(c.get("source", "")), c["metric"], c["direction"],
                         dict(c.get("cells") or {}), dict(c["treatment"]), dict(c["control"]),
                         c.get("censored_as"), str(c.get("note", ""))))
    ids = [c.id for c in out]
    if len(set(ids)) != len(ids):
        raise ClaimsError(f"{path}: claim ids must be unique")
    return out


# ---------------------------------------------------------------- matching and pairing
def component_name(label) -> str:
    return str(label).split("[", 1)[0]


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


def _values(df: pd.DataFrame, rows: pd.DataFrame, claim: Claim) -> tuple[pd.Series, pd.Series]:
    """The rows' values, censored ones replaced by the same cell's `censored_as` record; and
    which were replaced."""
    vals = pd.to_numeric(rows["value"], errors="coerce")
    missing = vals.isna()
    if claim.censored_as and missing.any():
        stand_in = df[df["metric"] == claim.censored_as].drop_duplicates(["suite", "cell"]).set_index(["suite", "cell"])["value"]
        keys = list(zip(rows.loc[missing, "suite"], rows.loc[missing, "cell"]))
        vals.loc[missing] = [pd.to_numeric(stand_in.get(k), errors="coerce") for k in keys]
    return vals, missing


def evaluate(claim: Claim, records: pd.DataFrame) -> list[ClaimResult]:
    """One result per (run, compared cells, treatment label, control label) holding the claim's cells."""
    from .tables import with_train_labels       # late: tables imports the report's other modules

    df = records
    rows = df[(df["metric"] == claim.metric) & _select(df, claim.cells)]
    out = []
    for suite, g in rows.groupby("suite", sort=False):
        g = with_train_labels(g.drop(columns="train", errors="ignore"))   # what differs within this run
        treat = g[_select(g, claim.treatment)]
        ctrl = g[_select(g, claim.control)]
        if treat.empty or ctrl.empty:
            continue
        keys = GROUP_KEYS + (["p_train_step"] if "p_train_step" in g.columns else [])
        for t_label, t_rows in treat.groupby("loss", sort=False):
            for c_label, c_rows in ctrl.groupby("loss", sort=False):
                out += _paired(claim, df, suite, t_label, c_label, t_rows, c_rows, keys)
    return out


def _paired(claim, df, suite, t_label, c_label, t_rows, c_rows, keys) -> list[ClaimResult]:
    t_vals, t_cens = _values(df, t_rows, claim)
    c_vals, c_cens = _values(df, c_rows, claim)
    t = t_rows.assign(_v=t_vals, _c=t_cens)
    c = c_rows.assign(_v=c_vals, _c=c_cens)
    key_cols = [k for k in keys if k in t.columns]
    if "p_train_step" in key_cols:                 # no snapshot step: -1, so that merge keys are never NaN
        t, c = (x.assign(p_train_step=pd.to_numeric(x["p_train_step"], errors="coerce").fillna(-1)) for x in (t, c))
    merged = t.merge(c, on=key_cols + ["seed"], suffixes=("_t", "_c"))
    out = []
    for group, m in merged.groupby(key_cols, sort=False):
        m = m.dropna(subset=["_v_t", "_v_c"]).sort_values("seed")
        if m.empty:
            continue
        labels = dict(zip(key_cols, group if isinstance(group, tuple) else (group,)))
        where = " · ".join(str(labels[k]) for k in key_cols if k in ("dataset", "sampler", "model") or
                           (k == "train" and labels[k]))
        step = int(labels.get("p_train_step", -1))
        if step >= 0 and f"step={step}" not in where:     # the train label names it already when steps vary
            where += f" · step {step}"
        diffs = (m["_v_t"] - m["_v_c"]).astype(float).tolist()
        res = ClaimResult(claim, str(suite), where, str(t_label), str(c_label), m["seed"].astype(int).tolist(), diffs,
                          int(m["_c_t"].sum() + m["_c_c"].sum()),
                          pairs=list(zip(m["seed"].astype(int), m["_v_t"].astype(float), m["_v_c"].astype(float))))
        res.mean = float(np.mean(diffs))
        res.t_interval = t_interval(diffs)
        res.bootstrap_interval = bootstrap_interval(diffs)
        res.verdict = verdict(claim.direction, res.t_interval)
        out.append(res)
    return out


def evaluate_all(claims: list[Claim], records: pd.DataFrame) -> list[ClaimResult]:
    return [r for c in claims for r in evaluate(c, records)]


# ---------------------------------------------------------------- the table
def _num(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if v == 0 or 1e-3 <= abs(v) < 1e5:
        text = f"{v:.4g}"
    else:
        text = f"{v:.3e}"
    return text


def _interval(iv) -> str:
    return "-" if iv is None else f"[{_num(iv[0])}, {_num(iv[1])}]"


CLAIM_DIRECTION_TEXT = {"lower": "lower", "higher": "higher", "lower_or_equal": "not higher",
                        "higher_or_equal": "not lower"}


def claims_frame(results: list[ClaimResult]) -> pd.DataFrame:
    """One row per result: the claim, where, the paired differences and the verdict."""
    rows = []
    for r in results:
        cens = f"; {r.censored} censored value(s) counted as {r.claim.censored_as}" if r.censored else ""
        rows.append({"claim": r.claim.id, "run": r.suite, "cells": r.where,
                     "treatment - control": f"{r.treatment} - {r.control} ({r.claim.metric}, "
                                            f"CDL should be {CLAIM_DIRECTION_TEXT[r.claim.direction]})",
                     "n": r.n, "per-seed differences": ", ".join(_num(d) for d in r.diffs) + cens,
                     "mean": _num(r.mean), "95% t interval": _interval(r.t_interval),
                     "95% bootstrap": _interval(r.bootstrap_interval), "verdict": r.verdict})
    return pd.DataFrame(rows)


def claim_notes(results: list[ClaimResult]) -> list[str]:
    """Each claim shown, with its statement and source (once)."""
    seen, out = set(), []
    for r in results:
        if r.claim.id in seen:
            continue
        seen.add(r.claim.id)
        note = f" ({r.claim.note})" if r.claim.note else ""
        out.append(f"{r.claim.id}: {r.claim.statement} [{r.claim.source}]{note}")
    return out
