"""``crdtsync demo --kafka``: three replica processes converge through a real broker."""

from __future__ import annotations

import os
import re
import subprocess
import sys

BIN = [sys.executable, "-m", "crdtsync.cli", "demo", "--kafka"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "160"}
    return subprocess.run([*BIN, *args], capture_output=True, text=True, timeout=120, env=env)


def _check(res: subprocess.CompletedProcess[str]) -> None:
    out = res.stdout
    assert res.returncode == 0, out + res.stderr
    assert "converged: same events seen" in out and "NOT converged" not in out
    # while cut off the edge disagreed and held events; afterwards all three agree
    assert re.search(r"the edge holds \d+ events it could not send", out)
    # heartbeats travel on the control topic: a QUORUM write is acknowledged without the edge
    assert re.search(r"QUORUM write segment\[cust-1\]=premium: acknowledged by cloud and on-prem\s+over\s+the control topic", out)
    offline = out.split("while the edge is offline")[1].split("after reconnecting")[0]
    assert "segment[cust-1] *" in offline and "loyal-local" in offline
    final = out.split("after reconnecting")[1]
    assert " * " not in final.split("context")[0] and "off (conflict)" in final
    assert final.count("VectorPosition(") == 3


def test_demo_over_a_broker_it_starts() -> None:
    _check(_run())


def test_demo_over_a_given_broker(crdtsync_kafka: str) -> None:
    res = _run("--bootstrap", crdtsync_kafka)
    _check(res)
    assert f"the broker at {crdtsync_kafka}" in res.stdout


def test_bootstrap_needs_kafka() -> None:
    res = subprocess.run([sys.executable, "-m", "crdtsync.cli", "demo", "--bootstrap", "h:1"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "--bootstrap goes with --kafka" in res.stderr
