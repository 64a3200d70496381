"""Running ``pecmae`` under ``accelerate launch`` from tests: several CPU processes, or two "machines" on loopback.

``accelerate launch --cpu --num_processes N`` starts a single process (accelerate hands CPU jobs to mpirun),
so CPU processes are started the way docs/scale.md says: ``--multi_gpu`` (torchrun), which on a machine
without a visible GPU gives gloo workers on the CPU. Every launch has a timeout; the environment pins one
thread per process, the check-in interval to 1 s and the Hub to the local test server.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

LAUNCH_TIMEOUT = 180  # seconds: start-up of 2 workers (import torch) on a loaded 2-core machine, and the work


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1",
        PECMAE_CHECK_SECONDS="1",
        CUDA_VISIBLE_DEVICES="",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def launch_command(
    args: list[str], processes: int = 2, machines: int = 1, machine_rank: int = 0, port: int | None = None
) -> list[str]:
    """``accelerate launch ... -m pecmae_hub.cli ARGS`` for CPU processes (one or several machines)."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes)]
    cmd += ["--num_machines", str(machines), "--mixed_precision", "no", "--dynamo_backend", "no"]
    cmd += ["--main_process_port", str(port or free_port())]
    if machines > 1:
        cmd += ["--machine_rank", str(machine_rank), "--main_process_ip", "127.0.0.1"]
    return cmd + ["-m", "pecmae_hub.cli", *args]


def run_launch(args: list[str], cwd: Path, processes: int = 2, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``pecmae ARGS`` on ``processes`` CPU processes of one machine; returns the finished process."""
    return subprocess.run(
        launch_command(args, processes),
        cwd=cwd,
        env=env or launch_env(),
        capture_output=True,
        text=True,
        timeout=LAUNCH_TIMEOUT,
    )


class TwoMachines:
    """Two ``accelerate launch`` process groups (machine ranks 0 and 1, one process each) on 127.0.0.1."""

    def __init__(self, args: list[str], cwd: Path, env: dict | None = None):
        port = free_port()
        self.logs = [cwd / f"machine{r}.log" for r in (0, 1)]
        self.procs = []
        for rank in (0, 1):
            with open(self.logs[rank], "w") as log:
                self.procs.append(
                    subprocess.Popen(
                        launch_command(args, processes=2, machines=2, machine_rank=rank, port=port),
                        cwd=cwd,
                        env=env or launch_env(),
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,  # its own process group: a "machine" is killed as a whole
                    )
                )

    def wait(self, timeout: float = LAUNCH_TIMEOUT) -> list[int]:
        deadline = time.monotonic() + timeout
        try:
            return [p.wait(timeout=max(1.0, deadline - time.monotonic())) for p in self.procs]
        finally:
            self.kill()

    def output(self, rank: int) -> str:
        return self.logs[rank].read_text(errors="replace")

    def kill(self) -> None:
        import contextlib
        import signal

        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=30)


def worker_pid(launcher_pid: int, rank: int, timeout: float = 120) -> int:
    """The pid of the worker of global ``rank`` started by the launcher ``launcher_pid``."""
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in psutil.Process(launcher_pid).children(recursive=True):
            try:
                if child.environ().get("RANK") == str(rank) and "pecmae_hub.cli" in " ".join(child.cmdline()):
                    return child.pid
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        time.sleep(0.2)
    raise TimeoutError(f"no worker of rank {rank} under process {launcher_pid}")


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.1)
