"""The rules planner's words as data (issue 24 item 3): one file per language, every concept in
every language, the phrase syntax, and the files shipped with the package."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.lexicon import LEXICON, ORDINAL_POSITIONS, Lexicon, LexiconError, load_concepts, load_languages
from engine.lexicon.phrases import PhraseError, Piece, Syntax, compile_phrase
from engine.planners.reading import CONTROL_ORDER, read
from engine.planners.rules import CANDIDATES
from engine.request import parse_request
from engine.vocab import CONTROL_KINDS

ROOT = Path(__file__).resolve().parents[1]
LEXICON_DIR = ROOT / "engine" / "lexicon"


# ---------------------------------------------------------------------------------------------
# Every concept in every language.


@pytest.mark.parametrize("code", sorted(LEXICON.languages))
def test_every_concept_has_phrases_in_every_language_or_a_stated_exemption(code):
    language = LEXICON.languages[code]
    for concept in LEXICON.concepts:
        phrases = [p for p in language.concepts.get(concept, ()) if not p.startswith("!")]
        if concept in language.exempt:
            assert not phrases, f"{code}: {concept} is exempt but has phrases"
            assert len(language.exempt[concept].split()) >= 4, f"{code}: say why {concept} cannot be said"
        else:
            assert phrases, f"{code}.toml has no phrase for {concept!r} ({LEXICON.concepts[concept]})"
    unknown = set(language.concepts) - set(LEXICON.concepts)
    assert not unknown, f"{code}.toml: concepts not in concepts.toml: {sorted(unknown)}"
    assert set(language.exempt) <= set(LEXICON.concepts)
    assert set(language.ordinals) == set(ORDINAL_POSITIONS), code
    assert all(language.ordinals.values()) and language.numbers, code


def test_exemptions_are_few_and_only_where_a_concept_cannot_be_said():
    exempt = {(code, c) for code, lang in LEXICON.languages.items() for c in lang.exempt}
    # Articles, and an ordinal standing alone for a file: neither exists in Chinese or Japanese.
    assert exempt == {(c, concept) for c in ("zh", "ja") for concept in ("article", "after_position")}


def test_every_phrase_is_lowercase_and_compiles():
    for code, language in LEXICON.languages.items():
        for concept, phrases in language.concepts.items():
            for phrase in phrases:
                assert phrase == phrase.lower(), (
                    f"{code}: {concept}: {phrase!r} (the text is read lowercased)"
                )
        for concept in language.concepts:
            if concept != "position":  # the position forms compile with their own tokens
                LEXICON.pattern(concept)


def _string_constants(root: Path) -> set[str]:
    found = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.add(node.value)
    return found


def test_every_concept_is_read_by_the_code_or_by_another_concept():
    strings = _string_constants(ROOT / "engine")
    referenced = {
        ref.strip("{}")
        for lang in LEXICON.languages.values()
        for phrases in lang.concepts.values()
        for phrase in phrases
        for word in phrase.split()
        for ref in word.split("|")
        if ref.startswith("{")
    }
    generated = {f"control_{kind}" for kind in CONTROL_ORDER} | {"left", "right", "top", "bottom"}
    unread = set(LEXICON.concepts) - strings - referenced - generated
    assert not unread, f"concepts no code reads: {sorted(unread)}"


def test_every_control_kind_but_raw_is_a_concept_tried_in_order():
    assert set(CONTROL_ORDER) == set(CONTROL_KINDS) - {"raw"}
    assert all(f"control_{kind}" in LEXICON.concepts for kind in CONTROL_ORDER)


def test_the_candidate_rows_name_only_facts_the_reading_has():
    facts = set(read(parse_request("Draw a cat")).facts)
    for row in CANDIDATES:
        assert {name for name, _ in row.when} <= facts, row


# ---------------------------------------------------------------------------------------------
# Word edges: with spaces, whole words; without, anywhere.


def test_a_word_of_a_language_with_spaces_matches_only_as_a_whole_word():
    assert LEXICON.says("edit_repaint", "fix the roof")
    assert not LEXICON.says("edit_repaint", "a prefix and a suffix")
    assert LEXICON.says("pixel_unit", "by 32px")  # a number may touch its unit
    assert not LEXICON.says("video_noun", "the text_to_video task")


def test_a_word_of_a_language_without_spaces_matches_inside_the_text():
    assert LEXICON.says("create", "请生成一张猫的图片")
    assert LEXICON.says("video_noun", "猫が走る動画を作って")
    assert LEXICON.number("十五") == 15 and LEXICON.number("两") == 2 and LEXICON.number("二十") == 20


def test_an_exception_phrase_keeps_a_match_inside_it_from_counting():
    assert LEXICON.says("control_word", "follow the depth map")
    assert not LEXICON.says("control_word", "a shallow depth of field")


# ---------------------------------------------------------------------------------------------
# The phrase syntax.


def _syntax(spaced: bool = True, **concepts: str) -> Syntax:
    def resolve(name: str) -> Piece:
        return compile_phrase(concepts[name], _syntax(spaced))

    return Syntax(spaced=spaced, numbers=r"[0-9]+|one|two", resolve=resolve)


@pytest.mark.parametrize(
    ("phrase", "matches", "misses"),
    [
        ("image(s)", ["an image", "two images"], ["imagery"]),
        ("colo(u)r(ise/ize) in", ["colorize in", "colour in"], ["colorful in"]),
        ("outpaint*", ["outpainting it", "outpaint"], ["unoutpainted"]),
        ("make [me] a|an", ["make a cat", "make me an owl"], ["make the cat"]),
        ("turn …20 into", ["turn the cat into a dog"], ["turn the big fluffy orange cat sitting there into"]),
        ("<n> more second(s)", ["two more seconds", "4 more second"], ["more seconds"]),
        ("<file> is", ["<imgpad> is the mask"], ["file is"]),
        ("{thing} here", ["the dog here"], ["a cat here"]),
        ("per|/ second", ["24 frames per second", "24/second"], ["persecond"]),
    ],
)
def test_the_phrase_syntax(phrase, matches, misses):
    pattern = re.compile(compile_phrase(phrase, _syntax(thing="the dog|rabbit")).regex)
    for text in matches:
        assert pattern.search(text), (phrase, text)
    for text in misses:
        assert not pattern.search(text), (phrase, text)


@pytest.mark.parametrize(
    ("phrase", "why"), [("a  b", "single spaces"), ("ma(sk", "without ')'"), ("a<b", "<")]
)
def test_a_malformed_phrase_is_refused_naming_it(phrase, why):
    with pytest.raises(PhraseError, match=re.escape(why)):
        compile_phrase(phrase, _syntax())


def test_a_language_file_that_does_not_read_is_refused_naming_the_file(tmp_path: Path):
    (tmp_path / "xx.toml").write_text('[language]\ncode = "yy"\nspaced = true\n', encoding="utf-8")
    with pytest.raises(LexiconError, match="xx.toml"):
        load_languages(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------
# Adding a language is one data file; the files ship with the package.


DUTCH = """
[language]
code = "nl"
name = "Nederlands"
spaced = true
[numbers]
twee = 2
[ordinals]
first = ["eerste"]
second = ["tweede"]
third = ["derde"]
last = ["laatste"]
[concepts]
video_noun = ["filmpje(s)"]
seconds_unit = ["seconde(n)"]
"""


def test_a_new_language_is_one_data_file_read_by_the_same_code(tmp_path: Path):
    files = [*LEXICON_DIR.glob("*.toml"), tmp_path / "nl.toml"]
    (tmp_path / "nl.toml").write_text(DUTCH, encoding="utf-8")
    lexicon = Lexicon(load_languages(f for f in files), load_concepts())
    assert lexicon.says("video_noun", "een filmpje van een kat")
    assert lexicon.number("twee") == 2 and lexicon.ordinals["tweede"] == 1


def _install(tmp_path: Path) -> Path:
    """The package installed as pip installs it (a wheel's files), from a copy of the sources."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for package in ("engine", "unison_mcp"):
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(src),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return target


def test_the_language_files_load_from_an_installed_package_and_a_dropped_in_language_is_read(tmp_path: Path):
    site = _install(tmp_path)
    installed = site / "engine" / "lexicon"
    assert {p.name for p in installed.glob("*.toml")} == {p.name for p in LEXICON_DIR.glob("*.toml")}
    # A new language dropped beside them, complete (here: English's concepts, Dutch words added).
    dutch = (LEXICON_DIR / "en.toml").read_text(encoding="utf-8").replace('code = "en"', 'code = "nl"')
    dutch = dutch.replace("video_noun = [\n", 'video_noun = [\n    "filmpje(s)",\n')
    (installed / "nl.toml").write_text(dutch, encoding="utf-8")
    code = textwrap.dedent(
        """
        import engine.lexicon as lexicon
        from engine.planners.rules import RulesPlanner
        from engine.request import parse_request
        print(lexicon.__file__)
        print(sorted(lexicon.LEXICON.languages))
        print(RulesPlanner().plan(parse_request("een filmpje van een kat")).task.value)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.splitlines()
    assert Path(out[0]).is_relative_to(site)  # read from the installed files, not this checkout
    assert "nl" in out[1] and "en" in out[1]
    assert out[2] == "text_to_video"
