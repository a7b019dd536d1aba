"""The job queue: one worker in order, bounded waiting, cancel, progress, bounded memory; and the
one interface the queue and the pool (and their jobs) both satisfy."""

from __future__ import annotations

import threading
import time

import pytest
from protocols import members, mismatch

from engine.config import EngineConfig
from engine.control import JobControl
from engine.errors import Busy, Cancelled, ShuttingDown
from engine.jobs import Job, JobAPI, JobQueue, JobQueueAPI
from engine.pool.book import JobBook
from engine.pool.client import BookJob, Pool, PoolJob
from engine.pool.settings import PoolSettings


def _gate() -> tuple[threading.Event, threading.Event]:
    """(started, release): a job that signals it runs, then holds the worker until released."""
    return threading.Event(), threading.Event()


def _holding(started: threading.Event, release: threading.Event, value: str = "held"):
    def fn(control: JobControl) -> str:
        started.set()
        assert release.wait(5), "test never released the job"
        return value

    return fn


@pytest.fixture()
def queue():
    q = JobQueue(capacity=2, keep_jobs=3)
    yield q
    q.close(cancel=True, timeout=5)


def test_a_job_runs_on_the_worker_thread_and_returns_its_result(queue: JobQueue):
    caller = threading.get_ident()
    job = queue.submit("t", lambda control: threading.get_ident())
    assert job.wait(5)
    assert job.status == "done"
    assert job.result != caller
    assert job.outcome() == job.result
    assert job.started_at is not None and job.finished_at is not None and job.finished_at >= job.started_at


def test_jobs_run_one_at_a_time_in_submission_order(queue: JobQueue):
    order: list[int] = []
    active = []
    overlap = []

    def make(i: int):
        def fn(control: JobControl) -> int:
            active.append(i)
            overlap.append(len(active))
            time.sleep(0.02)
            order.append(i)
            active.remove(i)
            return i

        return fn

    jobs = [queue.submit("t", make(i)) for i in range(3)]
    assert all(j.wait(5) for j in jobs)
    assert order == [0, 1, 2]
    assert max(overlap) == 1


def test_a_full_queue_refuses_at_once_naming_the_jobs_ahead(queue: JobQueue):
    started, release = _gate()
    running = queue.submit("t", _holding(started, release))
    assert started.wait(5)
    waiting = [queue.submit("t", lambda c: 1) for _ in range(2)]
    t0 = time.perf_counter()
    with pytest.raises(Busy) as err:
        queue.submit("t", lambda c: 1)
    assert time.perf_counter() - t0 < 0.5
    assert err.value.ahead == 3 and err.value.capacity == 2
    assert "3 jobs ahead" in str(err.value)
    release.set()
    assert running.wait(5) and all(j.wait(5) for j in waiting)
    assert queue.submit("t", lambda c: 2).wait(5)  # room again once the backlog drained


def test_a_queue_of_capacity_zero_still_runs_one_job_when_idle():
    q = JobQueue(capacity=0)
    try:
        started, release = _gate()
        job = q.submit("t", _holding(started, release))
        assert started.wait(5)
        with pytest.raises(Busy):
            q.submit("t", lambda c: 1)
        release.set()
        assert job.wait(5) and job.status == "done"
    finally:
        q.close(timeout=5)


def test_cancelling_a_queued_job_removes_it_without_running_it(queue: JobQueue):
    started, release = _gate()
    queue.submit("t", _holding(started, release))
    assert started.wait(5)
    ran = threading.Event()
    queued = queue.submit("t", lambda c: ran.set())
    assert queued.status == "queued" and queue.position(queued) == 1
    assert queued.cancel()
    assert queued.finished and queued.status == "cancelled"
    assert isinstance(queued.error, Cancelled)
    assert queue.waiting == 0
    release.set()
    time.sleep(0.1)
    assert not ran.is_set()
    with pytest.raises(Cancelled):
        queued.outcome()


def test_cancelling_a_running_job_stops_it_at_its_next_step(queue: JobQueue):
    steps_done: list[int] = []
    first = threading.Event()

    def fn(control: JobControl) -> str:
        for i in range(1, 1000):
            control.step(i, 1000)
            steps_done.append(i)
            first.set()
            time.sleep(0.005)
        return "finished"

    job = queue.submit("t", fn)
    assert first.wait(5)
    job.cancel()
    assert job.wait(5)
    assert job.status == "cancelled"
    assert len(steps_done) < 1000
    assert job.result is None


