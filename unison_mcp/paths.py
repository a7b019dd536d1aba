"""The server's names for the engine's input policy (:mod:`engine.inputs`) and output URIs.

The policy itself lives in the engine so the CLI, the Python API and MCP apply the same checks;
this module keeps the names the server imports: :class:`PathPolicy` (an
:class:`~engine.inputs.InputPolicy` whose pixel limit defaults to the engine's), the
``unison://outputs/<name>`` helpers, and :func:`probe_media` for path-based callers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from engine.inputs import (
    FORBIDDEN_TREES,
    OUTPUT_URI_PREFIX,
    InputPolicy,
    Source,
    check_output_name,
    open_path,
    output_uri,
)
from engine.media import DEFAULT_MAX_PIXELS, probe

__all__ = [
    "FORBIDDEN_TREES",
    "OUTPUT_URI_PREFIX",
    "InputPolicy",
    "PathPolicy",
    "Source",
    "check_output_name",
    "output_uri",
    "probe_media",
]


class PathPolicy(InputPolicy):
    """:class:`~engine.inputs.InputPolicy` with the old signature (``max_pixels`` optional).

    Pass ``limits.max_input_pixels`` as ``max_pixels``: the default is only the engine's own.
    """

    def __init__(
        self,
        roots: Sequence[Path] | None,
        output_dir: Path,
        max_bytes: int,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ):
        super().__init__(roots, output_dir, max_bytes, max_pixels)


def probe_media(path: Path | str | Source, *, max_pixels: int | None = None) -> None:
    """Read a checked input's header (no frame decoded) and apply the pixel limit.

    Prefer ``policy.open_probed(value, field=...)``: it checks, opens once and probes with the
    policy's configured limit, and the returned source is what the engine decodes.
    """
    if isinstance(path, Source):
        probe(path, max_pixels=max_pixels)
        return
    with open_path(path) as source:
        probe(source, max_pixels=max_pixels)
