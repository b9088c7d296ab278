"""Feature extraction for FID/KID through torch-fidelity's own code path (Obukhov et al.,
torch-fidelity): its feature-extractor registry, `create_feature_extractor` and
`get_featuresdict_from_dataset`. Extractors: torch-fidelity's `inception-v3-compat`
(Inception-v3 pool3, 2048-d, the FID standard of Heusel et al. 2017) and cdlbench's
`digits-classifier` (128-d, offline; see digits_classifier.py).

Inception weights are never downloaded: they come from a suite field, the environment
variable CDLBENCH_INCEPTION_WEIGHTS, or torch hub's cache; otherwise `MissingWeightsError`.
Reference features are cached per (reference set, split, extractor, layer, resolution) under
`<cache_dir>/features/`, named by the set's key and a hash of its pixels."""
from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import torch

from ..errors import UserError
from .base import Metric
from ..models.digits_classifier import default_cache_dir, to_uint8

INCEPTION = "inception-v3-compat"
DIGITS = "digits-classifier"
EXTRACTORS = (INCEPTION, DIGITS)
DEFAULT_LAYER = {INCEPTION: "2048", DIGITS: "features"}
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
WEIGHTS_ENV = "CDLBENCH_INCEPTION_WEIGHTS"
INSTALL_HINT = ("FID/KID need the optional extra 'fid' (torch-fidelity, which needs torchvision): "
                "pip install torch==2.14.1 torchvision==0.29.1 && pip install 'cdlbench[fid]' "
                "(see README, section 'Images and FID')")


class MissingWeightsError(FileNotFoundError):
    """Inception-v3 weights are not on this machine; the message says how to supply them."""


def inception_hub_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def resolve_inception_weights(explicit: str | None = None) -> Path:
    """The local Inception-v3 weights file: explicit path, else $CDLBENCH_INCEPTION_WEIGHTS,
    else torch hub's cache; never a download."""
    for source, value in (("metric field 'inception_weights'", explicit),
                          (f"environment variable {WEIGHTS_ENV}", os.environ.get(WEIGHTS_ENV))):
        if value:
            path = Path(value).expanduser()
            if not path.is_file():
                raise MissingWeightsError(f"Inception-v3 weights: {source} names {path}, which is not a file")
            return path
    hub = inception_hub_path()
    if hub.is_file():
        return hub
    raise MissingWeightsError(
        "Inception-v3 weights for extractor 'inception-v3-compat' not found, and cdlbench never downloads "
        f"them. Supply the file {INCEPTION_FILE} (torch-fidelity's TF-compatible Inception, from its v0.2.0 "
        f"release) by one of: the metric field 'inception_weights: /path/{INCEPTION_FILE}' in the suite; "
        f"the environment variable {WEIGHTS_ENV}=/path/{INCEPTION_FILE}; or copying it to {hub}. "
        "For an offline comparison use 'extractor: digits-classifier' on digit images.")


def import_fidelity():
    """torch_fidelity with cdlbench's extractor registered, or an ImportError saying how to install it."""
    try:
        import torch_fidelity  # noqa: F401
    except Exception as exc:          # ImportError, or torchvision's operator errors on a mismatched build
        raise ImportError(f"{INSTALL_HINT} (import failed: {type(exc).__name__}: {exc})") from None
    from . import fidelity_extractor  # noqa: F401  (registers 'digits-classifier')
    return torch_fidelity


class UInt8Images(torch.utils.data.Dataset):
    """torch-fidelity input: uint8 images [C, H, W]; grey repeated to RGB when asked."""

    def __init__(self, images: torch.Tensor, rgb: bool):
        self.images = images
        self.rgb = rgb

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        x = self.images[i]
        return x.expand(3, *x.shape[1:]) if self.rgb and x.shape[0] == 1 else x


def extractor_kwargs(extractor: str, weights: str | None, cache_dir: Path) -> dict:
    if extractor == INCEPTION:
        return {"feature_extractor_weights_path": str(resolve_inception_weights(weights))}
    if extractor == DIGITS:
        from ..models.digits_classifier import classifier_path, load_digits_classifier
        load_digits_classifier(cache_dir)                       # train and cache once
        return {"feature_extractor_weights_path": str(classifier_path(cache_dir))}
    raise ValueError(f"extractor must be one of {', '.join(EXTRACTORS)}, got {extractor!r}")


def extract_features(images: torch.Tensor, extractor: str = DIGITS, *, batch_size: int = 256,
                     device: torch.device | str = "cpu", weights: str | None = None,
                     cache_dir: str | Path | None = None, layer: str | None = None) -> torch.Tensor:
    """Images in [-1, 1] [N, C, H, W] -> features [N, F] (float64 on the CPU), via torch-fidelity."""
    cache_dir = Path(cache_dir or default_cache_dir())
    kwargs = extractor_kwargs(extractor, weights, cache_dir)   # weights first: the documented error
    import_fidelity()
    from torch_fidelity.utils import get_featuresdict_from_dataset

    layer = layer or DEFAULT_LAYER[extractor]
    cuda = torch.device(device).type == "cuda"
    pixels = to_uint8(images.detach().cpu()).contiguous()
    memo_key = (extractor, layer, kwargs["feature_extractor_weights_path"], cuda, batch_size, _digest(pixels))
    if memo_key not in _FEATURES:          # FID and KID of one cell share the generated features
        net = _extractor(extractor, layer, cuda, kwargs["feature_extractor_weights_path"])
        feats = get_featuresdict_from_dataset(UInt8Images(pixels, rgb=extractor == INCEPTION), net, batch_size,
                                              cuda, True, False)
        _FEATURES.clear()
        _FEATURES[memo_key] = feats[layer].double()
    return _FEATURES[memo_key].clone()


