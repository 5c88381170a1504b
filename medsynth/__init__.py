"""medsynth: synthetic labelled medical image datasets (describe, train, generate, evaluate)."""

__version__ = "0.1.0"
