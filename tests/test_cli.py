"""The crdtsync command: demo converges, inspect shows its events, status and compact work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BIN = [sys.executable, "-m", "crdtsync.cli"]


def _run(*args: str, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "120"}
    return subprocess.run([*BIN, *args], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("demo") / "data"
    res = _run("demo", "--data", str(d))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "converged" in res.stdout and "NOT converged" not in res.stdout
    assert "disable wins" in res.stdout
    return d


def test_demo_converges_and_keeps_its_data(demo_dir: Path) -> None:
    assert (demo_dir / "cloud" / "log").is_dir() and (demo_dir / "edge-7" / "identity.json").exists()


def test_inspect_shows_the_demo_events_as_json(demo_dir: Path) -> None:
    res = _run("inspect", str(demo_dir / "edge-7"), "--json", "--field", "checkout_v2")
    assert res.returncode == 0, res.stderr
    events = [json.loads(line) for line in res.stdout.splitlines()]
    origins = {e["origin"].split("~")[0] for e in events}
    assert origins == {"cloud", "edge-7"}, "the edge's log holds its own toggle and the cloud's"
    assert all(e["field"] == "checkout_v2" and e["type"] == "dwflag" for e in events)
    res = _run("inspect", str(demo_dir / "cloud"), "--origin", "edge-7", "--limit", "5")
    assert res.returncode == 0 and "edge-7" in res.stdout


def test_status_and_compact(demo_dir: Path) -> None:
    res = _run("status", str(demo_dir / "onprem"))
    assert res.returncode == 0, res.stderr
    assert "onprem~" in res.stdout and "purchases_7d" in res.stdout
    res = _run("compact", str(demo_dir / "onprem"))
    assert res.returncode == 0, res.stderr
    assert "snapshot at position" in res.stdout
    res = _run("status", str(demo_dir / "onprem"))
    assert res.returncode == 0 and "purchases_7d" in res.stdout


def test_demo_refuses_a_non_empty_directory(demo_dir: Path) -> None:
    res = _run("demo", "--data", str(demo_dir))
    assert res.returncode != 0 and "not empty" in (res.stdout + res.stderr)


def test_read_commands_refuse_directories_that_are_not_replicas(tmp_path: Path) -> None:
    for cmd in ("inspect", "status", "compact"):
        res = _run(cmd, str(tmp_path))
        assert res.returncode != 0 and "Error:" in res.stderr, (cmd, res.stderr)
    assert list(tmp_path.iterdir()) == [], "a refused command must not create files"
