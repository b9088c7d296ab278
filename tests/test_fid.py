"""FID/KID through torch-fidelity, the digits-classifier extractor, Inception weight lookup.

Tests that need torch-fidelity skip where it is absent (it needs torchvision; README
"Images and FID"); the classifier and the missing-weights error need only torch."""
from __future__ import annotations

import pytest

from cdlbench.errors import UserError
import torch

from cdlbench.datasets.digits import digits_tensors
from cdlbench.models import digits_classifier as dc
from cdlbench.metrics.features import (INSTALL_HINT, WEIGHTS_ENV, MissingWeightsError, resolve_inception_weights)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """One classifier training (about 15 s on one core) shared by the module."""
    path = tmp_path_factory.mktemp("cdlcache")
    dc.load_digits_classifier(path)
    return path


def test_digits_classifier_accuracy_and_cache(cache_dir):
    net = dc.load_digits_classifier(cache_dir)            # from the cache now
    assert dc.accuracy(net, "test") >= 0.95                # held-out split (measured: 0.992)
    assert dc.classifier_path(cache_dir).is_file()
    x, _ = digits_tensors("train")
    f = net.features(dc.DigitsCNN.preprocess(dc.to_uint8(x)))
    assert f.shape == (1438, dc.FEATURE_DIM)
    assert f.pow(2).sum(1).mean().div(dc.FEATURE_DIM).item() == pytest.approx(1.0, rel=1e-4)


def test_missing_inception_weights_is_a_documented_error(tmp_path, monkeypatch):
    from cdlbench.metrics.fid import FID

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-hub"))
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    with pytest.raises(MissingWeightsError) as err:
        resolve_inception_weights(None)
    msg = str(err.value)
    assert WEIGHTS_ENV in msg and "inception_weights" in msg and "never downloads" in msg
    # through the metric: the same error before any feature extraction or download
    x = torch.zeros(4, 3, 8, 8)
    with pytest.raises(MissingWeightsError, match=WEIGHTS_ENV):
        FID(extractor="inception-v3-compat", cache_dir=tmp_path)(x, x)
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "nope.pth"))
    with pytest.raises(MissingWeightsError, match="nope.pth, which is not a file"):
        resolve_inception_weights(None)
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"x")
    assert resolve_inception_weights(str(weights)) == weights


def test_install_hint_names_the_extra():
    assert "cdlbench[fid]" in INSTALL_HINT and "torchvision" in INSTALL_HINT


# ---------------------------------------------------------------- through torch-fidelity
def _fidelity():
    return pytest.importorskip("torch_fidelity", reason="torch-fidelity (extra 'fid') not installed")


