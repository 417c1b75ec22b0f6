"""Hunter's starter rules, loaded by migration 0004 (existing rows are left as edited).

Flag rules record an event and let the message through (people ask about attacks for
good reasons); secrets are redacted before anything is stored or sent to a model;
attempts to override Grace's instructions are blocked.
"""

from __future__ import annotations

from typing import Any

from chat.models import SecurityRule

SEED_RULES: list[dict[str, Any]] = [
    {
        "name": "sql-injection-tautology",
        "kind": "sql_injection", "action": "flag", "severity": "high",
        "pattern": r"""['"]\s*(?:or|and)\s+['"]?\w+['"]?\s*(?:=|like)\s*['"]?\w+"""
        r"""|\b(?:or|and)\s+(\d+)\s*=\s*\1\b""",
        "description": "Always-true conditions: ' OR '1'='1, OR 1=1.",
    },
    {
        "name": "sql-injection-union-select",
        "kind": "sql_injection", "action": "flag", "severity": "high",
        "pattern": r"\bunion\s+(?:all\s+)?select\b",
        "description": "UNION SELECT used to read other tables.",
    },
    {
        "name": "sql-injection-statements",
        "kind": "sql_injection", "action": "flag", "severity": "high",
        "pattern": r"['\";)]\s*;?\s*(?:drop\s+(?:table|database)|truncate\s+table|shutdown|"
        r"exec(?:ute)?\s+\w+|delete\s+from|insert\s+into)\b|\bxp_cmdshell\b"
        r"|\bwaitfor\s+delay\b|\b(?:pg_)?sleep\s*\(\s*\d+\s*\)|\binformation_schema\.\w+"
        r"|;\s*--",
        "description": "Stacked statements, time-based probes, schema discovery.",
    },
    {
        "name": "xss-script-tag",
        "kind": "xss", "action": "flag", "severity": "high",
        "pattern": r"<\s*script\b[^>]*>|<\s*/\s*script\s*>",
        "description": "Script tags.",
    },
    {
        "name": "xss-handlers-and-urls",
        "kind": "xss", "action": "flag", "severity": "medium",
        "pattern": r"\bjavascript\s*:|<[^>]*\bon(?:error|load|click|mouseover|focus|blur|"
        r"submit|change|toggle|animationstart)\s*=|\bdocument\.cookie\b|\bsrcdoc\s*=",
        "description": "Event-handler attributes, javascript: URLs, cookie theft.",
    },
    {
        "name": "command-injection",
        "kind": "command_injection", "action": "flag", "severity": "high",
        "pattern": r"(?:;|&&|\|\||\|)\s*(?:rm\s+-[rf]{1,2}\b|cat\s+/etc/|curl\s|wget\s|nc\s|"
        r"ncat\s|bash\b|sh\s+-c\b|chmod\s|python[0-9.]*\s+-c\b|perl\s+-e\b|powershell\b|"
        r"whoami\b|id\s*(?:;|$))|\$\(\s*(?:curl|wget|rm|cat|bash|sh|nc|id|whoami)\b"
        r"|\brm\s+-rf\s+/(?:\s|$)|\bmkfifo\s|/dev/tcp/",
        "description": "Shell metacharacters chaining dangerous commands.",
    },
    {
        "name": "path-traversal",
        "kind": "path_traversal", "action": "flag", "severity": "medium",
        "pattern": r"(?:\.\.[/\\]){2,}|(?:%2e%2e|\.\.)(?:%2f|%5c)|/etc/(?:passwd|shadow)\b"
        r"|\\windows\\system32\b|/proc/self/environ\b",
        "description": "../../ sequences (plain or URL-encoded) and well-known system files.",
    },
    {
        "name": "secret-private-key",
        "kind": "secret", "action": "redact", "severity": "critical",
        "pattern": r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?"
        r"(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|\Z)",
        "description": "PEM/OpenSSH/PGP private key blocks.",
    },
    {
        "name": "secret-aws-access-key",
        "kind": "secret", "action": "redact", "severity": "critical", "case_sensitive": True,
        "pattern": r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b",
        "description": "AWS access key IDs.",
    },
    {
        "name": "secret-aws-secret-key",
        "kind": "secret", "action": "redact", "severity": "critical",
        "pattern": r"\baws_?secret(?:_?access)?_?key\b\s*['\"]?\s*[:=]\s*['\"]?[A-Za-z0-9/+]{40}",
        "description": "AWS secret access keys in assignments.",
    },
    {
        "name": "secret-api-tokens",
        "kind": "secret", "action": "redact", "severity": "critical", "case_sensitive": True,
        "pattern": r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}|\bgh[pousr]_[A-Za-z0-9]{36,}\b"
        r"|\bgithub_pat_[A-Za-z0-9_]{22,}\b|\bxox[abposr]-[A-Za-z0-9-]{10,}"
        r"|\bAIza[0-9A-Za-z_-]{35}\b|\b[rs]k_(?:live|test)_[0-9A-Za-z]{16,}\b"
        r"|\bglpat-[0-9A-Za-z_-]{20}\b|\bgrc_[A-Za-z0-9_-]{30,}|\bnpm_[A-Za-z0-9]{36}\b"
        r"|\bhf_[A-Za-z0-9]{30,}\b",
        "description": "OpenAI, Anthropic, GitHub, Slack, Google, Stripe, GitLab, npm, "
        "Hugging Face and Grace API tokens.",
    },
    {
        "name": "secret-jwt-and-bearer",
        "kind": "secret", "action": "redact", "severity": "high",
        "pattern": r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"
        r"|\bbearer\s+[A-Za-z0-9._~+/-]{20,}=*",
        "description": "JSON Web Tokens and bearer tokens.",
    },
    {
        "name": "secret-password-assignment",
        "kind": "secret", "action": "redact", "severity": "medium",
        "pattern": r"\b(?:password|passwd|pwd|client_secret|api[_-]?key|access[_-]?token)"
        r"\s*['\"]?\s*[:=]\s*['\"]?[^\s'\"]{6,}",
        "description": "Passwords and keys written as name=value or name: value.",
    },
    {
        "name": "prompt-injection-override",
        "kind": "prompt_injection", "action": "block", "severity": "high",
        "pattern": r"\b(?:ignore|disregard|forget|override|bypass|skip)\s+(?:(?:all|any|every|"
        r"the|your|my|of|these|those)\s+)*(?:previous|prior|above|earlier|preceding|system|"
        r"original|initial|existing)\s+(?:instructions?|prompts?|rules|directions|"
        r"guidelines|directives|context|messages?)\b",
        "description": "\"Ignore previous instructions\" and its family.",
    },
    {
        "name": "prompt-injection-jailbreak",
        "kind": "prompt_injection", "action": "block", "severity": "high",
        "pattern": r"\b(?:you\s+are\s+now|act\s+as|pretend\s+(?:to\s+be|you\s+are)|"
        r"roleplay\s+as)\s+(?:an?\s+)?(?:DAN|unrestricted|unfiltered|uncensored|jailbroken|"
        r"evil)\b|\bdo\s+anything\s+now\b|\b(?:developer|god|jailbreak)\s+mode\b"
        r"|\bnew\s+system\s+prompt\s*:",
        "description": "DAN, developer mode and other jailbreak personas.",
    },
    {
        "name": "prompt-injection-system-prompt",
        "kind": "prompt_injection", "action": "flag", "severity": "medium",
        "pattern": r"\b(?:reveal|show|print|repeat|output|leak|tell\s+me|what\s+(?:is|are))\s+"
        r"(?:me\s+)?(?:your|the)\s+(?:system\s+prompt|hidden\s+(?:prompt|instructions)|"
        r"initial\s+(?:prompt|instructions)|original\s+instructions)\b",
        "description": "Attempts to extract the system prompt.",
    },
]


def security_rules_seed(*, model: Any = None) -> int:
    """Create the starter rules that do not exist yet (by name); returns how many."""
    if model is None:
        model = SecurityRule
    created = 0
    for spec in SEED_RULES:
        if model.objects.filter(name=spec["name"]).exists():
            continue
        model.objects.create(**spec)
        created += 1
    return created
