"""Speed and quality benchmarks: ``python -m benchmarks [NAME ...]`` (``make bench``)."""
