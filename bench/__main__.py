"""``python -m bench``: run every ``bench/*_bench.py``, keep the results, update the README table.

Each benchmark module exposes ``run(*, quick=False, ...) -> dict``. Its result goes to
``bench/results/<name>.json`` (with the machine it ran on), and the README's table between
``<!-- bench:start -->`` and ``<!-- bench:end -->`` is rebuilt from every result file present,
so running one benchmark keeps the others' rows. Figures with a budget (architecture.md) show
it beside the measurement, and each figure shows the value the previous run of its benchmark
recorded (kept in the result as ``previous``) with the load average it was measured at: the
machine may be shared, and a figure taken under load says less. A benchmark that fails is
reported and the others still run.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
README = BENCH_DIR.parent / "README.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def machine() -> dict[str, Any]:
    """CPU model, cores and RAM of this machine, as the README names it."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gib = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count() or 0,
        "ram_gib": ram_gib,
        "arch": platform.machine(),
        "python": platform.python_version(),
    }


def discover() -> list[str]:
    return sorted(p.stem[: -len("_bench")] for p in BENCH_DIR.glob("*_bench.py"))


def run_one(name: str, quick: bool) -> dict[str, Any]:
    module = importlib.import_module(f"bench.{name}_bench")
    run = getattr(module, "run", None)
    if run is None:
        raise RuntimeError(f"bench/{name}_bench.py has no run() function")
    kwargs = {"quick": quick} if "quick" in inspect.signature(run).parameters else {}
    started = time.monotonic()
    result: dict[str, Any] = run(**kwargs)
    result.setdefault("elapsed_s", round(time.monotonic() - started, 1))
    return result


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _budget_for(key: str, budget: Any) -> tuple[str, str]:
    """The budget text and whether it is met, for one figure (empty when it has none)."""
    if not isinstance(budget, dict):
        return "", ""
    entry = budget.get(key)
    if isinstance(entry, dict) and "minimum" in entry:
        return f"≥ {_format(entry['minimum'])}", _format(entry.get("met", ""))
    if isinstance(entry, dict) and "budget" in entry:
        return f"≤ {_format(entry['budget'])}", _format(entry.get("met", ""))
    if f"{key}_min" in budget:
        return f"≥ {_format(budget[f'{key}_min'])}", _format(budget.get("met", ""))
    if f"{key}_max" in budget:
        return f"≤ {_format(budget[f'{key}_max'])}", _format(budget.get("met", ""))
    return "", ""


def figures_of(result: dict[str, Any]) -> dict[str, Any]:
    """The figures a result shows in the table: its summary, else its top-level scalars."""
    figures = result.get("summary")
    if isinstance(figures, dict):
        return figures
    return {
        k: v
        for k, v in result.items()
        if isinstance(v, int | float | str)
        and k not in ("benchmark", "elapsed_s", "load_average_1m", "error")
    }


def previous_of(path: Path) -> dict[str, Any]:
    """What the last stored run of a benchmark measured (its figures and load), if any."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(old, dict) or "error" in old or "skipped" in old:
        return {}
    return {"figures": figures_of(old), "load_average_1m": old.get("load_average_1m")}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def rows(name: str, result: dict[str, Any]) -> list[list[str]]:
    load = _number(result.get("load_average_1m"))
    previous = result.get("previous") or {}
    before, before_load = previous.get("figures") or {}, _number(previous.get("load_average_1m"))
    if "error" in result:
        return [[name, "failed", result["error"].splitlines()[-1][:80], "", "", "", ""]]
    table = []
    for key, value in figures_of(result).items():
        budget, met = _budget_for(key, result.get("budget"))
        was = _format(before[key]) if key in before else ""
        if was and before_load is not None:
            was += f" (load {before_load:g})"
        now_load = "" if load is None else f"{load:g}"
        table.append([name, key, _format(value), budget, met, was, now_load])
    return table


def table(results: dict[str, dict[str, Any]], where: dict[str, Any]) -> str:
    lines = [
        f"Measured on {where.get('cpu', '?')}, {where.get('cores', '?')} cores,"
        f" {where.get('ram_gib', '?')} GiB RAM ({where.get('arch', '?')}, Python"
        f" {where.get('python', '?')}); `make bench` re-runs them.",
        "",
        "| benchmark | figure | measured | budget | met | previous run | load avg |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in sorted(results):
        lines.extend("| " + " | ".join(cells) + " |" for cells in rows(name, results[name]))
    return "\n".join(lines)


def update_readme(text: str) -> None:
    current = README.read_text() if README.exists() else ""
    block = f"{START}\n{text}\n{END}"
    if START in current and END in current:
        head, rest = current.split(START, 1)
        tail = rest.split(END, 1)[1]
        updated = head + block + tail
    else:
        updated = current.rstrip("\n") + "\n\n## Benchmarks\n\n" + block + "\n"
    README.write_text(updated)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short phases (a smoke run)")
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: {discover()})")
    args = parser.parse_args(argv)
    names = args.names or discover()
    unknown = sorted(set(names) - set(discover()))
    if unknown:
        parser.error(f"no such benchmark: {', '.join(unknown)}")
    RESULTS_DIR.mkdir(exist_ok=True)
    where = machine()
    failed = 0
    for name in names:
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        path = RESULTS_DIR / f"{name}.json"
        previous = previous_of(path)
        try:
            result = run_one(name, args.quick)
        except Exception:
            failed += 1
            result = {"error": traceback.format_exc()}
            print(f"bench: {name} failed:\n{result['error']}", file=sys.stderr)
        result["machine"] = where
        result["quick"] = args.quick
        # The 1-minute load average as the run ended (a shared machine makes figures noisy).
        result["load_average_1m"] = round(os.getloadavg()[0], 1)
        if previous:
            result["previous"] = previous
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        tmp.replace(path)
    everything = {p.stem: json.loads(p.read_text()) for p in sorted(RESULTS_DIR.glob("*.json"))}
    update_readme(table(everything, where))
    print(table(everything, where))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
