"""unison-mcp: the MCP layer over :mod:`engine` (tools, resources, configuration, path policy, CLI)."""

__version__ = "0.1.0"
