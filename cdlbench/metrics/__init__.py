"""Metrics, one per file; importing this package registers them."""
from . import class_accuracy, data_nll, energy, fid, kid, kl, mmd, score_error, sliced_wasserstein  # noqa: F401
