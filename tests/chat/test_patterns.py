"""Hunter's patterns run on RE2: what it refuses, and why, in words an admin can act on."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from chat.models import SecurityRule
from chat.patterns import MAX_PATTERN_LENGTH, pattern_compile, pattern_validate


def refusal(pattern: str, **kwargs) -> str:
    with pytest.raises(ValidationError) as caught:
        pattern_validate(pattern, **kwargs)
    (message,) = caught.value.message_dict["pattern"]
    return message


@pytest.mark.parametrize(
    ("pattern", "says"),
    [
        (r"\b(?:or|and)\s+(\d+)\s*=\s*\1\b", "Backreferences (\\1"),
        (r"(?P<q>['\"]).*(?P=q)", "Backreferences"),
        (r"password(?=\s*:)", "Lookahead"),
        (r"password(?!\s*manager)", "Lookahead"),
        (r"(?<=key=)\w+", "Lookbehind"),
        (r"(?<!un)safe", "Lookbehind"),
        (r"a++b", "Possessive quantifiers"),
        (r"(?>ab|a)c", "atomic groups"),
    ],
)
def test_backtracking_constructs_are_refused_with_the_reason(pattern, says):
    message = refusal(pattern)
    assert says in message
    assert "RE2 (linear time)" in message


def test_a_backreference_refusal_says_how_to_rewrite_it():
    assert refusal(r"(a)\1") == (
        "Backreferences (\\1, \\g<1>, \\k<name>, (?P=name)) need a backtracking engine; "
        "Hunter uses "
        "RE2 (linear time). Rewrite the pattern without it, e.g. list the alternatives."
    )


@pytest.mark.parametrize("pattern", [".*", r"\b", "a|", "x*", r"(?:abc)?", r"\s*", "$"])
def test_a_pattern_that_can_match_nothing_is_refused(pattern):
    assert "matches an empty message" in refusal(pattern)


@pytest.mark.parametrize(
    ("pattern", "says"),
    [
        ("", "The pattern is empty."),
        ("   ", "The pattern is empty."),
        ("(unclosed", "Not a valid regular expression: missing ): (unclosed"),
        ("[z-a]", "Not a valid regular expression: invalid character class range"),
        ("*oops", "Not a valid regular expression: no argument for repetition operator"),
        ("a{2,1}", "Not a valid regular expression: invalid repetition size"),
        ("(?:a{1000}){1000}", "RE2 allows counts up to 1,000"),
        ("(?x) a b", "Verbose mode"),
        ("x" * (MAX_PATTERN_LENGTH + 1), "over 20000 characters"),
        (r"\p{L}{45}", "instructions, over the 50,000 Hunter allows"),
    ],
)
def test_unusable_patterns_are_refused(pattern, says):
    assert says in refusal(pattern)


def test_python_spellings_are_translated():
    """\\Z, \\uXXXX and {,n} mean what they mean in Python's re."""
    assert pattern_compile(r"END\Z").search("the END") is not None
    assert pattern_compile(r"END\Z").search("END of it") is None
    assert pattern_compile(r"caf\u00e9").search("Café") is not None
    assert [m.group() for m in pattern_compile(r"ab{,2}c").finditer("ac abbc abbbc")] == [
        "ac",
        "abbc",
    ]
    assert pattern_compile(r"[\\Z]").search("\\") is not None  # an escaped backslash


def test_case_insensitive_unless_asked():
    assert pattern_compile("akia").search("AKIA") is not None
    assert pattern_compile("akia", case_sensitive=True).search("AKIA") is None


def test_a_catastrophic_pattern_for_backtracking_is_fine_for_re2():
    pattern_validate(r"(x+x+)+y")
    compiled = pattern_compile(r"(x+x+)+y")
    assert compiled.search("x" * 20_000) is None


def test_the_seeded_rules_are_valid():
    from chat.security_seed import SEED_RULES

    for spec in SEED_RULES:
        pattern_validate(spec["pattern"], case_sensitive=spec.get("case_sensitive", False))


@pytest.mark.django_db
def test_saving_a_rule_validates_it():
    with pytest.raises(ValidationError) as caught:
        SecurityRule.objects.create(name="tautology", pattern=r"(\d+)=\1", action="flag")
    assert "Backreferences" in caught.value.message_dict["pattern"][0]
    assert not SecurityRule.objects.filter(name="tautology").exists()
    rule = SecurityRule.objects.create(name="tautology", pattern=r"\b1\s*=\s*1\b", action="flag")
    rule.pattern = "(?<=x)y"
    with pytest.raises(ValidationError, match="Lookbehind"):
        rule.save()
    rule.refresh_from_db()
    assert rule.pattern == r"\b1\s*=\s*1\b"
