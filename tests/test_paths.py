"""The input path policy: allowed roots after resolving symlinks, never /proc, only regular files."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from PIL import Image

from engine.api import admit, parse_arguments
from engine.config import EngineConfig, Limits
from engine.errors import InputRefused
from engine.inputs import InputPolicy, check_output_name, output_uri
from engine.source import probe


@pytest.fixture()
def tree(tmp_path: Path) -> dict[str, Path]:
    root = tmp_path / "root"
    out = tmp_path / "outputs"
    outside = tmp_path / "outside"
    for d in (root, out, outside):
        d.mkdir()
    (root / "cat.png").write_bytes(b"x" * 10)
    (out / "text_to_image-0001.png").write_bytes(b"y" * 10)
    (outside / "secret.png").write_bytes(b"s")
    return {"root": root, "out": out, "outside": outside}


@pytest.fixture()
def policy(tree: dict[str, Path]) -> InputPolicy:
    return InputPolicy([tree["root"]], tree["out"], max_bytes=100, max_pixels=64_000_000)


def test_a_file_under_an_allowed_root_resolves_to_its_real_path(policy: InputPolicy, tree):
    assert policy.resolve(str(tree["root"] / "cat.png")) == (tree["root"] / "cat.png").resolve()


def test_an_output_uri_resolves_into_the_output_directory(policy: InputPolicy, tree):
    got = policy.resolve(output_uri("text_to_image-0001.png"))
    assert got == (tree["out"] / "text_to_image-0001.png").resolve()


def test_a_file_uri_is_read_like_its_path(policy: InputPolicy, tree):
    assert policy.resolve((tree["root"] / "cat.png").as_uri()) == (tree["root"] / "cat.png").resolve()


def test_a_file_outside_the_roots_is_refused_naming_the_roots(policy: InputPolicy, tree):
    with pytest.raises(InputRefused) as err:
        policy.resolve(str(tree["outside"] / "secret.png"), field="source")
    msg = str(err.value)
    assert "source=" in msg and "outside the allowed roots" in msg
    assert str(tree["root"].resolve()) in msg and str(tree["out"].resolve()) in msg


def test_dot_dot_that_climbs_out_of_a_root_is_refused(policy: InputPolicy, tree):
    with pytest.raises(InputRefused, match="outside the allowed roots"):
        policy.resolve(f"{tree['root']}/../outside/secret.png")


def test_a_symlink_inside_a_root_pointing_outside_is_refused(policy: InputPolicy, tree):
    link = tree["root"] / "innocent.png"
    link.symlink_to(tree["outside"] / "secret.png")
    with pytest.raises(InputRefused, match="resolves to"):
        policy.resolve(str(link))


def test_a_symlink_from_outside_into_a_root_is_allowed(policy: InputPolicy, tree):
    link = tree["outside"] / "alias.png"
    link.symlink_to(tree["root"] / "cat.png")
    assert policy.resolve(str(link)) == (tree["root"] / "cat.png").resolve()


def test_proc_self_environ_is_refused_even_when_slash_is_a_root(tree):
    everything = InputPolicy([Path("/")], tree["out"], max_bytes=10**9, max_pixels=64_000_000)
    with pytest.raises(InputRefused, match="/proc is never readable"):
        everything.resolve("/proc/self/environ")


def test_a_symlink_to_proc_is_refused_after_resolving(tree):
    everything = InputPolicy([Path("/")], tree["out"], max_bytes=10**9, max_pixels=64_000_000)
    link = tree["root"] / "env.png"
    link.symlink_to("/proc/self/environ")
    with pytest.raises(InputRefused, match="never readable"):
        everything.resolve(str(link))


def test_a_missing_file_is_refused_as_missing(policy: InputPolicy, tree):
    with pytest.raises(InputRefused, match="no such file"):
        policy.resolve(str(tree["root"] / "nope.png"))


def test_a_directory_is_refused(policy: InputPolicy, tree):
    (tree["root"] / "album.png").mkdir()
    with pytest.raises(InputRefused, match="is a directory"):
        policy.resolve(str(tree["root"] / "album.png"))


def test_a_fifo_is_refused_without_being_opened(policy: InputPolicy, tree):
    fifo = tree["root"] / "pipe.png"
    os.mkfifo(fifo)
    # Opening a FIFO with no writer would block forever: reaching the assertion proves it wasn't.
    with pytest.raises(InputRefused, match="FIFO"):
        policy.resolve(str(fifo))


def test_a_socket_is_refused(policy: InputPolicy, tree):
    path = tree["root"] / "s.png"
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(path))
        with pytest.raises(InputRefused, match="socket"):
            policy.resolve(str(path))
    finally:
        sock.close()


def test_a_device_is_refused(tree):
    everything = InputPolicy([Path("/")], tree["out"], max_bytes=10**9, max_pixels=64_000_000)
    with pytest.raises(InputRefused, match="never readable"):
        everything.resolve("/dev/zero")


def test_a_file_over_the_size_limit_is_refused_with_both_sizes(policy: InputPolicy, tree):
    big = tree["root"] / "big.png"
    big.write_bytes(b"z" * 101)
    with pytest.raises(InputRefused, match="101 bytes is over the input limit of 100 bytes"):
        policy.resolve(str(big))


def test_a_relative_path_is_refused_asking_for_an_absolute_one(policy: InputPolicy):
    with pytest.raises(InputRefused, match="absolute path"):
        policy.resolve("cat.png")


def test_other_uri_schemes_are_refused(policy: InputPolicy):
    with pytest.raises(InputRefused, match="only local paths"):
        policy.resolve("https://example.com/cat.png")


@pytest.mark.parametrize("name", ["", "..", "../x.png", "a/b.png", "a\\b.png", ".hidden.png", "x\0.png"])
def test_output_names_with_folders_dots_or_control_characters_are_refused(name: str):
    with pytest.raises(InputRefused):
        check_output_name(name)


def test_an_output_uri_cannot_climb_out_of_the_output_directory(policy: InputPolicy):
    with pytest.raises(InputRefused, match="not valid"):
        policy.resolve(output_uri("../root/cat.png"))
    with pytest.raises(InputRefused, match="not valid"):
        policy.resolve(output_uri("%2E%2E%2Froot%2Fcat.png"))


def test_markers_in_a_prompt_are_checked_and_replaced_by_real_paths(policy: InputPolicy, tree):
    real = (tree["root"] / "cat.png").resolve()
    Image.new("RGB", (32, 16), "red").save(real)  # admission probes the header too
    prompt = f"what is in ###{tree['root']}/../root/cat.png### ?"
    with admit(parse_arguments("auto", Limits(), {"prompt": prompt}), EngineConfig(), policy) as admitted:
        assert admitted.parsed is not None and [p for p, _ in admitted.parsed.media] == [str(real)]
    with pytest.raises(InputRefused):
        admit(
            parse_arguments("auto", Limits(), {"prompt": f"leak ###{tree['outside']}/secret.png###"}),
            EngineConfig(),
            policy,
        )


def test_listing_outputs_skips_hidden_files_symlinks_and_names_the_server_never_gives(
    policy: InputPolicy, tree
):
    written = "20260101T000000Z-text_to_image-0123abcd.png"
    (tree["out"] / written).write_bytes(b"y" * 10)
    (tree["out"] / ".tmp-123.png").write_bytes(b"partial")
    (tree["out"] / "20260101T000001Z-x-0123abce.png").symlink_to(tree["outside"] / "secret.png")
    assert [p.name for p in policy.list_outputs()] == [written]


def test_a_nul_byte_percent_encoded_in_a_file_uri_is_refused_cleanly(policy: InputPolicy, tree):
    # Decoding happens after the raw value's NUL check: the decoded path must be checked too.
    with pytest.raises(InputRefused, match="NUL byte"):
        policy.resolve((tree["root"] / "cat.png").as_uri() + "%00.png", field="source")


def test_the_home_of_an_unknown_user_is_refused_cleanly(policy: InputPolicy):
    with pytest.raises(InputRefused, match=r"source='~no-such-user-r2x/cat.png': .*home"):
        policy.resolve("~no-such-user-r2x/cat.png", field="source")


def test_an_output_name_too_long_for_the_file_system_is_refused_as_missing(policy: InputPolicy):
    with pytest.raises(InputRefused, match="no output named"):
        policy.outputs.read("a" * 300 + ".png", 100)


def test_reading_an_output_never_follows_a_symlink_at_its_name(policy: InputPolicy, tree):
    name = "20260101T000000Z-text_to_image-0123abcd.png"
    (tree["out"] / name).write_bytes(b"y" * 10)
    assert policy.outputs.read(name, 100)[0] == b"y" * 10
    (tree["out"] / name).unlink()
    (tree["out"] / name).symlink_to(tree["outside"] / "secret.png")  # swapped for a link since
    with pytest.raises(InputRefused, match="no output named"):
        policy.outputs.read(name, 100)


def test_reading_an_output_that_is_a_fifo_is_refused_without_blocking(policy: InputPolicy, tree):
    name = "20260101T000000Z-text_to_image-0123abcd.png"
    os.mkfifo(tree["out"] / name)
    with pytest.raises(InputRefused, match="no output named"):
        policy.outputs.read(name, 100)


def test_outside_the_roots_a_missing_file_is_refused_like_an_existing_one(policy: InputPolicy, tree):
    def refusal(path: Path) -> str:
        with pytest.raises(InputRefused) as err:
            policy.resolve(str(path), field="source")
        return str(err.value).replace(str(path), "<PATH>")

    existing = refusal(tree["outside"] / "secret.png")
    assert refusal(tree["outside"] / "missing.png") == existing
    assert refusal(tree["outside"] / "no-folder" / "secret.png") == existing


def test_a_100_000_character_path_gets_a_short_refusal(policy: InputPolicy):
    with pytest.raises(InputRefused) as err:
        policy.resolve("/" + "x" * 100_000 + ".png", field="source")
    assert len(str(err.value)) < 1_000 and "…" in str(err.value)


def test_the_media_probe_applies_the_configured_pixel_limit(tree, opened):
    from PIL import Image

    # A 2 MP image under a 1 MP limit is refused; a 70 MP one under a 100 MP limit passes.
    two = tree["root"] / "two.png"
    Image.new("RGB", (2000, 1000)).save(two)
    with pytest.raises(InputRefused, match="the limit is 1000000 pixels"):
        probe(opened(two), max_pixels=1_000_000)
    strict = InputPolicy([tree["root"]], tree["out"], max_bytes=10**9, max_pixels=1_000_000)
    with pytest.raises(InputRefused, match="the limit is 1000000 pixels"):
        strict.open_probed(str(two))
    seventy = tree["root"] / "seventy.png"
    Image.new("1", (10_000, 7_000)).save(seventy)  # 1-bit: a small file with a 70 MP header
    probe(opened(seventy), max_pixels=100_000_000)
    loose = InputPolicy([tree["root"]], tree["out"], max_bytes=10**9, max_pixels=100_000_000)
    with loose.open_probed(str(seventy)) as source:
        assert (source.header.width, source.header.height) == (10_000, 7_000)


def test_without_roots_a_relative_path_is_taken_from_the_working_directory(tree, monkeypatch):
    # The CLI and the Python API on one's own machine: "photo.png" means the one right here.
    monkeypatch.chdir(tree["root"])
    anywhere = InputPolicy(None, tree["out"], max_bytes=100, max_pixels=64_000_000)
    with anywhere.open("cat.png") as source:
        assert source.path == (tree["root"] / "cat.png").resolve()
