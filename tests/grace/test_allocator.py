"""``GRACE_MALLOC``: the allocator a launcher gives the processes it starts."""

from __future__ import annotations

import subprocess
import sys

import pytest

from grace import allocator
from grace.allocator import AllocatorError, allocator_in_use, preload_vars
from tests.conftest import service_unavailable
from tests.servers import ROOT


def test_auto_preloads_jemalloc_when_it_is_installed(monkeypatch) -> None:
    monkeypatch.setattr(allocator, "jemalloc_path", lambda: "/opt/lib/libjemalloc.so.2")
    assert preload_vars({}) == {"LD_PRELOAD": "/opt/lib/libjemalloc.so.2"}
    assert preload_vars({"GRACE_MALLOC": "JEMALLOC"}) == {
        "LD_PRELOAD": "/opt/lib/libjemalloc.so.2"
    }
    # Another preloaded library is kept; jemalloc already there is not added twice.
    assert preload_vars({"LD_PRELOAD": "/x/libfoo.so"}) == {
        "LD_PRELOAD": "/opt/lib/libjemalloc.so.2 /x/libfoo.so"
    }
    assert preload_vars({"LD_PRELOAD": "/y/libjemalloc.so.2"}) == {}
    assert preload_vars({"GRACE_MALLOC": "system"}) == {}


def test_without_jemalloc_auto_keeps_the_system_allocator_and_jemalloc_is_refused(
    monkeypatch,
) -> None:
    monkeypatch.setattr(allocator, "jemalloc_path", lambda: None)
    assert preload_vars({}) == {}
    with pytest.raises(AllocatorError, match="GRACE_MALLOC=jemalloc but no jemalloc library"):
        preload_vars({"GRACE_MALLOC": "jemalloc"})


def test_an_unknown_choice_is_named() -> None:
    with pytest.raises(AllocatorError, match=r"GRACE_MALLOC='glibc': expected one of auto, "):
        preload_vars({"GRACE_MALLOC": "glibc"})


@pytest.mark.slow
def test_a_process_started_with_the_variables_runs_on_jemalloc() -> None:
    if allocator.jemalloc_path() is None:
        service_unavailable("jemalloc is not installed (Debian: libjemalloc2)")
    code = "from grace.allocator import allocator_in_use; print(allocator_in_use())"
    started = [sys.executable, "-c", code]
    env = {"PATH": "/usr/bin:/bin", **preload_vars({})}
    on = subprocess.run(started, env=env, capture_output=True, text=True, check=True, cwd=ROOT)
    off = subprocess.run(started, env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert (on.stdout.strip(), off.stdout.strip()) == ("jemalloc", "system")
    assert allocator_in_use(999_999_999) == "unknown"
