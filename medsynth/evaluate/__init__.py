"""``medsynth evaluate``: does the synthetic data help?

Downstream classifier benchmark (real-only vs real+synthetic vs synthetic-only over real-data
fractions and seeds), fidelity and diversity (FID/KID, k-NN precision/recall, MS-SSIM, class
fidelity), privacy (nearest-neighbour copies), attribute adherence, and a self-contained HTML
report. Entry point: :func:`medsynth.evaluate.run.run_evaluate`.
"""
