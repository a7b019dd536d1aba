"""One bounded queue in front of the accelerator: jobs run one at a time, in order, on one thread.

:class:`JobQueue` holds at most ``capacity`` jobs waiting behind the running one; beyond that
:meth:`JobQueue.submit` raises :class:`~engine.errors.Busy` at once, naming how many jobs are
ahead, so a client learns immediately instead of waiting on an unbounded backlog. Finished jobs
are kept (for clients that follow a job handle) up to ``keep_jobs``, oldest evicted first, so
memory stays bounded however long the server runs.

Each :class:`Job` owns a :class:`~engine.control.JobControl`: the model's step loop reports
progress through it and honours its cancel flag, so a cancelled job stops within one step. A
job still waiting is simply removed from the queue when cancelled.

Two job queues serve the MCP layer: this one, and the pool of engine replicas
(:class:`engine.pool.client.Pool`). Both satisfy :class:`JobQueueAPI` and their jobs
:class:`JobAPI` (a test checks every member); both keep their jobs in a :class:`JobKeeper`.

No MCP here: the server adapts jobs to tool calls (``unison_mcp.server``).
"""

from __future__ import annotations

import collections
import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, Literal, Protocol, TypeVar, runtime_checkable

from .control import JobControl
from .errors import Busy, Cancelled, ShuttingDown

log = logging.getLogger(__name__)

T = TypeVar("T")

JobStatus = Literal["queued", "running", "done", "failed", "cancelled"]
#: ``(done, total, stage)``, called on the worker thread once per reported step.
ProgressListener = Callable[[int, int, str], None]

FINISHED: frozenset[str] = frozenset({"done", "failed", "cancelled"})


# ---------------------------------------------------------------------------------------------
# The two interfaces the MCP layer uses (tests/test_jobs.py checks every member of each)


@runtime_checkable
class JobAPI(Protocol):
    """One job as a front end sees it: the ``job`` tool, a waiting call, the gallery.

    :class:`Job` implements it; so does the pool's :class:`~engine.pool.client.BookJob`, a job
    another ingress took, read from the cluster's job book.
    """

    @property
    def id(self) -> str:
        """The job's handle: unguessable, since it can cancel the job."""
        ...

    @property
    def kind(self) -> str:
        """What the job does: the tool that queued it, or ``preload``."""
        ...

    @property
    def status(self) -> JobStatus: ...

    @property
    def error(self) -> BaseException | None:
        """Why it failed or was cancelled (``None`` while it runs and once done)."""
        ...

    @property
    def created_at(self) -> float: ...

    @property
    def started_at(self) -> float | None: ...

    @property
    def finished_at(self) -> float | None: ...

    @property
    def finished(self) -> bool: ...

    @property
    def cancel_requested(self) -> bool:
        """A cancel was asked for; a running job stops at its next step."""
        ...

    def progress(self) -> dict[str, Any]:
        """A snapshot: ``{"stage", "done", "total"}``."""
        ...

    def info(self) -> dict[str, Any]:
        """A plain snapshot for status displays."""
        ...

    def wait(self, timeout: float | None = None) -> bool:
        """Block up to ``timeout`` seconds (``None``: forever); ``True`` once the job has finished."""
        ...

    def cancel(self) -> bool:
        """Cancel the job; ``False`` when it had already finished."""
        ...

    def add_listener(self, listener: ProgressListener) -> Callable[[], None]:
        """Call ``listener(done, total, stage)`` on each later step; returns the function that removes it."""
        ...

    def outcome(self) -> Any:
        """The result of a finished job, or its error raised again (``Cancelled`` when cancelled)."""
        ...


@runtime_checkable
class JobQueueAPI(Protocol):
    """What the MCP layer needs of the queue in front of the accelerator.

    :class:`JobQueue` implements it (one worker thread, in process); so does the pool of engine
    replicas (:class:`engine.pool.client.Pool`), so the server runs unchanged over either.
    """

    def submit(
        self,
        kind: str,
        fn: Callable[[JobControl], Any],
        *,
        on_progress: ProgressListener | None = None,
        on_finish: Callable[[], None] | None = None,
    ) -> JobAPI:
        """Queue ``fn(control)`` and return its job at once; :class:`~engine.errors.Busy` when full,
        :class:`~engine.errors.ShuttingDown` once closing."""
        ...

    def get(self, job_id: str) -> JobAPI | None:
        """The job with this id, or ``None`` when unknown or forgotten."""
        ...

    def cancel(self, job_id: str) -> bool:
        """Cancel the job with this id; ``False`` when unknown or already finished."""
        ...

    def position(self, job: JobAPI) -> int:
        """How many jobs run before this one (0 when it is running or finished)."""
        ...

    @property
    def running(self) -> JobAPI | None: ...

    @property
    def waiting(self) -> int:
        """How many jobs wait to start."""
        ...

    def jobs(self) -> list[JobAPI]:
        """Every job still known: waiting, running and the kept finished ones."""
        ...

    def idle(self) -> bool:
        """No job waits or runs."""
        ...

    def close(self, *, cancel: bool = True, timeout: float | None = None, reason: str | None = None) -> None:
        """Stop taking jobs; cancel what waits and runs (``cancel``), each answered ``reason``."""
        ...


