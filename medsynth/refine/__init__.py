"""``medsynth refine``: preference fine-tuning of a model from a judge's verdicts (MAGIC)."""