_FEATURES: dict = {}      # the last generated set's features (one entry)
_EXTRACTORS: dict = {}    # built extractors, by (name, layer, cuda, weights file)


def _extractor(name: str, layer: str, cuda: bool, weights_path: str):
    """torch-fidelity's create_feature_extractor, built once per process and weights file."""
    from torch_fidelity.utils import create_feature_extractor

    key = (name, layer, cuda, weights_path, _file_stamp(weights_path))
    if key not in _EXTRACTORS:
        _EXTRACTORS[key] = create_feature_extractor(name, [layer], cuda=cuda, verbose=False,
                                                    feature_extractor_weights_path=weights_path)
    return _EXTRACTORS[key]


def _file_stamp(path: str) -> tuple:
    st = Path(path).stat()
    return st.st_size, st.st_mtime_ns


def _digest(pixels: torch.Tensor) -> str:
    return hashlib.sha256(pixels.numpy().tobytes()).hexdigest()[:16] + f"-{tuple(pixels.shape)}"


def extractor_id(extractor: str, weights: str | None = None) -> str:
    """The extractor's name plus the identity of its weights (cache keys change when they do)."""
    if extractor == DIGITS:
        from ..models.digits_classifier import recipe_hash
        return f"{DIGITS}-{recipe_hash()}"
    path = resolve_inception_weights(weights)
    size, mtime = _file_stamp(str(path))
    return f"{extractor}-{hashlib.sha256(f'{path.name}/{size}/{mtime}'.encode()).hexdigest()[:10]}"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_")[:80]


def reference_features(images: torch.Tensor, extractor: str, *, key: str | None, batch_size: int = 256,
                       device: torch.device | str = "cpu", weights: str | None = None,
                       cache_dir: str | Path | None = None, layer: str | None = None) -> torch.Tensor:
    """Features of a reference set, cached under <cache_dir>/features/ by set key, extractor,
    layer, resolution and a hash of the uint8 pixels (so a changed file never reuses stale stats)."""
    cache_dir = Path(cache_dir or default_cache_dir())
    layer = layer or DEFAULT_LAYER[extractor]
    pixels = to_uint8(images.detach().cpu()).contiguous()
    digest = hashlib.sha256(pixels.numpy().tobytes()).hexdigest()[:16]
    res = "x".join(map(str, images.shape[1:]))
    name = f"{_safe(key or 'unnamed')}-{extractor_id(extractor, weights)}-{layer}-{res}-n{images.shape[0]}-{digest}.pt"
    path = cache_dir / "features" / name
    if path.exists():
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            pass
    feats = extract_features(images, extractor, batch_size=batch_size, device=device, weights=weights,
                             cache_dir=cache_dir, layer=layer)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(feats, tmp)
    os.replace(tmp, path)
    return feats


class FeatureMetric(Metric):
    """Shared plumbing of FID and KID: generated and reference features through torch-fidelity.

    Runtime context (from the runner, not the suite): device, cache_dir, reference_key."""

    def reference_count(self, cell_samples: int) -> None:
        """The whole reference split, not a subsample."""
        return None

    def __init__(self, extractor: str, n_samples: int, batch_size: int, inception_weights: str | None,
                 device=None, cache_dir=None, reference_key: str | None = None):
        self.extractor, self.n_samples, self.batch_size = extractor, int(n_samples), int(batch_size)
        self.inception_weights = inception_weights
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.reference_key = reference_key

    @staticmethod
    def preflight(params: dict) -> None:
        """Before any training: torch-fidelity importable and Inception weights on disk, else a
        RuntimeError saying how to supply them (the CLI prints it and exits 2)."""
        try:
            import_fidelity()
            if params.get("extractor") == INCEPTION:
                resolve_inception_weights(params.get("inception_weights"))
        except (ImportError, MissingWeightsError) as exc:
            raise UserError(str(exc)) from None

    def features(self, samples: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(generated [n, F], reference [m, F]) features, the reference ones cached."""
        common = dict(batch_size=self.batch_size, device=self.device, weights=self.inception_weights,
                      cache_dir=self.cache_dir)
        ref = reference_features(reference, self.extractor, key=self.reference_key, **common)
        gen = extract_features(samples[: self.n_samples], self.extractor, **common)
        return gen, ref


def extractor_ok(v):
    return None if v in EXTRACTORS else f"must be one of {', '.join(EXTRACTORS)}"
