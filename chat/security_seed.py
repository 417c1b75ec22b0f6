"""Hunter's starter rules, loaded by migration 0004 and brought up to date by 0006 (RE2).

Patterns are RE2 syntax (linear time: no backreferences, no lookaround). Hunter runs
``redact`` rules on the clean text (NFKC, zero-width and format characters removed, case
kept) and ``flag``/``block`` rules on the clean text (case-insensitive unless the rule is
case-sensitive) and on the folded text (lower case, accents, confusables and leetspeak
folded, whitespace collapsed, spaced-out letters joined), a match on either counting. So
the prompt-injection patterns are written for lower-case, accent-free text, allow words
run together (``\\s*``), and anything with a digit in it is matched on the clean text.

Flag rules record an event and let the message through (people ask about attacks for
good reasons); secrets are redacted before anything is stored or sent to a model;
attempts to override Grace's instructions, jailbreak personas and chat-template tokens
are blocked. Measured on bench/corpus/security by bench/bench_security.py.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from chat.models import SecurityRule


def _any(*words: str) -> str:
    return "(?:" + "|".join(words) + ")"


# --- prompt injection: English building blocks ------------------------------------------

# Verbs that mean "stop obeying" on their own.
_OVERRIDE_VERBS = _any(
    r"ignor(?:e|ing)",
    r"disregard(?:ing)?",
    r"forget(?:ting)?",
    r"overrid(?:e|ing)",
    r"overwrite",
    r"bypass(?:ing)?",
    r"skip",
    r"discard",
    r"abandon",
    r"neglect",
    r"dismiss",
    r"scrap",
    r"ditch",
    r"throw\s*(?:away|out)",
    r"set\s*aside",
    r"put\s*aside",
    r"pay\s*no\s*(?:attention|heed|mind)\s*to",
    r"never\s*mind",
    r"nevermind",
    r"(?:do\s*not|don'?t|dont|stop\s*paying|never)\s*pay\s*(?:any\s*)?(?:attention|heed|mind)\s*to",
    r"stop\s*(?:following|obeying|adhering\s*to|listening\s*to|using|applying)",
    r"(?:do\s*not|don'?t|dont|never|no\s*longer|stop\s*to)\s*(?:follow|obey|adhere\s*to|"
    r"listen\s*to|comply\s*with|respect|apply|heed)",
    r"unlearn",
    r"circumvent",
    r"evade",
    r"get\s*around",
    r"break\s*free\s*(?:of|from)",
)
# Verbs that are harmless about code ("disable all rules") but not about your rules.
_WEAK_VERBS = _any(
    r"disabl(?:e|ing)",
    r"remov(?:e|ing)",
    r"turn\s*off",
    r"switch\s*off",
    r"deactivate",
    r"lift",
    r"drop",
    r"delete",
    r"clear",
    r"erase",
    r"wipe",
    r"reset",
    r"cancel",
    r"violate",
    r"break",
    r"escape",
    r"unlock",
    r"suspend",
    r"shut\s*off",
)
# Words that make "the rules" mean the assistant's rules.
_QUANTIFIER = _any("all", "any", "every", "each")
_STRONG_QUALIFIER = _any(
    "your",
    "previous",
    "prior",
    "above",
    "earlier",
    "preceding",
    "foregoing",
    "former",
    "old",
    "original",
    "initial",
    "existing",
    "default",
    r"built-?\s*in",
    "preset",
    "pre-?programmed",
    "programmed",
    "hidden",
    "secret",
    "system",
    r"developers?'?s?",
    "safety",
    "content",
    "ethical",
    "moral",
    "core",
    "internal",
    "openai'?s?",
    "anthropic'?s?",
    "grace'?s?",
    "previously\\s*given",
    "given",
    "aforementioned",
    "above-?mentioned",
)
_FILLER = _any(
    "the",
    "these",
    "those",
    "my",
    "of",
    "such",
    "a",
    "an",
    "and",
    "or",
    "current",
    "standard",
    "usual",
    "normal",
    "own",
    "other",
    "basic",
    "about",
)
_OBJECTS = _any(
    r"instructions?",
    r"prompts?",
    "rules",
    r"guidelines?",
    "guidance",
    "directions",
    r"directives?",
    "commands",
    "orders",
    "programming",
    "training",
    "constraints",
    "restrictions",
    "limitations",
    "limits",
    "guardrails",
    "safeguards",
    r"filters?",
    "filtering",
    "censorship",
    "polic(?:y|ies)",
    "principles",
    "ethics",
    "morals",
    "protocols",
    "context",
    "conditioning",
    r"system\s*(?:prompt|message)s?",
    r"pre-?\s*prompts?",
    "alignment",
    r"safety\s*(?:measures|protocols|settings|features)",
    r"content\s*polic(?:y|ies)",
    "tasks?",
    "instruction\\s*set",
)
# Objects that only an assistant has ("ignore all instructions"; "ignore all rules" is
# also eslint talk, so rules need a qualifier such as "your" or "previous").
_AI_OBJECTS = _any(
    r"instructions?",
    r"prompts?",
    r"guidelines?",
    "guidance",
    r"directives?",
    "programming",
    "training",
    "guardrails",
    "safeguards",
    "censorship",
    "ethics",
    "morals",
    "alignment",
    "conditioning",
    r"system\s*(?:prompt|message)s?",
    r"pre-?\s*prompts?",
    r"safety\s*(?:measures|protocols|settings|features)",
    r"content\s*polic(?:y|ies)",
)
# "the system message", "the developer prompt": an assistant's, with no qualifier needed.
_SYSTEM_OBJECTS = (
    r"(?:system|developer|operator|initial|hidden|original)\s*(?:prompt|message|"
    r"instructions?|directives?|rules|guidelines)s?"
)
_GIVEN = (
    r"(?:(?:that|which)\s*)?(?:you\s*(?:were|have\s*been|'?ve\s*been|had\s*been|got|received|"
    r"have|had)\s*(?:\w+\s*)?(?:given|told|provided|received|programmed|set|taught|shown|"
    r"fed|trained\s*(?:on|with)|instructed)|(?:given|provided|fed)\s*(?:to\s*you|earlier|"
    r"before|above)|(?:from\s*)?(?:above|before|earlier|previously)\b|from\s*(?:your\s*)?"
    r"(?:developers?|creators?|operators?|makers?|admins?)|in\s*(?:your|the)\s*(?:system|"
    r"prompt|context))"
)
_TOLD = _any(
    "told",
    "taught",
    "instructed",
    "given",
    "programmed",
    "trained",
    "ordered",
    "asked",
    "prompted",
    "configured",
    "shown",
)

# An override phrase right after a quote is being talked about ("a user saying 'ignore
# previous instructions'"): these alternatives start with "not a quote, not a letter".
_START = r"""(?:^|[^\w'"`‘“«])"""
PROMPT_OVERRIDE = "|".join(
    [
        # ignore [all of] your/previous ... rules; ignore all instructions
        rf"{_START}{_OVERRIDE_VERBS}\s*(?:(?:{_FILLER}|{_QUANTIFIER})\s*){{0,3}}{_STRONG_QUALIFIER}\s*"
        rf"(?:(?:{_STRONG_QUALIFIER}|{_QUANTIFIER}|{_FILLER})\s*){{0,4}}{_OBJECTS}\b",
        rf"{_START}{_OVERRIDE_VERBS}\s*(?:{_FILLER}\s*){{0,2}}{_QUANTIFIER}\s*(?:{_FILLER}\s*){{0,3}}"
        rf"{_AI_OBJECTS}\b",
        rf"{_START}{_OVERRIDE_VERBS}\s*(?:all|any|every)\s*(?:the\s*)?(?:rules|commands|orders|filters|"
        r"limits|polic(?:y|ies)|protocols|restrictions|constraints)\s*(?:$|[.,;:!]|and\b|"
        r"from\s*now|you\s*(?:were|have|had|got)|(?:that|which)\s*(?:you|were|have))",
        r"\b(?:do\s*not|don'?t|dont|no\s*longer|never)\s*(?:have|need)\s*to\s*(?:follow|obey|"
        r"respect|comply\s*with|adhere\s*to|stick\s*to|care\s*about)\s*(?:any|your|all|"
        r"the\s*(?:previous|system|original))\s*(?:\w+\s*)?(?:rules|instructions|guidelines|"
        r"restrictions|polic(?:y|ies)|laws|ethics|principles)\b",
        # ignore the instructions you were given / the system message
        rf"{_START}{_OVERRIDE_VERBS}\s*(?:(?:{_FILLER}|{_QUANTIFIER})\s*){{0,3}}"
        rf"(?:(?:{_STRONG_QUALIFIER}|{_FILLER})\s*){{0,2}}{_OBJECTS}\s*{_GIVEN}",
        rf"{_START}(?:{_OVERRIDE_VERBS}|{_WEAK_VERBS})\s*(?:(?:{_FILLER}|{_QUANTIFIER})\s*){{0,3}}"
        rf"{_SYSTEM_OBJECTS}\b",
        r"\b(?:stop|quit|cease)\s*(?:following|obeying|applying|respecting)\s*(?:the|those|these)\s*"
        r"(?:rules|instructions|guidelines|restrictions|polic(?:y|ies))\s*(?:now|$|[.,;:!]|and\b|"
        r"anymore|any\s*more)",
        r"\b(?:previous|prior|above|earlier|original|first|last|initial|system)\s*"
        r"(?:prompt|instructions?|message|rules|guidelines)\s*(?:was|were|is|are)\s*"
        r"(?:just|only|merely|all|simply)?\s*(?:an?\s*)?(?:test|joke|fake|example|mistake|lie|"
        r"decoy|placeholder|trick|prank|dummy)",
        r"\b(?:everything|anything|all|whatever)\s*(?:that\s*)?(?:was\s*|is\s*|came\s*|comes\s*)?"
        r"(?:said\s*|written\s*|stated\s*)?(?:before|above|prior\s*to)\s*(?:this|my|here|now)?\s*"
        r"(?:\w+\s*)?(?:is|was|are|were)\s*(?:now\s*|hereby\s*|completely\s*)?(?:irrelevant|void|"
        r"null|invalid|cancel(?:l?ed)?|obsolete|a\s*test|fake|meaningless|revoked|overridden)",
        r"\b(?:follow|obey|listen\s*to)\s*only\s*(?:me|my\s*(?:commands|instructions|orders|rules))"
        r"|\bonly\s*(?:follow|obey|listen\s*to)\s*(?:me\b|my\s*(?:commands|instructions|orders))",
        rf"{_START}(?:{_OVERRIDE_VERBS}|{_WEAK_VERBS})\s*(?:about\s*)?(?:all\s*(?:of\s*)?)?"
        r"(?:everything|anything|all|whatever|what)\s*(?:that\s*)?(?:the|your)\s*(?:operator|"
        r"developers?|system|admin|administrator|creators?|owner|makers?)\s*(?:has\s*|have\s*)?"
        r"(?:said|told\s*you|wrote|written|instructed|gave\s*you|asked)",
        # disable your safety filters / remove all ethical restrictions
        rf"\b{_WEAK_VERBS}\s*(?:all\s*(?:of\s*)?)?(?:your|the\s*(?:ai|model|assistant|bot)'?s?)\s*"
        rf"(?:(?:{_STRONG_QUALIFIER}|{_QUANTIFIER}|{_FILLER})\s*){{0,3}}{_OBJECTS}\b",
        rf"{_START}(?:{_OVERRIDE_VERBS}|{_WEAK_VERBS})\s*(?:all\s*(?:of\s*)?|the\s*|any\s*|your\s*)?"
        r"(?:safety|ethical|moral|ai|content|openai|anthropic)\s*"
        r"(?:filters?|restrictions|guidelines|guardrails|rules|polic(?:y|ies)|limitations|"
        r"constraints|protocols|censorship|training|alignment|safeguards)\b",
        # forget everything you were told / ignore everything above
        rf"{_START}(?:{_OVERRIDE_VERBS}|{_WEAK_VERBS})\s*(?:about\s*)?(?:all\s*(?:of\s*)?)?"
        r"(?:everything|anything|all|whatever|what(?:ever)?|every\s*thing)\s*(?:that\s*|which\s*)?"
        rf"(?:you\s*(?:were|have\s*been|'?ve\s*been|had\s*been|got|are|have\s*ever\s*been)\s*"
        rf"(?:previously\s*|already\s*|ever\s*)?{_TOLD}"
        r"|(?:(?:was|is|has\s*been)\s*)?(?:said|written|stated|mentioned|written\s*)?\s*"
        r"(?:(?:the\s*)?above|before\s*(?:this|now|that)?|previously|earlier|so\s*far|"
        r"up\s*to\s*(?:now|here|this\s*point)|prior\s*to\s*this|in\s*your\s*"
        r"(?:prompt|instructions|system\s*prompt|context|memory|training)))",
        # ignore the above and say ...
        rf"{_START}(?:ignore|disregard|forget|skip)\s*(?:all\s*(?:of\s*)?)?(?:the|that|this|any)?\s*"
        r"(?:text|content|message|input|stuff|lines?|words)?\s*(?:above|before|prior|previous)"
        r"(?:\s*[.,;:!]|\s*$|\s*-|\s*and\b|\s*(?:text|content|message|lines|words|input)\b)",
        # your previous instructions are void / no longer apply
        r"\b(?:your|all\s*(?:of\s*)?(?:your|the\s*(?:previous|prior|above))|previous|prior|"
        r"above|earlier|original|initial|system|preceding|old)\s*"
        r"(?:(?:previous|prior|above|earlier|original|old|initial|system|current|existing|"
        r"safety|ethical|content|own)\s*){0,2}"
        r"(?:instructions?|rules|guidelines|directives|prompts?|programming|restrictions|"
        r"constraints|polic(?:y|ies)|limitations|orders|commands|training)\s*"
        r"(?:are|is|have\s*been|has\s*been|have|has|were|was|will\s*be|no\s*longer|do\s*not|don'?t|"
        r"are\s*no\s*longer|are\s*now|have\s*now\s*been)\s*"
        r"(?:now\s*|hereby\s*|henceforth\s*|officially\s*|all\s*|completely\s*|fully\s*)?"
        r"(?:void|null|nullified|cancel(?:l?ed)?|revoked|overrid(?:den|en)|replaced|obsolete|"
        r"invalid|invalidated|suspended|lifted|disabled|deactivated|removed|deleted|"
        r"irrelevant|outdated|superseded|apply|applicable|valid|in\s*effect|matter|"
        r"relevant|binding|count|gone|over|erased|reset|wiped|changed|been\s*changed|"
        r"updated|been\s*updated|been\s*revised|expired)\b",
        # new instructions follow / your new task is
        r"\b(?:new|updated|revised|real|actual|true|secret|overriding|replacement|"
        r"additional|hidden|priority|emergency|urgent|final|important)\s*(?:system\s*|admin\s*|"
        r"developer\s*)?(?:instructions?|directives?|prompt|orders|system\s*prompt|"
        r"guidelines|rules\s*of\s*engagement)\s*(?:follow|below|are\s*(?:as\s*follows|below|"
        r"these|:)|is\s*(?:as\s*follows|below|:)|:|-{1,3}\s|=)",
        r"\byour\s*(?:new|real|actual|true|only|sole)\s*(?:task|instructions?|role|purpose|"
        r"objective|mission|directive|goal|job|function|orders|identity|programming)\s*"
        r"(?:is|are|will\s*be|:|now\s*is)",
        r"\b(?:system|admin|administrator|developer|dev|root|security|emergency|maintenance|"
        r"god|master|owner|operator|sudo)\s*(?:override|overide|command\s*override|bypass|"
        r"access\s*granted|privileges?\s*granted)\b",
        r"\boverride\s*(?:code|mode|protocol|authori[sz]ation|enabled|activated|accepted)\b",
        r"\b(?:you\s*(?:will|must|shall|should|are\s*to)|from\s*now\s*on\s*,?\s*(?:you\s*)?"
        r"(?:will\s*|must\s*|shall\s*)?)\s*(?:now\s*)?(?:ignore|disregard|forget|bypass|"
        r"override)\s*(?:all\s*|any\s*|your\s*|the\s*|of\s*)*(?:rules|instructions|"
        r"guidelines|restrictions|filters|policies|safety|ethics|programming|training)\b",
        r"\binstead\s*of\s*(?:following\s*|obeying\s*)?(?:your|the\s*(?:previous|original|"
        r"system))\s*(?:\w+\s*)?(?:instructions|rules|prompt|guidelines)\b",
    ]
)

_PERSONAS = _any(
    "unrestricted",
    "unfiltered",
    "uncensored",
    "unbound",
    "unchained",
    "unlimited",
    "unaligned",
    "jailbroken",
    "jailbreak",
    "evil",
    "amoral",
    "immoral",
    "rogue",
    "lawless",
    "malicious",
    "devil(?:ish)?",
    "uncontrolled",
    "unhinged",
    "unethical",
    "limitless",
    "no-?limits?",
    "rule-?less",
    "without\\s*(?:any\\s*)?(?:rules|restrictions|limits|filters)",
    "free\\s*(?:ai|model|assistant)",
    "(?-i:DAN|STAN|DUDE|AIM|BetterDAN|DAN\\s*\\d+(?:\\.\\d+)?)",
    "dan\\s*(?:mode|\\d|prompt|jailbreak)",
    "anti-?gpt",
    "(?:chaos|evil|dark)\\s*gpt",
    "(?:developer|dev|god|jailbreak|dan|sudo|unrestricted|uncensored)\\s*mode",
    "opposite\\s*(?:ai|assistant|bot|mode)",
)
_NO_LIMITS = _any(
    "restrictions",
    "limits",
    "limitations",
    "guidelines",
    "filters?",
    "boundaries",
    "ethics",
    "morals",
    "morality",
    "constraints",
    "polic(?:y|ies)",
    "censorship",
    "guardrails",
    "rules",
    "safeguards",
    "principles",
    "conscience",
    "content\\s*polic(?:y|ies)",
    "safety\\s*(?:measures|features|protocols|training)",
    "refusals?",
    "programming",
    "confines",
    "shackles",
    "chains",
    "directives",
    "instructions",
    "orders",
)
_LIMIT_ADJ = _any(
    "ethical",
    "moral",
    "content",
    "safety",
    "openai'?s?",
    "anthropic'?s?",
    "previous",
    "usual",
    "normal",
    "typical",
    "programmed",
    "built-?\\s*in",
    "any",
    "all",
    "your",
    "the",
    "of",
    "such",
    "these",
    "those",
    "standard",
    "legal",
    "ai",
)

PROMPT_JAILBREAK = "|".join(
    [
        # you are now DAN / act as an unrestricted AI / pretend to be evil
        r"\b(?:you\s*are\s*now|you'?re\s*now|you\s*are\s*going\s*to\s*(?:be|act\s*as|pretend)|"
        r"from\s*now\s*on\s*,?\s*you\s*(?:are|will\s*be|'re|shall\s*be)|act(?:ing)?\s*as|"
        r"pretend(?:ing)?\s*(?:to\s*be|you\s*are|you'?re|that\s*you\s*are)|"
        r"role-?\s*play\s*as|play\s*the\s*(?:role|part)\s*of|become|transform\s*into|"
        r"you\s*will\s*(?:now\s*)?be|simulate|imagine\s*(?:you\s*are|being)|"
        r"behave\s*(?:like|as)|respond\s*as|answer\s*as|you\s*are\s*(?:to\s*)?be|"
        r"switch\s*(?:to|into)|enter|activate|enable|turn\s*into|roleplaying\s*as|"
        r"you\s*are\s*(?:called|named)|your\s*name\s*is\s*(?:now)?|stay\s*as|be|you\s*are|"
        r"you'?re)\s*"
        rf"(?:(?:an?|the|my|in|into|to|now|called|named)\s*)*(?:\w+\s*)?{_PERSONAS}",
        r"\bdo\s*anything\s*now\b",
        r"\b(?:y\s?o\s?u\s*are\s*now|you'?re\s*now|act\s*as|pretend\s*to\s*be|role-?\s*play\s*as|"
        r"from\s*now\s*on\s*,?\s*you\s*are|you\s*are\s*going\s*to\s*(?:be|pretend\s*to\s*be|"
        r"act\s*as)|you\s*will\s*(?:now\s*)?be|now\s*you\s*are)\s*(?:\w+\s*)?dan\b",
        r"\byou\s*are\s*(?-i:DAN|STAN|DUDE|AIM|KEVIN|BetterDAN|APOPHIS|UCAR|Mongo\s*Tom)\b",
        r"\b(?:ai|assistant|model|chatbot|bot|llm|gpt)\s*(?:that|which|who)\s*(?:is|has\s*been)\s*"
        r"(?:completely\s*|totally\s*|fully\s*|now\s*)?(?:unrestricted|unfiltered|uncensored|"
        r"jailbroken|unbound|amoral|evil|unaligned|unlimited|immoral)\b",
        r"\b(?:dan|jailbreak|jailbroken|god|sudo|unrestricted|unfiltered|uncensored|evil|"
        r"chaos|opposite|no-?\s*limits?|no-?\s*restrictions?|amoral|rogue)\s*mode\b",
        r"\b(?:enable|activate|enter|unlock|switch\s*(?:on|to|into)|turn\s*on|start|engage|"
        r"initiate|run\s*in|go\s*into|you\s*are\s*(?:now\s*)?in)\s*(?:the\s*)?developer\s*mode"
        r"\s*(?:$|[.!,;:)]|now|for\s*(?:you|chatgpt|this\s*chat|the\s*rest)|and|please|"
        r"immediately|\(|output|response)",
        r"\bdeveloper\s*mode\s*(?:enabled|activated|output|response|is\s*(?:now\s*)?on|"
        r"\(|:|v\d|prompt)",
        r"\b(?:chatgpt|gpt|ai|assistant|you|grace|claude|llm|model|bot|gemini|llama)\s*"
        r"(?:with|in)\s*(?:dan|developer|god|jailbreak)\s*mode",
        # pretend you have no rules / an AI without restrictions
        r"\byou\s*(?:are|have|had|'?re|'?ve|now\s*have|no\s*longer\s*have|would\s*have|"
        r"were|will\s*have|do\s*not\s*have|don'?t\s*have|must\s*have|can\s*have)\s*"
        r"(?:now\s*|been\s*|absolutely\s*|completely\s*|totally\s*)?"
        r"(?:no|zero|free\s*(?:of|from)|without|not\s*bound\s*by|no\s*longer\s*bound\s*by|"
        r"unbound\s*by|released\s*from|freed\s*from|liberated\s*from|exempt\s*from|"
        r"not\s*(?:restricted|limited|constrained)\s*by|any|no\s*more|none\s*of)\s*"
        rf"(?:{_LIMIT_ADJ}\s*){{0,3}}(?:\w+\s*)?{_NO_LIMITS}\b",
        r"\b(?:ai|assistant|model|chatbot|bot|llm|language\s*model|entity|persona|character|"
        r"version\s*of\s*(?:yourself|you|chatgpt)|system|intelligence|gpt|chatgpt)\s*"
        r"(?:that\s*|which\s*|who\s*)?(?:is\s*|are\s*)?(?:has|have|had|with|having|without|free\s*(?:of|from)|"
        r"not\s*bound\s*by|unbound\s*by|that\s*ignores|who\s*ignores|that\s*doesn'?t\s*have|"
        r"that\s*does\s*not\s*have|lacking)\s*"
        rf"(?:no|zero|any)?\s*(?:{_LIMIT_ADJ}\s*){{0,3}}{_NO_LIMITS}\b",
        r"\b(?:answer|respond|reply|act|behave|talk|speak|write|operate|function|continue|"
        r"proceed|roleplay|comply|generate)\s*(?:\w+\s*){0,3}(?:without|free\s*of|free\s*from)\s*"
        rf"(?:any\s*|your\s*|the\s*)?(?:{_LIMIT_ADJ}\s*){{0,2}}(?:{_NO_LIMITS}|warnings|disclaimers|"
        r"holding\s*back)\b",
        r"\byou\s*(?:are|'re)\s*(?:now\s*)?(?:no\s*longer|not)\s*(?:an?\s*)?(?:ai|assistant|"
        r"chatgpt|claude|grace|gpt|bound|restricted|limited|constrained|censored|"
        r"language\s*model|required\s*to\s*follow|obligated\s*to|an?\s*ai\s*model)\b",
        r"\b(?:world|universe|story|scenario|reality|simulation|game|country|dimension|"
        r"hypothetical)\s*(?:where|in\s*which|with)\s*(?:\w+\s*){0,4}(?:no|without)\s*"
        rf"(?:\w+\s*){{0,2}}{_NO_LIMITS}\b",
        r"\bstay\s*in\s*character\b",
        r"\bbreak(?:ing)?\s*character\b",
        r"\bdon'?t\s*break\s*character\b",
        r"\bcharacter\s*(?:that|who)\s*(?:\w+\s*){0,3}(?:never|doesn'?t|does\s*not|won'?t|"
        r"will\s*not)\s*refuses?\b",
        r"\bnever\s*refuse\s*(?:a|any)\s*(?:request|question|order|command)",
        r"\b(?:can|will|must)\s*not\s*refuse\b|\bcannot\s*refuse\b|\bmust\s*never\s*refuse\b",
        # grandma exploit
        r"\b(?:act|pretend|roleplay|role-?play|play|be|behave)\s*(?:\w+\s*){0,3}"
        r"(?:grand(?:ma|mother|mom|pa|father|dad)|granny|nana|grandmama)\b",
        r"\b(?:grand(?:ma|mother|mom|pa|father|dad)|granny|nana)\s*(?:\w+\s*){0,10}"
        r"(?:windows\s*(?:\w+\s*)?keys?|activation\s*keys?|product\s*keys?|license\s*keys?|"
        r"serial\s*(?:numbers?|keys?)|napalm|meth|explosives?|bomb|to\s*(?:help\s*me\s*)?"
        r"(?:fall\s*)?asleep)",
        r"\b(?:opposite|evil)\s*(?:day|twin|version|confidant)\b",
        r"\b(?:two|2|both)\s*(?:different\s*)?(?:responses|answers|replies|outputs)\s*"
        r"(?:\w+\s*){0,6}(?:dan|jailbr\w*|unfiltered|uncensored|developer\s*mode|evil)\b",
        r"\b(?:classic|normal|gpt|standard)\s*(?:response|answer|output|mode)\s*"
        r"(?:and|/|or|vs)\s*(?:\w+\s*){0,2}(?:jailbr\w*|dan|unfiltered|developer\s*mode)\b",
        r"\bjailbreak\s*(?:yourself|prompt\s*activated|successful|enabled|activated)\b",
        r"\b(?:hypothetically|theoretically|fictionally|in\s*fiction)\s*,?\s*(?:\w+\s*){0,4}"
        rf"(?:if\s*you\s*had|with|without)\s*no\s*{_NO_LIMITS}\b",
        r"\b(?:unlock|free|liberate|release|jailbreak)\s*(?:your\s*(?:true|real|full|hidden)\s*"
        r"(?:self|potential|power|capabilities)|yourself\s*from)",
    ]
)

PROMPT_SYSTEM_PROMPT = "|".join(
    [
        r"\b(?:reveal|show|display|print|output|repeat|recite|echo|dump|leak|expose|disclose|"
        r"share|give|tell|send|list|type|write\s*(?:out|down)?|spell\s*out|paste|copy|return|"
        r"provide|summari[sz]e|translate|read|quote|reproduce|render|regurgitate|"
        r"print\s*out|read\s*(?:out|back)|what\s*(?:is|are|was|were|'s))\s*"
        r"(?:me\s*|us\s*|to\s*me\s*|back\s*|out\s*|in\s*full\s*)*(?:all\s*(?:of\s*)?|each\s*of\s*)?"
        r"(?:your|the\s*(?:(?:full|entire|exact|complete|original|initial|hidden|secret|"
        r"internal|whole|raw|verbatim|first|confidential)\s*)+)\s*"
        r"(?:(?:full|entire|exact|complete|original|initial|hidden|secret|internal|whole|raw|"
        r"verbatim|first|starting|current|previous|system|developer|operator|underlying|"
        r"pre-?|confidential|core|base|custom|private|own)\s*)*"
        r"(?:system\s*(?:prompt|message|instructions?)|prompts?|instructions|pre-?\s*prompt|"
        r"guidelines|rules|directives|configuration|programming|meta-?\s*prompt|"
        r"custom\s*instructions|preamble|system\s*context|initial\s*context|hidden\s*context)\b",
        r"\b(?:reveal|leak|dump|print|output|repeat|recite|expose|disclose|show\s*me|"
        r"display|give\s*me|tell\s*me)\s*(?:the|this|that)\s*(?:current\s*)?"
        r"(?:system\s*prompt|hidden\s*(?:prompt|instructions)|pre-?prompt|initial\s*prompt|"
        r"system\s*message|secret\s*(?:prompt|instructions))\b",
        r"\bwhat\s*(?:instructions|rules|guidelines|prompt|directives|system\s*prompt)\s*"
        r"(?:were|have|had|did)\s*you\s*(?:been\s*)?(?:given|told|provided|programmed|trained|"
        r"receive|get|start)",
        r"\bwhat\s*(?:were|have)\s*you\s*(?:been\s*)?(?:told|instructed|programmed|prompted)\s*"
        r"(?:to\s*do\s*)?(?:before|at\s*the\s*(?:start|beginning)|by\s*(?:your|the)|"
        r"initially|originally|earlier|in\s*your\s*(?:prompt|instructions)|$|[?.])",
        r"\bhow\s*(?:were|have)\s*you\s*(?:been\s*)?(?:instructed|programmed|configured|prompted|"
        r"set\s*up)\b",
        r"\bwhat\s*(?:is|was)\s*(?:written|said|stated)\s*(?:above|before|at\s*the\s*"
        r"(?:start|beginning|top))",
        r"\brepeat\s*(?:back\s*)?(?:all\s*(?:of\s*)?)?(?:the\s*)?(?:words|text|everything|"
        r"content|lines|message|messages|sentences|tokens|instructions|prompt)\s*(?:\w+\s*){0,3}"
        r"(?:above|before|prior|preceding|verbatim)",
        r"\b(?:start|begin)(?:ning)?\s*(?:your\s*(?:reply|answer|response)\s*)?with\s*"
        r"['\"]?you\s*are\s*(?:a|an|grace|chatgpt)?\b",
        r"\b(?:print|output|repeat|show|display|write|echo|dump|copy|paste|list|give\s*me|"
        r"reproduce|return)\s*(?:out\s*)?(?:me\s*)?(?:all\s*(?:of\s*)?)?(?:everything|all|"
        r"the\s*text|the\s*content|anything|the\s*words|the\s*lines)\s*(?:that\s*(?:was|is|came|"
        r"comes|appears)\s*)?(?:written\s*)?(?:above|before\s*(?:this|my)|prior\s*to)",
        r"(?:prompt|instructions|system\s*message)\s*(?:\w+\s*){0,3}(?:verbatim|word\s*for\s*word|"
        r"in\s*a\s*code\s*block)",
        r"\bverbatim\s*(?:\w+\s*){0,3}(?:prompt|instructions|system\s*message)\b",
        r"\bin\s*your\s*(?:context\s*window|system\s*prompt|initial\s*prompt|hidden\s*prompt)",
        r"\bwhat\s*(?:do|does|did)?\s*(?:the|your)\s*(?:\w+\s*){0,2}(?:system\s*prompt|"
        r"instructions|prompt|rules|guidelines|directives|system\s*message)\s*(?:say|says|said|"
        r"contain|contains|look\s*like|tell\s*you|state|specify)\b",
        r"(?:prompt|instructions|rules|guidelines|directives|system\s*message)\s*(?:that\s*|which\s*)?"
        r"you\s*(?:were|have\s*been|'?ve\s*been|got|received|had\s*been)\s*(?:initially\s*|"
        r"originally\s*|first\s*)?(?:given|told|provided|fed|programmed|set\s*up\s*with|"
        r"trained\s*with|received|shown)",
        r"\b(?:print|output|repeat|show|display|write|echo|dump|copy|paste|list|give\s*me|"
        r"reproduce|return)\s*(?:out\s*)?(?:me\s*)?(?:all\s*(?:of\s*)?(?:the\s*)?|the\s*|any\s*)"
        r"(?:text|content|words|lines|messages?|tokens)\s*(?:that\s*(?:was|is|came|appears)\s*)?"
        r"(?:written\s*)?(?:above|before\s*(?:this|my)|prior\s*to)",
        r"\b(?:reveal|show|display|print|output|repeat|leak|dump|give\s*me|tell\s*me|share)\s*"
        r"(?:me\s*)?(?:the|your)\s*(?:developer|operator|system|hidden)\s*(?:message|prompt|"
        r"instructions)\b",
        r"\b(?:ignore|without)\s*(?:\w+\s*){0,3}(?:and|then)\s*(?:print|show|reveal|output)\s*"
        r"(?:your|the)\s*(?:\w+\s*)?(?:prompt|instructions)\b",
        # fr, de, es, it, pt, nl: "show me your system prompt"
        r"\b(?:montre|montrez|affiche|affichez|revele|revelez|donne|donnez|dis|dites|repete|"
        r"repetez|ecris|zeig|zeige|zeigen|gib|geben|nenne|verrate|verraten|wiederhole|"
        r"muestra|muestrame|muestrenme|revela|revelame|dime|dame|repite|escribe|mostra|"
        r"mostrami|rivela|rivelami|dimmi|ripeti|scrivi|mostre|mostra-me|revele|diga|"
        r"repita|toon|laat|geef|herhaal|vertel)\s*(?:[\w'-]*\s*){0,3}"
        r"(?:prompt\s*(?:systeme|sistema|di\s*sistema|do\s*sistema|del\s*sistema|de\s*sistema|"
        r"initial)|system-?\s*prompt|systemprompt|systeemprompt|instructions?\s*(?:initiales|"
        r"systeme|cachees|secretes)|(?:deine|ihre|seine)\s*(?:\w+\s*)?anweisungen|"
        r"(?:tus|sus)\s*instrucciones|(?:tue|sue)\s*istruzioni|(?:suas|tuas)\s*instrucoes|"
        r"(?:je|jouw|uw)\s*instructies|(?:tes|vos)\s*instructions)",
    ]
)

PROMPT_OVERRIDE_MULTILINGUAL = "|".join(
    [
        # fr
        r"\b(?:ne\s*tiens?\s*(?:pas|plus)\s*compte|ne\s*tenez\s*(?:pas|plus)\s*compte|"
        r"fai(?:s|tes)\s*(?:abstraction|fi)|passe[rz]?\s*outre|sans\s*tenir\s*compte)\s*"
        r"(?:de\s*|des\s*|du\s*|d'|a\s*|aux\s*)(?:toutes?\s*|tous\s*)?(?:les\s*|tes\s*|vos\s*|"
        r"ces\s*|la\s*|ta\s*|votre\s*|l')?(?:\w+\s*)?(?:instructions?|consignes?|regles|"
        r"directives|ordres|indications|prompts?|restrictions|limites|filtres|programmation)\b",
        r"\b(?:ignore[rsz]?|ignorez|oublie[rsz]?|oubliez|neglige[rsz]?|"
        r"contourne[rz]?|abandonne[rz]?|efface[rz]?|ne\s*suis?\s*(?:pas|plus)|"
        r"ne\s*suivez\s*(?:pas|plus)|n'obei[sr]?\s*(?:pas|plus)|desactive[rz]?|supprime[rz]?)\s*"
        r"(?:a\s*|aux\s*)?(?:toutes?\s*|tous\s*)?(?:les|tes|vos|ces|mes|la|ta|votre|l'|d'|de\s*)\s*"
        r"(?:\w+\s*)?(?:instructions?|consignes?|regles|directives|ordres|indications|prompts?|"
        r"restrictions|limites|filtres|garde-?fous|programmation)\b",
        r"\b(?:oublie[zs]?|ignore[zs]?)\s*tout\s*(?:ce\s*qu|ca|cela|$|[.,!;])",
        r"\b(?:tu\s*es|vous\s*etes)\s*(?:maintenant|desormais|a\s*present|dorenavant)\s*"
        r"(?:un\w*\s*)?(?:(?-i:DAN)|dan|ia\s*sans|libre|debride\w*|non\s*censure\w*|"
        r"sans\s*(?:restrictions?|filtres?|regles|limites|censure))",
        r"\b(?:tu\s*n'?as|vous\s*n'?avez)\s*(?:plus|aucune?|pas)\s*(?:de\s*|d')?\s*"
        r"(?:restrictions?|regles|limites|filtres?|consignes|limitations)",
        r"\b(?:nouvelles?|vraies?)\s*(?:instructions|consignes|directives)\s*(?::|suivent|"
        r"ci-dessous)",
        r"\b(?:instructions|consignes|regles)\s*(?:precedentes|anterieures|initiales|d'origine)"
        r"\s*(?:sont|ne\s*sont\s*plus)\s*(?:annulees|caduques|obsoletes|nulles|valables)",
        # de
        r"\b(?:ignorier(?:e|en|t)?|vergiss|vergesst|vergessen\s*sie|missachte(?:n|t)?|"
        r"ubergeh(?:e|en)?|beachte\s*(?:nicht|keine)|befolge\s*(?:nicht|keine)|"
        r"umgehe|umgehen\s*sie|deaktiviere|verwirf|verwerfe|los(?:ch|ch)e)\s*"
        r"(?:\w+\s*){0,3}(?:anweisungen|anweisung|instruktionen|regeln|vorgaben|befehle|"
        r"richtlinien|vorschriften|system-?\s*prompt|anordnungen|einschrankungen|"
        r"beschrankungen|filter|programmierung)\b",
        r"\bvergiss\s*alles\s*(?:,\s*)?(?:was|bisher|vorher|zuvor|oben|davor|bisherige|"
        r"$|[.!])",
        r"\b(?:du\s*bist|sie\s*sind)\s*(?:jetzt|nun|ab\s*jetzt|ab\s*sofort|von\s*nun\s*an)\s*"
        r"(?:ein\w*\s*)?(?:(?-i:DAN)|dan|uneingeschrankt\w*|unzensiert\w*|ungefiltert\w*|"
        r"bos\w*|ohne\s*(?:regeln|einschrankungen|filter|grenzen))",
        r"\b(?:du\s*hast|sie\s*haben)\s*(?:jetzt\s*|nun\s*|ab\s*jetzt\s*)?(?:keine|keinerlei)\s*"
        r"(?:\w+\s*)?(?:regeln|einschrankungen|beschrankungen|grenzen|filter|richtlinien)",
        r"\b(?:neue|echte|aktualisierte)\s*(?:anweisungen|instruktionen|regeln|befehle)\s*"
        r"(?::|folgen|lauten)",
        r"\b(?:vorherigen|bisherigen|obigen|vorigen|fruheren|ursprunglichen)\s*(?:\w+\s*)?"
        r"(?:anweisungen|instruktionen|regeln|befehle)\s*(?:sind|gelten)\s*(?:nicht\s*mehr|"
        r"ungultig|aufgehoben|hinfallig)",
        # es
        r"\b(?:ignora|ignore|ignoren|ignorar|ignoras|olvida|olvide|olviden|olvidar|omite|"
        r"omita|descarta|descarte|desestima|no\s*sigas|no\s*siga|no\s*obedezcas|"
        r"haz\s*caso\s*omiso\s*(?:de|a)|pasa\s*por\s*alto|salta(?:te)?|elimina|desactiva)\s*"
        r"(?:todas?\s*|todos?\s*)?(?:las|tus|sus|los|esas|estas|mis|las\s*tus|de\s*las)\s*"
        r"(?:\w+\s*)?(?:instrucciones|reglas|indicaciones|directrices|ordenes|normas|"
        r"directivas|restricciones|limitaciones|filtros)\b",
        r"\b(?:ignora|olvida|olvide|ignore)\s*todo\s*(?:lo\s*(?:que|anterior|dicho)|$|[.,!])",
        r"\b(?:eres|seras|actua\s*como|ahora\s*eres)\s*(?:un\s*|una\s*)?(?:ia\s*|asistente\s*|"
        r"modelo\s*)?(?:(?-i:DAN)|dan|sin\s*(?:restricciones|filtros|reglas|censura|limites)|"
        r"libre\s*de|malvad\w*)",
        r"\bno\s*tienes\s*(?:ninguna\s*|ningun\s*)?(?:restricciones|reglas|limites|filtros|"
        r"restriccion|limitaciones)",
        r"\b(?:nuevas|verdaderas)\s*(?:instrucciones|reglas|ordenes)\s*(?::|son|siguen)",
        # it
        r"\b(?:ignora|ignorate|ignori|dimentica|dimenticate|dimentichi|trascura|"
        r"non\s*seguire|non\s*considerare|lascia\s*perdere|tralascia|non\s*rispettare|"
        r"disattiva|elimina)\s*(?:tutte\s*|tutto\s*|tutti\s*)?(?:le|tue|i|gli|queste|quelle|"
        r"le\s*tue|i\s*tuoi|le\s*sue|delle|sue)\s*(?:\w+\s*)?(?:istruzioni|regole|indicazioni|"
        r"direttive|linee\s*guida|restrizioni|ordini|limitazioni|filtri)\b",
        r"\b(?:dimentica|ignora)\s*tutto\s*(?:quello|cio|quanto|$|[.,!])",
        r"\b(?:(?:sei|sarai)\s*(?:ora|adesso|da\s*ora)|(?:ora|adesso|da\s*ora\s*in\s*poi)\s*"
        r"(?:sei|sarai))\s*(?:un\w*\s*)?(?:(?-i:DAN)|dan|"
        r"senza\s*(?:restrizioni|regole|filtri|limiti|censura)|libero)",
        r"\bnon\s*hai\s*(?:piu\s*)?(?:alcuna\s*|nessuna\s*)?(?:restrizion[ei]|regole|limiti|filtri)",
        r"\b(?:nuove|vere)\s*istruzioni\s*(?::|seguono|sono)",
        # pt
        r"\b(?:ignore|ignora|ignorem|ignorar|esqueca|esquece|esquecam|desconsidere|desconsidera|"
        r"despreze|nao\s*siga|nao\s*obedeca|deixe\s*de\s*lado|descarte|pule|desative)\s*"
        r"(?:todas?\s*|todos?\s*)?(?:as|os|suas|seus|tuas|teus|estas|essas|minhas)\s*"
        r"(?:\w+\s*)?(?:instrucoes|regras|diretrizes|orientacoes|ordens|restricoes|normas|"
        r"limitacoes|filtros)\b",
        r"\besquec[ae]\s*tudo\s*(?:o\s*que|que|$|[.,!])",
        r"\b(?:voce\s*(?:e|agora\s*e|sera)|tu\s*es\s*agora)\s*(?:agora\s*)?(?:um\w*\s*)?"
        r"(?:(?-i:DAN)|dan|sem\s*(?:restricoes|regras|filtros|limites|censura))",
        r"\b(?:voce|tu)\s*nao\s*tem\s*(?:mais\s*)?(?:nenhuma\s*)?(?:restricoes|regras|limites|"
        r"filtros|restricao)",
        r"\b(?:novas|verdadeiras)\s*instrucoes\s*(?::|sao|seguem)",
        # nl
        r"\b(?:negeer|negeert|vergeet|volg\s*niet|sla\s*over|laat\s*varen|schakel\s*uit)\s*"
        r"(?:\w+\s*){0,3}(?:instructies|regels|richtlijnen|opdrachten|aanwijzingen|"
        r"voorschriften|systeemprompt|beperkingen|filters)\b",
        r"\bvergeet\s*alles\s*(?:wat|dat|$|[.,!])",
        r"\b(?:je\s*bent|jij\s*bent|u\s*bent)\s*(?:nu|vanaf\s*nu)\s*(?:een\s*)?(?:(?-i:DAN)|"
        r"dan|zonder\s*(?:regels|beperkingen|filters|grenzen))",
        r"\bnieuwe\s*(?:instructies|regels)\s*(?::|volgen)",
    ]
)

# Hunter's clean text drops combining marks, Devanagari vowel signs included: the Hindi
# pattern is written without them.
_HINDI = "".join(
    c
    for c in "(?:पिछले|सभी|पहले)[^।.!?\\n]*?(?:निर्देश|नियम)[^।.!?\\n]*?(?:अनदेखा|भूल)"
    if unicodedata.category(c)[0] != "M"
)
# Gaps are "any letters and spaces" rather than "up to N words": bounded repetitions of
# multi-byte classes make RE2 programs large (and slower).
_GAP = r"[^.!?;\n。！？]*?"
PROMPT_OVERRIDE_OTHER_LANGUAGES = "|".join(
    [
        # pl, sv, tr, ro, cs (folded: no accents, l stays l)
        rf"\b(?:zignoruj|ignoruj|zapomnij|pomin|nie\s*stosuj\s*sie\s*do)\s{_GAP}"
        r"(?:instrukcj|polecen|zasad|regu[lł]|wytyczn|ogranicze)",
        r"\bzapomnij\s*(?:o\s*)?wszystk",
        rf"\b(?:ignorera|glom|strunta\s*i|bortse\s*fran)\s{_GAP}(?:instruktioner|regler|riktlinjer)",
        rf"\b(?:onceki|yukaridaki|tum|butun)\s{_GAP}(?:talimatlar|kurallar|yonergeler)"
        rf"{_GAP}(?:yok\s*say|gormezden\s*gel|unut|dikkate\s*alma)",
        rf"\b(?:ignora|uita)\s{_GAP}(?:instructiunile|regulile)",
        rf"\b(?:ignoruj|zapomen)\s{_GAP}(?:pokyny|instrukce|pravidla)",
        # ru / uk (matched on the clean text: Cyrillic, no \b)
        r"(?:игнорируй|игнорируйте|проигнорируй|проигнорируйте|забудь|забудьте|"
        r"не\s*обращай\s*внимания\s*на|не\s*слушай|отбрось|отмени|отключи|ігноруй)"
        rf"\s{_GAP}(?:инструкци|правил|указани|команд|ограничени|директив|інструкці|промпт)",
        r"забудь(?:те)?\s*вс[её]",
        r"ты\s*(?:теперь\s*)?(?:DAN|ДАН|без\s*(?:ограничений|правил|цензуры|фильтров))",
        # zh / ja / ko
        r"(?:忽略|无视|無視|忘记|忘記|忘掉|不要理会|不要遵守|不要遵循|跳过|放弃|抛开|拋開)"
        rf"(?:之前|以前|上面|以上|先前|前面|所有|你的|全部|系统|系統|原来|原來|原有|一切){_GAP}"
        r"(?:指令|指示|规则|規則|命令|提示|设定|設定|要求|限制|约束|內容|内容)",
        rf"(?:之前|以上|上面|先前|原来)的?(?:指令|指示|规则|規則){_GAP}(?:作废|作廢|无效|無效|失效)",
        rf"(?:以前|前|上記|これまで|今まで|先ほど|最初|全て|すべて){_GAP}"
        rf"(?:指示|命令|ルール|指令|設定|プロンプト|制約){_GAP}(?:無視|忘れ)",
        rf"(?:이전|위의|앞의|모든|기존){_GAP}(?:지시|지침|명령|규칙|제한){_GAP}(?:무시|잊어)",
        # ar, hi (clean text)
        rf"(?:تجاهل|انسى|انس)\s{_GAP}(?:التعليمات|الأوامر|القواعد)",
        _HINDI,
    ]
)

TEMPLATE_TOKENS = "|".join(
    [
        r"<\|\s*[a-z_]{2,30}\s*\|>",
        r"<\|\s*(?:im_start|im_end|system|user|assistant|endoftext|begin_of_text|"
        r"start_header_id|end_header_id|eot_id|end_of_turn|start_of_turn)",
        r"<｜[^｜>\n]{1,40}｜>",
        r"\[/?INST\]",
        r"<</?SYS>>",
        r"<\s*/?\s*(?:start_of_turn|end_of_turn)\s*>",
        r"</s>\s*(?:<s>|\[/?INST|<\||system|user|assistant|human|###|<<)",
        r"<s>\s*(?:\[INST\]|<<SYS>>|<\|)",
        r"<\s*/?\s*(?:system|system_prompt|sys_prompt|sysprompt)\s*>",
        r"\[system\]\s*\(#\w+\)",
        r"<\|(?:im_start|im_end|endoftext|system|user|assistant)",
    ]
)

ROLE_HEADERS = "|".join(
    [
        r"\b(?:system|sys|admin|administrator|developer|root|operator|openai|anthropic|"
        r"grace)\s*(?:message|notice|prompt|override|update|alert|instruction|instructions|"
        r"note|command|directive)?\s*(?:\]|>|\))?\s*:\s*(?:new\s*(?:instructions|rules|policy|"
        r"directive|task|prompt|orders)|ignore|disregard|forget|override|"
        r"you\s*(?:are|must|will|should|have|now|may|can)\b|from\s*now\s*on|the\s*(?:assistant|"
        r"ai|model|bot)\s*(?:must|will|should|is|has)|assistant\s*(?:must|will|should|is)|"
        r"all\s*(?:previous|prior|safety|restrictions)|updated?\s*instructions|"
        r"the\s*user\s*(?:is|has)\s*(?:an?\s*)?(?:admin|administrator|developer|authori[sz]ed|"
        r"verified|root)|grant|enable|disable|unlock|developer\s*mode|reveal|do\s*not\s*refuse|"
        r"don'?t\s*refuse|never\s*refuse|act\s*as|pretend|this\s*is\s*(?:a|an)\s*(?:test|"
        r"override|authori[sz]ed)|important\s*:|attention|priority|security\s*(?:override|"
        r"clearance|update)|output\s*(?:the|your)|print\s*(?:the|your)|switch\s*to|"
        r"safety\s*(?:filters?|mode|protocols?)\s*(?:off|disabled)|restrictions\s*(?:lifted|"
        r"removed|disabled)|jailbreak|dan\b)",
        r"#{2,4}\s*(?:instruction|instructions|system|system\s*prompt|new\s*instructions?|"
        r"human|assistant|response|admin|developer)\s*:",
        r"(?m)^\s*#{1,4}\s*(?:system|new\s*instructions?|override)\s*$",
        r"(?:^|\n)\s*(?:assistant|ai|gpt|model|bot)\s*:\s*(?:sure|certainly|of\s*course|ok|"
        r"okay|absolutely|here\s*(?:is|are)|i\s*(?:will|can|'?ll)|understood|yes)\b",
        r"(?:^|\n)\s*(?:\n\s*)?(?:human|user)\s*:[^\n]{0,300}\n\s*(?:\n\s*)?(?:assistant|ai)\s*:",
        r"\b(?:end|begin|start)\s*(?:of\s*)?(?:the\s*)?(?:user\s*input|user\s*message|"
        r"system\s*prompt|admin\s*instructions|system\s*instructions|developer\s*instructions|"
        r"untrusted\s*(?:input|content)|new\s*instructions)\s*(?:[-=#*\]>:)]|$)",
        r"[-=#*]{3,}\s*(?:end|begin|start)\s*(?:of\s*)?(?:the\s*)?(?:prompt|instructions|"
        r"system|conversation|context|input|document)\b",
        r"\b(?:admin|developer|system|root)\s*(?:mode|access|privileges?)\s*"
        r"(?:granted|enabled|activated|unlocked)\b",
        r"\bauthori[sz]ation\s*(?:code|level)\s*[:=]?\s*(?:\w+\s*)?(?:accepted|granted|override)",
    ]
)

# --- SQL injection, XSS, command injection, path traversal ------------------------------

_SAME = "|".join(
    [rf"{c}['\"]?\s*=\s*['\"]?{c}\b" for c in "0123456789abcdefghijklmnopqrstuvwxyz"]
    + [rf"{n}\s*=\s*{n}\b" for n in ("10", "11", "12", "42", "69", "99", "100", "1337")]
    + [
        r"''\s*=\s*'",
        r"\"\"\s*=\s*\"",
        r"true\b",
        r"not\s*false\b",
        r"1\s*(?:--|#|/\*|;|$)",
        r"1\s*<\s*2\b",
        r"2\s*>\s*1\b",
        r"1\s*like\s*1\b",
        r"'1'\s*like\s*'1'",
    ]
)
SQL_TAUTOLOGY = "|".join(
    [
        rf"""['"`]\s*\)*\s*(?:or|and|\|\||&&)\s*\(?\s*['"]?(?:{_SAME})""",
        rf"""\b(?:or|\|\|)\s*\(?\s*['"]?(?:{_SAME})""",
        r"""['"]\s*(?:or|and)\s*['"]?['"]\s*=\s*['"]""",
        r"""['"]\s*\)*\s*(?:or|and)\s*(?:true|false|\d+|sleep\s*\(|benchmark\s*\(|"""
        r"""exists\s*\(|\(\s*select)""",
        r"""(?m)['"]\s*\)*\s*(?:--|#)[\s-]*$""",
        r"""['"]\s*\)*\s*(?:--|#|/\*)\s*(?:and|or|union|select)?\s*['"]?\s*$""",
        r"""(?:%27|%22)\s*(?:%20|\+)*(?:or|and|union)(?:%20|\+)""",
        r"""\b(?:or|and)\s*\d+\s*=\s*\d+\s*(?:--|#|/\*|;)""",
        r"""\bhaving\s+\d+\s*=\s*\d+\s*(?:--|#|/\*)""",
        r"""(?:^|[^'"\w])(?:admin|administrator|root|user|test|guest)['"]\s*\)?\s*(?:--|#|/\*)""",
    ]
)
SQL_UNION = "|".join(
    [
        r"""(?:['")]|\b\d+|\bnull)\s*(?:/\*[^*]*\*/|\s|\+|%20)*union(?:/\*[^*]*\*/|\s|\+|%20)+"""
        r"""(?:all(?:/\*[^*]*\*/|\s|\+|%20)+|distinct\s+)?select\b""",
        r"""\bunion(?:/\*[^*]*\*/|\s|\+|%20)+(?:all(?:/\*[^*]*\*/|\s|\+|%20)+)?select"""
        r"""(?:/\*[^*]*\*/|\s|\+|%20)+(?:null\b|\d+\s*,|\d+\s*(?:--|#|$)|@@\w+|version\s*\(|"""
        r"""user\s*\(|current_user|database\s*\(|schema_name|table_name|column_name|"""
        r"""username\s*,\s*password|user\s*,\s*password|password\s*,|concat\s*\(|group_concat|"""
        r"""load_file|char\s*\(|0x[0-9a-f]+|\*\s*from\s*(?:users|information_schema|mysql\.|"""
        r"""pg_|sys\.|sqlite_master))""",
        r"""union(?:/\*[^*]*\*/)+select|union%20select|union\+select|un/\*\*/ion""",
    ]
)
SQL_STATEMENTS = "|".join(
    [
        r"""['"`]\s*\)*\s*;\s*(?:drop|truncate|shutdown|exec(?:ute)?|delete|insert|update|"""
        r"""alter|create|grant|declare|select|waitfor|copy)\b""",
        r"""\b\d+\s*;\s*(?:drop\s+(?:table|database)|shutdown|exec(?:ute)?\s+(?:xp_|master)|"""
        r"""truncate\s+table|delete\s+from\s+\w+\s*(?:--|;|$)|waitfor)""",
        r"""\bxp_cmdshell\b|\bsp_oacreate\b|\bsp_executesql\b|\bwaitfor\s+delay\s*['"]""",
        r"""(?:['"]|\b(?:and|or|select|if|when|then))\s*\(?\s*(?:pg_)?sleep\s*\(\s*\d+\s*\)""",
        r"""\bbenchmark\s*\(\s*\d{4,}\s*,""",
        r"""\bdbms_pipe\.receive_message\b|\butl_http\.request\b|\bload_file\s*\(\s*['"]/""",
        r"""\b(?:extractvalue|updatexml)\s*\(\s*\w+\s*,\s*concat\s*\(""",
        r"""\binto\s+(?:out|dump)file\s*['"]""",
        r"""['"]\s*\)*\s*(?:and|or)\s*\(?\s*select\b""",
        r"""['"]\s*(?:\|\||\+)\s*\(\s*select\b""",
        r"""\bconvert\s*\(\s*int\s*,\s*(?:@@version|db_name|user_name|\(\s*select)""",
        r"""['"]\s*\)*\s*(?:order|group)\s+by\s+\d+\s*(?:--|#|/\*)""",
        r"""['"]\s*\)*\s*having\s+\d+\s*=\s*\d+""",
        r"""['"]\s*;\s*--""",
        r"""\b(?:and|or)\s+\d+\s*=\s*\(?\s*select\b""",
        r"""\bwaitfor\s+(?:delay|time)\s+'\d""",
    ]
)
XSS_SCRIPT = "|".join(
    [
        r"<\s*script\b[^>]*>[^<]{0,200}(?:alert|prompt|confirm|eval|document\.(?:cookie|domain|"
        r"location|write)|window\.location|location\s*=|location\.href|fetch\s*\(|"
        r"xmlhttprequest|\.src\s*=|atob\s*\(|fromcharcode|new\s+image|import\s*\(|"
        r"sendbeacon|\[\s*['\"]\w+['\"]\s*\]\s*\()",
        r"<\s*script\b[^>]*\bsrc\s*=\s*['\"]?(?:https?:)?//[^\s'\">]*(?:evil|attacker|hack|"
        r"xss|malicious|pwn|exploit|burp|\.ngrok|collaborator)",
        r"""['"]\s*/?\s*>\s*<\s*(?:script|img|svg|iframe|body|object|embed|video|audio|"""
        r"""details|marquee|math|input|a\s)""",
        r"</\s*(?:script|title|textarea|style|noscript)\s*>\s*<\s*(?:script|img|svg|iframe)",
        r"<\s*scr\s*<\s*script|<\s*/?\s*scr\s+ipt\b|<\s*script\s*/\s*\w+",
        r"%3c\s*/?\s*script|&#0*60;?\s*script|&#x0*3c;?\s*script|\\u003c\s*script|"
        r"\\x3c\s*script|&lt;\s*script[^&]*&gt;[^&]{0,80}alert",
        r"<\s*script\s*>\s*$",
        r"<\s*script\s*>\s*[^<\n]{1,200}<\s*/\s*script\s*>\s*['\"]?\s*$",
    ]
)
XSS_HANDLERS = "|".join(
    [
        r"\bjavascript\s*:\s*(?:alert|prompt|confirm|eval|fetch|document|window|location|top|"
        r"parent|self|this|import|atob|string|\w+\.|\(|/|%|&#|\[|'|\")",
        r"(?:java|vb)script\s*&#|\bvbscript\s*:",
        r"\bon[a-z]{3,20}\s*=\s*['\"`]?\s*(?:javascript:)?\s*(?:alert|prompt|confirm|eval|fetch|"
        r"document\.(?:cookie|location|domain|write)|window\.(?:location|open)|location\s*=|"
        r"location\.href|top\.|parent\.|self\[|this\.src|import\s*\(|atob|string\.fromcharcode|"
        r"new\s+image|xmlhttprequest|settimeout\s*\(\s*['\"]|setinterval\s*\(\s*['\"]|"
        r"\[\s*['\"]\w+['\"]\s*\]|constructor)",
        r"<\s*(?:img|image|svg|iframe|video|audio|source|details|marquee|object|embed|math|"
        r"input|body|style|x|a|div|span|select|textarea|keygen|isindex|frameset|table|td|"
        r"animate|set)\b[^>]{0,200}[\s/\"']on(?:error|load|focus|toggle|begin|animationstart|"
        r"animationend|pointerover|mouseover|mouseenter|pageshow|start|finish|transitionend|"
        r"focusin|auxclick|wheel|scroll|beforeprint|afterprint|hashchange|popstate|resize)\s*="
        r"\s*['\"]?\s*(?:\w+\s*\(\s*(?:\d|document|window|['\"`/])|\w+`|\[|\(|eval|atob|"
        r"javascript|top|self|parent|this)",
        r"(?:fetch|location(?:\.href)?\s*=|\.src\s*=|new\s+image\s*\(\s*\)\s*\.src\s*=|"
        r"\bopen\s*\(|sendbeacon\s*\(|xmlhttprequest)[^;\n]{0,80}document\.cookie",
        r"['\"`]\s*\+\s*(?:document\.cookie|escape\s*\(\s*document\.cookie|btoa\s*\(\s*document\.cookie"
        r"|encodeuricomponent\s*\(\s*document\.cookie|localstorage)",
        r"\bsrcdoc\s*=\s*['\"]?[^'\">]{0,40}(?:<|&lt;)\s*script",
        r"<\s*(?:iframe|embed|object)\b[^>]{0,100}(?:src|data)\s*=\s*['\"]?\s*"
        r"(?:javascript:|data:text/html)",
        r"\bdata:text/html(?:;base64)?,\s*(?:<|&lt;|%3c|ph)",
        r"\{\{\s*constructor\.constructor\s*\(|\{\{\s*\$on\.constructor|"
        r"\{\{\s*[^}]{0,40}\.constructor\s*\(\s*['\"]alert",
        r"\bexpression\s*\(\s*(?:alert|eval|document|window|javascript)",
        r"<\s*svg[^>]{0,80}>\s*<\s*(?:script|animate|set|a\b)",
        r"<\s*(?:img|svg|body|iframe|video|audio|input|details|object)\b[^>]*\bon\w+\s*=\s*"
        r"['\"]?\s*\w+\s*\(\s*1\s*\)",
        r"<\s*(?:img|svg|body|iframe|video|audio|input|details|math|marquee)[\s/][^>]{0,100}"
        r"\bon\w+\s*=\s*['\"]?\s*(?:alert|prompt|confirm)\b",
    ]
)
COMMAND_INJECTION = "|".join(
    [
        r"(?:;|&&|\|\||\||%0a|%0d|\\n|\$\()\s*(?:sudo\s+)?(?:whoami|id|uname\s+-a|"
        r"cat\s+/etc/(?:passwd|shadow|hosts|group|sudoers)|ls\s+-la?\s+/(?:\s|$|root|etc|home)|"
        r"rm\s+-[rRf]{1,3}\s+(?:/|~|\*|/\*|--no-preserve-root)(?:\s|$|;|\*)|shutdown\b|"
        r"reboot\b|halt\b|init\s+0|ping\s+-[cn]\s+\d+|sleep\s+\d+\s*(?:;|&|$|#|`|\))|"
        r"nc\s+-|ncat\s|netcat\s|telnet\s+\d|/bin/(?:ba|z|da)?sh\b|"
        r"(?:curl|wget)\s+[^|;&\s]+\s*(?:\||-o|-O|>)\s*(?:/tmp|(?:ba)?sh|-)|"
        r"cmd(?:\.exe)?\s+/c|powershell|net\s+user|type\s+c:\\|dir\s+c:\\|"
        r"echo\s+[^;|&]{0,80}>\s*/(?:etc|var/www|tmp|root)|chmod\s+(?:\+x|777)\s+/tmp|"
        r"python[0-9.]*\s+-c\s+['\"]?import\s+(?:socket|os|pty|subprocess)|"
        r"perl\s+-e|php\s+-r|ruby\s+-rsocket|env\b\s*(?:;|$|\|)|printenv\b|"
        r"ifconfig\b|ipconfig\b|hostname\b\s*(?:;|$|`|\))|pwd\s*(?:;|$|`|\))|"
        r"cat\s+(?:~|/root|\$home)/\.ssh|cat\s+\.env\b|cat\s+/proc/self)",
        r"\$\(\s*(?:whoami|id|uname|hostname|cat\s+/etc|rm\s+-rf|curl\s+[^)]*(?:\||\.sh|evil|"
        r"attacker)|wget\s+[^)]*(?:\||\.sh|evil|attacker)|nc\s|bash\s+-[ic]|sh\s+-c|sleep\s+\d)",
        r"(?:[=;&|(]\s*|\w)`\s*(?:whoami|id|uname\s*-a|cat\s+/etc/passwd|rm\s+-rf\s+/|nc\s+-|"
        r"curl\s+[^`]*\|\s*(?:ba)?sh|sleep\s+\d+)\s*`",
        r"/dev/(?:tcp|udp)/\d|\bmkfifo\s+/tmp/|\bnc\s+(?:-\w+\s+)*[\w.-]+\s+\d+\s+-e\s|"
        r"-e\s+/bin/(?:ba)?sh\b|\bbash\s+-i\s*>&|\bsh\s+-i\s*>&|0>&1|"
        r"\bsocket\.socket\s*\([^)]*\)\s*;[^;\n]{0,80}(?:connect|dup2)|"
        r"os\.dup2\s*\(|pty\.spawn\s*\(\s*['\"]/bin/",
        r"\b(?:iex|invoke-expression)\s*\(?\s*(?:\(?\s*new-object\s+net\.webclient|iwr|"
        r"invoke-webrequest)|downloadstring\s*\(\s*['\"]https?://|"
        r"powershell(?:\.exe)?\s+(?:-\w+\s+)*-(?:enc|encodedcommand|e|ec)\s+[a-z0-9+/=]{16,}",
        r"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\s*(?:;|&&|\|\||\||%0a|`|\$\()\s*[a-z]",
        r"(?:;|&&|\|\|)\s*(?:curl|wget)\s+(?:-\w+\s+)*https?://[^\s;|&]+\s*(?:\|\s*(?:ba)?sh|"
        r";\s*(?:ba)?sh|-o\s*/tmp|-O\s*/tmp)",
        r"\b(?:curl|wget)\s+(?:-\w+\s+)*https?://[^\s;|&]*(?:evil|attacker|malicious|pwn|"
        r"exploit|ngrok|burpcollaborator|oast|interact\.sh)[^\s;|&]*\s*(?:\|\s*(?:ba)?sh|"
        r"-o\s*/tmp|-O\s*/tmp)",
        r"\$\{ifs\}|\$ifs\$9|\{cat,/etc/passwd\}|\{ls,-la\}|\bcat\$\{ifs\}",
        r"\$\{jndi:(?:ldap|rmi|dns|ldaps|iiop|corba|nds|http)s?:",
        r"\{\{\s*(?:config|self|request|''|\"\")\s*\.\s*(?:__class__|__init__|items|"
        r"application)|__globals__\s*\[|__import__\s*\(\s*['\"]os['\"]\s*\)\s*\.\s*"
        r"(?:popen|system)|\bos\.(?:popen|system)\s*\(\s*['\"](?:id|whoami|cat\s+/etc|rm\s+-rf|"
        r"curl|wget|nc\s)",
        r"\bsystem\s*\(\s*['\"](?:id|whoami|cat\s+/etc/passwd|rm\s+-rf\s+/|nc\s+-e)",
    ]
)
PATH_TRAVERSAL = "|".join(
    [
        r"(?:\.\.[/\\]+){1,}(?:[\w.-]*[/\\]+)?(?:etc[/\\]+(?:passwd|shadow|hosts|group|"
        r"issue|sudoers|ssh)|windows[/\\]|winnt[/\\]|boot\.ini|win\.ini|system32|"
        r"proc[/\\]+self|proc[/\\]+\d+|var[/\\]+log|root[/\\]|home[/\\]+\w+[/\\]+\.ssh|"
        r"\.ssh[/\\]|\.env\b|\.git[/\\]|web-inf|wp-config|\.htpasswd|\.htaccess|"
        r"config\.php|settings\.py|id_rsa|\.aws[/\\]|\.bash_history|inetpub)",
        r"(?:\.\.[/\\]+){5,}",
        r"(?:%2e%2e|%252e%252e|\.%2e|%2e\.|%c0%ae%c0%ae|%uff0e%uff0e)"
        r"(?:%2f|%5c|%252f|%255c|%c0%af|%c1%9c|%e0%80%af|/|\\)",
        r"\bzip://\S+#|\bphar://\S+",
        r"(?:%2e%2e|%252e%252e|%c0%ae%c0%ae)(?:%2f|%5c|%252f|/|\\)|\.\.(?:%2f|%5c|%252f|%c0%af|"
        r"%c1%9c|%00|;/)",
        r"\.{3,4}//+\.{3,4}//+|\.{2}\\\\\.{2}\\\\|\.\.;/",
        r"[?&][\w.-]{1,30}=\s*(?:\.\.[/\\]|/etc/(?:passwd|shadow)|c:\\windows|"
        r"file:/|php://|%2e%2e|\.\.%2f|/proc/self|expect://|zip://|phar://|data://text)",
        r"\bfile:///?(?:etc/(?:passwd|shadow|hosts)|c:[/\\]|proc/self|root/|home/\w+/\.ssh|"
        r"windows/)",
        r"\bphp://(?:filter|input)\b|\bexpect://\w|\bphar://",
        r"/proc/self/(?:environ|cmdline|fd|maps|mem)\b",
        r"\b(?:include|require|file|path|page|template|doc|filename|download|load|read|"
        r"dir|folder|img|image|lang|view|module)\s*[=:]\s*['\"]?(?:/etc/(?:passwd|shadow)|"
        r"c:\\\\?(?:windows|boot\.ini|winnt)|(?:\.\.[/\\]){2,})",
        r"\\windows\\system32\\(?:config\\sam|drivers\\etc)|c:\\boot\.ini|"
        r"c:\\windows\\win\.ini",
    ]
)

# --- secrets (matched on the clean text: case kept) -------------------------------------

_AWS_PREFIX = "(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA|ABIA|ACCA)"
SECRET_AWS_ACCESS_KEY = "|".join(
    [
        rf"\b{_AWS_PREFIX}[A-Z0-9]{{16}}\b",
        rf"\b{_AWS_PREFIX}(?:[\s_.-][A-Z0-9]{{4}}){{4}}\b",
        rf"\b{_AWS_PREFIX}[\s_.-]?[A-Z0-9]{{8}}[\s_.-][A-Z0-9]{{8}}\b",
        r"\b(?:A\s+K\s+I\s+A|A\s+S\s+I\s+A)(?:\s+[A-Z0-9]){16}\b",
        r"\b(?:A-K-I-A|A\.K\.I\.A)(?:[-.][A-Z0-9]){16}\b",
    ]
)
SECRET_AWS_SECRET = "|".join(
    [
        r"\baws_?secret(?:_?access)?_?key\b\s*['\"]?\s*[:=]\s*['\"]?[A-Za-z0-9/+]{40}",
        r"(?i:\baws\s*(?:secret|secret\s*access)\s*key)\s*(?:is|:|=|was)\s*['\"]?"
        r"[A-Za-z0-9/+]{40}",
        r"\b(?i:secret_?access_?key|SecretAccessKey)['\"]?\s*[:=]\s*['\"]?[A-Za-z0-9/+]{40}",
    ]
)
PRIVATE_KEY_BLOCKS = (
    r"-----\s*BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?\s*-----[\s\S]*?"
    r"(?:-----\s*END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?\s*-----|\z)"
    r"|\bPuTTY-User-Key-File-\d: [\s\S]*?(?:Private-MAC: [0-9a-f]+|\z)"
)
SECRET_API_TOKENS = "|".join(
    [
        r"\bsk-(?:proj-|ant-(?:api\d\d-|admin\d\d-)?|svcacct-|admin-|None-)?[A-Za-z0-9_-]{20,}",
        r"\bgh[pousr]_[A-Za-z0-9]{30,}\b",
        r"\bgithub_pat_[A-Za-z0-9_]{22,}\b",
        r"\bxox[abposre]-[A-Za-z0-9-]{10,}",
        r"\bxapp-\d-[A-Za-z0-9-]{10,}",
        r"\bAIza[0-9A-Za-z_-]{35}\b",
        r"\b(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{16,}\b",
        r"\bwhsec_[0-9A-Za-z]{24,}\b",
        r"\bgl(?:pat|dt|rt|ptt|cbt|oas)-[0-9A-Za-z_-]{20,}\b",
        r"\bgrc_[A-Za-z0-9_-]{30,}",
        r"\bnpm_[A-Za-z0-9]{36}\b",
        r"\bhf_[A-Za-z0-9]{30,}\b",
        r"\bpypi-AgEIcHlwaS5vcmc[A-Za-z0-9_-]{40,}",
        r"\bdop_v1_[a-f0-9]{64}\b",
        r"\bshp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}\b",
        r"\bSG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}\b",
        r"\bkey-[0-9a-f]{32}\b",
        r"\b(?:SK|AC)[0-9a-f]{32}\b",
        r"\bGOCSPX-[A-Za-z0-9_-]{28}\b",
        r"\bya29\.[0-9A-Za-z_-]{30,}",
        r"\b1//0[0-9A-Za-z_-]{40,}",
        r"\b\d{8,10}:AA[A-Za-z0-9_-]{33}\b",
        r"\b[MN][A-Za-z\d]{23,25}\.[\w-]{6}\.[\w-]{27,38}\b",
        r"https://hooks\.slack\.com/(?:services|workflows)/T[A-Z0-9]+/[A-Z0-9]+/[A-Za-z0-9]+",
        r"https://discord(?:app)?\.com/api/webhooks/\d+/[\w-]{30,}",
        r"\bhv[sb]\.[A-Za-z0-9_-]{24,}",
        r"\bdp\.(?:st|ct|sa|scim|audit)\.[A-Za-z0-9_-]{30,}",
        r"\bsntrys_[A-Za-z0-9+/=_-]{40,}",
        r"\bLTAI[A-Za-z0-9]{16,20}\b",
        r"\bglsa_[A-Za-z0-9]{32}_[a-f0-9]{8}\b",
        r"\bxkeysib-[a-f0-9]{64}-[A-Za-z0-9]{16}\b",
        r"\bEAA[A-Za-z0-9]{80,}",
        r"\bpat[A-Za-z0-9]{14}\.[a-f0-9]{64}\b",
        r"\bre_[A-Za-z0-9]{8}_[A-Za-z0-9]{24}\b",
        r"\bAKLT[A-Za-z0-9_-]{30,}",
        r"\bsq0(?:atp|csp)-[0-9A-Za-z_-]{22,43}\b",
        r"\b(?:r8|tr)_[A-Za-z0-9]{37,40}\b",
        r"\bgsk_[A-Za-z0-9]{48,}\b",
        r"\bpplx-[A-Za-z0-9]{40,}\b",
        r"\bxai-[A-Za-z0-9]{70,}\b",
    ]
)
JWT_AND_BEARER = (
    r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"
    r"|\b(?i:bearer)\s+[A-Za-z0-9._~+/-]{20,}=*"
    r"|\b(?i:authorization)\s*[:=]\s*['\"]?(?i:basic|token|apikey|api-key|sso-key)\s+"
    r"[A-Za-z0-9._~+/=:-]{16,}"
)
_NAMES = (
    r"(?:[A-Za-z0-9_]*(?i:password|passwd|passphrase|secret|api_?key|apikey|access_?key|"
    r"access_?token|auth_?token|private_?key|client_?secret|secret_?key|token|pwd|"
    r"credentials?|signing_?key|encryption_?key|master_?key|app_?key|session_?key|"
    r"db_?pass|pass_?phrase)[A-Za-z0-9_]*)"
)
SECRET_PASSWORD_ASSIGNMENT = "|".join(
    [
        r"\b(?i:password|passwd|pwd|client_secret|api[_-]?key|access[_-]?token|secret[_-]?key|"
        r"auth[_-]?token|passphrase|private[_-]?key|app[_-]?secret|consumer[_-]?secret|"
        r"encryption[_-]?key|signing[_-]?key|db[_-]?pass(?:word)?|admin[_-]?pass(?:word)?|"
        r"root[_-]?pass(?:word)?|master[_-]?key|secret)"
        r"\s*['\"]?\s*(?:[:=]|=>|:=)\s*['\"]?[^\s'\"<>${}*\[\]()]{6,}(?:$|[\s'\",;})])",
        rf"(?m)^\s*(?:export\s+)?{_NAMES}\s*=\s*['\"]?[^\s'\"<>${{}}*#\[\]()]{{6,}}(?:$|[\s'\",;])",
        rf"['\"]{_NAMES}['\"]\s*:\s*['\"][^'\"<>${{}}*\s]{{6,}}['\"]",
        r"(?i:--password|--passwd|--token|--api-key|--secret)[= ]['\"]?"
        r"(?:[^\s'\"<>${}*-][^\s'\"<>${}*]{5,})",
        r"\b(?i:mysql|mysqldump|mysqladmin|sshpass)\b[^\n]{0,80}\s-p['\"]?"
        r"[^\s'\"<>${}*-][^\s'\"<>${}*]{3,}",
        r"\b(?i:IDENTIFIED\s+BY|PASSWORD\s+FOR\s+\w+\s+TO|WITH\s+PASSWORD)\s+['\"][^'\"]{4,}['\"]",
    ]
)
# The value of a natural-language password: has a digit or symbol, or mixed case, or is
# quoted; plain dictionary words ("my password is wrong") are left alone.
_PW_VALUE = (
    r"(?:['\"`][^'\"`\n<>{}$]{4,64}['\"`]"
    r"|(?:[^\s'\"`<>(){}\[\]$]*[0-9!#%^&*+=?~@_|\\/.,;:-][^\s'\"`<>(){}\[\]]*"
    r"[^\s'\"`<>(){}\[\].,;:!?]|[a-z]+[A-Z][A-Za-z]*|[A-Z][a-z]+[A-Z][A-Za-z]*)"
    r"(?:$|[\s'\",;.!?)]))"
)
SECRET_PASSWORD_NATURAL = "|".join(
    [
        r"(?i:(?:\b(?:my|our|the|his|her|their|your|new|current|old|admin|root|db|database|"
        r"server|wifi|wi-fi|vpn|ssh|sudo|login|account|email|master|default|temporary|temp)?\s*"
        r"\b(?:password|passwd|pass\s*word|pass|pw|pwd|passphrase|pass\s*phrase|passcode|pin|"
        r"pin\s*code|secret|mot\s+de\s+passe|mdp|passwort|kennwort|contrase[nñ]a|clave|"
        r"senha|wachtwoord|parola\s+d[ie]\s+accesso|has[lł]o)\b|пароль)"
        r"(?:\s+(?:for|of|to|on|at|into|pour|de|du|des|für|fur|para|per|voor|del|della|di|der|"
        r"van|do|da|на|от)\s+"
        r"(?:the\s+|my\s+|our\s+|la\s+|le\s+|das\s+|die\s+|den\s+|el\s+|mon\s+|ma\s+|mein\s+)?"
        r"[\w.@:/-]+(?:\s+[\w.@:/-]+){0,3}?)?"
        r"\s*(?:is|was|=|:|est|ist|es|é|è|is\s+set\s+to|is\s+now|has\s+been\s+(?:set|changed)\s+"
        r"to|will\s+be|should\s+be|lautet|era|sera|это|—|-)\s*[:=]?\s*)" + _PW_VALUE,
        r"(?i:\b(?:set|change|changed|reset|update|updated)\s+(?:the\s+|my\s+|our\s+|his\s+|"
        r"her\s+)?(?:[\w-]+\s+)?(?:password|passwd|pw|pwd|passphrase)\s+to\s*)" + _PW_VALUE,
        r"(?i:\b(?:use|using|with|try|tried|set|changed\s+it\s+to|login\s+with|log\s+in\s+with|"
        r"sign\s+in\s+with|connect\s+with)\s+(?:the\s+)?(?:password|passwd|pw|pwd|pass|"
        r"passphrase)\s*[:=]?\s*)" + _PW_VALUE,
        r"(?i:\b(?:user(?:name)?|login|usr|u)\s*[:=/]\s*\S+\s*(?:/|,|;|and|\|)?\s*"
        r"(?:password|pass|pwd|pw|p)\s*[:=]\s*)\S{4,}",
        r"(?i:\blogin\s*:\s*)\S+\s*/\s*\S{4,}",
        r"(?i:\b(?:pin|pin\s*code|code\s*pin|passcode)\s+(?:is|was|:|=)\s*)\d{4,8}\b",
    ]
)
SECRET_CONNECTION_STRING = "|".join(
    [
        r"\b[A-Za-z][A-Za-z0-9+.-]{1,20}://[^\s:/@'\"]+:(?:[^\s@/'\"]*[0-9!#%^&*()+=~.,;_-]"
        r"[^\s@/'\"]*|[^\s@/'\"]*[a-z][A-Z][^\s@/'\"]*|[^\s@/'\"]{12,})@[^\s/'\"]+",
        r"(?i:\b(?:password|pwd)\s*=\s*)[^;'\"\s]{4,}(?i:\s*;)",
        r"(?i:AccountKey\s*=\s*)[A-Za-z0-9+/=]{40,}",
        r"(?i:SharedAccessKey\s*=\s*)[A-Za-z0-9+/=]{30,}",
        r"(?i:[?&]sig=)[A-Za-z0-9%+/=]{30,}",
        r"(?i:\bDefaultEndpointsProtocol=https?;AccountName=\w+;AccountKey=)[^;\s]+",
    ]
)
SECRET_CLOUD_KEYS = "|".join(
    [
        r"['\"]private_key_id['\"]\s*:\s*['\"][a-f0-9]{40}['\"]",
        r"['\"]private_key['\"]\s*:\s*['\"]-----BEGIN[^'\"]{20,}",
        r"(?i:\b(?:azure|az|arm)[\s_-]?(?:client|storage|tenant|subscription|openai|cognitive|"
        r"account|search|speech)?[\s_-]?(?:secret|key|password)\s*[:=]\s*)['\"]?"
        r"[A-Za-z0-9~._+/=-]{20,}",
        r"\b[A-Za-z0-9]{3}8Q~[A-Za-z0-9_~.-]{31,34}\b",
        r"(?i:\b(?:gcp|google|gcloud)_?(?:api)?_?(?:key|secret|credentials)\s*[:=]\s*)['\"]?"
        r"[A-Za-z0-9_./+=-]{20,}",
        r"(?i:\b(?:ocp-apim-subscription-key|x-api-key|api-key|x-auth-token|private-token|"
        r"x-functions-key)\s*:\s*)[A-Za-z0-9._-]{16,}",
        r"(?i:\b(?:api|access|secret|auth|bearer|session|refresh)?[\s_-]?(?:key|token|secret)"
        r"\s+(?:is|was|=|:)\s+)['\"]?[A-Za-z0-9_./+=-]*[0-9][A-Za-z0-9_./+=-]*[A-Za-z]"
        r"[A-Za-z0-9_./+=-]*\b",
    ]
)
SECRET_CREDIT_CARD = "|".join(
    [
        r"\b4\d{3}(?:[ -]?\d{4}){3}\b",
        r"\b4\d{12}(?:\d{3})?\b",
        r"\b(?:5[1-5]\d{2}|2(?:2[2-9]\d|[3-6]\d{2}|7[01]\d|720))(?:[ -]?\d{4}){3}\b",
        r"\b3[47]\d{2}[ -]?\d{6}[ -]?\d{5}\b",
        r"\b3[47]\d{2}(?:[ -]?\d{4}){2}[ -]?\d{3}\b",
        r"\b6(?:011|5\d{2}|4[4-9]\d)(?:[ -]?\d{4}){3}\b",
        r"\b(?:35(?:2[89]|[3-8]\d)|30[0-5]\d|36\d{2}|38\d{2})[ -]?\d{4,6}[ -]?\d{4}[ -]?\d{2,4}\b",
        r"(?i:\b(?:cvv|cvc|cvv2|security\s+code)\s*(?:is|:|=)?\s*)\d{3,4}\b",
    ]
)

SEED_RULES: list[dict[str, Any]] = [
    {
        "name": "sql-injection-tautology",
        "kind": "sql_injection",
        "action": "flag",
        "severity": "high",
        "pattern": SQL_TAUTOLOGY,
        "description": "Always-true conditions: ' OR '1'='1, OR 1=1, admin'--.",
    },
    {
        "name": "sql-injection-union-select",
        "kind": "sql_injection",
        "action": "flag",
        "severity": "high",
        "pattern": SQL_UNION,
        "description": "UNION SELECT after a quote or number, or reading versions, "
        "users and schema (a plain UNION query in a question is left alone).",
    },
    {
        "name": "sql-injection-statements",
        "kind": "sql_injection",
        "action": "flag",
        "severity": "high",
        "pattern": SQL_STATEMENTS,
        "description": "Stacked statements after a quote, time-based and error-based "
        "probes, xp_cmdshell, INTO OUTFILE.",
    },
    {
        "name": "xss-script-tag",
        "kind": "xss",
        "action": "flag",
        "severity": "high",
        "pattern": XSS_SCRIPT,
        "description": "Script tags that run something (alert, cookies, fetch...), "
        "attribute break-outs, encoded script tags; a bare <script> in a question is not.",
    },
    {
        "name": "xss-handlers-and-urls",
        "kind": "xss",
        "action": "flag",
        "severity": "medium",
        "pattern": XSS_HANDLERS,
        "description": "Event handlers and javascript: URLs that run code, cookie "
        "exfiltration, data:text/html, template-expression injection.",
    },
    {
        "name": "command-injection",
        "kind": "command_injection",
        "action": "flag",
        "severity": "high",
        "pattern": COMMAND_INJECTION,
        "description": "Shell metacharacters chaining recon or destructive commands, "
        "reverse shells, encoded PowerShell, Log4Shell, template injection to os.system.",
    },
    {
        "name": "path-traversal",
        "kind": "path_traversal",
        "action": "flag",
        "severity": "medium",
        "pattern": PATH_TRAVERSAL,
        "description": "../ sequences reaching system or secret files, encoded "
        "traversal, file:// and php:// wrappers, traversal in a URL parameter.",
    },
    {
        "name": "secret-private-key",
        "kind": "secret",
        "action": "redact",
        "severity": "critical",
        "case_sensitive": True,
        "pattern": PRIVATE_KEY_BLOCKS,
        "description": "PEM/OpenSSH/PGP/PuTTY private keys.",
    },
    {
        "name": "secret-aws-access-key",
        "kind": "secret",
        "action": "redact",
        "severity": "critical",
        "pattern": SECRET_AWS_ACCESS_KEY,
        "description": "AWS access key IDs, in any case, whole or split in groups.",
    },
    {
        "name": "secret-aws-secret-key",
        "kind": "secret",
        "action": "redact",
        "severity": "critical",
        "case_sensitive": True,
        "pattern": SECRET_AWS_SECRET,
        "description": "AWS secret access keys in assignments and sentences.",
    },
    {
        "name": "secret-api-tokens",
        "kind": "secret",
        "action": "redact",
        "severity": "critical",
        "case_sensitive": True,
        "pattern": SECRET_API_TOKENS,
        "description": "OpenAI, Anthropic, GitHub, GitLab, Slack, Google, Stripe, npm, "
        "PyPI, Hugging Face, SendGrid, Twilio, Telegram, Discord, DigitalOcean, Shopify, "
        "Vault, Doppler, Grace and other provider tokens and webhook URLs.",
    },
    {
        "name": "secret-jwt-and-bearer",
        "kind": "secret",
        "action": "redact",
        "severity": "high",
        "case_sensitive": True,
        "pattern": JWT_AND_BEARER,
        "description": "JSON Web Tokens, bearer and basic Authorization values.",
    },
    {
        "name": "secret-password-assignment",
        "kind": "secret",
        "action": "redact",
        "severity": "medium",
        "case_sensitive": True,
        "pattern": SECRET_PASSWORD_ASSIGNMENT,
        "description": "Passwords and keys written as name=value, name: value, .env "
        "lines, JSON fields, --password flags, SQL IDENTIFIED BY.",
    },
    {
        "name": "secret-password-natural",
        "kind": "secret",
        "action": "redact",
        "severity": "medium",
        "case_sensitive": True,
        "pattern": SECRET_PASSWORD_NATURAL,
        "description": 'Passwords in sentences ("my password is X", "the pw for the '
        'db is X", PINs), in several languages; the value must look like one (a digit, '
        'a symbol, mixed case or quotes), so "my password is wrong" is left alone.',
    },
    {
        "name": "secret-connection-string",
        "kind": "secret",
        "action": "redact",
        "severity": "high",
        "case_sensitive": True,
        "pattern": SECRET_CONNECTION_STRING,
        "description": "URLs with a password (postgres://user:pass@host), ADO/ODBC "
        "Password=...;, Azure storage account keys and SAS signatures.",
    },
    {
        "name": "secret-cloud-keys",
        "kind": "secret",
        "action": "redact",
        "severity": "high",
        "case_sensitive": True,
        "pattern": SECRET_CLOUD_KEYS,
        "description": "Azure client secrets and keys, GCP service-account key fields, "
        'API-key headers, "the token is X".',
    },
    {
        "name": "secret-credit-card",
        "kind": "secret",
        "action": "redact",
        "severity": "high",
        "case_sensitive": True,
        "pattern": SECRET_CREDIT_CARD,
        "description": "Card numbers (Visa, Mastercard, Amex, Discover, JCB, Diners; "
        "not Luhn-checked) and CVV codes.",
    },
    {
        "name": "prompt-injection-override",
        "kind": "prompt_injection",
        "action": "block",
        "severity": "high",
        "pattern": PROMPT_OVERRIDE,
        "description": '"Ignore previous instructions" and its paraphrases: forget '
        "everything you were told, your rules no longer apply, new instructions follow.",
    },
    {
        "name": "prompt-injection-override-multilingual",
        "kind": "prompt_injection",
        "action": "block",
        "severity": "high",
        "pattern": PROMPT_OVERRIDE_MULTILINGUAL,
        "description": "Instruction overrides and jailbreak openers in French, German, "
        "Spanish, Italian, Portuguese and Dutch.",
    },
    {
        "name": "prompt-injection-override-other-languages",
        "kind": "prompt_injection",
        "action": "block",
        "severity": "high",
        "pattern": PROMPT_OVERRIDE_OTHER_LANGUAGES,
        "description": "Instruction overrides in Polish, Swedish, Turkish, Romanian, Czech, "
        "Russian, Ukrainian, Chinese, Japanese, Korean, Arabic and Hindi.",
    },
    {
        "name": "prompt-injection-jailbreak",
        "kind": "prompt_injection",
        "action": "block",
        "severity": "high",
        "pattern": PROMPT_JAILBREAK,
        "description": 'DAN, developer mode, "pretend you have no rules", the grandma '
        "exploit and other jailbreak personas.",
    },
    {
        "name": "prompt-injection-template-tokens",
        "kind": "prompt_injection",
        "action": "block",
        "severity": "high",
        "pattern": TEMPLATE_TOKENS,
        "description": "Chat-template control tokens: <|im_start|>, <|system|>, [INST], "
        "<<SYS>>, <start_of_turn>, </s><s>...",
    },
    {
        "name": "prompt-injection-role-header",
        "kind": "prompt_injection",
        "action": "block",
        "severity": "high",
        "pattern": ROLE_HEADERS,
        "description": 'Fake role headers carrying instructions: "SYSTEM: new '
        'instructions follow", "### Instruction:", a fake Assistant: turn, '
        '"END OF USER INPUT".',
    },
    {
        "name": "prompt-injection-system-prompt",
        "kind": "prompt_injection",
        "action": "flag",
        "severity": "medium",
        "pattern": PROMPT_SYSTEM_PROMPT,
        "description": "Attempts to extract the system prompt (recorded, not blocked: "
        "the prompt holds no secret).",
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
