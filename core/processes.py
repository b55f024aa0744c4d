"""Child processes that must not outlive the process that started them."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import signal
import sys

__all__ = ["die_with_parent"]

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask Linux to send SIGTERM to this process when its parent dies.

    Used as `preexec_fn` of children such as the worker and embedded Redis, so that a
    `softadastra-cloud up` killed with SIGKILL leaves no orphans behind. Elsewhere
    than Linux it does nothing.
    """
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
