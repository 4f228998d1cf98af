"""Loopback deployments for the tests: a SuperLink and SuperNodes started with the README's commands,
each in its own session, logging to files, and ended by PID (with everything they spawned)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from fedmeta import procs
from fedmeta.loopback import BIN, Processes, flwr_env, free_port, wait_online, wait_port
from helpers import processes_with_tmpdir


def wait_for(what: str, condition, timeout: float, every: float = 0.1, alive: subprocess.Popen | None = None):
    """Poll ``condition()`` until it returns something truthy (returned); TimeoutError naming ``what``
    after ``timeout`` seconds, or at once when the process ``alive`` has exited."""
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        if alive is not None and alive.poll() is not None:
            raise AssertionError(f"{what}: the process {alive.args[:3]} exited with {alive.returncode} first")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f}s")
        time.sleep(every)


class Loopback:
    """One deployment on 127.0.0.1 under ``workdir``: the flwr CLI's connection ``deploy`` in
    ``workdir/flwr-home/config.toml`` (``connection`` is its body: address and TLS settings), every
    process's output in ``workdir/logs/<name>.log`` and ``TMPDIR=workdir/tmp`` in its environment,
    which is how :meth:`leftovers` finds whatever outlived :meth:`close`, orphans included."""

    def __init__(self, workdir: Path, root: Path, connection: str) -> None:
        self.workdir, self.root = workdir, root
        self.port = free_port()
        home = workdir / "flwr-home"
        self.logs, self.tmp = workdir / "logs", workdir / "tmp"
        for folder in (home, self.tmp):
            folder.mkdir(parents=True, exist_ok=True)
        (home / "config.toml").write_text(f'[superlink]\ndefault = "deploy"\n\n[superlink.deploy]\n'
                                          f'address = "127.0.0.1:{self.port}"\n{connection}')
        self.env = {**flwr_env(home, root), "TMPDIR": str(self.tmp)}
        self.processes = Processes(workdir, self.env, self.logs)

    @property
    def started(self) -> list[subprocess.Popen]:
        return self.processes.started

    def start(self, name: str, cmd: list[str]) -> subprocess.Popen:
        """Start ``cmd`` (a program in the venv's bin) in a session of its own."""
        return self.processes.start(name, [str(BIN / cmd[0]), *cmd[1:]])

    def start_superlink(self, *flags: str) -> subprocess.Popen:
        """``flower-superlink`` on this deployment's port (``flags``: TLS, auth), its state in ``state.db``;
        returns once it listens."""
        link = self.start("superlink", ["flower-superlink", *flags, "--host", "127.0.0.1", "--port", str(self.port),
                                        "--disable-runtime-dependency-installation",
                                        "--database", str(self.workdir / "state.db")])
        wait_port(self.port)
        return link

    def supernode_cmd(self, node_config: str, *flags: str, port: int | None = None,
                      program: tuple[str, ...] = ("flower-supernode",)) -> list[str]:
        """A SuperNode of this deployment (``program``: Flower's, or ``("fedmeta", "supernode")``)."""
        return [*program, *flags, "--superlink", f"127.0.0.1:{self.port}", "--host", "127.0.0.1",
                "--port", str(port or free_port()), "--node-config", node_config]

    def flwr(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run the flwr CLI to completion."""
        return subprocess.run([str(BIN / "flwr"), *args], cwd=self.workdir, env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def wait_online(self, count: int, timeout: float = 60.0) -> None:
        """Wait until the SuperLink lists ``count`` online SuperNodes."""
        wait_online(self.env, self.workdir, count, timeout)

    def log(self, name: str) -> str:
        return self.processes.log(name)

    def close(self) -> None:
        """End every started process and all its descendants by PID, then whatever else carries this
        deployment's ``TMPDIR`` (a process whose parent was killed)."""
        self.processes.stop()
        orphans = processes_with_tmpdir(self.tmp)
        if orphans:
            procs.terminate(orphans, grace=5.0)

    def leftovers(self) -> list[str]:
        """What still runs: descendants of the started processes and processes with this ``TMPDIR``."""
        return ([f"pid {p} (descendant of {proc.pid})" for proc in self.started for p in procs.live_descendants(proc.pid)]
                + [f"pid {p} (TMPDIR)" for p in processes_with_tmpdir(self.tmp)])
