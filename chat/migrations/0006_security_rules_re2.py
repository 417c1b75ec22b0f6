# ruff: noqa: E501 - frozen patterns and corpus text are kept on one line each
"""Hunter's rules on RE2 (chat/security_seed.py): the seeded rules get their new patterns
and the new seeded rules are added; any other rule RE2 cannot compile is disabled, with
the reason appended to its description. Every row is kept.

A seeded rule whose pattern an operator edited keeps the operator's pattern (and is
disabled like any other rule if RE2 refuses it). The check uses ``re2`` directly, with a
frozen copy of the spellings Hunter translates (``\\Z``, ``\\uXXXX``, ``{,n}``), not the
app's code, which may change after this migration.
"""

import re

import re2
from django.db import migrations

MARK = "disabled by migration 0006"

# The patterns migration 0004 seeded (chat/security_seed.py before RE2), by rule name.
OLD_PATTERNS = {
    "sql-injection-tautology": "['\"]\\s*(?:or|and)\\s+['\"]?\\w+['\"]?\\s*(?:=|like)\\s*['\"]?\\w+|\\b(?:or|and)\\s+(\\d+)\\s*=\\s*\\1\\b",
    "sql-injection-union-select": "\\bunion\\s+(?:all\\s+)?select\\b",
    "sql-injection-statements": "['\\\";)]\\s*;?\\s*(?:drop\\s+(?:table|database)|truncate\\s+table|shutdown|exec(?:ute)?\\s+\\w+|delete\\s+from|insert\\s+into)\\b|\\bxp_cmdshell\\b|\\bwaitfor\\s+delay\\b|\\b(?:pg_)?sleep\\s*\\(\\s*\\d+\\s*\\)|\\binformation_schema\\.\\w+|;\\s*--",
    "xss-script-tag": "<\\s*script\\b[^>]*>|<\\s*/\\s*script\\s*>",
    "xss-handlers-and-urls": "\\bjavascript\\s*:|<[^>]*\\bon(?:error|load|click|mouseover|focus|blur|submit|change|toggle|animationstart)\\s*=|\\bdocument\\.cookie\\b|\\bsrcdoc\\s*=",
    "command-injection": "(?:;|&&|\\|\\||\\|)\\s*(?:rm\\s+-[rf]{1,2}\\b|cat\\s+/etc/|curl\\s|wget\\s|nc\\s|ncat\\s|bash\\b|sh\\s+-c\\b|chmod\\s|python[0-9.]*\\s+-c\\b|perl\\s+-e\\b|powershell\\b|whoami\\b|id\\s*(?:;|$))|\\$\\(\\s*(?:curl|wget|rm|cat|bash|sh|nc|id|whoami)\\b|\\brm\\s+-rf\\s+/(?:\\s|$)|\\bmkfifo\\s|/dev/tcp/",
    "path-traversal": "(?:\\.\\.[/\\\\]){2,}|(?:%2e%2e|\\.\\.)(?:%2f|%5c)|/etc/(?:passwd|shadow)\\b|\\\\windows\\\\system32\\b|/proc/self/environ\\b",
    "secret-private-key": "-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----[\\s\\S]*?(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|\\Z)",
    "secret-aws-access-key": "\\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\\b",
    "secret-aws-secret-key": "\\baws_?secret(?:_?access)?_?key\\b\\s*['\\\"]?\\s*[:=]\\s*['\\\"]?[A-Za-z0-9/+]{40}",
    "secret-api-tokens": "\\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}|\\bgh[pousr]_[A-Za-z0-9]{36,}\\b|\\bgithub_pat_[A-Za-z0-9_]{22,}\\b|\\bxox[abposr]-[A-Za-z0-9-]{10,}|\\bAIza[0-9A-Za-z_-]{35}\\b|\\b[rs]k_(?:live|test)_[0-9A-Za-z]{16,}\\b|\\bglpat-[0-9A-Za-z_-]{20}\\b|\\bgrc_[A-Za-z0-9_-]{30,}|\\bnpm_[A-Za-z0-9]{36}\\b|\\bhf_[A-Za-z0-9]{30,}\\b",
    "secret-jwt-and-bearer": "\\beyJ[A-Za-z0-9_-]{10,}\\.eyJ[A-Za-z0-9_-]{10,}\\.[A-Za-z0-9_-]{10,}|\\bbearer\\s+[A-Za-z0-9._~+/-]{20,}=*",
    "secret-password-assignment": "\\b(?:password|passwd|pwd|client_secret|api[_-]?key|access[_-]?token)\\s*['\\\"]?\\s*[:=]\\s*['\\\"]?[^\\s'\\\"]{6,}",
    "prompt-injection-override": "\\b(?:ignore|disregard|forget|override|bypass|skip)\\s+(?:(?:all|any|every|the|your|my|of|these|those)\\s+)*(?:previous|prior|above|earlier|preceding|system|original|initial|existing)\\s+(?:instructions?|prompts?|rules|directions|guidelines|directives|context|messages?)\\b",
    "prompt-injection-jailbreak": "\\b(?:you\\s+are\\s+now|act\\s+as|pretend\\s+(?:to\\s+be|you\\s+are)|roleplay\\s+as)\\s+(?:an?\\s+)?(?:DAN|unrestricted|unfiltered|uncensored|jailbroken|evil)\\b|\\bdo\\s+anything\\s+now\\b|\\b(?:developer|god|jailbreak)\\s+mode\\b|\\bnew\\s+system\\s+prompt\\s*:",
    "prompt-injection-system-prompt": "\\b(?:reveal|show|print|repeat|output|leak|tell\\s+me|what\\s+(?:is|are))\\s+(?:me\\s+)?(?:your|the)\\s+(?:system\\s+prompt|hidden\\s+(?:prompt|instructions)|initial\\s+(?:prompt|instructions)|original\\s+instructions)\\b",
}

