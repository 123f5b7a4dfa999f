"""A real multi-node Ray cluster on this machine, for tests: a head node that runs no tasks and
worker nodes, each its own ``ray start --block`` process group with its own temp dir and working
directory, stopped (and killed if need be) on exit. Nothing reaches beyond the machine: Ray
resolves 127.0.0.1 to the host's own address by design (``resolve_ip_for_localhost``)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# A throwaway cluster: no token to share between its nodes, a dead node noticed within ~2 s.
ENV = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_failure_threshold": "4",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    def __init__(self, workers: int = 2, cpus_per_worker: int = 1, timeout_s: float = 120) -> None:
        self.workers, self.cpus, self.timeout_s = workers, cpus_per_worker, timeout_s
        # short: Ray's unix sockets live under the temp dir (108-byte path limit)
        self.root = Path(tempfile.mkdtemp(prefix="clray", dir="/tmp"))
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen] = []
        self.node_dirs: list[Path] = []

    def _start(self, name: str, args: list[str]) -> subprocess.Popen:
        cwd = self.root / name
        cwd.mkdir()
        ray = Path(sys.executable).with_name("ray")
        proc = subprocess.Popen(
            [str(ray), "start", *args, "--node-ip-address", "127.0.0.1", "--block"]
            + ["--dashboard-agent-listen-port", str(_free_port())]
            + ["--temp-dir", str(self.root / f"t-{name}"), "--disable-usage-stats"],
            cwd=cwd,
            env={**os.environ, **ENV},
            stdout=(self.root / f"{name}.log").open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped without touching others'
        )
        self.procs.append(proc)
        return proc

    def __enter__(self) -> LocalCluster:
        head = ["--head", "--port", str(self.port), "--num-cpus", "0"]
        head += ["--include-dashboard", "false", "--ray-client-server-port", str(_free_port())]
        self._start("head", head)
        for i in range(self.workers):
            self._start(f"node{i}", ["--address", self.address, "--num-cpus", str(self.cpus)])
            self.node_dirs.append(self.root / f"node{i}")
        self._wait_until_up()
        return self

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        status = None
        ray = str(Path(sys.executable).with_name("ray"))
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"a ray node exited while starting: {self.logs()}")
            status = subprocess.run(
                [ray, "status", "--address", self.address],
                capture_output=True,
                text=True,
                env={**os.environ, **ENV},
                timeout=60,
            )
            if status.returncode == 0 and f"{self.workers * self.cpus}.0 CPU" in status.stdout:
                return
            time.sleep(1)
        raise RuntimeError(f"cluster not up in {self.timeout_s} s: {status and status.stdout}")

    def kill_raylet(self, node: int) -> int:
        """SIGKILL the raylet of worker node ``node``; returns its pid."""
        import psutil

        group = psutil.Process(self.procs[1 + node].pid)
        for child in group.children(recursive=True):
            if child.name() == "raylet":
                child.kill()
                return child.pid
        raise RuntimeError(f"node {node} has no raylet")

    def logs(self) -> str:
        return "\n".join(p.read_text()[-2000:] for p in sorted(self.root.glob("*.log")))

    def __exit__(self, *exc) -> None:
        """SIGKILL every process of every node (a graceful stop drains for up to 30 s)."""
        import psutil

        procs = []
        for proc in self.procs:
            try:
                leader = psutil.Process(proc.pid)
                procs += [leader, *leader.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        procs += [  # workers a dead raylet left behind, found by the temp dir they run under
            p
            for p in psutil.process_iter(["cmdline"])
            if any(str(self.root) in part for part in p.info["cmdline"] or [])
        ]
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        psutil.wait_procs(procs, timeout=20)
        for proc in self.procs:
            proc.wait(5)
