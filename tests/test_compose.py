"""docker-compose.yml validates, where a Compose client is installed."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def compose_command() -> list[str] | None:
    """Return the Compose client: the docker plugin, or the standalone docker-compose."""
    if shutil.which("docker"):
        probe = subprocess.run(
            ["docker", "compose", "version"], capture_output=True, text=True
        )
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_compose_file_validates() -> None:
    command = compose_command()
    if command is None:
        pytest.skip("no Compose client installed (docker compose or docker-compose)")
    env = dict(os.environ, FLOWER_BASIC_AUTH="admin:secret")
    result = subprocess.run(
        [*command, "-f", str(ROOT / "docker-compose.yml"), "config", "--services"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == {
        "mongo",
        "redis",
        "worker-1",
        "worker-2",
        "flower",
    }