def test_progress_reaches_the_listener_given_at_submit_for_every_stage_and_step(queue: JobQueue):
    seen: list[tuple[int, int, str]] = []

    def fn(control: JobControl) -> None:
        control.set_stage("denoising", total=4)
        for i in range(1, 5):
            control.step(i, 4)

    job = queue.submit("t", fn, on_progress=lambda d, t, s: seen.append((d, t, s)))
    assert job.wait(5)
    # The job leaving the queue, the stage beginning (done 0), then each step.
    assert seen == [(0, 0, "starting"), (0, 4, "denoising")] + [(i, 4, "denoising") for i in range(1, 5)]
    assert job.progress() == {"stage": "denoising", "done": 4, "total": 4}


def test_a_failing_listener_does_not_fail_the_job(queue: JobQueue):
    def broken(done: int, total: int, stage: str) -> None:
        raise RuntimeError("client went away")

    def fn(control: JobControl) -> str:
        control.step(1, 1)
        return "ok"

    job = queue.submit("t", fn, on_progress=broken)
    assert job.wait(5) and job.status == "done" and job.result == "ok"


def test_a_failing_job_records_its_error_and_the_worker_keeps_serving(queue: JobQueue):
    def boom(control: JobControl) -> None:
        raise ValueError("bad weights")

    failed = queue.submit("t", boom)
    assert failed.wait(5)
    assert failed.status == "failed" and isinstance(failed.error, ValueError)
    with pytest.raises(ValueError, match="bad weights"):
        failed.outcome()
    nxt = queue.submit("t", lambda c: "still here")
    assert nxt.wait(5) and nxt.result == "still here"


def test_finished_jobs_beyond_keep_jobs_are_forgotten_oldest_first(queue: JobQueue):
    jobs = []
    for i in range(5):
        job = queue.submit("t", lambda c, i=i: i)
        assert job.wait(5)
        jobs.append(job)
    assert [queue.get(j.id) for j in jobs[:2]] == [None, None]
    assert [queue.get(j.id) for j in jobs[2:]] == jobs[2:]
    assert len(queue.jobs()) == 3


def test_job_ids_are_long_random_and_distinct():
    ids = {Job("t", lambda c: None).id for _ in range(200)}
    assert len(ids) == 200
    assert all(len(i) >= 20 for i in ids)


def test_closing_the_queue_cancels_waiting_and_running_jobs():
    q = JobQueue(capacity=4)

    def slow(control: JobControl) -> None:
        for i in range(1, 500):
            control.step(i, 500)
            time.sleep(0.01)

    running = q.submit("t", slow)
    waiting = q.submit("t", slow)
    time.sleep(0.05)
    q.close(cancel=True, timeout=5)
    assert running.status == "cancelled" and waiting.status == "cancelled"
    with pytest.raises(RuntimeError, match="closed"):
        q.submit("t", slow)


def test_what_a_job_holds_is_released_once_whether_it_ran_or_was_cancelled_while_queued(queue: JobQueue):
    started, release = _gate()
    released: list[str] = []
    first = queue.submit("t", _holding(started, release), on_finish=lambda: released.append("ran"))
    assert started.wait(5)
    waiting = queue.submit("t", lambda control: "never", on_finish=lambda: released.append("queued"))
    assert waiting.cancel()
    assert waiting.status == "cancelled" and released == ["queued"]  # released without running
    release.set()
    assert first.wait(5)
    assert released == ["queued", "ran"]


def test_a_refused_submit_does_not_release_what_the_caller_still_holds():
    q = JobQueue(capacity=0)
    started, release = _gate()
    released: list[str] = []
    try:
        q.submit("t", _holding(started, release))
        assert started.wait(5)
        with pytest.raises(Busy):
            q.submit("t", lambda control: None, on_finish=lambda: released.append("busy"))
        assert released == []
    finally:
        release.set()
        q.close(cancel=True, timeout=5)


# ---------------------------------------------------------------------------------------------
# Keep-alive and shutting down


