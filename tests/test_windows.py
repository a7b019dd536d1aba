"""engine.windows.Chain: how a run's frames become a candidate's video, one window or several
(the generator's run is a function giving known frames: this tests the joining, not a model)."""

from __future__ import annotations

import numpy as np

from engine.plan import build_plan
from engine.prepare import Prepared
from engine.windows import Chain

H, W = 16, 32


def _runs(made_by: list[np.ndarray]):
    """A run that gives frames ``k`` (the window's index) everywhere, remembering each output."""

    def run(prep: Prepared, *, seeds, progress, stage):
        frames = np.full((1, prep.num_frames, H, W, 3), len(made_by), np.uint8)
        made_by.append(frames)
        return frames

    return run


def test_one_window_gives_the_runs_frames_themselves_not_a_copy():
    plan = build_plan("text_to_video", "a fox", num_frames=9, width=W, height=H)
    chain = Chain(plan, window=81, overlap=2)
    chain.start(Prepared(width=W, height=H, num_frames=9))
    outputs: list[np.ndarray] = []
    made = chain.make(_runs(outputs), [5], batch=False, composite=None, steps=1)
    (frames,) = made.frames
    assert frames.shape == (9, H, W, 3) and np.shares_memory(frames, outputs[0])


def test_several_windows_are_joined_each_after_the_context_it_continues():
    plan = build_plan("text_to_video", "a fox", num_frames=21, width=W, height=H)
    chain = Chain(plan, window=9, overlap=2)
    assert len(chain.windows) > 1
    chain.start(Prepared(width=W, height=H, num_frames=chain.windows[0].total))
    outputs: list[np.ndarray] = []
    made = chain.make(_runs(outputs), [5], batch=False, composite=None, steps=1)
    (frames,) = made.frames
    assert frames.shape == (21, H, W, 3)
    assert not any(np.shares_memory(frames, o) for o in outputs)
    # Each window's new frames, in order: window k's frames hold the value k.
    want = np.concatenate([np.full(w.new, k) for k, w in enumerate(chain.windows)])
    assert np.array_equal(frames[:, 0, 0, 0], want)


def test_frames_left_on_the_device_are_pasted_there_or_copied_to_the_host():
    """A run that leaves its frames on the device (a torch tensor): a task that keeps nothing gets
    them copied to the host; a task with a mask gets them pasted (engine.composite) and copied."""
    from functools import partial

    import torch

    from engine.composite import composite

    def run(prep: Prepared, *, seeds, progress, stage):
        return torch.full((1, prep.num_frames, H, W, 3), 200, dtype=torch.uint8)

    plan = build_plan("text_to_video", "a fox", num_frames=5, width=W, height=H)
    chain = Chain(plan, window=81, overlap=2)
    chain.start(Prepared(width=W, height=H, num_frames=5))
    made = chain.make(run, [1], batch=False, composite=None, steps=1)
    assert isinstance(made.frames[0], np.ndarray) and (made.frames[0] == 200).all()

    source = np.full((5, H, W, 3), 7, np.uint8)
    mask = np.zeros((5, H, W, 1), np.uint8)
    mask[:, :, : W // 2] = 255  # the left half regenerated, the right half kept
    chain.start(Prepared(width=W, height=H, num_frames=5, video=source, mask=mask))
    paste = partial(composite, feather_px=0, color_match=False, in_place=True)
    made = chain.make(run, [1], batch=False, composite=paste, steps=1)
    (frames,) = made.frames
    assert isinstance(frames, np.ndarray)
    assert (frames[:, :, : W // 2] == 200).all() and (frames[:, :, W // 2 :] == 7).all()
    assert made.preserved[0]["preserved"] is True
