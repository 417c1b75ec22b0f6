"""The no-op task both backends run in bench/bench_executor.py."""

from __future__ import annotations

from executor.compat import task


@task()
def noop() -> None:
    return None
