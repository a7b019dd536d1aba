"""The Unison projector: planner hidden states -> 4 extra context tokens for the generator.

The MLP of UNISON.md, with the released ``projector.pth`` state-dict layout::

    ln_in   LayerNorm(hidden)
    net     Linear(hidden -> 2048), GELU, Dropout(0.1), Linear(2048 -> text_dim)   # keys net.0, net.3
    ln_out  LayerNorm(text_dim)
    seq_adjust  Linear(56 -> 4) over positions

The MLP runs per position; the sequence is then zero-padded or cut to 56 positions and
``seq_adjust`` mixes them into 4 tokens. Always float32.

This module imports torch at the top: import it lazily (the engine does).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from .errors import ModelError
from .hub import resolve_weights_file

log = logging.getLogger(__name__)

SEQ_LEN = 56
NUM_TOKENS = 4
INNER_DIM = 2048


class Projector(nn.Module):
    """Unison's projector MLP (see the module docstring for the layout)."""

    def __init__(
        self,
        hidden_size: int,
        text_dim: int = 4096,
        seq_len: int = SEQ_LEN,
        num_tokens: int = NUM_TOKENS,
        *,
        inner_dim: int = INNER_DIM,
    ):
        super().__init__()
        self.hidden_size = hidden_size
        self.text_dim = text_dim
        self.seq_len = seq_len
        self.num_tokens = num_tokens
        self.ln_in = nn.LayerNorm(hidden_size)
        self.net = nn.Sequential(
            nn.Linear(hidden_size, inner_dim),
            nn.GELU(),
            nn.Dropout(0.1),
            nn.Linear(inner_dim, text_dim),
        )
        self.ln_out = nn.LayerNorm(text_dim)
        self.seq_adjust = nn.Linear(seq_len, num_tokens)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """``(B, L, hidden)`` -> ``(B, num_tokens, text_dim)``, float32."""
        if hidden.ndim != 3 or hidden.shape[-1] != self.hidden_size:
            raise ModelError(
                f"projector input shape={tuple(hidden.shape)}: must be (batch, length, {self.hidden_size}); "
                "the planner's hidden size does not match the projector"
            )
        x = hidden.to(device=self.ln_in.weight.device, dtype=torch.float32)
        x = self.ln_out(self.net(self.ln_in(x)))  # (B, L, text_dim)
        # Pad after the MLP so padded positions are true zeros (not ln_out's bias).
        length = x.shape[1]
        if length < self.seq_len:
            x = nn.functional.pad(x, (0, 0, 0, self.seq_len - length))
        elif length > self.seq_len:
            x = x[:, : self.seq_len]
        # (B, 56, D) -> (B, D, 56) -> Linear over positions -> (B, D, 4) -> (B, 4, D)
        return self.seq_adjust(x.transpose(1, 2)).transpose(1, 2)


def _expected_shapes(hidden_size: int, text_dim: int) -> dict[str, tuple[int, ...]]:
    # On the meta device: shapes only, no 2048x4096 allocation.
    with torch.device("meta"):
        model = Projector(hidden_size, text_dim=text_dim)
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def load_projector(
    path: str | Path,
    hidden_size: int,
    text_dim: int | None = None,
    *,
    local_files_only: bool = False,
    cache_dir: str | Path | None = None,
) -> Projector:
    """Load the released ``projector.pth`` unchanged, checked against the planner and generator.

    ``hidden_size`` is the planner's text hidden size; ``text_dim`` the generator's umT5 width
    (``None``: taken from the file). Returns the projector in eval mode on the CPU, float32.
    Raises :class:`ModelError` naming missing/unexpected keys or the mismatched shape.
    """
    file = resolve_weights_file(path, local_files_only=local_files_only, cache_dir=cache_dir)
    try:
        raw = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and safety errors all mean "not a usable state dict"
        raise ModelError(f"projector={str(file)!r}: cannot be read as a torch state dict: {exc}") from exc
    if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise ModelError(f"projector={str(file)!r}: must hold a flat state dict of tensors")

    # DataParallel/DeepSpeed saves carry a "module." prefix on every key.
    state = {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in raw.items()}

    if text_dim is None:
        weight = state.get("net.3.weight")
        if weight is None or weight.ndim != 2:
            raise ModelError(f"projector={str(file)!r}: no 2-D 'net.3.weight' to infer text_dim from")
        text_dim = int(weight.shape[0])

    expected = _expected_shapes(hidden_size, text_dim)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ModelError(
            f"projector={str(file)!r}: keys do not match the Unison projector "
            f"(missing: {missing or 'none'}; unexpected: {unexpected or 'none'})"
        )
    for key, shape in expected.items():
        found = tuple(state[key].shape)
        if found != shape:
            raise ModelError(
                f"projector={str(file)!r}: {key} has shape {list(found)}, expected {list(shape)} "
                f"(planner hidden_size={hidden_size}, generator text_dim={text_dim})"
            )

    model = Projector(hidden_size, text_dim=text_dim)
    model.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=True)
    model.eval()
    log.info(
        "projector loaded from %s (hidden %d -> %d tokens of %d)", file, hidden_size, NUM_TOKENS, text_dim
    )
    return model
