"""The configuration's command-line flags, derived from the settings (:data:`unison_mcp.config.SETTINGS`).

One flag per setting, grouped by section, with the setting's help text, its ``UNISON_*``
variable and its default in the help. Defaults are suppressed in the namespace, so
:func:`unison_mcp.config.load_config` sees exactly the flags the user gave.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from .config import BY_NAME, SETTINGS, ServerConfig, Setting, parse_duration


def add_config_arguments(parser: argparse.ArgumentParser, sections: Sequence[str] | None = None) -> None:
    """Add the flags of ``sections`` (default: every section but the preset) to ``parser``.

    Defaults are suppressed, so the namespace holds exactly the flags the user gave: that is how
    :func:`load_config` knows a flag outranks the same value from TOML or the environment.
    """
    defaults = _defaults_for_help()
    groups: dict[str, argparse._ArgumentGroup] = {}
    for s in SETTINGS:
        if s.name == "preset":
            continue  # a global flag: see add_preset_argument
        if sections is not None and s.section not in sections:
            continue
        group = groups.get(s.section) or groups.setdefault(s.section, parser.add_argument_group(s.section))
        help_text = f"{s.help} [{s.env}]"
        default = defaults.get(s.path)
        if default not in (None, "", []):
            help_text += f" (default: {default})"
        _add_flag(group, s, help_text)


def add_preset_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    s = BY_NAME["preset"]
    _add_flag(parser, s, f"{s.help} [{s.env}]")


def _add_flag(parser: Any, s: Setting, help_text: str) -> None:
    common: dict[str, Any] = {"dest": s.name, "default": argparse.SUPPRESS, "help": help_text}
    names = (s.flag, *s.aliases)
    if s.kind == "bool":
        parser.add_argument(*names, action=argparse.BooleanOptionalAction, **common)
    elif s.kind == "paths":
        parser.add_argument(*names, action="append", metavar="DIR", **common)
    elif s.kind == "strs":
        parser.add_argument(*names, action="append", metavar="NAME", **common)
    elif s.kind == "choice":
        parser.add_argument(*names, choices=s.choices, **common)
    elif s.kind == "int":
        parser.add_argument(*names, type=int, metavar="N", **common)
    elif s.kind == "float" and s.duration:
        parser.add_argument(*names, type=_duration_flag, metavar="DURATION", **common)
    elif s.kind == "float":
        parser.add_argument(*names, type=float, metavar="X", **common)
    else:
        parser.add_argument(*names, metavar=s.name.upper().split("_")[-1], **common)


def _duration_flag(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _defaults_for_help() -> dict[tuple[str, ...], Any]:
    cfg = ServerConfig().model_dump()
    out: dict[tuple[str, ...], Any] = {}
    for s in SETTINGS:
        node: Any = cfg
        for key in s.path:
            node = node[key]
        out[s.path] = node
    return out
