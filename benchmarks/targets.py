"""The speed targets of issue 6, each measured as a ratio within one process:

    python -m benchmarks.targets [--reps 5] [--threads N] [--skip-compile]

1. a CDL training step (K = 2, B = 128, batch 128) over a DDPM step at batch 128 (target <= 3),
   and the same CDL step computed one sample and one likelihood at a time over the batched one
   (target >= 5; also reported for the contrastive estimates alone);
2. one Picard iteration over the full 1000-step window for 2000 2-D samples over one batched
   forward pass of the denoiser on the same 2 M points (target <= 1.15);
3. per-step overhead of every sequential sampler over the time spent inside the network at 2000
   samples (target < 10%);
4. sequential DDPM sampling with the denoiser under torch.inference_mode and torch.compile
   (`Denoiser.accelerated`) over plain no_grad eager.

Timings are interleaved (A, B, A, B, ...) and each ratio is the median over repetitions, so
a machine shared with other work biases both sides alike. asv does not time this module (no
benchmark-prefixed names); it only imports it.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from cdlbench import SAMPLERS
from cdlbench.losses.cdl import classifier_logit
from cdlbench.samplers.base import eps_batched
from cdlbench.samplers.ddpm_grid import ddpm_grid

from .common import DINO_MODEL, SMALL_MODEL, build_loss, build_model, dino_batch, generator, sampler_names, \
    train_step, wrap


def clock(fn, number: int = 1) -> float:
    """Seconds per call of fn, over `number` calls."""
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) / number


def interleaved(fns: dict, reps: int, number: int = 1, warmup: int = 1) -> dict[str, list[float]]:
    """Per-call seconds of each fn, measured round-robin `reps` times."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    out = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            out[name].append(clock(fn, number))
    return out


def median_ratio(times: dict, num: str, den: str) -> float:
    return statistics.median(a / b for a, b in zip(times[num], times[den]))


# ------------------------------------------------------------------ 1. training steps
def training_step_ratios(reps: int, number: int = 10) -> dict:
    """CDL / DDPM step and looped-CDL / CDL step (forward, backward, Adam) at batch 128."""
    from benchmarks.cdl_looped import classifier_logit_loop, looped_like   # newer than asv's history
    x = dino_batch(128, seed=1)
    data_var = torch.ones(2)
    net = build_model(DINO_MODEL)
    den = wrap(net)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    gen = generator(0)
    cdl = build_loss("cdl", data_var)
    losses = {"ddpm": build_loss("ddpm", data_var), "cdl": cdl, "cdl_looped": looped_like(cdl)}
    t = interleaved({k: (lambda f=f: train_step(den, opt, f, x, gen)) for k, f in losses.items()}, reps, number, 3)

    # the contrastive estimates alone (2 K B evaluations, forward + backward), fixed draws
    k, b = cdl.k, cdl.b
    y = x[:k]
    zeta = cdl.zeta_law.sample((k,), gen)
    a = cdl.proposal.sample((k, b), gen)
    eps = torch.randn((k, b, 2), generator=gen)

    def batched():
        classifier_logit(den, y, zeta, a, eps, cdl.proposal).sum().backward()

    def looped():
        classifier_logit_loop(den, y, zeta, a, eps, cdl.proposal, cdl.log_var).sum().backward()

    te = interleaved({"batched": batched, "looped": looped}, reps, number, 3)
    return {
        "ddpm_step_ms": 1e3 * statistics.median(t["ddpm"]),
        "cdl_step_ms": 1e3 * statistics.median(t["cdl"]),
        "cdl_looped_step_ms": 1e3 * statistics.median(t["cdl_looped"]),
        "cdl_over_ddpm": median_ratio(t, "cdl", "ddpm"),
        "looped_over_cdl_step": median_ratio(t, "cdl_looped", "cdl"),
        "looped_over_batched_estimates": median_ratio(te, "looped", "batched"),
    }


# ------------------------------------------------------------------ 2. Picard iteration
@torch.no_grad()
def picard_iteration_ratio(reps: int, model: dict = SMALL_MODEL, n: int = 2000, steps: int = 1000,
                           chunk_size: int = 1 << 18) -> dict:
    """One full-window Picard pass over one batched forward on the same n * steps points."""
    timed = TimedNetwork(build_model(model).eval())
    den = wrap(timed)
    g = generator(0)
    x_T = torch.randn((n, 2), generator=g)
    noise = torch.randn((steps, n, 2), generator=g)
    points = x_T.repeat(steps, 1)                                    # what pass 1 evaluates
    logsnr = ddpm_grid(steps).logsnr.float().repeat_interleave(n)
    within = []                                 # pass time / network time inside the same pass

    def picard():
        timed.seconds = 0.0
        start = time.perf_counter()
        SAMPLERS["picard"](den, x_T, noise=noise, steps=steps, window=steps, tolerance=0.1, max_iters=1)
        within.append((time.perf_counter() - start) / timed.seconds)

    def forward():
        den.eps(points, logsnr)

    def forward_chunked():                      # the same calls the sampler makes (memory bound)
        eps_batched(den, points, logsnr, chunk_size)

    t = interleaved({"picard": picard, "forward": forward, "forward_chunked": forward_chunked}, reps, 1, 1)
    return {"forward_s": statistics.median(t["forward"]), "forward_chunked_s": statistics.median(t["forward_chunked"]),
            "picard_iteration_s": statistics.median(t["picard"]),
            "picard_over_forward": median_ratio(t, "picard", "forward"),
            "picard_over_forward_chunked": median_ratio(t, "picard", "forward_chunked"),
            "picard_over_own_network_time": statistics.median(within[1:]),
            "model": model, "points": n * steps}


