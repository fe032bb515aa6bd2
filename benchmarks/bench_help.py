"""Benchmark: how long each tool's `--help` takes, and what it imports.

Runs `python tools/<tool>.py --help` RUNS times per tool (default 20), the tools taking turns
so that a change in the machine's load hits them alike, after the same number of `python -c
"import click"` runs as the floor (a tool cannot answer faster than Python plus click). Prints,
per command, the median wall time, the median CPU time (user + system, which a loaded machine
inflates less than wall time) and the number of modules `python -X importtime` reports.

    python benchmarks/bench_help.py [--runs N] [--repo PATH]

`--repo` measures another checkout (for example an older commit unpacked with `git archive`), so
before and after can be compared on the same machine at the same time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_once(command: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run of `command`."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {process.returncode}")
    return wall, usage.ru_utime + usage.ru_stime


def module_count(command: list[str]) -> int:
    done = subprocess.run([command[0], "-X", "importtime", *command[1:]], capture_output=True,
                          text=True, check=True)
    return sum(1 for line in done.stderr.splitlines() if line.startswith("import time:"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--repo", type=Path, default=REPO)
    options = parser.parse_args()

    commands = {"python -c 'import click' (floor)": [sys.executable, "-c", "import click"]}
    for tool in sorted((options.repo / "tools").glob("*.py")):
        commands[f"{tool.name} --help"] = [sys.executable, str(tool), "--help"]
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for command in commands.values():  # warm the file cache and .pyc files
        run_once(command)
    for _ in range(options.runs):
        for name, command in commands.items():
            samples[name].append(run_once(command))

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"repo {options.repo}, {options.runs} runs each, load average {load:.2f}, "
          f"{os.cpu_count()} CPUs")
    print(f"{'command':<42} {'wall (median)':>14} {'CPU (median)':>13} {'modules':>8}")
    for name, command in commands.items():
        wall = statistics.median(s[0] for s in samples[name])
        cpu = statistics.median(s[1] for s in samples[name])
        print(f"{name:<42} {wall * 1000:>11.0f} ms {cpu * 1000:>10.0f} ms "
              f"{module_count(command):>8}")


if __name__ == "__main__":
    main()
