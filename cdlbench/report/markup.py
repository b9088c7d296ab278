"""What every table of the report shares, whatever the output format: column headers from the
components' declarations (cdlbench/figures.py), one number format per column, the "clearly best"
rule behind the bold marks, and the `Markup` a format supplies (escaping, bold, table syntax).

tables.py and sweeps.py build their tables with a Markup; the files under formats/ define one each.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import pandas as pd
from tabulate import tabulate

from ..figures import figure

# What bold means, for the titles of the tables (see clear_best).
BOLD_RULE = ("bold: the best mean, ahead of every other {other} by more than the larger of their two "
             "standard deviations (needs 2 or more seeds each)")
SUPERSCRIPT = re.compile(r"\^\{?(\w+)\}?")         # "MMD^2" -> base "MMD", superscript "2"
# line breaks and other control characters: a label (a run directory's records, a dataset path)
# is one line in every format, so it can neither add table rows nor end a LaTeX % comment
LINE_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def one_line(text) -> str:
    """Text with each run of line breaks and control characters replaced by one space."""
    return LINE_BREAKS.sub(" ", str(text))


def plot_text(label) -> str:
    """A label (a component, dataset or run name from records) as matplotlib text: every `$` escaped,
    so mathtext never parses it (an images folder named `run$\\q$` is shown as it is, not parsed and
    failed on); line breaks kept out. Declared math (math_label's superscripts) is added after."""
    return one_line(label).replace("$", r"\$")


# ---------------------------------------------------------------- markup of one format
class Markup:
    """Plain text. A format subclasses it: `escape_plain` for its special characters, `superscript`,
    `bold`, and the tabulate style of its tables."""

    tablefmt = "simple"

    def escape_plain(self, text: str) -> str:
        return text

    def superscript(self, text: str) -> str:
        return "^" + text

    def bold(self, text: str) -> str:
        return text

    def escape(self, text) -> str:
        """Text as this format shows it, on one line (one_line); `x^2` (a label such as MMD^2) becomes
        a superscript."""
        text, out, last = one_line(text), [], 0
        for m in SUPERSCRIPT.finditer(text):
            out += [self.escape_plain(text[last:m.start()]), self.superscript(self.escape_plain(m.group(1)))]
            last = m.end()
        return "".join(out + [self.escape_plain(text[last:])])

    def table(self, frame: pd.DataFrame) -> str:
        return tabulate(frame, headers="keys", tablefmt=self.tablefmt, showindex=False, disable_numparse=True)


# ---------------------------------------------------------------- headers
def header(metric: str, unit: str = "") -> str:
    """A metric column's header: its declared label and unit (record unit for unknown names)."""
    f = figure(metric, unit)
    return f"{f.label} ({f.unit})" if f.unit else f.label


# ---------------------------------------------------------------- numbers
@dataclass(frozen=True)
class NumberFormat:
    """One format for every number of a column: fixed point with `decimals`, or scientific."""

    decimals: int = 0
    scientific: bool = False

    DIGITS = 3               # significant digits of the column's smallest magnitude
    MAX_DECIMALS = 6         # more decimals than this, or a span of 1e4 or more: scientific
    MAX_FIXED = 1e6

    def __call__(self, x) -> str:
        if x is None or (isinstance(x, float) and math.isnan(x)):
            return "-"
        if self.scientific:
            return "0" if x == 0 else f"{x:.2e}"
        return f"{x:,.{self.decimals}f}"

    @classmethod
    def for_values(cls, values, spreads=()) -> "NumberFormat":
        """The format of a column holding these values (its means): enough decimals for DIGITS
        significant digits of the smallest magnitude, and for one of the smallest spread (std) but
        at most 2 more; scientific when that is more than MAX_DECIMALS or the values span 1e4."""
        mags, spread = _magnitudes(values), _magnitudes(spreads)
        if not mags:
            return cls(0)
        lo, hi = min(mags), max(mags)
        decimals = max(0, cls.DIGITS - 1 - math.floor(math.log10(lo)))
        if spread:
            decimals = max(decimals, min(-math.floor(math.log10(min(spread))), decimals + 2))
        if decimals > cls.MAX_DECIMALS or hi >= cls.MAX_FIXED or hi / lo >= 1e4:
            return cls(scientific=True)
        return cls(decimals)


def _magnitudes(values) -> list[float]:
    out = []
    for v in values:
        try:
            v = abs(float(v))
        except (TypeError, ValueError):
            continue
        if math.isfinite(v) and v != 0:
            out.append(v)
    return out


def fmt_number(x: float) -> str:
    """One number on its own (its own column)."""
    return NumberFormat.for_values([x])(x)


def fmt_cell(s: dict, number: NumberFormat | None = None) -> str:
    """'mean ± std (n=3)'; with censored runs '(2/3 reached)'; none reached: 'never (0/3)'."""
    if s["n"] == 0:
        return f"never (0/{s['n_runs']})"
    number = number or NumberFormat.for_values([s["mean"]])
    text = f"{number(s['mean'])} ± {number(s['std'])}"
    if s["censored"]:
        return f"{text} ({s['n']}/{s['n_runs']} reached)"
    return f"{text} (n={s['n']})"


# ---------------------------------------------------------------- the bold rule
@dataclass(frozen=True)
class Candidate:
    key: object
    mean: float              # mean of the runs that reached a value (nan: none did)
    std: float
    n: int                   # runs that reached a value
    censored: float = 0.0    # fraction of runs that never reached one


def clear_best(cands: list[Candidate], higher_is_better: bool) -> set:
    """Keys of the clearly best candidate, else nothing: fewest censored runs first, then the mean in
    the metric's direction; marked only when it is ahead of every other candidate, either by fewer
    censored runs or by a mean difference larger than the larger of the two standard deviations
    (both with 2 or more runs: one run has no spread)."""
    if len(cands) < 2:
        return set()

    def rank(c: Candidate):
        mean = math.inf if c.n == 0 or math.isnan(c.mean) else (-c.mean if higher_is_better else c.mean)
        return c.censored, mean

    best = min(cands, key=rank)
    for other in cands:
        if other is best or other.censored > best.censored:
            continue
        if best.n < 2 or other.n < 2 or other.n == 0:
            return set()
        gap = rank(other)[1] - rank(best)[1]
        if not gap > max(best.std, other.std):
            return set()
    return {best.key}
