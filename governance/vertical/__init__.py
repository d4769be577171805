"""Vertical federation (split learning) on governance's side: the top network, batch coordination,
labels, split-model versions, and the replay that audits them.

After Li and Toor, "Empowering Data Mesh with Federated Learning" (arXiv 2403.17878), between real
processes over Kafka. Domain side: ``meshfl.vertical``.
"""
