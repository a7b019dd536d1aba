"""A lexicon's phrases as regular expressions: the small syntax the language files are written in.

A phrase is words separated by single spaces. In the text, words are separated by whitespace
(none is needed in a language written without spaces, or next to a symbol such as ``?`` or
``/``), and in a language written with spaces a phrase matches only at word edges. Within a
word (all lowercase, as the text is lowercased before it is read):

=============  =================================================================================
``a|b|c``      one of these
``[a|b]``      optionally one of these (with the space before it)
``image(s)``   an optional part: "image" or "images"; ``colo(u)r``: "color" or "colour";
               ``pose(map/video)``: "pose", "posemap" or "posevideo"
``outpaint*``  any ending: "outpaint", "outpainting", "outpainted"… (``*`` first: any beginning)
``…``          up to 60 characters of anything, as few as possible (``…40``: up to 40)
``<file>``     a file of the request (its ``###path###`` marker, or a file named by position)
``<n>``        a number: digits, or a number word of the phrase's language
``<digits>``   digits only
``<ratio>``    an aspect ratio such as 16:9
``<word>``     any one word
``{concept}``  any phrase of that concept in the same language
``\\x``         the character x itself, for ``( ) [ ] | * { } < > … !``
=============  =================================================================================

A phrase that starts with ``!`` is an exception: a match of the concept that overlaps one of the
exception's matches does not count ("depth" is a control signal, "!depth of field" is not).

:func:`compile_phrase` turns one phrase into a regular expression; :mod:`engine.lexicon` joins a
concept's phrases of every language into one pattern.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

#: A file of the request in the planner's text: its placeholder, or a file named by position.
ANY_FILE = r"(?:<(?:img|vid)pad>|<ref>)"
#: ``…`` without a number: how many characters it spans at most.
DEFAULT_GAP = 60
#: Where a word starts: no letter (or "_") before it; a digit may be ("32px", "5sec"). In file
#: names letters alone make the edges ("end2.png" names an end).
WORD_START = r"(?<![^\W\d])"
NAME_START = r"(?<![^\W\d_])"
_SPECIAL = "()[]|*{}<>…!\\"


class PhraseError(ValueError):
    """A phrase that does not follow the syntax (said with the phrase and why)."""


@dataclass(frozen=True)
class Piece:
    """A compiled word (or alternation): its regex, and whether it starts / ends with a letter or
    digit (two such words need whitespace between them; a symbol does not)."""

    regex: str
    word_left: bool
    word_right: bool


#: How a concept referenced as ``{concept}`` is compiled: the regex of its phrases in the same
#: language, and whether every one of them starts / ends with a word character.
Resolve = Callable[[str], Piece]


@dataclass(frozen=True)
class Syntax:
    """What a phrase's tokens compile to, for one language."""

    spaced: bool  # written with spaces between words: phrases match at word edges
    numbers: str  # the regex of a number in this language (digits or its number words)
    resolve: Resolve  # ``{concept}`` references
    name_mode: bool = False  # matching file names: letters, not word characters, make an edge
    tokens: Mapping[str, Piece] | None = None  # extra ``<token>``s (the position forms' ``<digit>``)
    captures: Mapping[str, str] | None = None  # ``{concept}`` → the name of a group capturing it


def literal(text: str) -> str:
    """``text`` as a phrase that matches it literally (its special characters escaped)."""
    return "".join("\\" + c if c in _SPECIAL else c for c in text)


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _edges(piece_regex: str, left: bool, right: bool, syntax: Syntax) -> str:
    """Word edges around a literal, in languages written with spaces."""
    if not syntax.spaced:
        return piece_regex
    before, after = (NAME_START, r"(?![^\W\d_])") if syntax.name_mode else (WORD_START, r"\b")
    return (before if left else "") + piece_regex + (after if right else "")


def _literal(word: str, phrase: str, syntax: Syntax) -> Piece:
    """A literal word with optional ``(parts)``, a ``*`` at either end and ``\\`` escapes."""
    out: list[str] = []
    chars: list[str] = []  # the literal characters, for the word edges
    i = 0
    if word.startswith("*"):
        out.append(r"\w*")
        chars.append("a")
        i = 1
    while i < len(word):
        ch = word[i]
        if ch == "\\" and i + 1 < len(word):
            out.append(re.escape(word[i + 1]))
            chars.append(word[i + 1])
            i += 2
        elif ch == "(":
            end = word.find(")", i)
            if end < 0:
                raise PhraseError(f"{phrase!r}: '(' without ')'")
            options = word[i + 1 : end].split("/")
            out.append("(?:" + "|".join(re.escape(o) for o in options) + ")?")
            chars.append(word[end - 1] if end > i + 1 else "")
            i = end + 1
        elif ch == "*" and i == len(word) - 1:
            out.append(r"\w*")
            chars.append("a")
            i += 1
        elif ch in _SPECIAL:
            raise PhraseError(f"{phrase!r}: {ch!r} in a word (write \\{ch} for the character itself)")
        else:
            out.append(re.escape(ch))
            chars.append(ch)
            i += 1
    if not chars:
        raise PhraseError(f"{phrase!r}: an empty word")
    head = word.lstrip("(\\")
    left = word[0] == "*" or (bool(head) and _is_word(head[0]))
    right = _is_word(chars[-1]) or word.endswith("*") or word.endswith(")")
    return Piece(_edges("".join(out), left, right, syntax), left, right)