def test_the_idle_hook_runs_once_after_the_keep_alive_without_a_job_and_never_during_one():
    idle = threading.Event()
    calls: list[float] = []
    running = threading.Event()

    def on_idle() -> None:
        assert not running.is_set(), "the idle hook ran while a job held the worker"
        calls.append(time.monotonic())
        idle.set()

    q = JobQueue(capacity=2, idle_s=0.2, on_idle=on_idle)
    try:

        def job(control: JobControl) -> None:
            running.set()
            time.sleep(0.3)  # longer than the keep-alive: the hook must wait for the job's end
            running.clear()

        ended = q.submit("t", job)
        assert ended.wait(5)
        t_end = time.monotonic()
        assert idle.wait(5)
        assert calls[0] - t_end >= 0.15  # counted from the job's end, not from its start
        time.sleep(0.4)
        assert len(calls) == 1  # once per idle spell, not every idle_s
        idle.clear()
        assert q.submit("t", lambda control: None).wait(5)
        assert idle.wait(5) and len(calls) == 2  # armed again by the next job
    finally:
        q.close(timeout=5)


def test_a_queue_without_an_idle_hook_never_arms_one():
    q = JobQueue(capacity=1, idle_s=0.01)  # no hook: idle_s alone means nothing
    try:
        assert q.submit("t", lambda control: 1).wait(5)
        time.sleep(0.05)
        assert q.idle()
    finally:
        q.close(timeout=5)


def test_closing_with_a_reason_stops_the_running_job_and_refuses_the_queued_ones_saying_why():
    q = JobQueue(capacity=2)
    started = threading.Event()

    def steps(control: JobControl) -> str:
        started.set()
        for _ in range(500):
            control.check()
            time.sleep(0.01)
        return "finished"

    running = q.submit("t", steps)
    queued = q.submit("t", lambda control: "never")
    assert started.wait(5)
    t0 = time.monotonic()
    q.close(cancel=True, timeout=5, reason="the server is shutting down")
    assert time.monotonic() - t0 < 1.0
    for job in (running, queued):
        assert job.status == "cancelled"
        assert isinstance(job.error, ShuttingDown) and isinstance(job.error, Cancelled)
        assert str(job.error).startswith("the server is shutting down: ")
        assert "nothing was written" in str(job.error)
    with pytest.raises(ShuttingDown, match="the server is shutting down"):
        q.submit("t", lambda control: None)


# ---------------------------------------------------------------------------------------------
# One interface, declared: the queue and the pool, a job and a job read from the pool's book


#: Each protocol and the classes that implement it (what a declared type may be satisfied by).
IMPLEMENTATIONS: dict[type, tuple[type, ...]] = {
    JobQueueAPI: (JobQueue, Pool),
    JobAPI: (Job, PoolJob, BookJob),
}


def _pool(tmp_path) -> Pool:
    """A pool with no cluster behind it: enough for what it keeps and answers by itself."""
    config = EngineConfig(planner_model=None, output_dir=tmp_path)
    settings = PoolSettings(backend="ray")
    return Pool(config, handle=None, book=None, settings=settings, capacity=1, keep_jobs=2)


@pytest.mark.parametrize(
    ("protocol", "cls", "member"),
    [(p, c, m) for p, classes in IMPLEMENTATIONS.items() for c in classes for m in members(p)],
    ids=lambda x: getattr(x, "__name__", x),
)
def test_the_queue_the_pool_and_their_jobs_have_every_member_of_their_protocol(protocol, cls, member):
    assert mismatch(protocol, cls, member, IMPLEMENTATIONS) is None


def test_an_instance_of_each_is_an_instance_of_its_protocol(tmp_path):
    pool = _pool(tmp_path)
    book = JobBook()
    book.add("j1", "generate", "host:1")
    queue = JobQueue()
    try:
        assert isinstance(queue, JobQueueAPI) and isinstance(pool, JobQueueAPI)
        for job in (Job("t", lambda c: None), PoolJob("t", lambda c: None), BookJob(pool, book.get("j1"))):
            assert isinstance(job, JobAPI), job
    finally:
        queue.close()


def test_a_method_missing_or_with_another_signature_is_caught():
    class Short:
        def submit(self, kind: str, fn) -> Job:  # no on_progress / on_finish
            raise NotImplementedError

        @property
        def idle(self) -> bool:  # a property where the protocol has a method
            return True

    assert "other parameters" in mismatch(JobQueueAPI, Short, "submit", IMPLEMENTATIONS)
    assert "is not a method" in mismatch(JobQueueAPI, Short, "idle", IMPLEMENTATIONS)
    assert "is not a method" in mismatch(JobQueueAPI, Short, "close", IMPLEMENTATIONS)
    assert set(members(JobQueueAPI)) >= {"submit", "get", "cancel", "position", "running", "waiting"}
