"""Helper processes that never outlive the process that started them.

A ``kill -9`` of a job runs none of its clean-up, so pool workers it started would keep running
(and holding memory) as orphans. Linux's ``PR_SET_PDEATHSIG`` asks the kernel to send a signal to
a process when its parent dies; pool initializers call :func:`die_with_parent` first.
Light imports only: it runs in every worker process.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL) -> bool:
    """Asks the kernel to send ``sig`` to this process when its parent exits (Linux only);
    returns whether that is in place. Exits at once if the parent is already gone."""
    if not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return False
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)
    return True


def init_with_parent_death(initializer: Callable[..., Any], *args: Any) -> None:
    """A pool ``initializer`` that ties the worker's life to its parent, then runs ``initializer``."""
    die_with_parent()
    initializer(*args)


def in_forkserver() -> bool:
    """Whether this process is a multiprocessing forkserver (started as ``python -c 'from
    multiprocessing.forkserver import main; ...'``)."""
    return sys.argv[:1] == ["-c"] and "multiprocessing.forkserver" in sys.modules
