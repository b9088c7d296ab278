"""Score error of a denoiser against the exact score (Wu et al. 2024, Figure 1; docs/method.md section 6).

    err(t, z) = | score_model(z, a_t) - score_true(z, a_t) |,  score = -eps / sqrt(s(-a))

on a (t, z) grid (t over the 1000-step DDPM grid, z in [-z_range, z_range]; 1-D data), split into
the forward process's high-density region and the rest (OOD). The high-density region at t is the
highest-density region of p_t holding `coverage` of its mass: {z : p_t(z) >= q_t}, q_t the
(1 - coverage) quantile of p_t(Z) for Z ~ p_t (analytic for Gaussian mixtures).

Along trajectories: the runner's `replay` re-runs the cell's own sampler (Picard or sequential,
same x_T and per-step noise) through a recording denoiser; every point the sampler evaluates is
scored, so the Picard row measures the error on its iterates and the sequential row on its path.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..denoiser import Denoiser
from ..diffusion.schedules import ddpm_logsnr
from ..registry import METRICS
from .base import Metric
from ..specs import MetricSpec


# ---------------------------------------------------------------- exact quantities
def noised_log_density(dataset, z: torch.Tensor, logsnr: torch.Tensor) -> torch.Tensor:
    """log p_a(z) of an isotropic Gaussian mixture noised at log-SNR a; z [N, d], logsnr [N] -> [N].

    Component k becomes N(sqrt(s(a)) mu_k, (s(a) v_k + s(-a)) I) (docs/method.md section 1)."""
    if not all(hasattr(dataset, k) for k in ("means", "variances", "weights")):
        raise ValueError(f"{type(dataset).__name__}: score_error needs a Gaussian mixture (means, variances, weights)")
    zd, a = z.double(), logsnr.double().reshape(-1, 1)
    s, sn = torch.sigmoid(a), torch.sigmoid(-a)                                     # [N, 1]
    mu = s.sqrt().unsqueeze(-1) * dataset.means.unsqueeze(0)                        # [N, K, d]
    var = s * dataset.variances.unsqueeze(0) + sn                                   # [N, K]
    d = z.shape[1]
    sq = (zd.unsqueeze(1) - mu).pow(2).sum(-1)                                      # [N, K]
    comp = -0.5 * sq / var - 0.5 * d * torch.log(2 * math.pi * var)
    return torch.logsumexp(torch.log(dataset.weights).unsqueeze(0) + comp, dim=1)


def hdr_thresholds(dataset, logsnr: torch.Tensor, coverage: float, n: int = 2000, seed: int = 0) -> torch.Tensor:
    """Per log-SNR [T]: the log-density level whose super-level set holds `coverage` of p_a's mass
    (the (1 - coverage) quantile of log p_a(Z), Z ~ p_a, from n forward-process draws)."""
    g = torch.Generator().manual_seed(seed)
    x = dataset.sample(n, g).double()                                              # [n, d]
    eps = torch.randn(x.shape, generator=g, dtype=torch.float64)
    a = logsnr.double().reshape(-1, 1, 1)                                          # [T, 1, 1]
    z = torch.sigmoid(a).sqrt() * x + torch.sigmoid(-a).sqrt() * eps               # [T, n, d], z ~ p_a
    logp = noised_log_density(dataset, z.reshape(-1, x.shape[1]), a.reshape(-1).repeat_interleave(n))
    return torch.quantile(logp.reshape(-1, n), 1.0 - coverage, dim=1)


def score_abs_error(denoiser, dataset, z: torch.Tensor, logsnr: torch.Tensor) -> torch.Tensor:
    """|score_model - score_true| summed over dimensions (L1), z [N, d], logsnr [N] -> [N]."""
    with torch.no_grad():
        eps_model = denoiser.eps(z, logsnr).double()
    eps_true = dataset.exact_eps(z, logsnr).double()
    scale = torch.sigmoid(-logsnr.double()).sqrt().reshape(-1, *([1] * (z.ndim - 1)))
    return ((eps_model - eps_true) / scale).abs().flatten(1).sum(1)


def nearest_step(logsnr: torch.Tensor, grid_logsnr: torch.Tensor) -> torch.Tensor:
    """Index of the nearest entry of a decreasing grid (the DDPM log-SNR of t = 0..T-1), [N] int64."""
    asc = grid_logsnr.double().flip(0)
    a = logsnr.double()
    hi = torch.bucketize(a, asc).clamp(1, asc.shape[0] - 1)
    lo = hi - 1
    pick = torch.where((a - asc[lo]).abs() <= (asc[hi] - a).abs(), lo, hi)
    return asc.shape[0] - 1 - pick


# ---------------------------------------------------------------- trajectories
class Recorder:
    """Wraps a denoiser: passes every eps call through and scores each evaluated point.

    Keeps per-call (logsnr, z of the first `keep` paths) when the call holds whole blocks of
    the `n` paths (Picard: [window, n] flattened; sequential: [n]), for the Figure 1 overlay."""

    def __init__(self, denoiser, dataset, n: int, keep: int):
        self.base, self.dataset, self.n, self.keep = denoiser, dataset, n, keep
        self.errors: list[torch.Tensor] = []
        self.logsnrs: list[torch.Tensor] = []
        self.points: list[torch.Tensor] = []
        self.calls: list[tuple[np.ndarray, np.ndarray]] = []        # (logsnr [W], z [W, keep])
        self.denoiser = Denoiser.from_eps(self._eps)

    def _eps(self, z: torch.Tensor, logsnr: torch.Tensor) -> torch.Tensor:
        out = self.base.eps(z, logsnr)
        eps_true = self.dataset.exact_eps(z, logsnr).double()
        scale = torch.sigmoid(-logsnr.double()).sqrt().reshape(-1, *([1] * (z.ndim - 1)))
        self.errors.append(((out.double() - eps_true) / scale).abs().flatten(1).sum(1).cpu())
        self.logsnrs.append(logsnr.detach().double().cpu())
        self.points.append(z.detach().double().reshape(z.shape[0], -1).cpu())
        if z.shape[0] % self.n == 0 and z[0].numel() == 1:
            w = z.shape[0] // self.n
            self.calls.append((logsnr.reshape(w, self.n)[:, 0].double().cpu().numpy(),
                               z.reshape(w, self.n)[:, : self.keep].double().cpu().numpy()))
        return out


def paths_array(calls: list[tuple[np.ndarray, np.ndarray]], grid_logsnr: np.ndarray) -> np.ndarray:
    """Per call (a Picard iteration or a sequential step) -> array [calls, 1000, keep], NaN where the
    call did not evaluate step t; t found as the nearest 1000-step grid log-SNR."""
    if not calls:
        return np.zeros((0, grid_logsnr.shape[0], 0), dtype=np.float32)
    keep = calls[0][1].shape[1]
    out = np.full((len(calls), grid_logsnr.shape[0], keep), np.nan, dtype=np.float32)
    for c, (a, z) in enumerate(calls):
        t = nearest_step(torch.from_numpy(a), torch.from_numpy(grid_logsnr)).numpy()
        out[c, t] = z
    return out


def merge_sequential(paths: np.ndarray) -> np.ndarray:
    """A sequential sampler makes one call per step: fold those calls into one path [1, 1000, keep]."""
    if not paths.shape[0]:
        return paths
    out = paths[0].copy()
    for p in paths[1:]:                      # steps a strided sampler never visits stay NaN
        out = np.where(np.isnan(out), p, out)
    return out[None]


# ---------------------------------------------------------------- the metric
@METRICS.register("score_error", constraints={
    "z_range": lambda v: None if v > 0 else "must be > 0",
    "z_points": lambda v: None if v >= 3 else "must be >= 3",
    "t_stride": lambda v: None if 1 <= v <= 1000 else "must be in [1, 1000]",
    "coverage": lambda v: None if 0 < v < 1 else "must be in (0, 1)",
    "n_paths": lambda v: None if v is None or v >= 1 else "must be >= 1 or null (all samples)",
    "plot_paths": lambda v: None if v >= 0 else "must be >= 0"},
    spec=MetricSpec(label="score error", needs=("exact_score",), context=("denoiser", "dataset", "replay"), quality=False,
                    parts={"id": ("score error, high-density", ""), "ood": ("score error, OOD", ""),
                           "path": ("score error on path", ""), "path_ood": ("score error on path, OOD part", ""),
                           "path_ood_fraction": ("path evals OOD", "fraction")}))
class ScoreError(Metric):
    """|model score - exact score| in and out of the forward process's high-density region, and along the sampler's path."""


    def __init__(self, z_range: float = 30.0, z_points: int = 241, t_stride: int = 2, coverage: float = 0.99,
                 n_paths: int | None = 256, plot_paths: int = 12):
        self.z_range, self.z_points, self.t_stride = float(z_range), int(z_points), int(t_stride)
        self.coverage, self.n_paths, self.plot_paths = float(coverage), n_paths, int(plot_paths)
        self.artifacts: dict[str, np.ndarray] = {}

    def grid(self, denoiser, dataset, device) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Figure 1 heat map: (t [nt], z [nz], err [nt, nz], in-HDR mask [nt, nz])."""
        a_all = ddpm_logsnr()
        t = torch.arange(0, a_all.shape[0], self.t_stride)
        a = a_all[t]
        z = torch.linspace(-self.z_range, self.z_range, self.z_points, dtype=torch.float64)
        zz = z.repeat(t.shape[0]).unsqueeze(1)                                           # [nt*nz, 1]
        aa = a.repeat_interleave(z.shape[0])
        err = score_abs_error(denoiser, dataset, zz.float().to(device), aa.float().to(device)).cpu()
        levels = hdr_thresholds(dataset, a_all, self.coverage)[t]
        inside = noised_log_density(dataset, zz, aa) >= levels.repeat_interleave(z.shape[0])
        shape = (t.shape[0], z.shape[0])
        return t.numpy(), z.numpy(), err.reshape(shape).numpy(), inside.reshape(shape).numpy()

    def __call__(self, samples: torch.Tensor, reference: torch.Tensor, *, denoiser=None, dataset=None,
                 replay=None) -> dict[str, float]:
        if denoiser is None or dataset is None:
            raise ValueError("score_error needs the denoiser and the dataset (runner context)")
        if not getattr(dataset, "has_exact_score", False):
            raise ValueError(f"score_error needs a dataset with an exact score; {type(dataset).__name__} has none")
        if int(np.prod(samples.shape[1:])) != 1:
            raise ValueError("score_error's (t, z) grid is defined for 1-D data")
        t, z, err, inside = self.grid(denoiser, dataset, samples.device)
        out = {"id": float(err[inside].mean()), "ood": float(err[~inside].mean())}
        self.artifacts = {"t": t, "z": z, "grid": err.astype(np.float32), "inside": inside}
        if replay is not None:
            n = samples.shape[0] if self.n_paths is None else min(self.n_paths, samples.shape[0])
            rec = Recorder(denoiser, dataset, n, min(self.plot_paths, n))
            replay(rec.denoiser, n)
            errors, a = torch.cat(rec.errors), torch.cat(rec.logsnrs)
            a_grid = ddpm_logsnr()
            levels = hdr_thresholds(dataset, a_grid, self.coverage)
            # HDR membership of every evaluated point, threshold of its nearest grid step
            t_idx = nearest_step(a, a_grid)
            points = torch.cat(rec.points)
            ood = noised_log_density(dataset, points, a) < levels[t_idx]
            out["path"] = float(errors.mean())
            out["path_ood"] = float(errors[ood].mean()) if bool(ood.any()) else 0.0
            out["path_ood_fraction"] = float(ood.double().mean())
            paths = paths_array(rec.calls, a_grid.numpy())
            if paths.shape[0] > 1 and _one_step_per_call(rec.calls):
                paths = merge_sequential(paths)
            self.artifacts["paths"] = paths                                   # [iterations, 1000, keep]
        return out


def _one_step_per_call(calls) -> bool:
    return all(a.shape[0] == 1 for a, _ in calls)
