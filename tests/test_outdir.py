"""The output directory under attack and under stress (issue 22): only what the server wrote is
read back, through a handle that a swapped directory does not redirect; listings survive files that
vanish; a full, read-only or missing disk is the server's own named error, found before the model
work where it can be; a generation that fails midway leaves nothing behind.

A real small file system (a 1 MB tmpfs, a read-only one) where this machine lets a test mount one
(root, as CI runs); elsewhere the same failures are made by the error a write would meet.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import engine.outdir as outdir
from engine import writes
from engine.config import EngineConfig
from engine.engine import Engine
from engine.errors import InputRefused, OutOfSpace, OutputUnavailable
from engine.outdir import OutputDir, expected_bytes, is_output_name, new_output_name, output_error
from engine.outputs import write_output
from engine.plan import Plan
from engine.results import Sampling
from engine.vocab import Task

IMAGE = "20260101T000000Z-text_to_image-0123abcd.png"
VIDEO = "20260101T000001Z-text_to_video-4567cdef.mp4"


def _frames(n: int, side: int = 16) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, side, side, 3), dtype=np.uint8)


@pytest.fixture()
def out(tmp_path: Path) -> Path:
    d = tmp_path / "outputs"
    d.mkdir()
    (d / IMAGE).write_bytes(b"\x89PNG mine")
    (d / (IMAGE + ".json")).write_text('{"task": "text_to_image"}')
    return d


@contextlib.contextmanager
def _mounted(target: Path, options: str) -> Iterator[None]:
    """A tmpfs mounted at ``target`` (``options``: its size, ``ro``), or the test skipped saying why."""
    target.mkdir(exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here ({done.stderr.strip() or 'not root'})")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


# ---------------------------------------------------------------------------------------------
# Only what the server wrote


def test_names_the_writer_gives_are_the_only_names_served():
    from datetime import datetime, timezone

    name = new_output_name("video_extend-mask", "mp4", datetime.now(timezone.utc))
    assert is_output_name(name) and is_output_name(name + ".json")
    for other in (
        "evil.html",
        "evil.js",
        "icon.svg",
        "x.png",
        IMAGE + ".html",
        IMAGE[:-4] + ".svg",
        ".tmp-" + IMAGE,
    ):
        assert not is_output_name(other), other


def test_a_written_output_and_its_sidecar_are_served_and_listed(tmp_path: Path):
    written = write_output(_frames(1), output_dir=tmp_path, task="text_to_image", fps=None, metadata={})
    outputs = OutputDir(tmp_path)
    assert {e.name for e in outputs.listing()} == {written.name, written.name + ".json"}
    data, st = outputs.read(written.name, 10**9)
    assert data == Path(written.path).read_bytes() and st.st_size == written.size_bytes


@pytest.mark.parametrize("dropped", ["evil.html", "evil.js", "evil.svg", "notes.txt"])
def test_a_file_dropped_into_the_directory_is_neither_listed_nor_read(out: Path, dropped: str):
    (out / dropped).write_text("<script>fetch('/gallery/api/outputs')</script>")
    outputs = OutputDir(out)
    assert dropped not in {e.name for e in outputs.listing()}
    with pytest.raises(InputRefused, match="only the files this server wrote"):
        outputs.read(dropped, 10**9)


def test_a_hard_link_to_a_file_elsewhere_is_not_served_though_named_like_an_output(out: Path, tmp_path: Path):
    secret = tmp_path / "secret.txt"
    secret.write_text("the secret")
    os.link(secret, out / VIDEO)
    outputs = OutputDir(out)
    assert VIDEO not in {e.name for e in outputs.listing()}
    with pytest.raises(InputRefused):
        outputs.read(VIDEO, 10**9)


def test_a_symlink_a_fifo_or_a_folder_named_like_an_output_is_not_served(out: Path, tmp_path: Path):
    (tmp_path / "secret.png").write_bytes(b"secret")
    (out / VIDEO).symlink_to(tmp_path / "secret.png")
    os.mkfifo(out / "20260101T000002Z-x-89abcdef.png")  # opened without waiting for a writer
    (out / "20260101T000003Z-x-00000000.png").mkdir()
    outputs = OutputDir(out)
    assert {e.name for e in outputs.listing()} == {IMAGE, IMAGE + ".json"}
    for name in (VIDEO, "20260101T000002Z-x-89abcdef.png", "20260101T000003Z-x-00000000.png"):
        with pytest.raises(InputRefused):
            outputs.read(name, 10**9)


def test_the_directory_swapped_for_a_link_while_serving_does_not_redirect_reads(out: Path, tmp_path: Path):
    outputs = OutputDir(out)
    assert outputs.open()  # at start
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / VIDEO).write_bytes(b"not the server's")
    (elsewhere / "passwd").write_text("root:x:0:0")
    out.rename(tmp_path / "moved")
    out.symlink_to(elsewhere)
    with pytest.raises(InputRefused):
        outputs.read(VIDEO, 10**9)
    with pytest.raises(InputRefused):
        outputs.read("passwd", 10**9)
    assert outputs.read(IMAGE, 10**9)[0] == b"\x89PNG mine"  # still the directory it started with
    assert VIDEO not in {e.name for e in outputs.listing()}
    with pytest.raises(OutputUnavailable, match="replaced by a link"):
        outputs.check_room(1)  # nor are writes sent there


def test_a_directory_removed_and_made_again_is_taken_again_but_never_a_link(out: Path, tmp_path: Path):
    outputs = OutputDir(out)
    assert outputs.open()
    for p in out.iterdir():
        p.unlink()
    out.rmdir()
    out.mkdir()
    (out / VIDEO).write_bytes(b"new")
    assert outputs.read(VIDEO, 10**9)[0] == b"new"


def test_a_file_removed_between_the_scan_and_its_stat_is_left_out_of_the_listing(
    out: Path, vanish_before_stat
):
    (out / VIDEO).write_bytes(b"video")
    vanish_before_stat(out, VIDEO)
    assert {e.name for e in OutputDir(out).listing()} == {IMAGE, IMAGE + ".json"}


# ---------------------------------------------------------------------------------------------
# Room before the work, and the disk's failures named


def test_a_missing_output_directory_is_made_before_the_work(tmp_path: Path):
    outputs = OutputDir(tmp_path / "new" / "outputs")
    outputs.check_room(1)
    assert outputs.path.is_dir()


def test_an_output_directory_that_cannot_be_made_is_the_servers_error_naming_why(tmp_path: Path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(
        OutputUnavailable,
        match=r"output directory .*file/outputs cannot be (created|used) \(Not a directory\)",
    ):
        OutputDir(tmp_path / "file" / "outputs").check_room(1)


def test_a_job_larger_than_the_free_space_is_refused_before_the_work_naming_both_sizes(tmp_path: Path):
    small = tmp_path / "small"
    with _mounted(small, "size=1m"):
        needed = expected_bytes(832, 480, 81, 1)
        with pytest.raises(
            OutOfSpace, match=r"no room in the output directory .*small: .* MB free .* need about"
        ):
            OutputDir(small).check_room(needed)
        OutputDir(small).check_room(expected_bytes(16, 16, 1, 1) - outdir.SPARE_BYTES + 1000)


def test_free_space_is_read_from_the_file_system_of_the_directory(tmp_path: Path, monkeypatch):
    # Wherever mounting is not permitted: the file system's own answer, made small.
    real = os.fstatvfs

    def full(fd: int) -> os.statvfs_result:
        st = real(fd)
        return os.statvfs_result((st.f_bsize, st.f_frsize, st.f_blocks, 0, 10, *tuple(st)[5:]))

    monkeypatch.setattr(outdir.os, "fstatvfs", full)
    with pytest.raises(OutOfSpace, match="free on its file system"):
        OutputDir(tmp_path).check_room(expected_bytes(64, 64, 1, 1))


def test_a_read_only_output_directory_is_refused_before_the_work(tmp_path: Path):
    ro = tmp_path / "ro"
    if os.geteuid() == 0:
        with _mounted(ro, "ro,size=1m"), pytest.raises(OutputUnavailable, match="read-only file system"):
            OutputDir(ro).check_room(1)
    else:
        ro.mkdir()
        ro.chmod(0o555)
        with pytest.raises(OutputUnavailable, match="may not write"):
            OutputDir(ro).check_room(1)


def test_a_full_disk_while_writing_is_out_of_space_naming_the_directory_and_leaves_nothing(tmp_path: Path):
    small = tmp_path / "small"
    with _mounted(small, "size=256k"):
        with pytest.raises(
            OutOfSpace, match=r"writing into the output directory .*small failed: no space left"
        ):
            write_output(_frames(33, 128), output_dir=small, task="t", fps=8.0, metadata={})
        assert [p.name for p in small.iterdir()] == []


@pytest.mark.parametrize(
    ("code", "error", "words"),
    [
        (errno.ENOSPC, OutOfSpace, "no space left"),
        (errno.EDQUOT, OutOfSpace, "quota"),
        (errno.EROFS, OutputUnavailable, "read-only"),
        (errno.EACCES, OutputUnavailable, "permission denied"),
        (errno.ENOENT, OutputUnavailable, "missing"),
    ],
)
def test_a_write_failing_on_the_disk_is_the_servers_error_and_leaves_nothing(
    tmp_path: Path, monkeypatch, code, error, words
):
    def failing(path: Path, data: bytes) -> None:
        Path(path).write_bytes(b"part")
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(writes, "_write_all", failing)
    with pytest.raises(error, match=words) as caught:
        write_output(_frames(1), output_dir=tmp_path, task="t", fps=None, metadata={})
    assert str(tmp_path) in str(caught.value)
    assert [p.name for p in tmp_path.iterdir()] == []


def test_other_write_failures_are_not_taken_for_the_disks():
    assert output_error(ValueError("bad frame"), "/x") is None
    assert output_error(OSError(errno.EINVAL, "Invalid argument"), "/x") is None


def test_a_generation_of_three_failing_at_the_third_removes_the_two_it_wrote(
    tiny_paths, tmp_path: Path, monkeypatch
):
    out = tmp_path / "outputs"
    engine = Engine(EngineConfig.tiny(tiny_paths.root, output_dir=out))
    real = writes._write_all
    calls = []

    def third_fails(path: Path, data: bytes) -> None:
        calls.append(path)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(writes, "_write_all", third_fails)
    with pytest.raises(OutOfSpace):
        engine.generate(
            Plan(task=Task.TEXT_TO_IMAGE, prompt="a red cube", width=32, height=32),
            Sampling(count=3, steps=1),
        )
    assert len(calls) == 3
    assert [p.name for p in out.iterdir()] == []