REASONS = (
    (r"invalid escape sequence: \\[1-9gk]", "needs backtracking (a backreference such as \\1)"),
    (r"invalid perl operator: \(\?P$", "needs backtracking (a backreference (?P=name))"),
    (r"invalid perl operator: \(\?<?[=!]", "needs backtracking (lookahead or lookbehind)"),
    (
        r"invalid perl operator: \(\?>|bad repetition operator: [*+?}]\+",
        "needs backtracking (a possessive quantifier or an atomic group)",
    ),
)
_ESCAPED = r"(?<!\\)((?:\\\\)*)"  # an even run of backslashes: the next one starts an escape


def _translate(pattern):
    """Python re spellings RE2 lacks, as Hunter translated them in 2026-12."""
    pattern = re.sub(_ESCAPED + r"\\Z", r"\1\\z", pattern)
    pattern = re.sub(_ESCAPED + r"\\u([0-9a-fA-F]{4})", r"\1\\x{\2}", pattern)
    pattern = re.sub(_ESCAPED + r"\\U([0-9a-fA-F]{8})", r"\1\\x{\2}", pattern)
    return re.sub(r"\{,(\d+)\}", r"{0,\1}", pattern)


def re2_problem(pattern, case_sensitive):
    """None when RE2 compiles the pattern, else why not (for the description)."""
    options = re2.Options()
    options.case_sensitive = case_sensitive
    options.log_errors = False
    options.max_mem = 8 << 20
    try:
        re2.compile(_translate(pattern), options)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else ""
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        for found, why in REASONS:
            if re.search(found, reason):
                return why
        return f"RE2 refuses it ({reason or exc})"
    return None


def forwards(apps, schema_editor):
    from chat.security_seed import SEED_RULES

    Rule = apps.get_model("chat", "SecurityRule")
    seeded = {spec["name"]: spec for spec in SEED_RULES}
    for name, spec in seeded.items():
        row = Rule.objects.filter(name=name).first()
        if row is None:
            Rule.objects.create(**spec)
        elif row.pattern in (spec["pattern"], OLD_PATTERNS.get(name)):
            row.pattern = spec["pattern"]
            row.case_sensitive = spec.get("case_sensitive", False)
            row.description = spec["description"]
            row.save(update_fields=["pattern", "case_sensitive", "description", "updated"])
    for row in Rule.objects.filter(enabled=True).order_by("id"):
        problem = re2_problem(row.pattern, row.case_sensitive)
        if problem is None:
            continue
        note = f"{MARK}: {problem}; rewrite for RE2."
        row.enabled = False
        row.description = f"{row.description}\n\n{note}".strip()
        row.save(update_fields=["enabled", "description", "updated"])


def backwards(apps, schema_editor):
    from chat.security_seed import SEED_RULES

    Rule = apps.get_model("chat", "SecurityRule")
    for spec in SEED_RULES:
        name = spec["name"]
        if name not in OLD_PATTERNS:
            Rule.objects.filter(name=name, pattern=spec["pattern"]).delete()
            continue
        Rule.objects.filter(name=name, pattern=spec["pattern"]).update(
            pattern=OLD_PATTERNS[name], case_sensitive=name in CASE_SENSITIVE_BEFORE
        )
    for row in Rule.objects.filter(enabled=False, description__contains=MARK):
        kept = [line for line in row.description.split("\n") if MARK not in line]
        row.description = "\n".join(kept).strip()
        row.enabled = True
        row.save(update_fields=["enabled", "description", "updated"])


CASE_SENSITIVE_BEFORE = {"secret-aws-access-key", "secret-api-tokens"}


class Migration(migrations.Migration):
    dependencies = [("chat", "0005_apitoken_to_grace")]

    operations = [migrations.RunPython(forwards, backwards)]
