"""docs/contracts.md's `kepler-model` synopsis against the real parser: every option of every command is
written there, nothing written there is missing from the parser, and the choices it lists are the parser's.

The synopsis is the first code block of the command-line section. An entry starts with `kepler-model`
(no command: the options before the command); indented lines continue it; `NAME = ...` defines a named
option set that entries use by its name; lines starting with `#` are comments."""

from __future__ import annotations

import argparse
import re

import pytest

from kepler_trainer.cli import build_parser
from tests.support import checkout

CONTRACTS = checkout.ROOT / "docs" / "contracts.md"
SECTION = "## The `kepler-model` command line"
OPTION = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)(?:[ \t]+([\w.-]+(?:\|[\w.-]+)+)(?![\w.|-]))?")
OPTION_SET = re.compile(r"([A-Z][A-Z_]*_OPTIONS)\s+=\s+(.*)")
TOP = ""
"""The key of the options before the command."""


def _entries(block: str) -> list[str]:
    entries: list[str] = []
    for line in block.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0].isspace() and entries:
            entries[-1] += " " + line.strip()
        else:
            entries.append(line.strip())
    return entries


def _expand(text: str, sets: dict[str, str]) -> str:
    for _ in range(len(sets) + 1):
        expanded = re.sub(r"\b[A-Z][A-Z_]*_OPTIONS\b", lambda m: sets.get(m[0], m[0]), text)
        if expanded == text:
            return text
        text = expanded
    raise AssertionError(f"option sets refer to each other in a loop: {sorted(sets)}")


def documented() -> dict[str, str]:
    """Command (TOP for none) -> its synopsis text with the option sets written out."""
    text = CONTRACTS.read_text()
    assert SECTION in text, f"docs/contracts.md has no section {SECTION!r}"
    block = text.split(SECTION, 1)[1].split("```", 2)[1]
    entries = _entries(block)
    sets = {m[1]: m[2] for e in entries if (m := OPTION_SET.fullmatch(e))}
    commands: dict[str, str] = {}
    for entry in entries:
        if OPTION_SET.fullmatch(entry):
            continue
        assert entry.startswith("kepler-model "), f"not a command, an option set nor a comment: {entry!r}"
        rest = entry.removeprefix("kepler-model ").strip()
        name = TOP if rest.startswith(("-", "[")) else rest.split()[0]
        assert name not in commands, f"{name or 'kepler-model'} is described twice"
        undefined = set(re.findall(r"\b[A-Z][A-Z_]*_OPTIONS\b", rest)) - set(sets)
        assert not undefined, f"{name}: option sets not defined in the synopsis: {sorted(undefined)}"
        commands[name] = _expand(rest.removeprefix(name), sets)
    return commands


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def parser_commands() -> list[str]:
    return [TOP, *_subparsers(build_parser()).choices]


def shown_actions(command: str) -> list[argparse.Action]:
    """The options `kepler-model COMMAND -h` shows, built as that command builds them (the commands that
    import their own stack add their options only when run), without argparse's own -h."""
    parser = build_parser(command or None)
    if command != TOP:
        parser = _subparsers(parser).choices[command]
    return [a for a in parser._actions
            if a.option_strings and a.help != argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)]


def test_the_synopsis_describes_exactly_the_parsers_commands():
    assert sorted(documented()) == sorted(parser_commands())


@pytest.mark.parametrize("command", parser_commands())
def test_every_option_of_the_parser_is_in_the_synopsis(command):
    written = {m[1] for m in OPTION.finditer(documented()[command])}
    missing = [a.option_strings for a in shown_actions(command) if not written & set(a.option_strings)]
    assert not missing, f"kepler-model {command}: options the synopsis does not list: {missing}"


@pytest.mark.parametrize("command", parser_commands())
def test_every_option_in_the_synopsis_is_the_parsers(command):
    known = {s for a in shown_actions(command) for s in a.option_strings} | {"-h", "--help"}
    unknown = sorted({m[1] for m in OPTION.finditer(documented()[command])} - known)
    assert not unknown, f"kepler-model {command}: the synopsis lists options the parser does not have: {unknown}"


@pytest.mark.parametrize("command", parser_commands())
def test_choices_written_in_the_synopsis_are_the_parsers(command):
    by_option = {s: a for a in shown_actions(command) for s in a.option_strings}
    for match in OPTION.finditer(documented()[command]):
        action = by_option.get(match[1])
        if match[2] and action is not None and action.choices is not None:
            assert set(match[2].split("|")) == {str(c) for c in action.choices}, (command, match[0])


def test_the_reader_finds_options_sets_and_choices():
    """The reader itself on a made-up synopsis, so the checks above cannot pass by reading nothing."""
    entries = _entries("kepler-model x -a A|B X_OPTIONS\n      [--long N]\n# -z comment\nX_OPTIONS = [--set-option]\n")
    assert entries == ["kepler-model x -a A|B X_OPTIONS [--long N]", "X_OPTIONS = [--set-option]"]
    text = _expand(entries[0], {"X_OPTIONS": "[--set-option]"})
    assert [(m[1], m[2]) for m in OPTION.finditer(text)] == [("-a", "A|B"), ("--set-option", None), ("--long", None)]
    assert {c for c in documented()} >= {"train", "serve"}
    assert "--split" in documented()["train"] and "--tuning" in documented()["train"]
