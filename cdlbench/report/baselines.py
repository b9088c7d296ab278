"""Reference numbers (baselines/paper.yaml) and the direction-aware comparison with our results.

An entry applies to a report row when its `match` (component names and p_* parameters) agrees;
its `settings` are the conditions the number was produced under: where ours differ (sample count,
steps, training length), the comparison is said to cross settings and the differences are listed.
Some settings define what a number measures (an MMD kernel bandwidth; the accelerator of a
wall-clock time): where one of those differs, the verdict is "not comparable" and no difference is
given. An entry says which per metric (`comparable_only_if: {metric: [setting, ...]}`, or a list
for all its metrics); the file's top-level `comparable_only_if` is the default of every entry, and
a metric's declared figure (cdlbench/figures.py: Figure.comparable_only_if) the default of those.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError

from ..figures import figure

PROVENANCE = ("paper", "reference_code", "third_party")
ENTRY_KEYS = ("id", "experiment", "provenance", "source", "match", "settings", "values", "censored", "note",
              "comparable_only_if")
FILE_KEYS = ("sources", "entries", "claims", "comparable_only_if", "defaults")
NAME_KEYS = ("dataset", "model", "loss", "sampler")


class BaselineError(UserError, ValueError):
    """A baselines file that cannot be used; the message names the file and the field."""


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
    comparable_only_if: dict = field(default_factory=dict)    # metric -> settings that must agree
    defaults: dict = field(default_factory=dict)   # setting -> what a row that does not record it used

    def only_if(self, metric: str) -> tuple:
        """The settings that must agree for `metric` to be compared at all."""
        if metric in self.comparable_only_if:
            return tuple(self.comparable_only_if[metric])
        return tuple(figure(metric).comparable_only_if)

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
    blocking: list = field(default_factory=list)  # crossed settings that make it "not comparable" (keys)
    blocking_text: list = field(default_factory=list)


# A prose claim of a baselines file (paper.yaml `claims`: what the paper says, no numbers).
PROSE_CLAIM_KEYS = ("experiment", "provenance", "source", "claim", "note")
# the top-level keys of each kind of listing file, by the key of its list
LISTING_KEYS = {"entries": FILE_KEYS, "claims": ("claims",)}


def read_listing(path: Path, key: str, what: str, error: type, allowed: tuple | None = None) -> dict:
    """A YAML mapping holding a list of mappings under `key` (a baselines or claims file), read as
    strictly and boundedly as a suite (cdlbench/suite/yaml_loading.py: a regular file of at most
    4 MB, at most 100,000 nodes once aliases are expanded, no duplicate keys, safe tags only, a
    finite tree); top-level keys other than `allowed` (default LISTING_KEYS[key]) are refused.
    Every problem is an `error` naming the file (and the field)."""
    from ..suite.yaml_loading import SuiteError, load_bounded_yaml

    path = Path(path)
    allowed = allowed if allowed is not None else LISTING_KEYS.get(key, (key,))
    try:
        data = load_bounded_yaml(path, f"{what} file", f"a {what} file has a few thousand")
    except SuiteError as exc:
        raise error(str(exc)) from None
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise error(f"{path}: field '{key}': expected a mapping with a '{key}' list"
                    + (f", got {type(data.get(key)).__name__}" if isinstance(data, dict) and key in data else ""))
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise error(f"{path}: field '{unknown[0]}': unknown key; valid keys: {', '.join(allowed)}")
    for i, item in enumerate(data[key]):
        if not isinstance(item, dict):
            raise error(f"{path}: field '{key}[{i}]': must be a mapping, got {type(item).__name__} {item!r:.60}")
    return data


def _scalar(v) -> bool:
    """A setting's or parameter's value: a string, number, true/false or null (NaN never)."""
    if isinstance(v, float) and math.isnan(v):
        return False
    return v is None or isinstance(v, (str, int, float, bool))


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_mapping(value, where: str, what: str, ok, allowed: str) -> dict:
    """{} for null, else a mapping of string keys whose values pass `ok`; BaselineError naming
    the field and what is allowed otherwise."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BaselineError(f"{where}: must be a mapping {what}, got {type(value).__name__} {value!r:.60}")
    for k, v in value.items():
        if not isinstance(k, str) or not ok(v):
            raise BaselineError(f"{where}.{k}: must be {allowed}, got {v!r:.60}")
    return value


