"""The training process group: start it, watch its descendants, stop all of it.

`torch.distributed.run` starts each rank with `start_new_session=True`, so the ranks are not in
the launcher's process group: signalling the group alone would orphan them once the launcher
dies. `TrainingProcess` therefore remembers every descendant it has seen and signals their
groups too.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

try:  # resolved here, in the parent: a child between fork and exec only calls it
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _prctl = None
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """`preexec_fn`: the kernel sends this child SIGTERM when the thread that started it dies,
    so a worker killed outright does not leave its training run behind (Linux only)."""
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class TrainingProcess:
    """A command run as its own session, output appended to `log_path`."""

    def __init__(self, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], log_path: Path):
        self.argv = list(argv)
        with log_path.open("ab") as logfile:
            self.popen = subprocess.Popen(
                self.argv,
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        self.pid = self.popen.pid
        self._seen: dict[int, psutil.Process] = {}
        self._last_scan = 0.0
        log.info("started pid %d: %s", self.pid, " ".join(self.argv))

    def poll(self) -> int | None:
        """The exit code of the launcher, or None while it runs."""
        return self.popen.poll()

    def scan(self, min_interval: float = 1.0) -> None:
        """Remember the launcher's descendants (at most once per `min_interval` seconds)."""
        now = time.monotonic()
        if now - self._last_scan < min_interval:
            return
        self._last_scan = now
        try:
            children = psutil.Process(self.pid).children(recursive=True)
        except psutil.Error:
            return
        for child in children:
            self._seen.setdefault(child.pid, child)

    def alive(self) -> list[psutil.Process]:
        """Every process of the run still running: the launcher's group and seen descendants."""
        procs = {p.pid: p for p in self._seen.values() if _running(p)}
        for p in psutil.process_iter():
            try:
                if os.getpgid(p.pid) == self.pid and _running(p):
                    procs[p.pid] = p
            except (ProcessLookupError, psutil.Error):
                continue
        return list(procs.values())

    def stop(self, grace: float) -> int:
        """SIGTERM every process of the run, SIGKILL what is left after `grace` seconds.

        Returns the launcher's exit code (negative: the signal that ended it).
        """
        self.scan(min_interval=0)
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and (self.popen.poll() is None or self.alive()):
            time.sleep(0.1)
        left = self.alive()
        if left:
            log.warning(
                "pid %d: %d processes outlived SIGTERM by %.0fs; sending SIGKILL",
                self.pid,
                len(left),
                grace,
            )
            self._signal_all(signal.SIGKILL)
        return self.reap()

    def reap(self) -> int:
        """Wait for the launcher, then make sure nothing of the run survives it."""
        code = self.popen.wait()
        left = self.alive()
        if left:
            log.warning(
                "pid %d exited (%d) leaving %d processes; killing them", self.pid, code, len(left)
            )
            self._signal_all(signal.SIGKILL)
            psutil.wait_procs(left, timeout=5)
        return code

    def _signal_all(self, sig: signal.Signals) -> None:
        groups = {self.pid}
        for p in self._seen.values():
            if _running(p):
                try:
                    groups.add(os.getpgid(p.pid))
                except ProcessLookupError:
                    continue
        for pgid in groups:
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                pass
            except PermissionError:  # a group we do not own: never ours to signal
                log.warning("not allowed to signal process group %d", pgid)


def _running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
