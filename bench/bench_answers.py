"""Answer accuracy per reply backend over a handbook and its paraphrased questions.

A fresh SQLite database (migrated: the starter knowledge is there, as on ``make run``) gets
the handbook ingested with ``ingest_knowledge``; then every question goes through the whole
reply pipeline (``chat.pipeline.chat_reply``: inspect, recall, respond, store, under the
pipeline deadline, as the REST API and the websocket do), once per backend:

- ``fallback``: the deterministic backend (no model);
- ``local``: the embedded model, ``make run``'s default (SmolLM2 through xllamacpp);
- ``openai``: only with ``--openai-url`` (an OpenAI-compatible server, e.g. Ollama).

A reply is right when it contains the expected fact (``answer``: a number, name or
phrase), compared without case and with runs of whitespace as one space. Printed per
backend: right/total and percent, seconds per answer (median and max), replies that were
degraded or cut (flags), and how many cited a source; ``--show-wrong`` prints the wrong
ones.

    .venv/bin/python bench/bench_answers.py [--backends fallback,local]
        [--handbook bench/corpus/handbook] [--questions FILE.jsonl] [--limit N]
        [--openai-url http://127.0.0.1:11434/v1 --openai-model llama3.2] [--show-wrong]
        [--profile 3]

``--profile N`` first times the embedded model itself (load, prompt evaluation by prompt
size, generation speed), N replies per prompt size.

The questions file has one JSON object a line: ``question``, ``answer`` (and ``section``,
the heading path of the entry that answers it, for the retrieval figure: in how many
cases the answering entry was among the reply's sources).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HANDBOOK = ROOT / "bench" / "corpus" / "handbook"


def normalize(text: str) -> str:
    text = text.lower().replace("\u00a0", " ").replace("’", "'")
    text = re.sub(r"[*_`]", "", text)
    return re.sub(r"\s+", " ", text).strip()


def is_right(reply: str, answer: str) -> bool:
    return normalize(answer) in normalize(reply)


def load_questions(path: Path) -> list[dict[str, str]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rows.append(json.loads(line))
    return rows


def setup(tmp: Path, handbook: Path) -> None:
    # run_all.py's PostgreSQL pass gives a fresh database; otherwise a SQLite file here.
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{tmp / 'answers.sqlite3'}")
    os.environ.setdefault("GRACE_METRICS_DATABASE_URL", f"sqlite:///{tmp / 'metrics.sqlite3'}")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "grace.settings")
    os.environ["GRACE_LOG_LEVEL"] = os.environ.get("GRACE_LOG_LEVEL", "ERROR")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    call_command("migrate", database="metrics", verbosity=0)
    md = sorted(p for p in handbook.glob("*.md"))
    call_command("ingest_knowledge", *[str(p) for p in md], verbosity=0)


async def ask_all(alias: str, questions: list[dict[str, str]], show_wrong: bool) -> dict[str, Any]:
    from django.conf import settings
    from django.test import override_settings

    from chat.backends.breaker import breaker_reset_all
    from chat.pipeline import chat_reply
    from grace.auth import Owner

    breaker_reset_all()
    owner = Owner(session_key=f"bench-answers-{alias}")
    right = cited = found = 0
    seconds: list[float] = []
    degraded: dict[str, int] = {}
    wrong: list[tuple[str, str, str]] = []
    with override_settings(GRACE_CHAT={**settings.GRACE_CHAT, "REPLY_BACKEND": alias}):
        for row in questions:
            started = time.monotonic()
            body = await chat_reply(message=row["question"], owner=owner)
            seconds.append(time.monotonic() - started)
            reply = body["response"]
            sources = body["metadata"].get("sources", [])
            cited += bool(sources)
            section = row.get("section", "")
            found += bool(section) and any(s["title"] == section for s in sources)
            for flag in body["metadata"]["flags"]:
                degraded[flag] = degraded.get(flag, 0) + 1
            if is_right(reply, row["answer"]):
                right += 1
            else:
                wrong.append((row["question"], row["answer"], reply))
        speed = local_speed() if alias == "local" else ""
    if show_wrong:
        for question, answer, reply in wrong:
            short = reply.replace("\n", " ")[:220]
            print(f"  wrong [{alias}] {question!r} (want {answer!r}): {short}")
    return {
        "right": right,
        "total": len(questions),
        "median_s": statistics.median(seconds) if seconds else 0.0,
        "max_s": max(seconds) if seconds else 0.0,
        "cited": cited,
        "found": found,
        "flags": degraded,
        "speed": speed,
    }


def local_speed() -> str:
    """The embedded model's speeds as this process measured them (tokens/s)."""
    from chat.backends import reply_backend_get
    from chat.backends.local import LocalBackend

    backend = reply_backend_get("local")
    if not isinstance(backend, LocalBackend) or not backend.speed.measured:
        return ""
    speed = backend.speed
    return (
        f"local model speed (moving average of {speed.measured} model replies): prompt "
        f"{speed.prompt_tps:.0f} tokens/s, generation {speed.generate_tps:.0f} tokens/s"
    )


