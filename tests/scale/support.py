"""Helpers of the scale-out and proof tests: migrated database templates, servers started
side by side, worker processes, API tokens, PostgreSQL queries, and hosts in network
namespaces reaching PostgreSQL over a veth link."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.servers import ROOT, GraceServer, manage, migrate, project_env

NO_THROTTLE = {"GRACE_THROTTLE_USER": "off", "GRACE_THROTTLE_ANON": "off"}


def wait_until(predicate: Callable[[], Any], timeout: float, step: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"condition not met within {timeout}s")


# --- SQLite templates and servers ------------------------------------------------------


def sqlite_template(tmp: Path, env: dict[str, str] | None = None) -> Path:
    """A folder holding migrated ``db.sqlite3`` and ``metrics.sqlite3`` to copy from."""
    template = tmp / "template"
    template.mkdir()
    migrate(project_env(template, env))
    for name in ("db.sqlite3", "metrics.sqlite3"):
        with sqlite3.connect(template / name) as conn:  # everything in the main file
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return template


def sqlite_copy(template: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("db.sqlite3", "metrics.sqlite3"):
        shutil.copyfile(template / name, folder / name)
    return folder


def servers_start(servers: Iterable[GraceServer]) -> list[GraceServer]:
    """Start servers side by side (each waits for its own ``/api/health``)."""
    servers = list(servers)
    with ThreadPoolExecutor(max_workers=max(1, len(servers))) as pool:
        started = list(pool.map(lambda s: _start_or_none(s), servers))
    failed = [error for error in started if error is not None]
    if failed:
        servers_stop(servers)
        raise failed[0]
    return servers


def _start_or_none(server: GraceServer) -> BaseException | None:
    try:
        server.__enter__()
    except BaseException as exc:  # noqa: BLE001 - reported by servers_start
        return exc
    return None


def servers_stop(servers: Iterable[GraceServer]) -> None:
    for server in servers:
        if server.proc is not None and server.proc.poll() is None:
            server.proc.terminate()
    for server in servers:
        if server.proc is not None:
            try:
                server.__exit__(None, None, None)
            except Exception:  # noqa: BLE001 - stopping the rest matters more
                pass


def user_create(env: dict[str, str], user: str, *, staff: bool = False) -> None:
    manage(env, "shell", "-v", "0", "-c",
           "from django.contrib.auth import get_user_model\n"
           f"get_user_model().objects.get_or_create(username={user!r}, "
           f"defaults={{'is_staff': {staff!r}}})\n")


def api_token(env: dict[str, str], user: str = "scale") -> str:
    """A new API token for ``user`` (created when missing): ``manage.py create_api_token``."""
    user_create(env, user)
    out = manage(env, "create_api_token", user, "--name", "scale", timeout=120).stdout
    return out.strip().splitlines()[-1]


def rss_kib(pid: int) -> int:
    """Resident memory of a process, in KiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


# --- PostgreSQL ------------------------------------------------------------------------


def pg_dsn(url: str) -> str:
    return url.replace("postgres://", "postgresql://", 1)