# ---------------------------------------------------------------------------------------------
# A job, and the jobs a queue keeps


class Job(Generic[T]):
    """One unit of accelerator work and its handle: status, progress, result or error.

    Status moves ``queued → running → done | failed | cancelled`` (or ``queued → cancelled``).
    ``result`` is set when done, ``error`` when failed or cancelled. Timestamps are
    ``time.time()`` seconds.
    """

    id: str
    kind: str
    status: JobStatus
    result: T | None
    error: BaseException | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    #: The step loop's side: progress in, the cancel flag out.
    control: JobControl

    def __init__(
        self,
        kind: str,
        fn: Callable[[JobControl], T],
        on_progress: ProgressListener | None = None,
        on_finish: Callable[[], None] | None = None,
    ):
        # 128 random bits: a job handle is a capability (it can cancel), so it must not be guessable.
        self.id = secrets.token_urlsafe(16)
        self.kind = kind
        self.fn = fn
        self.status: JobStatus = "queued"
        self.result: T | None = None
        self.error: BaseException | None = None
        self.created_at = time.time()
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self._lock = threading.Lock()
        self._finished = threading.Event()
        self._listeners: list[ProgressListener] = [on_progress] if on_progress is not None else []
        self._cancel_queued: Callable[[Job[T]], bool] | None = None  # set by the queue
        #: Runs once when the job ends however it ends (done, failed, cancelled while queued):
        #: what the job holds (opened input files) is released even if ``fn`` never ran.
        self._on_finish = on_finish
        self.control = JobControl(on_progress=self._emit)

    def __repr__(self) -> str:
        return f"Job({self.kind!r}, id={self.id[:8]}…, status={self.status})"

    # ------------------------------------------------------------------ progress

    def _emit(self, done: int, total: int, stage: str) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(done, total, stage)
            except Exception:
                # A broken listener (a client that went away) must never fail the job itself.
                log.warning("progress listener of job %s failed", self.id[:8], exc_info=True)

    def add_listener(self, listener: ProgressListener) -> Callable[[], None]:
        """Call ``listener(done, total, stage)`` on each later step; returns the function that removes it."""
        with self._lock:
            self._listeners.append(listener)

        def remove() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return remove

    def progress(self) -> dict[str, Any]:
        """A snapshot: ``{"stage", "done", "total"}``."""
        return self.control.snapshot()

    # ------------------------------------------------------------------ state

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    @property
    def cancel_requested(self) -> bool:
        """A cancel was asked for (a running job stops at its next step)."""
        return self.control.cancelled

    def wait(self, timeout: float | None = None) -> bool:
        """Block up to ``timeout`` seconds (``None``: forever); ``True`` once the job has finished."""
        return self._finished.wait(timeout)

    def cancel(self) -> bool:
        """Cancel the job; ``False`` when it had already finished.

        A queued job is removed without running. A running job stops at its next step (the
        engine writes nothing after a cancel); its status turns ``cancelled`` when it has.
        """
        if self.finished:
            return False
        self.control.cancel()
        remover = self._cancel_queued
        if remover is not None:
            remover(self)
        return True

    def outcome(self) -> T:
        """The result of a finished job, or its error raised again (``Cancelled`` when cancelled)."""
        # Status, result and error are set together under the lock, before the event: reading
        # status alone is enough, and never blocks.
        if self.status not in FINISHED:
            raise RuntimeError(f"job {self.id} has not finished (status {self.status})")
        if self.status == "done":
            return self.result  # type: ignore[return-value]
        raise self.error if self.error is not None else Cancelled()

    def info(self) -> dict[str, Any]:
        """A plain snapshot for status displays."""
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "progress": self.progress(),
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "error": str(self.error) if self.error is not None else None,
        }

    def _finish(self, status: JobStatus, *, result: Any = None, error: BaseException | None = None) -> None:
        with self._lock:
            # Status last: a reader that sees a finished status (without the lock) sees its result.
            self.result = result
            self.error = error
            self.finished_at = time.time()
            self.status = status
            self._listeners.clear()
        self.fn = None  # type: ignore[assignment]  # drop the closure (and what it holds) early
        on_finish, self._on_finish = self._on_finish, None
        if on_finish is not None:
            try:
                on_finish()
            except Exception:  # releasing is best effort; the job's own outcome is what matters
                log.exception("releasing %r failed", self)
        self._finished.set()