# ------------------------------------------------------------------ 3. sequential overhead
class TimedNetwork:
    """Wraps a network and accumulates the seconds spent inside it."""

    def __init__(self, net):
        self.net, self.seconds, self.output = net, 0.0, getattr(net, "output", "eps")

    def __call__(self, *args):
        start = time.perf_counter()
        out = self.net(*args)
        self.seconds += time.perf_counter() - start
        return out


SEQUENTIAL_STEPS = {"ddpm": {"steps": 100}, "ddim": {"steps": 100}, "euler": {"steps": 100}, "heun": {"steps": 50}}


@torch.no_grad()
def sequential_overheads(reps: int, model: dict = DINO_MODEL, n: int = 2000) -> dict:
    """(sampler wall-clock - time inside the network) / time inside the network, per sampler."""
    import inspect

    net = build_model(model).eval()
    x_T = torch.randn((n, 2), generator=generator(0))
    out = {}
    for name in sampler_names():
        if name == "picard":
            continue
        timed = TimedNetwork(net)
        den = wrap(timed)
        accepted = inspect.signature(SAMPLERS[name]).parameters
        params = {k: v for k, v in SEQUENTIAL_STEPS.get(name, {"steps": 100}).items() if k in accepted}
        fractions = []
        for rep in range(reps + 1):
            timed.seconds = 0.0
            start = time.perf_counter()
            SAMPLERS[name](den, x_T, generator=generator(1), **params)
            total = time.perf_counter() - start
            if rep:                                                     # rep 0 is the warm-up
                fractions.append((total - timed.seconds) / timed.seconds)
        out[name] = statistics.median(fractions)
    return out


# ------------------------------------------------------------------ 4. inference_mode / compile
def accelerated_sampling(reps: int, compile: bool = True, n: int = 2000, steps: int = 100) -> dict:
    """Sequential DDPM sampling time with `Denoiser.accelerated` over plain no_grad eager."""
    net = build_model(DINO_MODEL).eval()
    x_T = torch.randn((n, 2), generator=generator(0))
    noise = torch.randn((steps, n, 2), generator=generator(1))
    variants = {"eager": wrap(net), "inference_mode": wrap(net).accelerated(inference_mode=True)}
    result = {}
    if compile:
        variants["compile+inference_mode"] = wrap(net).accelerated(compile=True, inference_mode=True)
        start = time.perf_counter()
        SAMPLERS["ddpm"](variants["compile+inference_mode"], x_T, noise=noise, steps=steps)
        result["first_compiled_run_s"] = time.perf_counter() - start
    fns = {k: (lambda d=d: SAMPLERS["ddpm"](d, x_T, noise=noise, steps=steps)) for k, d in variants.items()}
    t = interleaved(fns, reps, 1, 1)
    samples = {k: SAMPLERS["ddpm"](d, x_T, noise=noise, steps=steps).samples for k, d in variants.items()}
    result["eager_s"] = statistics.median(t["eager"])
    for k in variants:
        if k != "eager":
            result[f"{k}_over_eager"] = median_ratio(t, k, "eager")
            result[f"{k}_max_abs_diff"] = float((samples[k] - samples["eager"]).abs().max())
    return result


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{cpu}, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}, "
            f"Python {platform.python_version()}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--skip-compile", action="store_true")
    ap.add_argument("--only", default="train,picard,sequential,accelerated")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    only = set(args.only.split(","))
    print("machine:", machine())
    if "train" in only:
        print("training step:", training_step_ratios(args.reps))
    if "picard" in only:
        print("picard iteration:", picard_iteration_ratio(max(1, args.reps // 2 + 1)))
    if "sequential" in only:
        print("sequential overhead (fraction of network time), Dino MLP:", sequential_overheads(args.reps))
        print("sequential overhead (fraction of network time), small MLP:",
              sequential_overheads(args.reps, SMALL_MODEL))
    if "accelerated" in only:
        print("inference_mode / compile:", accelerated_sampling(args.reps, compile=not args.skip_compile))


if __name__ == "__main__":
    main()
