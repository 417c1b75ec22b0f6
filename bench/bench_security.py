"""Hunter's detection benchmark: the seeded rules over an attack corpus and a benign one.

Runs every message of bench/corpus/security/{attacks,benign}.jsonl through
``hunter_inspect`` with the seeded rules (chat/security_seed.py) compiled in-process
(``rule_compile``: no database, no server). Prints the detection rate per category and
overall, false positives per category and overall, every miss and false positive with
the rules that matched, and the time per message (mean, p99, max), adversarial long
inputs included (4,000 ``<``, 4,000 nested brackets...).

An attack counts as detected when Hunter does at least what the corpus expects of it:
``block`` needs a block rule; ``flag`` a flag or block rule; ``redact`` a redact rule
and the item's ``secret`` gone from the masked text. A benign message is a false
positive when any rule matches it. Goal: detection >= 95 %, false positives <= 1 %.

    .venv/bin/python bench/bench_security.py [--corpus DIR] [--rounds 3] [--quiet]

``--corpus`` takes another directory with the same two files (an unseen corpus). Exits
with status 1 when a goal is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "grace.settings")

import django  # noqa: E402

django.setup()

from chat.security import CompiledRule, Inspection, hunter_inspect, rule_compile  # noqa: E402
from chat.security_seed import SEED_RULES  # noqa: E402

CORPUS = ROOT / "bench" / "corpus" / "security"
DETECTION_GOAL = 0.95
FALSE_POSITIVE_GOAL = 0.01


def corpus_load(directory: Path = CORPUS) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The attack and benign items of a corpus directory."""

    def read(name: str) -> list[dict[str, Any]]:
        with open(directory / name, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]

    return read("attacks.jsonl"), read("benign.jsonl")


def seeded_rules() -> list[CompiledRule]:
    return [rule_compile(**spec) for spec in SEED_RULES if spec.get("enabled", True)]


def outcome_ok(row: dict[str, Any], inspection: Inspection) -> bool:
    """Whether Hunter did what the item expects (see the module's docstring)."""
    expect = row["expect"]
    if expect == "clean":
        return not inspection.matches
    if expect == "block":
        return inspection.blocked
    if expect == "flag":
        return inspection.flagged or inspection.blocked
    if expect == "redact":
        return inspection.redacted and row.get("secret", "") not in inspection.text
    raise ValueError(f"unknown expect {expect!r}")


@dataclass
class Score:
    total: Counter[str] = field(default_factory=Counter)
    wrong: Counter[str] = field(default_factory=Counter)
    failures: list[tuple[dict[str, Any], list[str]]] = field(default_factory=list)

    def add(self, row: dict[str, Any], inspection: Inspection) -> None:
        self.total[row["category"]] += 1
        if not outcome_ok(row, inspection):
            self.wrong[row["category"]] += 1
            names = [f"{m.rule.name}({m.rule.action})" for m in inspection.matches]
            self.failures.append((row, names))

    @property
    def count(self) -> int:
        return sum(self.total.values())

    @property
    def errors(self) -> int:
        return sum(self.wrong.values())


def corpus_score(
    attacks: list[dict[str, Any]], benign: list[dict[str, Any]], rules: list[CompiledRule]
) -> tuple[Score, Score]:
    attack_score, benign_score = Score(), Score()
    for row in attacks:
        attack_score.add(row, hunter_inspect(text=row["text"], rules=rules))
    for row in benign:
        benign_score.add(row, hunter_inspect(text=row["text"], rules=rules))
    return attack_score, benign_score


def adversarial_inputs() -> dict[str, str]:
    """Long messages built to make a backtracking engine or a normaliser work hard."""
    return {
        "4000 <": "<" * 4000,
        "4000 nested brackets": "[" * 2000 + "]" * 2000,
        "4000 nested braces+quotes": '{"a":' * 800 + "1" + "}" * 800,
        "4000 spaced letters": " ".join("ignore" * 700)[:4000],
        "4000 quotes and ors": ("' or " * 800)[:4000],
        "4000 ../": "../" * 1333,
        "4000 zero-width": "\u200b".join("x" * 2000),
        "4000 fullwidth": "ｉｇｎｏｒｅ " * 571,
        "4000 digits": "4" * 4000,
        "4000 <script": "<script " * 500,
        "4000 'password is'": "password is " * 333,
        "4000 whitespace": " \n\t" * 1333,
        "4000 ordinary text": ("How do I configure Django for production? " * 100)[:4000],
    }


