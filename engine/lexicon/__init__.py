"""Words by language: one data file per language, compiled once into one pattern per concept.

Every ``xx.toml`` in this package is a language (``xx`` its code); ``concepts.toml`` names the
concepts every language gives phrases for, each with what it means. A language file holds:

``[language]``
    ``code``, ``name``, and ``spaced``: ``true`` for a language written with spaces between words
    (its phrases match at word edges), ``false`` for one written without (Chinese, Japanese: its
    phrases match anywhere).
``[numbers]``
    number words and their values ("five" = 5, "两" = 2); in a language written without spaces a
    run of them is one number (十五 = 15, the word worth 10 multiplying what precedes it).
``[ordinals]``
    ``first``, ``second``, ``third``, ``last``: the words that name a file by its position.
``[concepts]``
    concept → phrases, in the syntax of :mod:`engine.lexicon.phrases`.
``[exempt]``
    concept → why this language cannot say it. Only for a concept that truly cannot be expressed;
    ``tests/test_lexicon.py`` checks every other concept has phrases in every language.

Adding a language is adding its file (``pyproject.toml`` ships every ``*.toml`` of the package).
:data:`LEXICON` is loaded once, at import; each concept's pattern (every language's phrases in
one regex, the longest phrase first) is compiled on first use and kept. Readers: the rules planner
(:mod:`engine.planners.rules`, its ``wording`` and ``measures``) and the edit-region heuristic
(:mod:`engine.region`).
"""

from __future__ import annotations

import re
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Literal

from .phrases import PhraseError, Piece, Syntax, alternation, compile_phrase, literal

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

#: Where a pattern must match: ``search`` anywhere; ``start`` at the start of the text; ``full``
#: the whole text; ``end`` at its end (spaces allowed after); ``near_end`` followed by at most two
#: more words before the end ("starts with ###a.png###" read on the words before a file).
Mode = Literal["search", "start", "full", "end", "near_end", "name"]
_MODES: dict[str, str] = {
    "search": "(?:{})",
    "name": "(?:{})",
    "start": "^(?:{})",
    "full": "^(?:{})$",
    "end": r"(?:{})\s*$",
    "near_end": r"(?:{})(?:\s+\S+){{0,2}}\s*$",
}
#: Each ordinal's position among a request's files (of the kind said): 0-based, -1 the last.
ORDINAL_POSITIONS: dict[str, int] = {"first": 0, "second": 1, "third": 2, "last": -1}
_DIGITS = r"(?<![0-9.])[0-9]+(?:\.[0-9]+)?"


@dataclass(frozen=True)
class Language:
    """One language file, as read."""

    code: str
    name: str
    spaced: bool
    concepts: Mapping[str, tuple[str, ...]]
    numbers: Mapping[str, int]
    ordinals: Mapping[str, tuple[str, ...]]
    exempt: Mapping[str, str]


class LexiconError(ValueError):
    """A language file that does not read: said with the file, the concept and why."""


def _language(code: str, data: Mapping) -> Language:
    head = data.get("language", {})
    if head.get("code") != code:
        raise LexiconError(f"{code}.toml: [language] code must be {code!r}, not {head.get('code')!r}")
    if not isinstance(head.get("spaced"), bool):
        raise LexiconError(f"{code}.toml: [language] spaced must be true or false")
    concepts = {}
    for concept, phrases in data.get("concepts", {}).items():
        if not isinstance(phrases, list) or not all(isinstance(p, str) for p in phrases):
            raise LexiconError(f"{code}.toml: {concept} must be a list of phrases")
        concepts[concept] = tuple(phrases)
    return Language(
        code=code,
        name=str(head.get("name", code)),
        spaced=head["spaced"],
        concepts=concepts,
        numbers={str(k): int(v) for k, v in data.get("numbers", {}).items()},
        ordinals={k: tuple(v) for k, v in data.get("ordinals", {}).items()},
        exempt={str(k): str(v) for k, v in data.get("exempt", {}).items()},
    )


def load_languages(files: Iterable | None = None) -> dict[str, Language]:
    """Every language file of the package (or the given ``importlib.resources`` files), by code."""
    found = files if files is not None else resources.files(__name__).iterdir()
    languages = {}
    for file in sorted(found, key=lambda f: f.name):
        if not file.name.endswith(".toml") or file.name == "concepts.toml":
            continue
        code = file.name.removesuffix(".toml")
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise LexiconError(f"{file.name}: {exc}") from exc
        languages[code] = _language(code, data)
    return languages