def _frechet_scipy(f1: torch.Tensor, f2: torch.Tensor) -> float:
    """Heusel et al. 2017 eq. 6, computed independently with scipy's matrix square root."""
    import numpy as np
    from scipy import linalg

    a, b = f1.double().numpy(), f2.double().numpy()
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_fid_self_is_zero_and_matches_independent_frechet(cache_dir):
    _fidelity()
    from cdlbench.metrics.features import extract_features
    from cdlbench.metrics.fid import FID

    train, _ = digits_tensors("train")
    test, _ = digits_tensors("test")
    fid = FID(n_samples=2000, cache_dir=cache_dir, reference_key="digits/train/8")
    assert abs(fid(train, train)) < 1e-6
    value = fid(test, train)
    ours = _frechet_scipy(extract_features(test, cache_dir=cache_dir), extract_features(train, cache_dir=cache_dir))
    assert value == pytest.approx(ours, rel=1e-6)
    assert 0.1 < value < 5.0                          # held-out digits are close, not identical
    noise = torch.rand(500, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert fid(noise, train) > 10 * value
    assert list((cache_dir / "features").glob("digits_train_8-digits-classifier-*"))   # reference cached


def test_fid_does_not_depend_on_batch_size(cache_dir):
    _fidelity()
    from cdlbench.metrics.fid import FID

    train, _ = digits_tensors("train")
    test, _ = digits_tensors("test")
    values = [FID(batch_size=bs, cache_dir=cache_dir / f"bs{bs}")(test, train) for bs in (7, 64, 1000)]
    assert values[0] == pytest.approx(values[1], rel=1e-9) and values[1] == pytest.approx(values[2], rel=1e-9)


def test_kid_orders_sets(cache_dir):
    _fidelity()
    from cdlbench.metrics.kid import KID

    train, _ = digits_tensors("train")
    test, _ = digits_tensors("test")
    kid = KID(cache_dir=cache_dir, subsets=20, subset_size=300)
    noise = torch.rand(500, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    same, held_out, bad = kid(train, train), kid(test, train), kid(noise, train)
    assert abs(same) < 0.02 and held_out < 0.05 and bad > 10 * max(held_out, 0.01)
    assert kid(test, train) == held_out                  # seeded subsets: deterministic


def test_digits_extractor_is_registered_in_torch_fidelity(cache_dir):
    """torch-fidelity's own top-level API, given the registered extractor, agrees with cdlbench."""
    torch_fidelity = _fidelity()
    from cdlbench.metrics.features import UInt8Images, import_fidelity
    from cdlbench.metrics.fid import FID

    import_fidelity()
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    assert "digits-classifier" in FEATURE_EXTRACTORS_REGISTRY
    train, _ = digits_tensors("train")
    test, _ = digits_tensors("test")
    out = torch_fidelity.calculate_metrics(
        input1=UInt8Images(dc.to_uint8(test), rgb=False), input2=UInt8Images(dc.to_uint8(train), rgb=False),
        fid=True, feature_extractor="digits-classifier", cuda=False, cache=False, verbose=False,
        save_cpu_ram=True, feature_extractor_weights_path=str(dc.classifier_path(cache_dir)))
    assert out["frechet_inception_distance"] == pytest.approx(FID(cache_dir=cache_dir)(test, train), rel=1e-5)  # float32 features there


def test_runner_refuses_to_start_without_fid_requirements(tmp_path, monkeypatch):
    """Before any training: the extra (or the Inception weights) missing is one clear error."""
    from cdlbench.suite import parse_suite
    from cdlbench.run.coordinator import Runner

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-hub"))
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    spec = {"name": "x", "device": "cpu", "dataset": {"name": "digits"}, "model": {"name": "unet"},
            "losses": {"name": "ddpm"}, "samplers": {"name": "ddpm"},
            "metrics": {"name": "fid", "extractor": "inception-v3-compat"}}
    with pytest.raises(UserError) as err:
        Runner(parse_suite(spec), tmp_path / "run", progress=False)
    try:
        import torch_fidelity  # noqa: F401
        assert WEIGHTS_ENV in str(err.value)
    except ImportError:
        assert "cdlbench[fid]" in str(err.value)
    assert not (tmp_path / "run" / "records.jsonl").exists()


def test_inception_path_reads_a_local_weights_file(tmp_path, monkeypatch):
    """inception-v3-compat through torch-fidelity with weights from CDLBENCH_INCEPTION_WEIGHTS
    (random weights of the right architecture here), and never a download."""
    _fidelity()
    import torch_fidelity.feature_extractor_inceptionv3 as inc
    from cdlbench.metrics.fid import FID

    def no_download(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(inc, "load_state_dict_from_url", no_download)
    with monkeypatch.context() as m:       # build the architecture once without loading anything
        m.setattr(inc.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None)
        m.setattr(inc, "load_state_dict_from_url", lambda *a, **k: {})
        torch.manual_seed(0)
        net = inc.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    weights = tmp_path / "weights-inception.pth"
    torch.save(net.state_dict(), weights)
    monkeypatch.setenv(WEIGHTS_ENV, str(weights))
    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(6, 3, 16, 16, generator=g) * 2 - 1, torch.rand(6, 1, 16, 16, generator=g) * 2 - 1
    fid = FID(extractor="inception-v3-compat", batch_size=4, cache_dir=tmp_path)
    assert abs(fid(a, a)) < 1e-3 and fid(b, a) > 0


def test_class_accuracy_on_real_digits(cache_dir, tmp_path):
    """The digits CNN as the class_accuracy judge: true labels score >= 0.95, shuffled ones ~0.1;
    a first use under no_grad (as in sampling code) still trains and caches the classifier."""
    from cdlbench.datasets.digits import Digits
    from cdlbench.metrics.class_accuracy import ClassAccuracy

    test = Digits("test")
    x, y = test.images, test.labels
    assert ClassAccuracy(cache_dir=cache_dir)(x, x, dataset=test, labels=y) >= 0.95
    shuffled = y[torch.randperm(y.shape[0], generator=torch.Generator().manual_seed(0))]
    assert ClassAccuracy(cache_dir=cache_dir)(x, x, dataset=test, labels=shuffled) < 0.2
    with torch.no_grad():
        assert ClassAccuracy(cache_dir=tmp_path / "fresh")(x[:50], x, dataset=test, labels=y[:50]) >= 0.9
    assert dc.classifier_path(tmp_path / "fresh").is_file()
    with pytest.raises(ValueError, match="class-conditional"):
        ClassAccuracy(cache_dir=cache_dir)(x, x, dataset=test, labels=None)