def model_profile(rounds: int) -> None:
    """Where an embedded-model reply's time goes: loading, prompt evaluation (by prompt
    size), generation; llama.cpp's own timings, one thread as ``make run`` uses here."""
    import random

    from chat.backends.local import default_threads, local_model_path, local_server_get

    path = local_model_path()
    if path is None or not path.is_file():
        print("profile: no model (make local)")
        return
    started = time.monotonic()
    server = local_server_get(path=path, context=2048, parallel=1, threads=default_threads())
    print(
        f"profile: model loaded in {time.monotonic() - started:.2f} s "
        f"({default_threads()} thread(s); load average {os.getloadavg()[0]:.1f})"
    )
    words = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8").split()
    for size in (0, 100, 300, 600):
        prompt, generate, total = [], [], []
        for _ in range(rounds):
            start = random.randrange(0, max(1, len(words) - size))
            context = " ".join(words[start : start + size]) or "You are Grace."
            began = time.monotonic()
            answer = server.handle_chat_completions(
                {
                    "messages": [
                        {"role": "system", "content": context},
                        {"role": "user", "content": f"Tell me about item {random.random():.6f}."},
                    ],
                    "max_tokens": 64,
                    "temperature": 0.2,
                }
            )
            total.append(time.monotonic() - began)
            timings = answer.get("timings", {})
            prompt.append((timings.get("prompt_n", 0), timings.get("prompt_ms", 0.0)))
            generate.append((timings.get("predicted_n", 0), timings.get("predicted_ms", 0.0)))
        p_n = sum(n for n, _ in prompt) / rounds
        p_ms = sum(ms for _, ms in prompt) / rounds
        g_n = sum(n for n, _ in generate)
        g_ms = sum(ms for _, ms in generate)
        print(
            f"profile: prompt {p_n:4.0f} tokens: evaluated in {p_ms / 1000:.2f} s "
            f"({1000 * p_n / max(p_ms, 1):.0f} tokens/s); generation "
            f"{1000 * g_n / max(g_ms, 1):.0f} tokens/s; {statistics.median(total):.2f} s "
            "a reply of at most 64 tokens"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="fallback,local")
    parser.add_argument("--handbook", type=Path, default=HANDBOOK)
    parser.add_argument(
        "--questions",
        type=Path,
        default=None,
        help="default: questions.jsonl in the handbook directory",
    )
    parser.add_argument("--limit", type=int, default=0, help="only the first N questions")
    parser.add_argument("--openai-url", default="")
    parser.add_argument("--openai-model", default="llama3.2")
    parser.add_argument("--show-wrong", action="store_true")
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="first time the embedded model N times per prompt size",
    )
    args = parser.parse_args()
    questions = load_questions(args.questions or args.handbook / "questions.jsonl")
    if args.limit:
        questions = questions[: args.limit]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if args.openai_url:
        os.environ["GRACE_LLM_URL"] = args.openai_url
        os.environ["GRACE_LLM_MODEL"] = args.openai_model
        if "openai" not in backends:
            backends.append("openai")
    elif "openai" in backends:
        backends.remove("openai")
        print("openai: skipped (no --openai-url)")
    tmp = tempfile.mkdtemp(prefix="grace-answers-")
    # Removed at exit after Django's own exit handlers (the audit log flushes then):
    # registered first, so it runs last.
    atexit.register(shutil.rmtree, tmp, True)
    setup(Path(tmp), args.handbook)
    if args.profile:
        model_profile(args.profile)
    print(
        f"{len(questions)} questions over {args.handbook} (cpus {os.cpu_count()}, "
        f"load {os.getloadavg()[0]:.1f})"
    )
    for alias in backends:
        stats = asyncio.run(ask_all(alias, questions, args.show_wrong))
        flags = ", ".join(f"{k} {v}" for k, v in sorted(stats["flags"].items())) or "none"
        if stats["speed"]:
            print(stats["speed"])
        print(
            f"{alias}: {stats['right']}/{stats['total']} right "
            f"({100 * stats['right'] / max(1, stats['total']):.0f} %); "
            f"{stats['median_s']:.2f} s median, {stats['max_s']:.2f} s max per answer; "
            f"cited {stats['cited']}, right entry cited {stats['found']}; flags: {flags}"
        )


if __name__ == "__main__":
    main()
