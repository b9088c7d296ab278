"""Running a cell's sampler: inputs from the cell's seed, class labels, the out-of-memory retry,
and sharded sampling (image sets, torchrun). What a sampler takes is read from its SamplerSpec.
With a training range, the sampler's denoiser evaluations are counted by noise level (warm-up
and an abandoned out-of-memory attempt excluded): `ood_share()`."""
from __future__ import annotations

import torch

from ..denoiser import NoiseLevelCounter
from ..registry import SAMPLERS
from ..seeding import make_generator
from .distributed import sharded_sample


class OutOfMemoryAfterRetry(RuntimeError):
    """The sampler ran out of memory, also after its chunk size was halved."""


def is_out_of_memory(exc: BaseException) -> bool:
    """torch's OutOfMemoryError, or a RuntimeError saying 'out of memory' (older torch, other backends)."""
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", ())
    return isinstance(exc, oom) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def balanced_labels(start: int, stop: int, num_classes: int, device: torch.device) -> torch.Tensor:
    """Class labels of samples start..stop-1 of a class-conditional run: sample i gets class
    i mod C, so every class is equally represented and a sample's class does not depend on its
    batch or rank."""
    return torch.arange(start, stop, device=device) % num_classes


def halved_chunk(sampler, n_samples: int) -> int:
    """Half the points per denoiser call actually used: the chunk parameter caps the points of one
    call, which are at most what the sampler's spec says one call takes (points_per_call)."""
    spec = SAMPLERS.entry(sampler.name).spec
    per_call = spec.points_per_call(sampler.params, n_samples) if spec.points_per_call else n_samples
    return max(1, min(int(sampler.params[spec.chunk_param]), per_call) // 2)


class CellSampler:
    """The sampler of one EvalJob on its denoiser; `n` samples of `shape` from the cell's seed."""

    def __init__(self, job, denoiser, shape: tuple, device: torch.device, world, accelerate: dict | None = None,
                 training_range: tuple[float, float] | None = None):
        self.job, self.shape, self.device, self.world = job, shape, device, world
        self.denoiser = denoiser.accelerated(**accelerate) if accelerate else denoiser
        self.plain = denoiser
        # evaluations by noise level, of this process (under torchrun: the main rank's shard)
        self.levels = NoiseLevelCounter(*training_range) if training_range is not None else None
        self.spec = SAMPLERS.entry(job.sampler.name).spec
        self.fn = SAMPLERS[job.sampler.name]

    def labels(self, start: int, stop: int) -> torch.Tensor | None:
        """Class labels of samples start..stop-1 for a class-conditional denoiser, else None."""
        c = self.plain.num_classes
        return balanced_labels(start, stop, c, self.device) if c else None

    def inputs(self):
        """x_T [n, *shape] and the generator of the cell's seed (shared by every loss and sampler)."""
        gen = make_generator(self.device, self.job.seed, "sample")
        x_T = torch.randn((self.job.n_samples, *self.shape), generator=gen, device=self.device)
        return x_T, gen

    def call(self, x_T, gen, trace: bool, overrides: dict | None = None, labels=None, replay_n: int | None = None,
             denoiser=None):
        """Run the sampler from x_T; `labels` [N] default to the balanced labels of samples 0..N-1;
        per-step noise drawn from `gen` for samplers that take it (SamplerSpec.noise)."""
        if labels is None:
            labels = self.labels(0, x_T.shape[0])
        kwargs = {**self.job.sampler.params, **(overrides or {})}
        if labels is not None:
            if not self.spec.conditional:
                raise ValueError(f"sampler '{self.job.sampler.name}' takes no class_labels, so it cannot sample "
                                 f"from a class-conditional model")
            kwargs["class_labels"] = labels
        if self.spec.noise == "per_step" and "steps" in kwargs and kwargs.get("noise") is None:
            kwargs["noise"] = torch.randn((kwargs["steps"], *x_T.shape), generator=gen, device=x_T.device)
        den = denoiser if denoiser is not None else self.denoiser
        if replay_n is not None:     # trajectory metrics: the first replay_n paths, same noise, no warm-up
            if "noise" in kwargs:
                kwargs["noise"] = kwargs["noise"][:, :replay_n]
            if labels is not None:
                kwargs["class_labels"] = labels[:replay_n]
            return self.fn(den, x_T[:replay_n], generator=gen, **kwargs)
        if self.spec.parallel:
            kwargs["trace"] = trace
        counting, den.levels = getattr(den, "levels", None), None          # the warm-up is not the sampler's
        with torch.no_grad():                                  # warm-up: first-call costs off the clock
            m = min(256, x_T.shape[0])
            den.eps(x_T[:m], torch.zeros(()), None if labels is None else labels[:m])
        den.levels = counting
        return self.fn(den, x_T, generator=gen, **kwargs)

    def ood_share(self) -> float | None:
        """Share of the sampler's denoiser evaluations at a log-SNR outside the training range (None:
        no range); read after `sample`."""
        return None if self.levels is None else self.levels.share()

    def sample(self, trace: bool, is_image: bool):
        """Sample once; on out-of-memory, a sampler with a chunk parameter retries once with half the
        points per denoiser call (fresh inputs from the same seeds, so the retry's numbers are those
        of a run that never ran out). Returns (result, extra record columns)."""
        self.denoiser.levels = self.levels
        try:
            return self._sample(trace, is_image)
        finally:
            self.denoiser.levels = None          # metrics' own evaluations are not the sampler's

    def _sample(self, trace: bool, is_image: bool):
        if self.world.size > 1 or is_image:
            return self.sharded(), {}
        x_T, gen = self.inputs()
        try:
            return self.call(x_T, gen, trace), {}
        except Exception as exc:
            if not is_out_of_memory(exc) or self.spec.chunk_param is None:
                raise
            first = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        del x_T, gen
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        chunk = halved_chunk(self.job.sampler, self.job.n_samples)
        if self.levels is not None:              # only the retry's evaluations count
            self.levels.reset()
        x_T, gen = self.inputs()
        try:
            result = self.call(x_T, gen, trace, overrides={self.spec.chunk_param: chunk})
        except Exception as exc:
            if is_out_of_memory(exc):
                raise OutOfMemoryAfterRetry(f"out of memory, also after halving {self.spec.chunk_param} to {chunk} "
                                            f"({first})") from None
            raise
        return result, {f"oom_retry_{self.spec.chunk_param}": chunk, "_note": f"out of memory ({first}); retrying once "
                        f"with {self.spec.chunk_param}={chunk}"}

    def sharded(self):
        """Image sets and torchrun: per-sample seeds, fixed global batches (the suite's
        sample_batch) spread over ranks, samples gathered on every rank; no per-iteration trace."""
        steps = self.job.sampler.params.get("steps") if self.spec.noise == "per_step" else None

        def run_batch(x_T, noise, start):
            gen = make_generator(self.device, self.job.seed, "sample", start)   # for samplers' own draws
            return self.call(x_T, gen, False, overrides={"noise": noise} if steps else None,
                             labels=self.labels(start, start + x_T.shape[0]))

        return sharded_sample(run_batch, self.job.n_samples, self.job.sample_batch, self.shape, steps,
                              (self.job.seed, "sample"), self.device, self.world)

    def replay(self, denoiser, n: int):
        """Re-run the sampler on the first n of its x_T with the same per-step noise (metrics that
        score the sampler's own trajectory wrap `denoiser` to record them)."""
        x_T, gen = self.inputs()
        return self.call(x_T, gen, False, replay_n=n, denoiser=denoiser)