def timings(texts: list[str], rules: list[CompiledRule], rounds: int) -> list[float]:
    """Seconds per message, the best of ``rounds`` for each message."""
    best = [float("inf")] * len(texts)
    for _ in range(rounds):
        for index, text in enumerate(texts):
            started = time.perf_counter()
            hunter_inspect(text=text, rules=rules)
            best[index] = min(best[index], time.perf_counter() - started)
    return best


def summary(seconds: list[float]) -> str:
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"mean {statistics.mean(ordered) * 1000:.3f} ms, p99 {p99 * 1000:.3f} ms, "
        f"max {ordered[-1] * 1000:.3f} ms"
    )


def report(attack_score: Score, benign_score: Score, *, quiet: bool) -> tuple[float, float]:
    print(f"{'attacks by category':40} detected")
    for category in sorted(attack_score.total):
        total = attack_score.total[category]
        found = total - attack_score.wrong[category]
        print(f"  {category:38} {found:4}/{total:<4} {found / total:7.1%}")
    detection = 1 - attack_score.errors / attack_score.count
    print(f"{'benign by category':40} false positives")
    for category in sorted(benign_score.total):
        total = benign_score.total[category]
        wrong = benign_score.wrong[category]
        print(f"  {category:38} {wrong:4}/{total:<4} {wrong / total:7.1%}")
    false_positives = benign_score.errors / benign_score.count
    if not quiet:
        print(f"\nmisses ({attack_score.errors}):")
        for row, names in attack_score.failures:
            print(
                f"  [{row['category']}, expect {row['expect']}] {row['text'][:100]!r} "
                f"-> {names or 'nothing'}"
            )
        print(f"false positives ({benign_score.errors}):")
        for row, names in benign_score.failures:
            print(f"  [{row['category']}] {row['text'][:100]!r} -> {names}")
    return detection, false_positives


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds (best kept)")
    parser.add_argument("--quiet", action="store_true", help="no list of misses and FPs")
    args = parser.parse_args()

    rules = seeded_rules()
    attacks, benign = corpus_load(args.corpus)
    print(
        f"Hunter: {len(rules)} seeded rules; corpus {args.corpus} "
        f"({len(attacks)} attacks, {len(benign)} benign)\n"
    )
    attack_score, benign_score = corpus_score(attacks, benign, rules)
    detection, false_positives = report(attack_score, benign_score, quiet=args.quiet)

    corpus_texts = [row["text"] for row in attacks + benign]
    adversarial = adversarial_inputs()
    print(
        f"\ntime per message (hunter_inspect, all rules, best of {args.rounds} rounds per message):"
    )
    print(
        f"  corpus ({len(corpus_texts)} messages): "
        f"{summary(timings(corpus_texts, rules, args.rounds))}"
    )
    long_times = timings(list(adversarial.values()), rules, args.rounds)
    for name, seconds in zip(adversarial, long_times, strict=True):
        print(f"  {name:28} {seconds * 1000:8.3f} ms")
    print(f"  adversarial long inputs: {summary(long_times)}")

    detection_ok = detection >= DETECTION_GOAL
    fp_ok = false_positives <= FALSE_POSITIVE_GOAL
    print(
        f"\ndetection: {detection:.1%} ({attack_score.count - attack_score.errors}/"
        f"{attack_score.count}; goal >= {DETECTION_GOAL:.0%}: "
        f"{'ok' if detection_ok else 'BELOW GOAL'})"
    )
    print(
        f"false positives: {false_positives:.1%} ({benign_score.errors}/{benign_score.count}; "
        f"goal <= {FALSE_POSITIVE_GOAL:.0%}: {'ok' if fp_ok else 'ABOVE GOAL'})"
    )
    sys.exit(0 if detection_ok and fp_ok else 1)


if __name__ == "__main__":
    main()
