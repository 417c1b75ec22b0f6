"""Queue soak on the embedded default: 10,000 tasks with random priorities, failures and
timeouts, all enqueued over ``POST /api/tasks/`` of a real server while the queue is
bounded at 2,000 READY tasks and two ``run_executor`` processes drain it.

The workers start only once the queue has answered 503 ``queue_full``; clients then wait
the ``Retry-After`` and send the same task again. Checked: every one of the 10,000 tasks
was accepted once (a 503 writes nothing) and reached a terminal state (from the workers'
JSON log: SUCCESSFUL for ``ok``/``flaky``, FAILED for ``fail``/``slow``), each failing or
timing-out task used its attempts, nothing is READY or RUNNING at the end, and the table
keeps exactly ``retain_finished`` finished tasks (never far above it meanwhile).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.scale.support import NO_THROTTLE, api_token, worker_start
from tests.scale.tasks import soak_kind
from tests.servers import GraceServer, manage

pytestmark = pytest.mark.slow

TASKS = 10_000
BOUND = 2_000
RETAIN = 1_000
CLIENTS = 16
EXPECTED = {"ok": "SUCCESSFUL", "flaky": "SUCCESSFUL", "fail": "FAILED", "slow": "FAILED"}


def count(db: Path, where: str) -> int:
    with sqlite3.connect(db, timeout=30) as conn:
        return int(conn.execute(f"SELECT count(*) FROM executor_taskrecord WHERE {where}")  # noqa: S608
                   .fetchone()[0])


async def submit(url: str, token: str, plan: list[tuple[int, str]], runs: str,
                 full: threading.Event) -> tuple[dict[str, str], Counter[int]]:
    """Enqueue every planned task once, retrying after each 503; {task id: tag}, statuses."""
    accepted: dict[str, str] = {}
    statuses: Counter[int] = Counter()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(len(plan)):
        queue.put_nowait(index)

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60,
                                     headers={"Authorization": f"Bearer {token}"}) as http:
            while not queue.empty():
                index = queue.get_nowait()
                priority, kind = plan[index]
                body = {"task": "tests.scale.tasks.soak", "priority": priority,
                        "args": [runs, f"t{index}", kind]}
                while True:
                    response = await http.post("/api/tasks/", json=body)
                    statuses[response.status_code] += 1
                    if response.status_code != 503:
                        break
                    assert response.json()["error"] == "queue_full"
                    full.set()
                    await asyncio.sleep(float(response.headers["retry-after"]))
                assert response.status_code == 202, response.text
                accepted[response.json()["id"]] = f"t{index}"

    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    return accepted, statuses


@pytest.fixture
def quiet_httpx():
    """No INFO line per request from the client library: 10,000 of them cost CPU here."""
    logger = logging.getLogger("httpx")
    level = logger.level
    logger.setLevel(logging.WARNING)
    yield
    logger.setLevel(level)


@pytest.mark.timeout(600)
def test_ten_thousand_tasks_soak_through_a_bounded_queue(tmp_path: Path, quiet_httpx) -> None:
    env = {
        **NO_THROTTLE, "GRACE_LOG_LEVEL": "INFO", "GRACE_ACCESS_LOG": "false",
        "GRACE_EXECUTOR_MAX_PENDING": str(BOUND), "GRACE_EXECUTOR_RETAIN_FINISHED": str(RETAIN),
        "GRACE_EXECUTOR_RETRY_AFTER": "1", "GRACE_EXECUTOR_RETRY_BACKOFF": "0.1",
        "GRACE_EXECUTOR_RETRY_BACKOFF_MAX": "0.5",
        "GRACE_EXECUTOR_API_TASKS": "tests.scale.tasks.soak",
    }
    rng = random.Random(10)
    plan = [(rng.randint(-100, 100), soak_kind(rng)) for _ in range(TASKS)]
    runs = str(tmp_path / "runs")
    db = tmp_path / "db.sqlite3"
    full = threading.Event()
    workers = []
    with GraceServer(tmp_path, env) as server:
        token = api_token(server.env, "soak")
        manage(server.env, "shell", "-v", "0", "-c",
               "from django.contrib.auth import get_user_model; "
               "get_user_model().objects.filter(username='soak').update(is_staff=True)")
        finished_max = 0

        def start_workers_once_full() -> None:
            full.wait(120)
            for n in range(2):
                workers.append(worker_start(server.env, tmp_path / f"worker-{n}.log",
                                            "--concurrency", "4", "--interval", "0.1"))

        starter = threading.Thread(target=start_workers_once_full)
        starter.start()
        started = time.monotonic()
        result: dict = {}

        def send() -> None:
            accepted, statuses = asyncio.run(submit(server.url, token, plan, runs, full))
            result.update(accepted=accepted, statuses=statuses)

        sender = threading.Thread(target=send)
        sender.start()
        try:
            while sender.is_alive() or count(db, "status IN ('READY', 'RUNNING')"):
                finished_max = max(finished_max, count(
                    db, "status IN ('SUCCESSFUL', 'FAILED', 'CANCELLED')"))
                time.sleep(0.25)
                assert time.monotonic() - started < 500, "the soak did not finish"
            sender.join()
            starter.join()
            elapsed = time.monotonic() - started
            for worker in workers:
                assert worker.stop(30) == 0
        finally:
            for worker in workers:
                worker.kill()
        logs = [json.loads(line) for worker in workers for line in worker.log().splitlines()
                if line.startswith("{")]
        assert count(db, "status IN ('READY', 'RUNNING')") == 0
        assert count(db, "status IN ('SUCCESSFUL', 'FAILED', 'CANCELLED')") == RETAIN

    accepted, statuses = result["accepted"], result["statuses"]
    assert statuses[503] > 0 and set(statuses) == {202, 503}, statuses
    assert len(accepted) == TASKS and sorted(accepted.values(), key=lambda t: int(t[1:])) == [
        f"t{i}" for i in range(TASKS)]
    terminal = {}
    for record in logs:
        if record.get("status") in EXPECTED.values() and record.get("task_id") in accepted:
            assert record["task_id"] not in terminal, f"two terminal states: {record}"
            terminal[record["task_id"]] = record["status"]
    assert len(terminal) == TASKS
    kinds = {f"t{i}": kind for i, (_, kind) in enumerate(plan)}
    wrong = {tag: (kinds[tag], terminal[tid]) for tid, tag in accepted.items()
             if terminal[tid] != EXPECTED[kinds[tag]]}
    assert not wrong, list(wrong.items())[:10]
    attempts = Counter(line.split()[0] for line in Path(runs).read_text().splitlines())
    for tag, kind in kinds.items():
        expected = 2 if kind in ("fail", "flaky") else 1
        if kind == "slow":  # a timed-out attempt may be cut before or after its mark
            assert 1 <= attempts[tag] <= 2, (tag, attempts[tag])
        else:
            assert attempts[tag] == expected, (tag, kind, attempts[tag])
    assert finished_max <= RETAIN + 1_500, finished_max
    assert not any('"ERROR"' in line and "Traceback" in line for line in server.log().splitlines())
    print(json.dumps({"tasks": TASKS, "seconds": round(elapsed, 1), "statuses": statuses,
                      "kinds": Counter(kinds.values()), "finished_max_seen": finished_max,
                      "terminal": Counter(terminal.values())}))
