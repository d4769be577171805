"""The domain side of meshfl: a domain's config, its data products and contracts, local training.

Modules: ``config`` (``domain.toml``), ``contract`` (a file against its data contract), ``data``
(tensors for a task, which products serve it), ``tasks`` (task files), ``training`` (local training
and evaluation), ``agent`` (the daemon that wires these to Kafka).
"""