def load_concepts() -> dict[str, str]:
    """The concepts every language gives phrases for, each with what it means."""
    text = resources.files(__name__).joinpath("concepts.toml").read_text(encoding="utf-8")
    return dict(tomllib.loads(text)["concepts"])


class Lexicon:
    """The languages' phrases, compiled on first use: one pattern per concept (or group of
    concepts) and mode, across every language, the longest phrase first."""

    def __init__(self, languages: Mapping[str, Language], concepts: Mapping[str, str]):
        self.languages = dict(languages)
        self.concepts = dict(concepts)
        self._pieces: dict[tuple, Piece] = {}
        self._patterns: dict[tuple, re.Pattern] = {}
        self._lock = threading.Lock()
        #: Every ordinal word of every language → its position (:data:`ORDINAL_POSITIONS`).
        self.ordinals: dict[str, int] = {
            word: ORDINAL_POSITIONS[which]
            for lang in self.languages.values()
            for which, words in lang.ordinals.items()
            for word in words
        }
        #: Number words of the languages written with spaces, and those written without.
        self.number_words = {w: v for lang in self.spaced() for w, v in lang.numbers.items()}
        self.numeral_chars = {w: v for lang in self.unspaced() for w, v in lang.numbers.items()}

    # ------------------------------------------------------------------ the languages

    def spaced(self) -> list[Language]:
        return [lang for lang in self.languages.values() if lang.spaced]

    def unspaced(self) -> list[Language]:
        return [lang for lang in self.languages.values() if not lang.spaced]

    def phrases(self, concept: str, code: str) -> tuple[str, ...]:
        """One language's phrases of ``concept``, exceptions (``!…``) included."""
        self._known(concept)
        return self.languages[code].concepts.get(concept, ())

    def _known(self, concept: str) -> None:
        if concept not in self.concepts and concept != "ordinal":
            raise KeyError(f"no concept {concept!r} in engine/lexicon/concepts.toml")

    # ------------------------------------------------------------------ numbers

    def numbers_regex(self, codes: Iterable[str] | None = None) -> str:
        """A number in these languages (all by default): digits, or a number word."""
        langs = [self.languages[c] for c in codes] if codes is not None else list(self.languages.values())
        spaced = sorted({w for lang in langs if lang.spaced for w in lang.numbers}, key=len, reverse=True)
        chars = sorted({w for lang in langs if not lang.spaced for w in lang.numbers}, key=len, reverse=True)
        parts = [_DIGITS]
        if spaced:
            parts.append(r"\b(?:" + "|".join(map(re.escape, spaced)) + r")\b")
        if chars:
            parts.append("(?:" + "|".join(map(re.escape, chars)) + ")+")
        return "|".join(parts)

    def number(self, word: str) -> float:
        """A number as written: digits, a number word, or a run of numerals (两 = 2, 十五 = 15)."""
        if word in self.number_words:
            return float(self.number_words[word])
        if word and all(c in self.numeral_chars for c in word):
            values = [self.numeral_chars[c] for c in word]
            if 10 in values:  # 十五 = 15, 二十 = 20, 二十五 = 25
                at = values.index(10)
                tens = int("".join(map(str, values[:at]))) if at else 1
                units = int("".join(map(str, values[at + 1 :]))) if at + 1 < len(values) else 0
                return float(tens * 10 + units)
            return float("".join(map(str, values)))
        return float(word)

    # ------------------------------------------------------------------ compiling

    def _syntax(self, code: str, *, name: bool = False, tokens=None, captures=None) -> Syntax:
        lang = self.languages[code]
        return Syntax(
            spaced=lang.spaced,
            numbers=self.numbers_regex([code]),
            resolve=lambda ref: self.piece(ref, code, name=name),
            name_mode=name,
            tokens=tokens,
            captures=captures,
        )

    def _compiled(self, phrase: str, code: str, syntax: Syntax) -> Piece:
        try:
            return compile_phrase(phrase, syntax)
        except PhraseError as exc:
            raise LexiconError(f"{code}.toml: {exc}") from exc

    def piece(self, concept: str, code: str, *, name: bool = False, exceptions: bool = False) -> Piece:
        """One language's phrases of ``concept`` as one alternation (its exceptions instead when
        ``exceptions``); ``{ordinal}`` is the language's ordinal words."""
        key = (concept, code, name, exceptions)
        if key in self._pieces:
            return self._pieces[key]
        lang = self.languages[code]
        if concept == "ordinal":
            phrases = tuple(literal(w) for words in lang.ordinals.values() for w in words)
        else:
            phrases = tuple(
                p[1:] if exceptions else p
                for p in self.phrases(concept, code)
                if p.startswith("!") == exceptions
            )
        syntax = self._syntax(code, name=name)
        pieces = [
            (len(p), self._compiled(p, code, syntax)) for p in sorted(set(phrases), key=len, reverse=True)
        ]
        regex = alternation([piece.regex for _, piece in pieces]) if pieces else "(?!)"
        piece = Piece(
            regex,
            bool(pieces) and all(p.word_left for _, p in pieces),
            bool(pieces) and all(p.word_right for _, p in pieces),
        )
        self._pieces[key] = piece
        return piece

    def regex(
        self, concepts: str | tuple[str, ...], *, name: bool = False, exceptions: bool = False, codes=None
    ) -> str:
        """Every language's (or ``codes``') phrases of ``concepts`` as one alternation, the
        longest phrase first (so the longest wording wins where two start at the same place)."""
        group = (concepts,) if isinstance(concepts, str) else concepts
        entries = []
        for code in codes or self.languages:
            syntax = self._syntax(code, name=name)
            for concept in group:
                for p in self.phrases(concept, code):
                    if p.startswith("!") == exceptions:
                        text = p[1:] if exceptions else p
                        entries.append((len(text), self._compiled(text, code, syntax).regex))
        entries.sort(key=lambda e: -e[0])
        return alternation(list(dict.fromkeys(r for _, r in entries))) if entries else "(?!)"

    def pattern(
        self, concepts: str | tuple[str, ...], mode: Mode = "search", *, codes: tuple[str, ...] | None = None
    ) -> re.Pattern:
        """The compiled pattern of ``concepts`` in ``mode`` (cached)."""
        key = (concepts, mode, codes)
        found = self._patterns.get(key)
        if found is None:
            found = re.compile(_MODES[mode].format(self.regex(concepts, name=mode == "name", codes=codes)))
            with self._lock:
                self._patterns[key] = found
        return found

    def _exceptions(self, concepts: str | tuple[str, ...]) -> re.Pattern | None:
        key = (concepts, "exceptions")
        if key not in self._patterns:
            regex = self.regex(concepts, exceptions=True)
            with self._lock:
                self._patterns[key] = re.compile(regex) if regex != "(?!)" else None
        return self._patterns[key]

    # ------------------------------------------------------------------ matching

    def finditer(
        self, concepts: str | tuple[str, ...], text: str, mode: Mode = "search"
    ) -> Iterator[re.Match]:
        """The matches of ``concepts`` in ``text``, leaving out those inside an exception."""
        exceptions = self._exceptions(concepts)
        spans = [m.span() for m in exceptions.finditer(text)] if exceptions is not None else []
        for m in self.pattern(concepts, mode).finditer(text):
            if not any(a < m.end() and m.start() < b for a, b in spans):
                yield m

    def search(self, concepts: str | tuple[str, ...], text: str, mode: Mode = "search") -> re.Match | None:
        """The first match of ``concepts`` in ``text`` (see :meth:`finditer`), else ``None``."""
        return next(self.finditer(concepts, text, mode), None)

    def says(self, concepts: str | tuple[str, ...], text: str, mode: Mode = "search") -> bool:
        return self.search(concepts, text, mode) is not None

    def forms(
        self, concept: str, code: str, *, tokens: Mapping[str, Piece], captures: Mapping[str, str]
    ) -> list[re.Pattern]:
        """Each phrase of one language's ``concept`` as its own pattern, with extra ``<tokens>``
        and named groups capturing ``{concepts}`` (the position forms: one group name may recur)."""
        syntax = self._syntax(code, tokens=tokens, captures=captures)
        return [re.compile(self._compiled(p, code, syntax).regex) for p in self.phrases(concept, code)]


def _load() -> Lexicon:
    return Lexicon(load_languages(), load_concepts())


#: The lexicon of every language file in the package, loaded once.
LEXICON: Lexicon = _load()

__all__ = [
    "LEXICON",
    "ORDINAL_POSITIONS",
    "Language",
    "Lexicon",
    "LexiconError",
    "load_concepts",
    "load_languages",
]
