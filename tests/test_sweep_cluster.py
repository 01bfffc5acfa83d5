"""`recarena sweep --address`: the sweep runs on a Ray cluster it did not start (a one-node head here).

Slow (a Ray head start, ~20 s): run with `pytest -m slow tests/test_sweep_cluster.py`. The command
runs in its own process, so no Ray of the test process is reused instead of the cluster's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests._report_fixtures import write_tiny_data
from tests._sweep_fixtures import write_spec

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_sweep_runs_on_an_existing_cluster_by_address(tmp_path: Path) -> None:
    pytest.importorskip("ray.tune", reason="the optional ray extra is not installed (make install installs it)")
    ray = Path(sys.executable).with_name("ray")
    port = _free_port()
    # Ray's sockets live under its temp dir, and a Unix socket path may not exceed 107 bytes: keep it short.
    state = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    log = (tmp_path / "head.log").open("w")
    # Token authentication off for this throw-away local cluster (its token would live in the temp dir);
    # a real cluster's clients get its token (docs/sweeps.md).
    environment = {**os.environ, "RECARENA_CACHE": str(tmp_path / "cache"), "RAY_AUTH_MODE": "disabled"}
    head = subprocess.Popen(
        [str(ray), "start", "--head", "--block", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
         "--disable-usage-stats", f"--temp-dir={state}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=environment,
    )
    try:
        # The head prints the address other nodes join it by (its node IP, which may not be 127.0.0.1).
        deadline, address = time.monotonic() + 90, None
        while address is None:
            found = re.search(r"ray start --address='([^']+)'", (tmp_path / "head.log").read_text())
            address = found.group(1) if found else None
            if address is None and (head.poll() is not None or time.monotonic() > deadline):
                pytest.fail(f"the Ray head did not come up: {(tmp_path / 'head.log').read_text()[-2000:]}")
            time.sleep(0.5)
        spec = write_spec(tmp_path / "spec", write_tiny_data(tmp_path / "data"), seeds=[0])
        done = subprocess.run(
            [sys.executable, "-m", "recarena.cli.main", "sweep", str(spec), "--out", str(tmp_path / "out"),
             "--address", address],
            cwd=ROOT, env=environment, capture_output=True, text=True, timeout=600,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        results = json.loads((tmp_path / "out" / "results.json").read_text())
        assert results["best"] in {"c0", "c1"}
        for trial in ("c0_s0", "c1_s0"):
            assert json.loads((tmp_path / "out" / "trials" / f"{trial}.json").read_text())["status"] == "done"
    finally:
        if head.poll() is None:
            os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=60)
        log.close()
        shutil.rmtree(state, ignore_errors=True)
