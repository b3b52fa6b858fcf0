"""The short chaos run: 300 posts over 30 s with one of each fault.

``bench/chaos.py`` starts its own Redis, store, workers and fake platform,
so this test needs neither the test Redis nor a worker fixture.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "chaos.py"
POSTS = 300
# Below pytest's 120 s timeout, so that a hung run fails here with its output.
RUN_TIMEOUT_S = 110


def test_chaos_short_run(tmp_path: Path) -> None:
    figures_path = tmp_path / "figures.json"
    command = [
        sys.executable,
        str(BENCH),
        f"--posts={POSTS}",
        "--seconds=30",
        "--seed=1",
        f"--json={figures_path}",
    ]
    run = subprocess.run(
        command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False
    )
    output = run.stdout + run.stderr

    assert run.returncode == 0, output
    figures = json.loads(figures_path.read_text())
    for problem, count in figures["problems"].items():
        assert count == 0, f"{problem}: {count}\n{output}"
    assert figures["posts"] == POSTS
    settled = figures["published"] + figures["missed"] + figures["cancelled"]
    assert settled == POSTS, output
    assert figures["cancelled"] > 0
    assert figures["edited"] > 0
    assert figures["faults"]["worker kills"] == 1
    assert figures["faults"]["Redis restarts"] == 1
    if figures["store"] == "postgresql":
        assert figures["faults"]["store cuts"] == 1
    else:
        assert figures["store_cut_skipped"], output
    assert figures["lateness_ms"]["max"] is not None
    assert figures["check_samples"] > 0
    assert "lateness p99" in run.stdout
    assert "longest time without a live check" in run.stdout
