"""Server configuration: engine settings plus what only the MCP layer needs.

Filled from (lowest to highest precedence) defaults, an optional TOML file, ``UNISON_*``
environment variables and CLI flags; see ``load_config``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from engine.config import EngineConfig


class ServerConfig(BaseModel):
    engine: EngineConfig = Field(default_factory=EngineConfig)
    #: Directories inputs may be read from (the output directory is always allowed too).
    allowed_roots: list[Path] = Field(default_factory=list)
    #: How long a tool call waits for its job before returning a job handle.
    wait_s: float = Field(45.0, ge=0)
    #: Jobs that may wait behind the running one before calls are refused as busy.
    queue_size: int = Field(8, ge=0)
    max_input_bytes: int = Field(2 * 1024**3, ge=1)
    transport: Literal["stdio", "http"] = "stdio"
    host: str = "127.0.0.1"
    port: int = Field(8765, ge=1, le=65535)
    auth_token: str | None = None
    preload: bool = False
    #: Longest side of inline previews (pixels).
    preview_side: int = Field(384, ge=16, le=1024)
    #: Finished jobs kept for the `job` tool.
    keep_jobs: int = Field(64, ge=1)

    @property
    def output_dir(self) -> Path:
        return self.engine.output_dir.expanduser().resolve()

    def roots(self) -> list[Path]:
        """Allowed input roots, resolved, with the output directory last."""
        out = [Path(r).expanduser().resolve() for r in self.allowed_roots]
        if self.output_dir not in out:
            out.append(self.output_dir)
        return out