class JobKeeper:
    """The jobs a queue keeps, by id: every one not finished, and the last ``keep_jobs`` finished
    ones (the oldest finished forgotten first), so memory stays bounded however long a server runs.

    :class:`JobQueue` and the pool (:class:`engine.pool.client.Pool`) both keep their jobs here,
    and answer from here what :class:`JobQueueAPI` asks of the jobs kept (``get``, ``cancel``,
    ``jobs``, ``running``, ``waiting``, ``idle``); how a job is taken and run is theirs.
    """

    def __init__(self, keep_jobs: int):
        if keep_jobs < 1:
            raise ValueError(f"keep_jobs={keep_jobs}: must be 1 or more")
        self.keep_jobs = keep_jobs
        #: Set by ``close``: why the jobs still waiting or running were stopped.
        self._closing: str | None = None
        # A leaf lock: held only inside these methods, which call nothing that takes another.
        self._kept_lock = threading.Lock()
        self._kept: dict[str, Job[Any]] = {}  # in submission order
        self._finished_ids: collections.deque[str] = collections.deque()

    def get(self, job_id: str) -> Job[Any] | None:
        """The job with this id, or ``None`` when unknown or forgotten."""
        with self._kept_lock:
            return self._kept.get(job_id)

    def cancel(self, job_id: str) -> bool:
        """Cancel the job with this id; ``False`` when unknown or already finished."""
        job = self.get(job_id)
        return job.cancel() if job is not None else False

    def jobs(self) -> list[Job[Any]]:
        """Every job still known: waiting, running and the kept finished ones."""
        with self._kept_lock:
            return list(self._kept.values())

    @property
    def running(self) -> Job[Any] | None:
        """The first job still running (the queue runs one; the pool one per replica)."""
        return next((j for j in self.jobs() if j.status == "running"), None)

    @property
    def waiting(self) -> int:
        return sum(1 for j in self.jobs() if j.status == "queued")

    def idle(self) -> bool:
        return not self._unfinished()

    def _unfinished(self) -> list[Job[Any]]:
        return [j for j in self.jobs() if j.status not in FINISHED]

    def _keep(self, job: Job[Any]) -> None:
        with self._kept_lock:
            self._kept[job.id] = job

    def _record_finished(self, job: Job[Any]) -> None:
        """Remember that ``job`` finished, forgetting the oldest finished beyond ``keep_jobs``."""
        with self._kept_lock:
            self._finished_ids.append(job.id)
            while len(self._finished_ids) > self.keep_jobs:
                self._kept.pop(self._finished_ids.popleft(), None)

    def _attempt(
        self, job: Job[Any], *, starting: bool = False
    ) -> tuple[JobStatus, Any, BaseException | None]:
        """Run a job that was taken: ``done`` with its result, else ``cancelled`` or ``failed`` with
        its error, recorded and not raised (the caller reads it from the job; the worker serves on).

        ``starting``: the job leaves the queue now, and its listeners hear it (a "starting" stage)
        before its first own stage. Once closing with a reason, a cancelled job's error says why
        (:class:`ShuttingDown`).
        """
        try:
            if starting:
                job.control.set_stage("starting")  # checks for a cancel too
            job.control.check()  # cancelled between being taken and starting
            return "done", job.fn(job.control), None
        except Cancelled as exc:
            error = exc
            if self._closing is not None and not isinstance(exc, ShuttingDown):
                error = ShuttingDown(f"{self._closing}: the job was stopped; nothing was written")
            return "cancelled", None, error
        except BaseException as exc:
            log.info("%s failed: %s: %s", job, type(exc).__name__, exc)
            return "failed", None, exc


