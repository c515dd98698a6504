"""Child processes that end with the service, and a janitor that cleans up after it.

The service's helpers (the forkserver, FHE workers, key checks) must not outlive it, even when it
is killed with SIGKILL and runs no clean-up code. Two mechanisms, because a worker's parent is
the forkserver, not the service:

- :func:`die_with_parent` asks the kernel (``prctl(PR_SET_PDEATHSIG)``) to SIGKILL the calling
  process when its parent dies; :mod:`.forkserver_guard` applies it to the forkserver.
- :func:`die_with` watches a given process (the service) through a pidfd, in a daemon thread,
  and ends the calling process when it exits.

:func:`janitor` runs in its own process and removes the service's work directory (uploaded keys,
concrete's extraction directories) and multiprocessing's own temporary directory (the
forkserver's socket) once the service has exited, however it exited.
"""

from __future__ import annotations

import ctypes
import os
import select
import shutil
import signal
import threading

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """SIGKILL this process when its parent process ends (Linux; elsewhere a no-op)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover - not Linux
        return
    prctl = getattr(libc, "prctl", None)
    if prctl is not None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _wait_for_exit(pid: int) -> None:
    """Block until process ``pid`` has exited (returns at once if it is already gone)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        select.select([fd], [], [])
    finally:
        os.close(fd)


def die_with(pid: int) -> None:
    """End this process (SIGKILL) as soon as process ``pid`` exits."""

    def watch() -> None:
        _wait_for_exit(pid)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name=f"die-with-{pid}", daemon=True).start()


def janitor(pid: int, *directories: str) -> None:
    """Wait for process ``pid`` to exit, then remove ``directories`` (process target)."""
    # Not interrupted with the service by Ctrl-C: it has to run after it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _wait_for_exit(pid)
    for directory in directories:
        shutil.rmtree(directory, ignore_errors=True)