def pg_rows(url: str, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
    import psycopg

    with psycopg.connect(pg_dsn(url), connect_timeout=5) as conn:
        cursor = conn.execute(sql, list(params))
        return cursor.fetchall() if cursor.description else []


def pg_execute(url: str, *statements: str) -> None:
    import psycopg

    with psycopg.connect(pg_dsn(url), autocommit=True, connect_timeout=5) as conn:
        for statement in statements:
            conn.execute(statement)


# --- worker processes ------------------------------------------------------------------


class Process:
    """A child process with its output in a file; ``prefix`` runs it elsewhere
    (``ip netns exec NAME``)."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path,
                 prefix: list[str] | None = None) -> None:
        self.log_path = log
        self._log = open(log, "w")  # noqa: SIM115
        self.proc = subprocess.Popen([*(prefix or []), *args], env=env, cwd=ROOT,
                                     stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(10)
        finally:
            self._log.close()

    def stop(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)
        finally:
            self._log.close()


def worker_start(env: dict[str, str], log: Path, *args: str,
                 prefix: list[str] | None = None) -> Process:
    return Process([sys.executable, str(ROOT / "manage.py"), "run_executor", *args], env, log,
                   prefix)


# --- hosts in network namespaces --------------------------------------------------------


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30,
                          check=check)


def netns_problem() -> str | None:
    """Why this machine cannot make network namespaces (None when it can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is missing"
    name = f"grace-probe-{os.getpid()}"
    done = ip("netns", "add", name, check=False)
    if done.returncode != 0:
        return f"ip netns add failed: {done.stderr.strip()}"
    ip("netns", "del", name, check=False)
    return None


class Host:
    """A network namespace joined to this one by a veth pair on a /30 of 10.200.0.0/16.

    ``address`` is this side's end (where a forwarder listens); processes started with
    ``prefix`` run inside the namespace and reach only that address. ``cut()`` takes the
    link down as a pulled cable would: no reset, packets just stop.
    """

    def __init__(self, index: int) -> None:
        subnet = (os.getpid() * 2 + index) % 16000
        self.name = f"grace-{os.getpid()}-{index}"
        self.veth = f"gv{os.getpid() % 100000}h{index}"
        self.peer = f"gv{os.getpid() % 100000}n{index}"
        self.address = f"10.200.{subnet // 64}.{(subnet % 64) * 4 + 1}"
        self.inner = f"10.200.{subnet // 64}.{(subnet % 64) * 4 + 2}"
        self.prefix = ["ip", "netns", "exec", self.name]

    def create(self) -> Host:
        ip("netns", "add", self.name)
        ip("link", "add", self.veth, "type", "veth", "peer", "name", self.peer)
        ip("link", "set", self.peer, "netns", self.name)
        ip("addr", "add", f"{self.address}/30", "dev", self.veth)
        ip("link", "set", self.veth, "up")
        ip("netns", "exec", self.name, "ip", "addr", "add", f"{self.inner}/30", "dev", self.peer)
        ip("netns", "exec", self.name, "ip", "link", "set", self.peer, "up")
        ip("netns", "exec", self.name, "ip", "link", "set", "lo", "up")
        return self

    def cut(self) -> None:
        ip("link", "set", self.veth, "down")

    def destroy(self) -> None:
        ip("netns", "del", self.name, check=False)  # takes the veth pair with it
        ip("link", "del", self.veth, check=False)


KEEPALIVE = [
    (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
    (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1),
    (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1),
    (socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 2),
    (socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 3000),
]


class Forwarder:
    """TCP forwarder on ``listen`` (an address of this namespace) to ``target``: PostgreSQL
    listens on 127.0.0.1 only, which another namespace cannot reach. Runs an asyncio loop
    in a thread of the test process."""

    def __init__(self, listen: str, target: tuple[str, int]) -> None:
        self.listen, self.target = listen, target
        self.port = 0
        self.loop = asyncio.new_event_loop()
        self._writers: set[asyncio.StreamWriter] = set()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="forwarder", daemon=True)

    def start(self) -> Forwarder:
        self._thread.start()
        if not self._ready.wait(10) or not self.port:
            raise RuntimeError(f"forwarder on {self.listen} did not start")
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._handle, self.listen, 0))
        self.port = self.server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Keepalives on the host's side: a host that vanished is noticed within seconds and
        # its PostgreSQL session closed, as PostgreSQL's own tcp_keepalives_* settings do
        # for a directly connected host (the README's production layout sets them).
        sock = writer.get_extra_info("socket")
        for level, option, value in KEEPALIVE:
            sock.setsockopt(level, option, value)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer),
                             return_exceptions=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()
            self._writers.discard(writer)

    def stop(self) -> None:
        def close() -> None:
            self.server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            self.loop.call_later(0.2, self.loop.stop)

        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(close)
            self._thread.join(5)
