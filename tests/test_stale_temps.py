"""Nothing left behind: the temporaries of a writer killed mid-file are removed when the server starts."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from engine.outputs import STALE_TEMP_AGE_S, TEMP_PREFIX, remove_stale_temps

REPO = Path(__file__).resolve().parents[1]
OLD = time.time() - STALE_TEMP_AGE_S - 60


def _file(path: Path, mtime: float | None = OLD) -> Path:
    path.write_bytes(b"partial")
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def test_only_old_temporaries_with_the_writers_own_names_are_removed(tmp_path):
    stale = [_file(tmp_path / f"{TEMP_PREFIX}{'a' * 32}.{ext}") for ext in ("mp4", "png", "json")]
    kept = [
        _file(tmp_path / f"{TEMP_PREFIX}{'b' * 32}.mp4", mtime=None),  # being written right now
        _file(tmp_path / ".tmp-notes.txt"),  # a hidden file of the user's, not the writer's name
        _file(tmp_path / f"{TEMP_PREFIX}{'c' * 31}.mp4"),
        _file(tmp_path / "20260101T000000Z-text_to_image-1234abcd.png"),
    ]
    (tmp_path / f"{TEMP_PREFIX}{'d' * 32}.png").mkdir()  # a directory is never ours
    target = _file(tmp_path / "elsewhere.png")
    (tmp_path / f"{TEMP_PREFIX}{'e' * 32}.png").symlink_to(target)  # nor is a link
    assert sorted(remove_stale_temps(tmp_path)) == sorted(stale)
    assert all(p.exists() for p in kept) and target.exists()
    assert not any(p.exists() for p in stale)


def test_a_missing_output_directory_has_nothing_to_clean(tmp_path):
    assert remove_stale_temps(tmp_path / "nowhere") == []


def test_serve_removes_stale_temporaries_from_its_output_directory_at_start(tiny_paths, tmp_path):
    out = tmp_path / "outputs"
    out.mkdir()
    stale = _file(out / f"{TEMP_PREFIX}{'f' * 32}.mp4")
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNISON_")}
    env.update(UNISON_TINY_DIR=str(tiny_paths.root), HF_ENDPOINT="http://127.0.0.1:9")
    command = [sys.executable, "-m", "unison_mcp", "serve", "--preset", "tiny", "--output-dir", str(out)]
    # stdin at EOF: the server starts, finds the client gone and exits.
    subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, env=env, cwd=REPO, timeout=60)
    assert not stale.exists()
