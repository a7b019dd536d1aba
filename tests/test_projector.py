"""The projector: released-layout loading, strict checks, and the forward of UNISON.md."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.errors import ModelError
from engine.hub import resolve_weights_file
from engine.projector import Projector, load_projector
from engine.tiny.wan import build_projector

HIDDEN, TEXT_DIM = 16, 32


@pytest.fixture()
def released(tmp_path: Path) -> Path:
    """A projector file in the released layout: every key prefixed with ``module.``."""
    path = tmp_path / "projector.pth"
    build_projector(path, hidden_size=HIDDEN, text_dim=TEXT_DIM, seed=3)
    return path


def _saved(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def test_the_released_file_has_the_module_prefix_on_every_key(released: Path) -> None:
    keys = set(_saved(released))
    assert keys == {
        f"module.{k}"
        for k in (
            "ln_in.weight",
            "ln_in.bias",
            "net.0.weight",
            "net.0.bias",
            "net.3.weight",
            "net.3.bias",
            "ln_out.weight",
            "ln_out.bias",
            "seq_adjust.weight",
            "seq_adjust.bias",
        )
    }


def test_a_released_file_loads_unchanged_with_the_prefix_stripped(released: Path) -> None:
    model = load_projector(released, HIDDEN, TEXT_DIM)
    state = model.state_dict()
    for key, value in _saved(released).items():
        assert torch.equal(state[key.removeprefix("module.")], value), key
    assert not model.training


def test_a_state_dict_without_the_prefix_loads_too(released: Path, tmp_path: Path) -> None:
    plain = {k.removeprefix("module."): v for k, v in _saved(released).items()}
    path = tmp_path / "plain.pth"
    torch.save(plain, path)
    model = load_projector(path, HIDDEN)
    assert torch.equal(model.net[3].weight, plain["net.3.weight"])


def test_text_dim_is_taken_from_the_file_when_not_given(released: Path) -> None:
    model = load_projector(released, HIDDEN)
    assert model.text_dim == TEXT_DIM
    assert model(torch.zeros(1, 3, HIDDEN)).shape == (1, 4, TEXT_DIM)


def test_missing_and_unexpected_keys_are_both_named(released: Path, tmp_path: Path) -> None:
    state = _saved(released)
    del state["module.ln_out.bias"]
    state["module.extra.weight"] = torch.zeros(2)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(ModelError) as err:
        load_projector(path, HIDDEN, TEXT_DIM)
    assert "missing: ['ln_out.bias']" in str(err.value)
    assert "unexpected: ['extra.weight']" in str(err.value)


def test_a_planner_hidden_size_mismatch_names_the_key_and_both_shapes(released: Path) -> None:
    with pytest.raises(ModelError) as err:
        load_projector(released, 8, TEXT_DIM)
    message = str(err.value)
    assert "ln_in.weight has shape [16], expected [8]" in message


def test_a_generator_text_dim_mismatch_is_refused(released: Path) -> None:
    with pytest.raises(ModelError) as err:
        load_projector(released, HIDDEN, 64)
    assert "net.3.weight has shape [32, 2048], expected [64, 2048]" in str(err.value)


def test_a_missing_file_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such file"):
        load_projector(tmp_path / "nope.pth", HIDDEN)


def test_a_file_that_is_not_a_state_dict_is_a_model_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.pth"
    path.write_bytes(b"not a torch file")
    with pytest.raises(ModelError, match="cannot be read"):
        load_projector(path, HIDDEN)


def test_a_hub_path_is_resolved_from_the_hub_cache(released: Path, tmp_path: Path) -> None:
    # The hub cache layout hf_hub_download reads with local_files_only (no network here).
    cache = tmp_path / "hub"
    commit = "0" * 40
    repo = cache / "models--ali-vilab--Unison"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit / "weights"
    snapshot.mkdir(parents=True)
    (snapshot / "projector.pth").write_bytes(released.read_bytes())

    found = resolve_weights_file(
        "ali-vilab/Unison/weights/projector.pth", local_files_only=True, cache_dir=cache
    )
    assert found.read_bytes() == released.read_bytes()
    model = load_projector(
        "ali-vilab/Unison/weights/projector.pth", HIDDEN, local_files_only=True, cache_dir=cache
    )
    assert model.text_dim == TEXT_DIM


def test_a_hub_path_missing_from_the_cache_names_repo_and_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as err:
        resolve_weights_file("ali-vilab/Unison/projector.pth", local_files_only=True, cache_dir=tmp_path)
    message = str(err.value)
    assert "'ali-vilab/Unison'" in message and "'projector.pth'" in message and "local_files_only" in message


def test_the_output_is_four_float32_tokens_of_text_dim(released: Path) -> None:
    model = load_projector(released, HIDDEN)
    out = model(torch.randn(2, 10, HIDDEN, dtype=torch.bfloat16))
    assert out.shape == (2, 4, TEXT_DIM)
    assert out.dtype == torch.float32


def _mlp(model: Projector, hidden: torch.Tensor) -> torch.Tensor:
    return model.ln_out(model.net(model.ln_in(hidden)))


def test_a_short_sequence_is_zero_padded_to_56_after_the_mlp(released: Path) -> None:
    model = load_projector(released, HIDDEN)
    hidden = torch.randn(1, 10, HIDDEN)
    with torch.no_grad():
        per_position = _mlp(model, hidden)  # (1, 10, D)
        # Padded positions are zeros, so only the first 10 columns of seq_adjust contribute.
        expected = torch.einsum("tl,bld->btd", model.seq_adjust.weight[:, :10], per_position)
        expected = expected + model.seq_adjust.bias[None, :, None]
        assert torch.allclose(model(hidden), expected, atol=1e-5)


def test_a_long_sequence_is_cut_to_its_first_56_positions(released: Path) -> None:
    model = load_projector(released, HIDDEN)
    hidden = torch.randn(1, 60, HIDDEN)
    changed_tail = hidden.clone()
    changed_tail[:, 56:] = torch.randn(1, 4, HIDDEN)
    with torch.no_grad():
        out = model(hidden)
        assert torch.equal(out, model(hidden[:, :56]))
        assert torch.equal(out, model(changed_tail))
        assert not torch.equal(out, model(hidden[:, 1:57]))


def test_dropout_is_off_after_loading(released: Path) -> None:
    model = load_projector(released, HIDDEN)
    hidden = torch.randn(1, 20, HIDDEN)
    with torch.no_grad():
        assert torch.equal(model(hidden), model(hidden))


def test_an_input_of_the_wrong_width_is_refused(released: Path) -> None:
    model = load_projector(released, HIDDEN)
    with pytest.raises(ModelError, match=r"must be \(batch, length, 16\)"):
        model(torch.zeros(1, 5, HIDDEN + 1))
