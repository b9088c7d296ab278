"""Reference numbers (baselines/paper.yaml) and the direction-aware comparison with our results.

An entry applies to a report row when its `match` (component names and p_* parameters) agrees;
its `settings` are the conditions the number was produced under: where ours differ (sample count,
steps, training length), the comparison is said to cross settings and the differences are listed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

PROVENANCE = ("paper", "reference_code", "third_party")
ENTRY_KEYS = ("id", "experiment", "provenance", "source", "match", "settings", "values", "censored", "note")
NAME_KEYS = ("dataset", "model", "loss", "sampler")


class BaselineError(ValueError):
    pass


@dataclass(frozen=True)
class Baseline:
    id: str
    experiment: str
    provenance: str
    source: str
    match: dict
    settings: dict
    values: dict
    censored: tuple = ()
    note: str = ""

    def provenance_text(self) -> str:
        return {"paper": "paper", "reference_code": "reference code",
                "third_party": "third party, unverified"}[self.provenance]


@dataclass
class Comparison:
    metric: str
    ours: float
    ours_n: int
    ours_runs: int
    reference: float | None
    baseline: Baseline
    delta: float | None
    verdict: str
    crossed: list = field(default_factory=list)   # "p_train_steps: ours 20000, reference 782000"


def load_baselines(path: str | Path) -> tuple[list[Baseline], dict]:
    """Entries and the source descriptions of a baselines file; strict about keys and provenance."""
    path = Path(path)
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
        raise BaselineError(f"{path}: expected a mapping with an 'entries' list")
    sources = data.get("sources") or {}
    out = []
    for i, e in enumerate(data["entries"]):
        where = f"{path}: entries[{i}]"
        unknown = set(e) - set(ENTRY_KEYS)
        if unknown:
            raise BaselineError(f"{where}: unknown keys {sorted(unknown)}; valid keys: {', '.join(ENTRY_KEYS)}")
        if e.get("provenance") not in PROVENANCE:
            raise BaselineError(f"{where}.provenance: must be one of {', '.join(PROVENANCE)}, got {e.get('provenance')!r}")
        if e.get("source") not in sources:
            raise BaselineError(f"{where}.source: {e.get('source')!r} is not described under 'sources'")
        if not isinstance(e.get("values"), dict) or not e["values"]:
            raise BaselineError(f"{where}.values: must be a non-empty mapping metric -> number")
        out.append(Baseline(str(e.get("id", i)), e.get("experiment", ""), e["provenance"], e["source"],
                            dict(e.get("match") or {}), dict(e.get("settings") or {}), dict(e["values"]),
                            tuple(e.get("censored") or ()), e.get("note", "")))
    return out, sources


def component_name(label: str) -> str:
    """'picard[steps=100]' -> 'picard'."""
    return str(label).split("[", 1)[0]


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and not isinstance(b, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def matches(b: Baseline, row: dict) -> bool:
    """row: dataset/model/loss/sampler labels plus p_* parameters of one report row."""
    for key, want in b.match.items():
        have = component_name(row.get(key, "")) if key in NAME_KEYS else row.get(key, "<unset>")
        if not _same(have, want):
            return False
    return True


def _show(v) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return "unset" if v is None else str(v)


def crossed_settings(b: Baseline, row: dict) -> list[str]:
    """Settings of the reference that our row does not share."""
    out = []
    for key, want in b.settings.items():
        have = row.get(key, None)
        if not _same(have, want):
            out.append(f"{key.removeprefix('p_')}: ours {_show(have)}, reference {_show(want)}")
    return out


def verdict(ours: float | None, ref: float | None, higher_is_better: bool) -> tuple[float | None, str]:
    """(ours - reference, 'better' | 'worse' | 'equal' ...); None stands for never reached (censored)."""
    if ours is None and ref is None:
        return None, "neither reached"
    if ours is None:
        return None, "worse (ours never reached)"
    if ref is None:
        return None, "better (reference never reached)"
    d = ours - ref
    if math.isclose(ours, ref, rel_tol=1e-9, abs_tol=1e-15):
        return 0.0, "equal"
    return d, "better" if (d > 0) == bool(higher_is_better) else "worse"


def compare_metric(baselines: list[Baseline], row: dict, metric: str, stats: dict) -> Comparison | None:
    """Our summary `stats` (mean, n, n_runs, higher_is_better) of `metric` on report row `row`
    (labels plus p_* parameters) against the applicable entry with the fewest crossed settings."""
    cands = [b for b in baselines if metric in b.values and matches(b, row)]
    if not cands:
        return None
    b = min(cands, key=lambda c: len(crossed_settings(c, row)))
    ref = b.values[metric]
    ref = None if (ref is None or metric in b.censored) else float(ref)
    ours = None if stats["n"] == 0 else float(stats["mean"])
    d, word = verdict(ours, ref, bool(stats["higher_is_better"]))
    return Comparison(metric, ours, stats["n"], stats["n_runs"], ref, b, d, word, crossed_settings(b, row))
