"""Metrics, one per file; importing this package registers them."""
from . import class_accuracy, fid, kid, mmd, score_error  # noqa: F401