class JobQueue(JobKeeper):
    """A bounded FIFO of jobs run one at a time on one worker thread.

    ``capacity`` jobs may wait behind the running one; ``keep_jobs`` finished jobs stay
    retrievable by id. The worker thread starts with the first job and is a daemon, so an idle
    queue costs nothing and never keeps a process alive.

    ``on_idle`` (keep-alive): called on the worker thread once the queue has had no job for
    ``idle_s`` seconds after the last one ended, e.g. to unload the models. A job submitted
    meanwhile waits for it to return, so it never overlaps a job.
    """

    def __init__(
        self,
        capacity: int = 8,
        keep_jobs: int = 64,
        *,
        name: str = "unison-jobs",
        idle_s: float | None = None,
        on_idle: Callable[[], None] | None = None,
    ):
        if capacity < 0:
            raise ValueError(f"capacity={capacity}: must be 0 or more")
        if idle_s is not None and idle_s < 0:
            raise ValueError(f"idle_s={idle_s}: must be 0 or more")
        super().__init__(keep_jobs)
        self.capacity = capacity
        self._name = name
        self._idle_s = idle_s if on_idle is not None else None
        self._on_idle = on_idle
        self._idle_due: float | None = None  # monotonic time the idle hook runs, when armed
        self._cond = threading.Condition()
        self._waiting: collections.deque[Job[Any]] = collections.deque()
        self._running: Job[Any] | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    # ------------------------------------------------------------------ submitting

    def submit(
        self,
        kind: str,
        fn: Callable[[JobControl], T],
        *,
        on_progress: ProgressListener | None = None,
        on_finish: Callable[[], None] | None = None,
    ) -> Job[T]:
        """Queue ``fn(control)`` and return its job at once; raise ``Busy`` when the queue is full.

        ``on_progress`` is attached before the job can start, so it sees every step;
        ``on_finish`` runs once when the job ends, also when it is cancelled before it runs
        (it is not called when ``Busy`` is raised: the caller still holds what it passed).
        """
        job: Job[T] = Job(kind, fn, on_progress, on_finish)
        with self._cond:
            if self._closed:
                if self._closing is not None:
                    raise ShuttingDown(f"{self._closing}: the job was not queued; nothing was written")
                raise RuntimeError("the job queue is closed")
            ahead = len(self._waiting) + (1 if self._running is not None else 0)
            # One job runs and `capacity` wait. Counted together, so a job the worker has not
            # picked up yet still holds the running slot, not a waiting one.
            if ahead >= self.capacity + 1:
                raise Busy(ahead, self.capacity)
            job._cancel_queued = self._remove_queued
            self._waiting.append(job)
            self._keep(job)
            self._ensure_worker()
            self._cond.notify_all()
        log.debug("queued %s (%d ahead)", job, ahead)
        return job

    def position(self, job: JobAPI) -> int:
        """How many jobs run before this one (0 when it is running or finished)."""
        with self._cond:
            try:
                return self._waiting.index(job) + (1 if self._running is not None else 0)
            except ValueError:
                return 0

    def close(self, *, cancel: bool = True, timeout: float | None = None, reason: str | None = None) -> None:
        """Stop taking jobs; cancel what waits and what runs (``cancel``); join the worker.

        ``reason`` (e.g. "the server is shutting down"): the cancelled jobs fail with
        :class:`~engine.errors.ShuttingDown` saying so, instead of a plain cancel.
        """
        with self._cond:
            self._closed = True
            if reason is not None:
                self._closing = reason
            pending = list(self._waiting) if cancel else []
            running = self._running if cancel else None
            self._cond.notify_all()
        for job in pending:
            job.cancel()
        if running is not None:
            running.cancel()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # ------------------------------------------------------------------ internals

    def _remove_queued(self, job: Job[Any]) -> bool:
        with self._cond:
            try:
                self._waiting.remove(job)
            except ValueError:
                return False  # already running (it will stop at its next step) or finished
            self._record_finished(job)
        error: Cancelled = Cancelled("the job was cancelled before it started; nothing was written")
        if self._closing is not None:
            error = ShuttingDown(f"{self._closing}: the job was not started; nothing was written")
        job._finish("cancelled", error=error)
        log.info("cancelled queued %s", job)
        return True

    def _ensure_worker(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
            self._thread.start()

    def _work(self) -> None:
        while True:
            idle = False
            with self._cond:
                while not self._waiting and not self._closed:
                    left = None if self._idle_due is None else self._idle_due - time.monotonic()
                    if left is not None and left <= 0:
                        idle, self._idle_due = True, None
                        break
                    self._cond.wait(left)
                if not idle:
                    if not self._waiting:  # closed and drained
                        return
                    job = self._waiting.popleft()
                    self._running = job
                    job.status = "running"
                    job.started_at = time.time()
                    self._idle_due = None
            if idle:
                self._idle()
            else:
                self._run(job)

    def _idle(self) -> None:
        assert self._on_idle is not None  # armed only with a hook
        log.info("no job for %.0f s: keep-alive ended", self._idle_s or 0.0)
        try:
            self._on_idle()
        except Exception:  # the queue keeps serving whatever the hook does
            log.exception("the idle hook failed")

    def _run(self, job: Job[Any]) -> None:
        log.info("running %s", job)
        status, result, error = self._attempt(job, starting=True)
        with self._cond:
            self._running = None
            self._record_finished(job)
            if self._idle_s is not None and not self._waiting:
                self._idle_due = time.monotonic() + self._idle_s  # keep-alive starts now
        job._finish(status, result=result, error=error)
        took = (job.finished_at or 0) - (job.started_at or 0)
        log.info("%s %s in %.2f s", job, status, took)
        if error is not None and not isinstance(error, Exception):
            raise error  # KeyboardInterrupt/SystemExit: the job is settled, now let it through
