"""The EfficientNet-Lite0 feature extractor lives in :mod:`medsynth.metrics.features` (shared with
generate's twin privacy check); re-exported here for evaluate's modules."""

from medsynth.metrics.features import FEATURE_DIM, FEATURE_NAME, FeatureExtractor

__all__ = ["FEATURE_DIM", "FEATURE_NAME", "FeatureExtractor"]
