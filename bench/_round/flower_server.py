"""The Flower server (a subprocess of the bench): legacy ``start_server`` with a timed FedAvg.

Usage: ``python flower_server.py ADDRESS TASK_FILE CLIENTS OUT_JSON``. Runs ``task.rounds`` rounds of
FedAvg over ``CLIENTS`` clients, no evaluation, starting from the task's version 0 weights (as meshfl
does), and writes one record per round: when ``aggregate_fit`` began and ended (``time.time()``) and
every client's reported ``train_seconds``.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from flwr.common import FitRes, Parameters, Scalar, ndarrays_to_parameters
from flwr.server import ServerConfig, start_server
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg

from meshfl.domain.tasks import load_task_file
from meshfl.modelspec import initial_state

GRPC_MAX_MESSAGE_LENGTH = 64 * 1024 * 1024


class TimedFedAvg(FedAvg):
    """Flower's FedAvg, recording when each round's results are in and what training took."""

    def __init__(self, out: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.out = out
        self.records: list[dict[str, Any]] = []

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        began = time.time()
        aggregated = super().aggregate_fit(server_round, results, failures)
        self.records.append(
            {
                "round": server_round,
                "began": began,
                "ended": time.time(),
                "train_seconds": [float(res.metrics["train_seconds"]) for _, res in results],
                "failures": len(failures),
            }
        )
        self.out.write_text(json.dumps(self.records))
        return aggregated


def main(argv: list[str]) -> None:
    address, task_file, clients, out = argv
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    task = load_task_file(Path(task_file))
    count = int(clients)
    initial = [t.numpy() for t in initial_state(task.model, task.seed).values()]
    strategy = TimedFedAvg(
        Path(out),
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=count,
        min_available_clients=count,
        initial_parameters=ndarrays_to_parameters(initial),
        on_fit_config_fn=lambda round_: {"server_round": round_},
    )
    start_server(
        server_address=address,
        config=ServerConfig(num_rounds=task.rounds),
        strategy=strategy,
        grpc_max_message_length=GRPC_MAX_MESSAGE_LENGTH,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