def _check_text(value, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BaselineError(f"{where}: must be a string, got {type(value).__name__} {value!r:.60}")
    return value


def load_baselines(path: str | Path) -> tuple[list[Baseline], dict]:
    """Entries and the source descriptions of a baselines file: bounded like a suite file, every
    field's type checked (BaselineError naming the file, the field and what is allowed)."""
    path = Path(path)
    data = read_listing(path, "entries", "baselines", BaselineError, FILE_KEYS)
    sources = _check_mapping(data.get("sources"), f"{path}: sources", "source name -> description",
                             lambda v: isinstance(v, str), "a description (a string)")
    defaults = _only_if(data.get("comparable_only_if"), f"{path}: comparable_only_if", None)
    absent = _check_mapping(data.get("defaults"), f"{path}: defaults",
                            "setting -> cdlbench's value when a run does not record it",
                            _scalar, "a string, number, true/false or null")
    for i, c in enumerate(data.get("claims") or []):
        where = f"{path}: claims[{i}]"
        if not isinstance(c, dict):
            raise BaselineError(f"{where}: must be a mapping with keys {', '.join(PROSE_CLAIM_KEYS)}")
        for k, v in c.items():
            if k not in PROSE_CLAIM_KEYS:
                raise BaselineError(f"{where}.{k}: unknown key; valid keys: {', '.join(PROSE_CLAIM_KEYS)}")
            _check_text(v, f"{where}.{k}")
    out, ids = [], set()
    for i, e in enumerate(data["entries"]):
        where = f"{path}: entries[{i}]"
        unknown = set(e) - set(ENTRY_KEYS)
        if unknown:
            raise BaselineError(f"{where}: unknown keys {sorted(unknown)}; valid keys: {', '.join(ENTRY_KEYS)}")
        if e.get("provenance") not in PROVENANCE:
            raise BaselineError(f"{where}.provenance: must be one of {', '.join(PROVENANCE)}, got {e.get('provenance')!r:.60}")
        if not isinstance(e.get("source"), str) or e["source"] not in sources:
            raise BaselineError(f"{where}.source: {e.get('source')!r:.60} is not described under 'sources'")
        ident = e.get("id", i)
        if not isinstance(ident, (str, int)) or isinstance(ident, bool):
            raise BaselineError(f"{where}.id: must be a string, got {ident!r:.60}")
        if str(ident) in ids:
            raise BaselineError(f"{where}.id: {str(ident)!r} is the id of an earlier entry; ids must be unique")
        ids.add(str(ident))
        values = _check_mapping(e.get("values"), f"{where}.values", "metric -> number", lambda v: v is None or _number(v),
                                "a finite number (null: never reached, with the metric under 'censored')")
        if not values:
            raise BaselineError(f"{where}.values: must be a non-empty mapping metric -> number")
        match = _check_mapping(e.get("match"), f"{where}.match", "(component names and p_* parameters -> value)",
                               _scalar, "a component name or a parameter's value (a string, number, true/false or null)")
        settings = dict(_check_mapping(e.get("settings"), f"{where}.settings", "(p_* parameters -> value)", _scalar,
                                       "a parameter's value (a string, number, true/false or null)"))
        censored = e.get("censored") or []
        if not isinstance(censored, list) or not all(isinstance(m, str) and m in values for m in censored):
            raise BaselineError(f"{where}.censored: must be a list of metrics under 'values' (those never reached), "
                                f"got {censored!r:.60}")
        experiment, note = _check_text(e.get("experiment"), f"{where}.experiment"), _check_text(e.get("note"), f"{where}.note")
        own = _only_if(e.get("comparable_only_if"), f"{where}.comparable_only_if", list(values))
        for metric, keys in own.items():
            missing = [k for k in keys if k not in settings]
            if missing:
                raise BaselineError(f"{where}.comparable_only_if.{metric}: {', '.join(missing)} not under 'settings' "
                                    f"(the reference's value of a setting that must agree is needed)")
        out.append(Baseline(str(ident), experiment, e["provenance"], e["source"], dict(match), settings, dict(values),
                            tuple(censored), note,
                            {**{m: k for m, k in defaults.items() if m in values}, **own}, dict(absent)))
    return out, dict(sources)


def _only_if(value, where: str, metrics: list | None) -> dict:
    """comparable_only_if as {metric: (setting, ...)}: a mapping, or (in an entry, `metrics` given)
    a list of settings for every metric of the entry."""
    if value is None:
        return {}
    if isinstance(value, list) and metrics is not None:
        value = {m: value for m in metrics}
    if not isinstance(value, dict) or not all(isinstance(v, list) and all(isinstance(k, str) for k in v)
                                              for v in value.values()):
        raise BaselineError(f"{where}: must be a mapping metric -> list of settings (p_<component>_<key>)"
                            + (" or one list for every metric" if metrics is not None else ""))
    return {str(m): tuple(v) for m, v in value.items()}


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
    return "none" if v is None else str(v)


def setting_of(b: Baseline, row: dict, key: str):
    """Our row's value of a reference setting: a component name for dataset/model/loss/sampler,
    else its p_* column, else what cdlbench used when it records none (the file's `defaults`:
    parameters at their neutral value are left out of records)."""
    if key in NAME_KEYS:
        return component_name(row.get(key, ""))
    if key == "p_train_steps" and key in row:
        return row[key] + pretraining_steps(row.get("p_train_init_from"))
    return row[key] if key in row else b.defaults.get(key)


def pretraining_steps(init_from) -> int:
    """Steps of the pretraining a fine-tuned model started from (records hold `p_train_init_from`
    as JSON), 0 for a model trained from scratch: a fine-tune's training length is both together."""
    if not isinstance(init_from, str) or not init_from:
        return 0
    try:
        return int(json.loads(init_from)["train"]["steps"])
    except (ValueError, KeyError, TypeError):
        return 0


def crossed_settings(b: Baseline, row: dict, keys=None) -> list[str]:
    """Settings of the reference (all, or those of `keys`) that our row does not share."""
    out = []
    for key, want in b.settings.items():
        if keys is not None and key not in keys:
            continue
        have = setting_of(b, row, key)
        if not _same(have, want):
            out.append(f"{key.removeprefix('p_')}: ours {_show(have)}, reference {_show(want)}")
    return out


def blocking_settings(b: Baseline, row: dict, metric: str) -> list[str]:
    """The settings that must agree for `metric` (Baseline.only_if) and do not."""
    return [k for k in b.only_if(metric) if k in b.settings and not _same(setting_of(b, row, k), b.settings[k])]


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
    (labels plus p_* parameters) against the applicable entry with the fewest settings that make
    it not comparable, then the fewest crossed settings. Where a setting that must agree differs,
    the verdict is "not comparable" and there is no difference."""
    cands = [b for b in baselines if metric in b.values and matches(b, row)]
    if not cands:
        return None
    b = min(cands, key=lambda c: (len(blocking_settings(c, row, metric)), len(crossed_settings(c, row))))
    ref = b.values[metric]
    ref = None if (ref is None or metric in b.censored) else float(ref)
    ours = None if stats["n"] == 0 else float(stats["mean"])
    blocking = blocking_settings(b, row, metric)
    d, word = (None, "not comparable") if blocking else verdict(ours, ref, bool(stats["higher_is_better"]))
    return Comparison(metric, ours, stats["n"], stats["n_runs"], ref, b, d, word, crossed_settings(b, row),
                      blocking, crossed_settings(b, row, set(blocking)))