def _atom(alt: str, phrase: str, syntax: Syntax) -> Piece:
    """One alternative of a word: a literal, a ``<token>`` or a ``{concept}``."""
    if alt.startswith("<") and alt.endswith(">"):
        name = alt[1:-1]
        fixed = {
            "file": Piece(ANY_FILE, False, False),
            # A number may touch the word after it ("32px", "3秒"): no space needed there.
            "n": Piece("(?:" + syntax.numbers + ")", True, False),
            "digits": Piece(_edges("[0-9]+", True, False, syntax) + "(?![0-9])", True, False),
            "ratio": Piece(_edges(r"[0-9]{1,2}\s*:\s*[0-9]{1,2}", True, True, syntax), True, True),
            "word": Piece(_edges(r"\w+", True, True, syntax), True, True),
        }
        found = fixed.get(name) or (syntax.tokens or {}).get(name)
        if found is None:
            raise PhraseError(f"{phrase!r}: unknown token <{name}>")
        return found
    if alt.startswith("{") and alt.endswith("}"):
        name = alt[1:-1]
        piece = syntax.resolve(name)
        group = (syntax.captures or {}).get(name)
        regex = f"(?P<{group}>{piece.regex})" if group else f"(?:{piece.regex})"
        return Piece(regex, piece.word_left, piece.word_right)
    return _literal(alt, phrase, syntax)


def _split(text: str, sep: str) -> list[str]:
    """``text`` split at ``sep`` outside ``\\`` escapes."""
    parts, current, i = [], [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text):
            current.append(text[i : i + 2])
            i += 2
            continue
        if text[i] == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(text[i])
        i += 1
    parts.append("".join(current))
    return parts


@dataclass(frozen=True)
class _Token:
    piece: Piece
    optional: bool = False
    gap: int | None = None  # a ``…`` token: how many characters


def _token(word: str, phrase: str, syntax: Syntax) -> _Token:
    gap = re.fullmatch(r"…([0-9]*)", word)
    if gap:
        return _Token(Piece("", False, False), gap=int(gap.group(1) or DEFAULT_GAP))
    optional = word.startswith("[") and word.endswith("]")
    if optional:
        word = word[1:-1]
    alts = [_atom(a, phrase, syntax) for a in _split(word, "|")]
    regex = alts[0].regex if len(alts) == 1 else alternation([a.regex for a in alts])
    piece = Piece(regex, all(a.word_left for a in alts), all(a.word_right for a in alts))
    return _Token(piece, optional=optional)


def alternation(regexes: list[str]) -> str:
    """``regexes`` as one alternation, in their order, with a word start they share tested once:
    ``(?<!…)(?:create\b|draw\b)`` rather than a look-behind per word (far faster to match)."""
    for start in (WORD_START, NAME_START):
        led = [r[len(start) :] for r in regexes if r.startswith(start)]
        if led:
            rest = [r for r in regexes if not r.startswith(start)]
            regexes = [start + "(?:" + "|".join(led) + ")", *rest]
    return "(?:" + "|".join(regexes) + ")" if len(regexes) > 1 else regexes[0]


def _separator(before: Piece, after: Piece, syntax: Syntax) -> str:
    return r"\s+" if syntax.spaced and before.word_right and after.word_left else r"\s*"


def compile_phrase(phrase: str, syntax: Syntax) -> Piece:
    """One phrase as a regex (see the module docstring); :class:`PhraseError` if it is malformed."""
    words = phrase.split(" ")
    if not phrase.strip() or any(not w for w in words):
        raise PhraseError(f"{phrase!r}: words are separated by single spaces")
    tokens = [_token(w, phrase, syntax) for w in words]
    out: list[str] = []
    previous: _Token | None = None
    skip_sep = False
    for i, token in enumerate(tokens):
        if token.gap is not None:
            out.append(f".{{0,{token.gap}}}?")
            previous, skip_sep = None, True
            continue
        sep = "" if previous is None or skip_sep else _separator(previous.piece, token.piece, syntax)
        skip_sep = False
        if token.optional and previous is None:
            # An optional first word carries the space after it.
            following = tokens[i + 1] if i + 1 < len(tokens) else None
            after = (
                _separator(token.piece, following.piece, syntax)
                if following is not None and following.gap is None
                else ""
            )
            out.append(f"(?:{token.piece.regex}{after})?")
            skip_sep = True
        elif token.optional:
            out.append(f"(?:{sep}{token.piece.regex})?")
        else:
            out.append(sep + token.piece.regex)
        previous = token
    first = next((t for t in tokens if t.gap is None), None)
    last = next((t for t in reversed(tokens) if t.gap is None), None)
    return Piece(
        "".join(out),
        bool(first and first.piece.word_left and not first.optional),
        bool(last and last.piece.word_right and not last.optional),
    )
