"""The data stage: ``medsynth data`` (ingest, import sources, info, normalize, the demo phantoms).
The shared image and dataset-folder I/O is :mod:`medsynth.imaging`."""
