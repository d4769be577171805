"""One Flower client (a subprocess of the bench): the same data and local training as a meshfl agent.

Usage: ``python flower_client.py ADDRESS DOMAIN_DIR TASK_FILE``. Connects with the legacy gRPC
``flwr.client.start_client`` and returns, with each fit, its own training time as ``train_seconds``
(timed like the meshfl agent: from weights received as arrays to the trained state, excluding the
encoding of the reply).
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from flwr.client import NumPyClient, start_client
from flwr.common import Config, NDArrays, Scalar

from meshfl.domain.config import load_domain
from meshfl.domain.data import prepare_local_data
from meshfl.domain.tasks import load_task_file
from meshfl.domain.training import local_seed, train_local
from meshfl.modelspec import expected_shapes, initial_state

GRPC_MAX_MESSAGE_LENGTH = 64 * 1024 * 1024


class BenchClient(NumPyClient):
    """Trains ``task`` on the domain's rows with ``train_local``, exactly as the meshfl agent does."""

    def __init__(self, domain_dir: Path, task_file: Path) -> None:
        self.task = load_task_file(task_file)
        self.domain = load_domain(domain_dir)
        self.data = prepare_local_data(self.domain, self.task)
        self.names = list(expected_shapes(self.task.model))

    def get_parameters(self, config: Config) -> NDArrays:
        return [t.numpy() for t in initial_state(self.task.model, self.task.seed).values()]

    def fit(self, parameters: NDArrays, config: Config) -> tuple[NDArrays, int, dict[str, Scalar]]:
        round_ = int(config["server_round"])
        started = time.perf_counter()
        state = {
            name: torch.from_numpy(np.array(array))
            for name, array in zip(self.names, parameters, strict=True)
        }
        result = train_local(
            self.task,
            state,
            self.data.x_train,
            self.data.y_train,
            seed=local_seed(self.task.seed, self.domain.name, round_),
            holdout=self.data.holdout,
        )
        seconds = time.perf_counter() - started
        arrays = [tensor.numpy() for tensor in result.state.values()]
        return arrays, result.num_examples, {"train_seconds": seconds, "round": round_}


def main(argv: list[str]) -> None:
    address, domain_dir, task_file = argv
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    torch.set_num_threads(1)  # as the meshfl agent does ([training] threads = 1)
    client = BenchClient(Path(domain_dir), Path(task_file))
    start_client(
        server_address=address,
        client=client.to_client(),
        grpc_max_message_length=GRPC_MAX_MESSAGE_LENGTH,
        insecure=True,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
