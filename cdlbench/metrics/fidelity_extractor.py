"""Registers cdlbench's digits classifier as a torch-fidelity feature extractor named
'digits-classifier', so FID/KID on digits run through torch-fidelity's own code path offline.
Imported only when torch-fidelity is installed (features.import_fidelity)."""
from __future__ import annotations

import torch
import torch_fidelity
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from ..models.digits_classifier import DigitsCNN, load_classifier_file

NAME = "digits-classifier"


class DigitsClassifierExtractor(torch_fidelity.FeatureExtractorBase):
    """uint8 [N, C, H, W] -> ('features' [N, 128], 'logits' [N, 10]) of the digits CNN."""

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None:
            raise ValueError("digits-classifier needs feature_extractor_weights_path (cdlbench supplies it)")
        self.net = load_classifier_file(feature_extractor_weights_path)

    @staticmethod
    def get_provided_features_list():
        return "features", "logits"

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"fid": "features", "kid": "features", "prc": "features", "isc": "logits"}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 1, 8, 8, dtype=torch.uint8)

    def forward(self, x: torch.Tensor):
        if x.dtype != torch.uint8:
            raise TypeError(f"digits-classifier expects uint8 images, got {x.dtype}")
        h = self.net.features(DigitsCNN.preprocess(x))
        out = {"features": h, "logits": self.net.fc2(h / self.net.feature_scale)}
        return tuple(out[name] for name in self.features_list)


if NAME not in FEATURE_EXTRACTORS_REGISTRY:
    torch_fidelity.register_feature_extractor(NAME, DigitsClassifierExtractor)
