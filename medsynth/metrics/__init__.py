"""Measurements shared by more than one stage (evaluate's report, generate's twin check).

- :mod:`medsynth.metrics.images`: real and synthetic pixels -> float tensors in [0, 1], one size;
- :mod:`medsynth.metrics.features`: the offline EfficientNet-Lite0 image features;
- :mod:`medsynth.metrics.privacy`: nearest-neighbour distances and the near-copy share.
"""
