"""What the figures were measured on: CPU, memory, load, and the versions of everything involved."""

from __future__ import annotations

import os
import platform
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return float("nan")


def _package(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def describe(kafka: str) -> list[tuple[str, str]]:
    """(label, value) rows for the report header."""
    import confluent_kafka

    return [
        ("CPU", f"{_cpu_model()}, {os.cpu_count()} logical cores"),
        ("RAM", f"{_ram_gib():.1f} GiB"),
        ("OS", f"{platform.system()} {platform.release()}"),
        ("Python", sys.version.split()[0]),
        ("torch", _package("torch")),
        ("flwr", _package("flwr")),
        ("confluent-kafka", f"{_package('confluent-kafka')} (librdkafka {confluent_kafka.libversion()[0]})"),
        ("Kafka", kafka),
        ("load average at start", load_average()),
    ]
