"""Time ``postsched import`` of a large bulk CSV file into a new SQLite store.

Writes a bulk CSV file of ``--rows`` rows (100,000 by default) into a
temporary folder, runs ``postsched import`` on it in a subprocess, as an
operator would, and prints the wall time and rows per second. The store is
a new SQLite file in the same folder. No broker is set and no embedded Redis
runs in that folder, so the command stores the posts and warns that it could
not wake the check chain. That wake-up is one Redis call and is not measured.

    .venv/bin/python bench/import_speed.py
    .venv/bin/python bench/import_speed.py --rows 20000 --profile
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

DEFAULT_ROWS = 100_000
# The row count of the target, and the time it must take at most.
TARGET_ROWS = 100_000
TARGET_S = 60.0


def write_bulk_csv(path: Path, rows: int) -> None:
    """Write ``rows`` bulk rows due one minute apart from tomorrow, a third with a link."""
    start = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(days=1)
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.writer(stream)
        for index in range(rows):
            due = start + timedelta(minutes=index)
            link = f"https://example.org/posts/{index}" if index % 3 == 0 else ""
            writer.writerow(
                [
                    due.strftime("%Y-%m-%d %H:%M"),
                    f"Post number {index}: doors open at six, talks at seven",
                    link,
                ]
            )


def run_import(folder: Path, csv_path: Path, profile: bool) -> float:
    """Run ``postsched import`` and return its wall time in seconds."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("POSTSCHED_")
    }
    env.update(
        POSTSCHED_DATA_DIR=str(folder),
        POSTSCHED_STORE_URL=f"sqlite:///{folder / 'posts.db'}",
        POSTSCHED_OUTBOX_DIR=str(folder / "outbox"),
    )
    command = [sys.executable]
    if profile:
        command += ["-m", "cProfile", "-s", "cumulative"]
    command += ["-m", "scheduler.cli", "import", str(csv_path), "--tz", "UTC"]
    started = time.perf_counter()
    completed = subprocess.run(command, env=env, capture_output=True, text=True)
    elapsed_s = time.perf_counter() - started
    if completed.returncode != 0:
        sys.exit(
            f"postsched import failed with {completed.returncode}: {completed.stderr}"
        )
    if profile:
        print("\n".join(completed.stdout.splitlines()[:60]))
    return elapsed_s


def main() -> None:
    """Write the file, time the import and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="rows to import")
    parser.add_argument(
        "--profile", action="store_true", help="run the import under cProfile"
    )
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="postsched-bench-") as name:
        folder = Path(name)
        csv_path = folder / "posts.csv"
        write_bulk_csv(csv_path, options.rows)
        size_mb = csv_path.stat().st_size / 1_000_000
        elapsed_s = run_import(folder, csv_path, options.profile)

    rate = options.rows / elapsed_s
    print(
        f"imported {options.rows:,} rows ({size_mb:.1f} MB) in {elapsed_s:.1f} s: "
        f"{rate:,.0f} rows/s, process start included"
    )
    if options.rows == TARGET_ROWS:
        verdict = "within" if elapsed_s <= TARGET_S else "over"
        print(f"{verdict} the target of {TARGET_ROWS:,} rows in {TARGET_S:g} s")


if __name__ == "__main__":
    main()
