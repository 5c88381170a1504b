"""``python -m medsynth``: the same command as ``medsynth``."""

from medsynth.cli import main

main()
