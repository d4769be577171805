"""The coverage-guided fuzzer behind ``bench/fuzz.py``: targets, seeds and the worker loop."""
