"""The main job, ``postsched run``, as a user runs it: a subprocess on the embedded defaults."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

SUMMARY = re.compile(
    r"^published (\d+)/(\d+) posts, lateness p50 (\d+) ms, p99 (\d+) ms, max (\d+) ms$"
)


def test_run_publishes_sample(tmp_path: Path) -> None:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("POSTSCHED_")
    }
    env["POSTSCHED_DATA_DIR"] = str(tmp_path)
    env["COLUMNS"] = "120"
    # The run folder goes under the test's own folder, which pytest cleans up.
    env["TMPDIR"] = str(tmp_path)
    completed = subprocess.run(
        [sys.executable, "-m", "scheduler.cli", "run", "--window", "10"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = completed.stdout.strip().splitlines()
    assert completed.returncode == 0, completed.stdout + completed.stderr
    summary = SUMMARY.match(lines[-1])
    assert summary is not None, lines[-1]
    published, total, p50, p99, maximum = map(int, summary.groups())
    assert total >= 30
    assert published == total
    assert p50 <= p99 <= maximum
    assert maximum < 1000
    assert running_embedded_servers(tmp_path) == []


def running_embedded_servers(folder: Path) -> list[str]:
    """Return the command lines of redis-server processes with a socket under ``folder``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (
                (proc / "cmdline")
                .read_bytes()
                .replace(b"\0", b" ")
                .decode(errors="replace")
            )
        except OSError:
            continue
        if "redis-server" in cmdline and str(folder) in cmdline:
            found.append(cmdline)
    return found
