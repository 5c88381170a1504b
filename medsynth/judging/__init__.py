"""The judging core, shared by the ``judge`` and ``refine`` stages (and evaluate's checks):
criteria files (``criteria``, built-in files in ``criteria_files/``), the judges (``judges``: the
MLLM judge, the rule judges), the real-features judge (``realjudge``) and the judge stage's config,
run and judged folders (``judged``). ``medsynth/judge/`` keeps only the commands.
"""
