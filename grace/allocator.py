"""Which ``malloc`` Grace's processes run on: jemalloc when it is installed, else glibc's.

A server keeps a few dozen threads (pipeline stages, each with its own SQLite connection
and statement cache) that allocate and free side by side. glibc's malloc leaves that memory
fragmented: after 20,000 websocket chats a server measured 1.09-1.12x its resident memory
after 2,000, all of the growth free space inside malloc's arenas (mallinfo2), none of it
Python objects (tracemalloc) or SQLite (``sqlite3_memory_used``). Under jemalloc the same
run stays within a few per cent (README, "Memory").

An allocator is chosen when a process starts, so this module only builds the environment
of the processes a launcher starts (``bin/run.py``: the server and the worker), through
``LD_PRELOAD``. ``GRACE_MALLOC``: ``auto`` (the default: jemalloc when found), ``jemalloc``
(refuse to start without it) or ``system`` (glibc's, as the process was started).
"""

from __future__ import annotations

import ctypes.util
import os
from collections.abc import Mapping
from pathlib import Path

from grace.conf import Setting

CHOICES = ("auto", "jemalloc", "system")
MALLOC = Setting(
    "GRACE_MALLOC", "MALLOC", str, "auto",
    "The allocator `bin/run.py` (`make run`) gives the server and the worker: `auto` jemalloc "
    "when installed (Debian: `libjemalloc2`), `jemalloc` refuse to start without it, `system` "
    "glibc's malloc.",
    choices=CHOICES,
)
# Debian/Ubuntu (libjemalloc2), Fedora/RHEL (jemalloc), Alpine, Homebrew-on-Linux layouts.
JEMALLOC_PATHS = (
    "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
    "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
    "/usr/lib64/libjemalloc.so.2",
    "/usr/lib/libjemalloc.so.2",
    "/usr/local/lib/libjemalloc.so.2",
)


class AllocatorError(ValueError):
    """``GRACE_MALLOC`` is not one of the choices, or asks for a jemalloc that is missing."""


def jemalloc_path() -> str | None:
    """The jemalloc shared library of this machine, or ``None``."""
    for candidate in JEMALLOC_PATHS:
        if Path(candidate).is_file():
            return candidate
    name = ctypes.util.find_library("jemalloc")  # e.g. "libjemalloc.so.2" from ldconfig
    return name or None


def preload_vars(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables to add to a child's environment so that it runs on the chosen
    allocator: ``{"LD_PRELOAD": ...}`` or nothing. Raises ``AllocatorError`` for a bad
    ``GRACE_MALLOC``."""
    env = os.environ if env is None else env
    choice = env.get(MALLOC.env, "").strip().lower() or MALLOC.default
    if choice not in CHOICES:
        raise AllocatorError(
            f"GRACE_MALLOC={env['GRACE_MALLOC']!r}: expected one of {', '.join(CHOICES)}"
        )
    if choice == "system":
        return {}
    path = jemalloc_path()
    if path is None:
        if choice == "jemalloc":
            raise AllocatorError(
                "GRACE_MALLOC=jemalloc but no jemalloc library was found (Debian: "
                "apt-get install libjemalloc2; looked in " + ", ".join(JEMALLOC_PATHS) + ")"
            )
        return {}
    preload = env.get("LD_PRELOAD", "")
    if "jemalloc" in preload:
        return {}
    return {"LD_PRELOAD": f"{path} {preload}".strip()}


def allocator_in_use(pid: int | str = "self") -> str:
    """``"jemalloc"`` when the process has jemalloc mapped, else ``"system"``."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return "unknown"
    return "jemalloc" if "libjemalloc" in maps else "system"
