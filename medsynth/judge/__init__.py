"""The ``judge`` stage: check synthetic images against per-class criteria (MAGIC), show the
verdicts, and filter a set by them.

The judging core (criteria files, judges, judged folders) lives outside this package in
:mod:`medsynth.judging.criteria`, :mod:`medsynth.judging.judges` and :mod:`medsynth.judging.judged`, because
``refine`` uses it too; this package holds the commands (:mod:`~medsynth.judge.cli`), the
summary (:mod:`~medsynth.judge.show`) and filtering (:mod:`~medsynth.judge.filter`).
"""
