"""``medsynth train``: class- and text-conditioned diffusion training (VAP-Diffusion + CCELLA)."""
