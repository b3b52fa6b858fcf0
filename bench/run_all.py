"""Run every benchmark in one go and print one table: ``make bench``.

Lateness runs first and alone, because it is the figure most sensitive to a
busy CPU. Idle cost then runs in the background (it counts, it does not time)
while burst, memory and store scale run in the foreground. The lateness CDF
goes to ``--png`` and every figure to ``--json``.

    .venv/bin/python -m bench.run_all
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench import burst, idle, lateness, memory
from bench.harness import REPO_ROOT, private_redis

STORE_SCALE_SIZES = ("10000", "100000")


def run_store_scale(console: Console) -> str:
    """Run bench/store_scale.py on SQLite and PostgreSQL and return its output."""
    script = REPO_ROOT / "bench" / "store_scale.py"
    if not script.exists():
        return "bench/store_scale.py is not present"
    console.print(
        f"store scale: SQLite and PostgreSQL, {' and '.join(STORE_SCALE_SIZES)} posts"
    )
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            "--stores",
            "sqlite",
            "postgresql",
            "--sizes",
            *STORE_SCALE_SIZES,
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    return (result.stdout + result.stderr).strip()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--png", type=Path, default=lateness.DEFAULT_PNG)
    parser.add_argument("--json", type=Path, default=Path("docs") / "benchmarks.json")
    parser.add_argument("--idle-minutes", type=float, default=idle.MINUTES)
    options = parser.parse_args()
    console = Console()
    started = time.monotonic()
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="postsched-bench-") as name:
        workdir = Path(name)
        with private_redis(workdir) as redis_server:
            results = lateness.measure(redis_server, workdir, console)
            figures["lateness"] = lateness.summarize(results)
            lateness.draw_cdf(results, options.png)

            idle_dir = workdir / "idle"
            idle_dir.mkdir()
            idle_rows: list[dict[str, Any]] = []
            idle_thread = threading.Thread(
                target=lambda: idle_rows.extend(
                    idle.measure(idle_dir, console, options.idle_minutes)
                )
            )
            idle_thread.start()
            figures["burst"] = burst.measure(redis_server, workdir, console)
            try:
                figures["memory"] = memory.measure(redis_server, workdir, console)
            except Exception as exc:  # noqa: BLE001 - report it and keep the other figures
                console.print(f"memory: failed: {exc!r}")
                figures["memory"] = []
            figures["store_scale"] = run_store_scale(console)
            idle_thread.join()
            figures["idle"] = idle_rows
    figures["duration_s"] = time.monotonic() - started

    lateness.print_rows(figures["lateness"], console)
    burst.print_rows(figures["burst"], console)
    idle.print_rows(figures["idle"], console)
    memory.print_rows(figures["memory"], console)
    store_table = Table(title="Store scale (bench/store_scale.py)")
    store_table.add_column("output")
    store_table.add_row(figures["store_scale"])
    console.print(store_table)
    options.json.parent.mkdir(parents=True, exist_ok=True)
    options.json.write_text(json.dumps(figures, indent=2) + "\n")
    console.print(
        f"wrote {options.png} and {options.json} in {figures['duration_s'] / 60:.1f} min"
    )


if __name__ == "__main__":
    main()
