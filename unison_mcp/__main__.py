"""``python -m unison_mcp``: the same as the ``unison-mcp`` command."""

from .cli import entry

entry()
