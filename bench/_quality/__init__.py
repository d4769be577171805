"""In-process federations for the learning-quality benchmarks (``bench/sweep.py``, ``bench/robustness.py``).

No Kafka here: the domains train with :func:`meshfl.domain.training.train_local` and the per-round seed the
agent uses, and every version is made by :func:`governance.rounds.aggregate_version`, the function the
governance service and the audit replay call. What differs from a real federation is only the transport.
"""
