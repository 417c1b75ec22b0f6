"""The README works as written: it stays short, its links and those of docs/ resolve, and
its first steps, typed as they stand, work against a server started as `make run` does."""

from __future__ import annotations

import json
import re
import shutil
import signal
import sqlite3
import subprocess
import threading
import uuid
from pathlib import Path

import pytest

from tests.conftest import service_unavailable
from tests.servers import ROOT, free_port, migrate
from tests.timing import limit, wait_until

README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAX_README_CHARS = 15_000

FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
SHELL = {"sh", "bash", "shell"}
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$", re.M)
SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def prose(text: str) -> str:
    """``text`` without fenced blocks and inline code, where links are only examples."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for _, heading in HEADING.findall(FENCE.sub("", path.read_text(encoding="utf-8"))):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def section(text: str, title: str) -> str:
    """The body of the ``## title`` section of a Markdown text."""
    match = re.search(rf"^## {re.escape(title)}\s*\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match is not None, f"no '## {title}' section"
    return match.group(1)


def shell_blocks(text: str) -> list[str]:
    return [body for lang, body in FENCE.findall(text) if lang in SHELL]


def first_steps() -> list[str]:
    return shell_blocks(section(README.read_text(encoding="utf-8"), "First steps"))


def test_the_readme_is_short():
    text = README.read_text(encoding="utf-8")
    assert len(text) < MAX_README_CHARS, (
        f"README.md has {len(text):,} characters (at most {MAX_README_CHARS:,}): move the "
        "details to docs/ and link to them"
    )


def test_every_relative_link_points_at_something_that_exists():
    broken = []
    for path in markdown_files():
        for target in LINK.findall(prose(path.read_text(encoding="utf-8"))):
            if SCHEME.match(target):
                continue  # http(s), mailto: not checked here
            file_part, _, anchor = target.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            where = f"{path.relative_to(ROOT)}: {target}"
            if not dest.exists():
                broken.append(f"{where} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{where} (no heading '#{anchor}' in {dest.name})")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_commands_use_the_projects_virtualenv():
    """The system ``python`` is not the venv's: every command says ``.venv/bin/python``."""
    bare = []
    for path in markdown_files():
        for block in shell_blocks(path.read_text(encoding="utf-8")):
            for line in block.splitlines():
                if re.search(r"(?<![\w/.-])(python3?|pip|pytest)\b(?!\.)", line) or re.search(
                    r"(?<!python )\bmanage\.py", line
                ):
                    bare.append(f"{path.relative_to(ROOT)}: {line.strip()}")
    assert not bare, "commands not run with .venv/bin/...:\n" + "\n".join(bare)


def test_the_first_steps_are_what_a_newcomer_needs():
    script = "\n".join(first_steps())
    for step in (
        "manage.py createsuperuser",
        "TOKEN=$(.venv/bin/python manage.py create_api_token alice --create-user)",
        "curl ",
        "/api/chat/",
        "ws://127.0.0.1:8000/ws/chat/",
    ):
        assert step in script, f"the first steps no longer include {step!r}"


@pytest.mark.slow
def test_the_first_steps_work_as_written(tmp_path: Path) -> None:
    python = ROOT / ".venv" / "bin" / "python"
    if not python.exists():
        service_unavailable("the README's commands use .venv/bin/python; there is no .venv")
    if shutil.which("curl") is None:
        service_unavailable("the README's first steps use curl (apt-get install curl)")
    # A newcomer's shell: no DJANGO_SETTINGS_MODULE, REDIS_URL or test variables; only
    # the databases point at fresh files instead of the clone's db.sqlite3.
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "LANG": "C.UTF-8",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "GRACE_METRICS_DATABASE_URL": f"sqlite:///{tmp_path / 'metrics.sqlite3'}",
    }
    migrate(env)  # what `make run` does first
    port = free_port()
    # ...then what its recipe runs (the Makefile's `run` target, with its two defaults).
    server_env = {**env, "GRACE_ALLOW_ANONYMOUS": "true", "GRACE_REPLY_BACKEND": "local"}
    log = (tmp_path / "run.log").open("w")
    run = subprocess.Popen(
        [".venv/bin/python", "bin/run.py", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, env=server_env, stdout=subprocess.PIPE, stderr=log, text=True,
    )
    printed: list[str] = []
    reader = threading.Thread(target=lambda: printed.extend(run.stdout or ()), daemon=True)
    reader.start()
    try:
        wait_until(
            lambda: any(line.startswith("Next:") for line in printed) or run.poll() is not None,
            timeout=90, message="make run printing its next step",
        )
        base = f"http://127.0.0.1:{port}"
        assert run.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
        assert f"  Chat:     {base}/\n" in printed
        assert f"  Admin:    {base}/admin/\n" in printed
        assert f"  API docs: {base}/api/docs\n" in printed
        assert any(
            line.startswith("Next: .venv/bin/python manage.py createsuperuser") for line in printed
        ), printed

        blocks = first_steps()
        script = "\n".join(block.replace(":8000", f":{port}") for block in blocks)
        assert script.count(f":{port}") >= 3  # the curl, the websocket URL and its origin
        done = subprocess.run(
            ["bash", "-e", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
            timeout=limit(240),
        )
    finally:
        run.send_signal(signal.SIGINT)  # Ctrl-C in make run's terminal
        try:
            run.wait(limit(30))
        except subprocess.TimeoutExpired:
            run.kill()
            run.wait()
        log.close()
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert "Superuser created successfully." in done.stdout

    frames = []
    for line in done.stdout.splitlines():
        try:
            frames.append(json.loads(line))
        except ValueError:
            continue  # the admin's message, the streamed reply text
    rest = [f for f in frames if isinstance(f, dict) and "type" not in f]
    ws = [f for f in frames if isinstance(f, dict) and "type" in f]
    assert len(rest) == 1 and len(ws) == 1, done.stdout
    reply, final = rest[0], ws[0]
    assert {"response", "request_id"} <= set(reply) and reply["response"], reply
    assert final["type"] == "done" and final["response"], final
    assert final["request_id"] not in ("", reply["request_id"]), final

    # Both went in as alice, with her token (anonymous chat is on under make run, so a
    # missing token would have worked too: the conversations say who it was).
    with sqlite3.connect(tmp_path / "db.sqlite3") as db:
        owners = {
            db.execute(
                "SELECT u.username, u.is_superuser FROM chat_conversation c "
                "JOIN auth_user u ON u.id = c.user_id WHERE c.id = ?",
                (uuid.UUID(conversation).hex,),
            ).fetchone()
            for conversation in (reply["conversation_id"], final["conversation_id"])
        }
        admin = db.execute("SELECT is_superuser FROM auth_user WHERE username = 'admin'")
        assert admin.fetchone() == (1,)
    assert owners == {("alice", 0)}
