"""Run a ``pmc2`` command as a child of ``pmc2 up`` that dies with its parent.

``python -m pmc2._child PARENT_PID ARGS...`` asks the kernel (Linux ``prctl
PR_SET_PDEATHSIG``) to send this process SIGTERM when its parent dies, checks that the
parent is still the one that started it (it may have died before the request took
effect), and then runs ``pmc2 ARGS...``. So a ``pmc2 up`` that is killed outright
(SIGKILL, a crash) leaves no servers behind; an orderly stop terminates the children
itself. On systems without ``prctl`` the command simply runs.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

__all__ = ["main"]

_PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - exotic libc
            pass
    if os.getppid() != parent:
        raise SystemExit(143)


def main(argv: list[str]) -> int:
    if not argv or not argv[0].isdigit():
        print("usage: python -m pmc2._child PARENT_PID ARGS...", file=sys.stderr)
        return 2
    _die_with_parent(int(argv[0]))
    from pmc2.cli import main as pmc2_main

    return pmc2_main(argv[1:])


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
