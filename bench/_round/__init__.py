"""Private helpers of ``bench/round.py``: the shared workload, the Flower side, the meshfl side."""
