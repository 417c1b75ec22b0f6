"""The text Hunter's rules match on, with a map back to the message as it was sent.

Attackers hide keywords from a pattern with characters a reader does not see or does not
tell apart: a zero-width space inside ``ignore``, fullwidth or mathematical letters,
Cyrillic look-alikes, ``Ign0re``, ``i g n o r e``. Two normal forms undo that:

- ``text_clean``: Unicode NFKC per character (fullwidth, mathematical, circled letters
  become ASCII), without format and other invisible characters (zero-width spaces and
  joiners, soft hyphens, bidi controls, variation selectors, control characters) and
  without combining marks (Zalgo text; a decomposed ``e`` + U+0301 becomes ``e``, a
  precomposed ``é`` stays); Unicode tag characters (invisible ASCII) become the ASCII
  they encode. Case is kept: the ``redact`` rules (secrets) match on it. It is only ever
  matched, never shown or stored.
- ``text_fold``: the clean text casefolded, accents stripped, look-alike letters
  (Cyrillic, Greek, small capitals, enclosed letters) folded to Latin, leetspeak inside
  words folded (``ign0r3`` -> ``ignore``; numbers alone stay numbers), runs of at least
  four single letters joined (``i g n o r e``, ``i.g.n.o.r.e`` -> ``ignore``), and
  whitespace runs collapsed to one space. The ``flag`` and ``block`` rules match on it
  and on the clean text.

Each result keeps ``origin``: where in the original text each of its characters came
from, so a match is mapped back (``span_to_original``) and only the original's span is
masked or quoted. Both are linear in the length of the text.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain, compress, repeat

__all__ = ["Normalised", "span_to_original", "text_clean", "text_fold"]


@dataclass(frozen=True)
class Normalised:
    """A normal form of a text: ``origin[i]`` is the index in the original text of the
    character that produced ``text[i]``; ``origin[len(text)]`` is the original's
    length."""

    text: str
    origin: tuple[int, ...]


def span_to_original(norm: Normalised, start: int, end: int) -> tuple[int, int]:
    """The span of the original text that produced ``norm.text[start:end]``: from the
    first character's source to the end of the last one's (a character that expanded,
    ``ß`` -> ``ss``, is taken whole; invisible characters removed right after the span
    are included)."""
    origin = norm.origin
    first = origin[start]
    if end <= start:
        return first, first
    last = origin[end - 1]
    index = end
    while origin[index] == last:  # the rest of an expansion of the same character
        index += 1
    return first, origin[index]


# --- machinery ----------------------------------------------------------------------
#
# Every step is a C-level pass (str.translate over a lazily filled table, re, slicing,
# itertools.compress) over the text and its origins; Python loops run only over the few
# characters that expand (a ligature, ``ß``) and over matches that are rare in ordinary
# text. A character to delete is first replaced by DELETED, so positions stay aligned,
# then all are dropped at once.

DELETED = "\0"
_TABLE_LIMIT = 50_000


class _Table(dict[int, str]):
    """A ``str.translate`` table filled on first use of each character (at most
    ``_TABLE_LIMIT`` are kept)."""

    def __init__(self, compute: Callable[[str], str]) -> None:
        super().__init__()
        self._compute = compute

    def __missing__(self, code: int) -> str:
        value = self._compute(chr(code))
        if len(self) < _TABLE_LIMIT:
            self[code] = value
        return value


def _length_code(compute: Callable[[str], str]) -> Callable[[str], str]:
    """A table's companion: each character to the length of its translation, as a code
    point (so the lengths of a whole text come out of one ``translate``)."""
    return lambda char: chr(len(compute(char)))


def _translate(
    text: str, origin: list[int], table: _Table, lengths: _Table
) -> tuple[str, list[int]]:
    """``text`` through ``table`` (each character to one or more); origins expanded."""
    translated = text.translate(table)
    if len(translated) == len(text):
        return translated, origin
    widths = text.translate(lengths).encode("latin-1")
    expanded = list(chain.from_iterable(map(repeat, origin, widths)))
    expanded.append(origin[-1])
    return translated, expanded


def _compact(text: str, origin: list[int]) -> tuple[str, list[int]]:
    """``text`` without its DELETED characters."""
    if DELETED not in text:
        return text, origin
    kept = list(compress(origin, map(DELETED.__ne__, text)))
    kept.append(origin[-1])
    return text.replace(DELETED, ""), kept


# --- clean ---------------------------------------------------------------------------

_KEEP_CONTROLS = frozenset("\t\n\r\x0b\x0c")
_INVISIBLE = frozenset(
    "\u034f"  # combining grapheme joiner
    "\u115f\u1160\u3164\uffa0"  # Hangul fillers
    "\u17b4\u17b5"  # Khmer inherent vowels
    "\u180b\u180c\u180d\u180f"  # Mongolian variation selectors
    "\u2800"  # braille blank
    + "".join(chr(cp) for cp in range(0xFE00, 0xFE10))  # variation selectors
    + "".join(chr(cp) for cp in range(0xE0100, 0xE01F0))  # variation selectors supplement
)
_SPECIAL = re.compile(r"[^\t\n\r\x0b\x0c\x20-\x7e]")
"""Anything but printable ASCII and ASCII whitespace: the characters worth a look."""


def _invisible(char: str) -> bool:
    if char in _INVISIBLE:
        return True
    category = unicodedata.category(char)
    return category == "Cf" or (category == "Cc" and char not in _KEEP_CONTROLS)


def _clean_char(char: str) -> str:
    code = ord(char)
    if 0xE0020 <= code <= 0xE007E:  # a tag character: invisible ASCII
        return chr(code - 0xE0000)
    if char == "\x85":
        return "\n"
    cleaned = "".join(
        c
        for c in unicodedata.normalize("NFKC", char)
        if not _invisible(c) and unicodedata.category(c)[0] != "M"
    )
    return cleaned or DELETED


_CLEAN = _Table(_clean_char)
_CLEAN_LENGTHS = _Table(_length_code(_clean_char))
_IDENTITY: tuple[int, ...] = tuple(range(4097))


def _identity(size: int) -> tuple[int, ...]:
    """``tuple(range(size))``, sliced from a cached one."""
    global _IDENTITY
    if size > len(_IDENTITY):
        _IDENTITY = tuple(range(max(size, 2 * len(_IDENTITY))))
    return _IDENTITY[:size]


def text_clean(text: str) -> Normalised:
    """NFKC (per character) without invisible characters and combining marks, case kept
    (see the module's docstring)."""
    if _SPECIAL.search(text) is None:
        return Normalised(text, _identity(len(text) + 1))
    cleaned, origin = _translate(text, list(_identity(len(text) + 1)), _CLEAN, _CLEAN_LENGTHS)
    cleaned, origin = _compact(cleaned, origin)
    return Normalised(cleaned, tuple(origin))


# --- fold ----------------------------------------------------------------------------

# fmt: off
_UPPER_LOOKALIKES = {
    # Capitals whose small letter looks like another Latin letter than the capital.
    "Η": "h", "Ν": "n", "Μ": "m", "Υ": "y", "Β": "b", "Ζ": "z", "Χ": "x",
    "В": "b", "Н": "h", "М": "m", "Т": "t", "К": "k", "Ү": "y",
}
_LOOKALIKES = {
    # Cyrillic
    "а": "a", "в": "b", "г": "r", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h",
    "о": "o", "п": "n", "р": "p", "с": "c", "т": "t", "у": "y", "х": "x", "ь": "b",
    "ѕ": "s", "і": "i", "ї": "i", "ј": "j", "ԁ": "d", "ԛ": "q", "ԝ": "w", "һ": "h",
    "ӏ": "l", "ү": "y", "ҫ": "c", "ө": "o", "ѡ": "w", "ѵ": "v",
    # Greek
    "α": "a", "β": "b", "γ": "y", "ε": "e", "ζ": "z", "η": "n", "ι": "i", "κ": "k",
    "ν": "v", "ο": "o", "ρ": "p", "σ": "o", "ς": "c", "τ": "t", "υ": "u", "χ": "x",
    "ω": "w", "ϲ": "c", "ϳ": "j", "ϱ": "p", "ϵ": "e",
    # Latin small capitals and other look-alikes NFKC leaves alone
    "ᴀ": "a", "ʙ": "b", "ᴄ": "c", "ᴅ": "d", "ᴇ": "e", "ꜰ": "f", "ɢ": "g", "ʜ": "h",
    "ɪ": "i", "ᴊ": "j", "ᴋ": "k", "ʟ": "l", "ᴍ": "m", "ɴ": "n", "ᴏ": "o", "ᴘ": "p",
    "ǫ": "q", "ʀ": "r", "ꜱ": "s", "ᴛ": "t", "ᴜ": "u", "ᴠ": "v", "ᴡ": "w", "ʏ": "y",
    "ᴢ": "z", "ı": "i", "ȷ": "j", "ɑ": "a", "ɡ": "g", "ɩ": "i", "ɵ": "o", "ʋ": "u",
    "æ": "ae", "œ": "oe", "ø": "o", "đ": "d", "ð": "d", "ħ": "h", "ł": "l", "ŀ": "l",
    "þ": "p", "ƅ": "b", "ß": "ss",
}
# fmt: on
for _offset in range(26):  # negative circled, negative squared, regional indicators
    for _base in (0x1F150, 0x1F170, 0x1F1E6):
        _LOOKALIKES[chr(_base + _offset)] = chr(ord("a") + _offset)

# fmt: off
_LEET = str.maketrans({
    "0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "9": "g",
    "@": "a", "$": "s", "!": "i",
})
# fmt: on
_LEET_KEEP = re.compile(
    r"(?<![a-z0-9@$!])[0-9@$!]++(?![a-z0-9@$!])"  # a number alone stays a number
    r"|(?<![@$!])[@$!]++(?![a-z0-9@$!])"  # symbols after a word stay symbols
)
"""What leetspeak folding leaves alone: only a word with a letter in it is folded
(``ign0r3``, ``p@ss``, ``!gnore``), and a symbol only before a letter or digit."""
_SPACED = re.compile(r"(?<![^\W_])[^\W\d_](?:[ \t.\-_*/|+~][^\W\d_](?![^\W_])){3,}")
"""At least four single letters, each separated by one space, dot, dash, underscore..."""
_WHITESPACE_MORE = re.compile(r"(?<=\s)\s")
_WHITESPACE_OTHER = re.compile(r"[^\S ]")
_TO_SPACE = _Table(lambda char: " " if char.isspace() else char)


def _fold_char(char: str) -> str:
    folded = _UPPER_LOOKALIKES.get(char) or char.casefold()
    folded = "".join(
        c for c in unicodedata.normalize("NFKD", folded) if unicodedata.category(c)[0] != "M"
    )
    return "".join(_LOOKALIKES.get(c, c) for c in folded) or DELETED


_FOLD = _Table(_fold_char)
_FOLD_LENGTHS = _Table(_length_code(_fold_char))


def _leet(text: str) -> str:
    leet = text.translate(_LEET)
    if leet == text:
        return text
    pieces, cursor = [], 0
    for keep in _LEET_KEEP.finditer(text):
        pieces += [leet[cursor : keep.start()], keep.group()]
        cursor = keep.end()
    pieces.append(leet[cursor:])
    return "".join(pieces)


def text_fold(text: str, *, clean: Normalised | None = None) -> Normalised:
    """The clean text, casefolded and with look-alikes, leetspeak, spaced-out letters and
    whitespace folded (see the module's docstring). ``clean``: ``text_clean(text)`` when
    the caller has it already."""
    if clean is None:
        clean = text_clean(text)
    folded, origin = clean.text, list(clean.origin)
    if folded.isascii():
        folded = folded.lower()
    else:
        folded, origin = _compact(*_translate(folded, origin, _FOLD, _FOLD_LENGTHS))
    folded = _leet(folded)  # one character for one: origins stay
    # "i g n o r e": letters at even offsets of the run, separators at odd ones
    folded = _SPACED.sub(lambda run: DELETED.join(run.group()[::2]), folded)
    folded, origin = _compact(folded, origin)
    if _WHITESPACE_MORE.search(folded):
        folded = _WHITESPACE_MORE.sub(DELETED, folded)
        folded, origin = _compact(folded, origin)
    if _WHITESPACE_OTHER.search(folded):
        folded = folded.translate(_TO_SPACE)
    return Normalised(folded, tuple(origin))
