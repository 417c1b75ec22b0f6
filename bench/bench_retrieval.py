"""Knowledge retrieval: keyword search alone (the baseline) against hybrid search
(keywords + WordLlama embeddings, the default), on the same database in the same run.

The knowledge is the starter set every database gets (Grace's own docs) plus a handbook
ingested like ``manage.py ingest_knowledge`` does (default: bench/corpus/handbook, a
fictional outdoor shop); the questions (``questions.jsonl``: ``question``, ``section``,
``answer``) are worded as people ask, with synonyms and paraphrases. For each mode it
prints how often the expected section is the first hit (top-1) and among the first three
(top-3, what recall passes to the reply with ``GRACE_KNOWLEDGE_RESULTS=3``), how often a
question the knowledge does not cover (``unrelated.jsonl``) gets no hit at all, and the
time per query (the question's embedding included).

    .venv/bin/python bench/bench_retrieval.py [--corpus DIR] [--questions FILE]
        [--unrelated FILE] [--embeddings wordllama] [--repeat 3] [--verbose]

``DATABASE_URL=postgres://...`` runs it on PostgreSQL (a scratch database is made and
dropped); the default is a temporary SQLite file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "bench" / "corpus" / "handbook"


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument(
        "--questions", type=Path, default=None, help="default: questions.jsonl in the corpus"
    )
    parser.add_argument(
        "--unrelated", type=Path, default=None, help="default: unrelated.jsonl in the corpus"
    )
    parser.add_argument(
        "--embeddings", default="wordllama", help="the embeddings alias of the hybrid mode"
    )
    parser.add_argument("--repeat", type=int, default=3, help="timing passes per mode")
    parser.add_argument("--verbose", action="store_true", help="print every miss")
    return parser.parse_args()


@contextlib.contextmanager
def scratch_database() -> Iterator[None]:
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith("postgres"):
        sys.path.insert(0, str(ROOT))
        from tests.servers import scratch_postgres_database

        with scratch_postgres_database(url, "grace_bench") as scratch:
            os.environ["DATABASE_URL"] = scratch
            yield
        return
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["DATABASE_URL"] = f"sqlite:///{tmp}/bench.sqlite3"
        os.environ.setdefault("GRACE_METRICS_DATABASE_URL", f"sqlite:///{tmp}/metrics.sqlite3")
        yield


def read_jsonl(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main() -> None:
    args = parse()
    questions = read_jsonl(args.questions or args.corpus / "questions.jsonl")
    unrelated = read_jsonl(args.unrelated or args.corpus / "unrelated.jsonl")
    with scratch_database():
        sys.path.insert(0, str(ROOT))
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "grace.settings")
        import django

        django.setup()
        from django.conf import settings
        from django.core.management import call_command
        from django.db import connection
        from django.test.utils import override_settings

        from chat.conf import chat_settings
        from chat.ingest import chunks_file, knowledge_files, knowledge_ingest
        from chat.knowledge import knowledge_search

        call_command("migrate", verbosity=0)
        with override_settings(GRACE_CHAT={**settings.GRACE_CHAT, "EMBEDDINGS": args.embeddings}):
            for path in knowledge_files([args.corpus]):
                knowledge_ingest(
                    source=str(path.relative_to(args.corpus)), chunks=chunks_file(path)
                )
        print(
            f"{connection.vendor}: {len(questions)} questions, {len(unrelated)} unrelated, over "
            f"{args.corpus.relative_to(ROOT) if args.corpus.is_relative_to(ROOT) else args.corpus}"
            f" + the starter knowledge; GRACE_KNOWLEDGE_RESULTS=3, "
            f"min relevance {chat_settings.KNOWLEDGE_MIN_RELEVANCE:g}"
        )
        results = {}
        for label, alias in (
            ("keyword only", "none"),
            (f"hybrid ({args.embeddings})", args.embeddings),
        ):
            with override_settings(GRACE_CHAT={**settings.GRACE_CHAT, "EMBEDDINGS": alias}):
                knowledge_search(text="warm up: load the model and the index")
                top1 = top3 = 0
                misses = []
                for item in questions:
                    titles = [hit.title for hit in knowledge_search(text=item["question"], limit=3)]
                    top1 += bool(titles) and titles[0] == item["section"]
                    top3 += item["section"] in titles
                    if item["section"] not in titles[:1]:
                        misses.append((item["question"], item["section"], titles))
                quiet = [
                    item["question"]
                    for item in unrelated
                    if not knowledge_search(text=item["question"], limit=3)
                ]
                texts = [item["question"] for item in questions + unrelated]
                started = time.perf_counter()
                for _ in range(args.repeat):
                    for text in texts:
                        knowledge_search(text=text, limit=3)
                per_query = (
                    (time.perf_counter() - started) * 1000 / max(1, args.repeat * len(texts))
                )
            results[label] = (top1, top3, len(quiet), per_query)
            if args.verbose:
                for question, section, titles in misses:
                    print(f"  [{label}] {question!r}: want {section!r}, got {titles}")
                for text in sorted({item["question"] for item in unrelated} - set(quiet)):
                    print(f"  [{label}] unrelated got hits: {text!r}")
        n, u = max(1, len(questions)), max(1, len(unrelated))
        print(f"{'mode':<22}{'top-1':>14}{'top-3':>14}{'unrelated: no hit':>20}{'ms/query':>10}")
        for label, (top1, top3, no_hit, ms) in results.items():
            print(
                f"{label:<22}{f'{top1}/{len(questions)} {top1 / n:.0%}':>14}"
                f"{f'{top3}/{len(questions)} {top3 / n:.0%}':>14}"
                f"{f'{no_hit}/{len(unrelated)} {no_hit / u:.0%}':>20}{ms:>10.2f}"
            )
        (b1, b3, _, bms), (h1, h3, _, hms) = results.values()
        print(
            f"hybrid / keyword: top-1 x{h1 / max(1, b1):.2f}, top-3 x{h3 / max(1, b3):.2f}, "
            f"time per query x{hms / max(bms, 1e-9):.2f}"
        )


if __name__ == "__main__":
    main()
