"""What several benchmarks share: latency percentiles and the command line of a module.

``percentile`` and ``latency_ms`` turn timed samples (seconds) into the p50/p99/max figures
the results report; ``main`` is the ``python -m bench.<name>`` entry point of a benchmark whose
``run`` takes ``quick`` and ``directory``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def percentile(samples: list[float], fraction: float) -> float:
    """The sample at ``fraction`` of the sorted samples (nearest rank); NaN when there is none."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


def latency_ms(samples: list[float], digits: int = 3) -> dict[str, float]:
    """p50, p99 and max of ``samples`` (seconds) in milliseconds."""
    return {
        "p50_ms": round(percentile(samples, 0.50) * 1000, digits),
        "p99_ms": round(percentile(samples, 0.99) * 1000, digits),
        "max_ms": round(max(samples, default=float("nan")) * 1000, digits),
    }


def main(
    run: Callable[..., dict[str, Any]],
    doc: str | None,
    *,
    quick_help: str = "short phases (smoke run)",
    dir_help: str = "where to put the data (default: /tmp)",
) -> None:
    """Parse ``--quick`` and ``--dir``, call ``run(quick=…, directory=…)``, print its JSON."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else None)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--dir", type=Path, help=dir_help)
    args = parser.parse_args()
    print(json.dumps(run(quick=args.quick, directory=args.dir), indent=2))
