"""What the MCP ingress holds in pool mode: admission here, the work on a Ray Serve pool of replicas.

:class:`Pool` is both the server's engine (:class:`~engine.api.EngineAPI`: a request is admitted
here exactly as on a single server, so a bad path or field is refused before anything is queued)
and its job queue (:class:`~engine.jobs.JobQueueAPI`, as :class:`~engine.jobs.JobQueue`: its jobs
are kept in the same :class:`~engine.jobs.JobKeeper`), so the MCP layer runs unchanged over it.

A submitted job runs on its own thread here, streaming from a replica
(:meth:`~engine.pool.replica.EngineReplica.run`): the replica's steps become the job's progress,
and a cancel of the job (the client cancelled its call or went away, ``job cancel``, a stop)
cancels the pool request explicitly: a dropped stream alone does not cancel in Ray, the job
would run on and write its files. Every job is also written in the cluster's job book, so
``job`` follows it from any client and any ingress (:class:`BookJob`).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..api import Admitted, AnyRequest, AnyResult, admit
from ..config import EngineConfig
from ..control import JobControl
from ..errors import Busy, Cancelled, ModelError, ServerConfigError, ShuttingDown, UnisonError, WorkerLost
from ..inputs import InputPolicy
from ..jobs import FINISHED, Job, JobAPI, JobKeeper, JobStatus, ProgressListener
from .book import open_book
from .cluster import connect
from .replica import deployment, portable
from .settings import PoolSettings

log = logging.getLogger(__name__)

#: The Serve application and deployment names (one pool per Ray namespace).
APP_NAME = "unison-mcp"
DEPLOYMENT_NAME = "EngineReplica"
#: How long a read of the job book may take before a local answer is used instead.
BOOK_TIMEOUT_S = 5.0
#: How often a job followed through the book (another ingress's) is looked at.
BOOK_POLL_S = 0.1

#: Presents an engine result as its tool returns it: ``(tool, result) -> tool result``. The MCP
#: layer gives it to :meth:`Pool.start`, so a job another ingress took is returned here as its
#: own call would have returned it.
Presenter = Callable[[str, AnyResult], Any]


class PoolJob(Job[Any]):
    """A job of this ingress: a :class:`~engine.jobs.Job` that knows the replica running it."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.replica: str | None = None

    def info(self) -> dict[str, Any]:
        return {**super().info(), "replica": self.replica}


class Pool(JobKeeper):
    """A Ray Serve pool of engine replicas behind the server's engine and job-queue interfaces.

    ``present``: how a job another ingress took is returned here (:data:`Presenter`); without
    it, such a job's result is refused as not recorded.
    """

    def __init__(
        self,
        config: EngineConfig,
        *,
        handle: Any,
        book: Any,
        settings: PoolSettings,
        capacity: int,
        keep_jobs: int,
        cluster: Any = None,
        owned: bool = True,
        present: Presenter | None = None,
    ):
        super().__init__(keep_jobs)
        self.config = config
        self.inputs = InputPolicy(
            None, config.output_dir, config.max_input_bytes, config.limits.max_input_pixels
        )
        self.settings = settings
        self.capacity = capacity
        self.cluster = cluster
        self._present = present
        self._handle = handle
        self._book = book
        self._owned = owned  # this process deployed the app (and removes it when it stops)
        self._ingress = f"{socket.gethostname()}:{os.getpid()}"
        self._lock = threading.Lock()
        self._by_control: dict[int, PoolJob] = {}
        self._closed = False

    # ------------------------------------------------------------------ starting

    @classmethod
    def start(
        cls,
        config: EngineConfig,
        settings: PoolSettings,
        *,
        roots: list[Path] | None,
        capacity: int,
        keep_jobs: int,
        preload: bool = False,
        present: Presenter | None = None,
    ) -> Pool:
        """Start (or join) the cluster, open the job book and deploy the replicas (on the main thread).

        The tiny models are built here first, so that replicas starting together do not race to
        build them. The app is deployed with no HTTP route: its replicas are reachable only
        through this process's handle, never through Serve's HTTP proxy.
        """
        if config.tiny_dir is not None:
            from ..tiny import ensure_tiny  # the tiny-model factory: only when the preset needs it

            ensure_tiny(config.tiny_dir)
        cluster = connect(settings)
        try:
            return cls._deploy(config, settings, cluster, roots, capacity, keep_jobs, preload, present)
        except BaseException:
            cluster.stop()
            raise

    @classmethod
    def _deploy(
        cls,
        config: EngineConfig,
        settings: PoolSettings,
        cluster: Any,
        roots: list[Path] | None,
        capacity: int,
        keep_jobs: int,
        preload: bool,
        present: Presenter | None,
    ) -> Pool:
        from ray import serve

        gpus = settings.replica_gpus if settings.replica_gpus is not None else (1.0 if cluster.gpus else 0.0)
        need = gpus * settings.replicas
        if gpus and need > cluster.gpus:
            raise ServerConfigError(
                f"{settings.replicas} replica(s) × {gpus:g} GPU need {need:g} GPU(s); the Ray cluster has "
                f"{cluster.gpus:g}: use fewer --replicas, add GPU nodes, or --replica-gpus 0 for CPU replicas"
            )
        if not gpus and config.device.startswith("cuda"):
            raise ServerConfigError(
                f"--device {config.device} but the replicas get no GPU (--replica-gpus 0, or none in "
                "the cluster): give each replica a GPU or use --device cpu"
            )
        book = open_book(keep_jobs)
        serve.start(proxy_location="Disabled")
        existing = serve.status().applications.get(APP_NAME)
        if existing is not None and existing.status in ("RUNNING", "DEPLOYING"):
            # Another ingress deployed the pool on this cluster: share it, leave it to its owner.
            log.info("using the pool already deployed on this cluster (%s)", existing.status)
            handle = serve.get_app_handle(APP_NAME)
            owned = False
        else:
            app = deployment(
                name=DEPLOYMENT_NAME,
                num_replicas=settings.replicas,
                max_replicas=settings.max_replicas,
                autoscale_target=settings.autoscale_target,
                downscale_delay_s=settings.downscale_delay_s,
                gpus=gpus,
                cpus=settings.replica_cpus,
                # Serve counts a request as queued until a replica takes it, a burst included:
                # the exact bound is the ingress's own (submit); Serve's is the backstop for a
                # handle that outruns it.
                max_queued=capacity + (settings.max_replicas or settings.replicas),
                graceful_shutdown_s=settings.graceful_shutdown_s,
            ).bind(
                config.model_dump_json(),
                [str(r) for r in roots] if roots is not None else None,
                preload,
                bool(cluster.local),
            )
            t0 = time.perf_counter()
            serve._run(app, name=APP_NAME, route_prefix=None, _blocking=False)
            owned = True
            _wait_running(settings.start_timeout_s)
            # A handle made now starts from every running replica; one made before the replicas
            # were up learns of them one by one, and sends the first jobs to the first one alone.
            handle = serve.get_app_handle(APP_NAME)
            log.info(
                "pool of %d replica(s) ready (%g GPU each) in %.1f s",
                settings.replicas,
                gpus,
                time.perf_counter() - t0,
            )
        return cls(
            config,
            handle=handle,
            book=book,
            settings=settings,
            capacity=capacity,
            keep_jobs=keep_jobs,
            cluster=cluster,
            owned=owned,
            present=present,
        )

    # ------------------------------------------------------------------ EngineAPI

    def status(self) -> dict[str, Any]:
        """The configured models (loaded on the replicas) and the pool."""
        return {
            "planner": self.config.planner_model,
            "planner_backend": self.config.backend,
            "adapter": self.config.adapter,
            "projector": self.config.projector,
            "generator": self.config.generator_model,
            "device": self.config.device,
            "dtype": self.config.dtype,
            # Each replica loads its own models; the ingress loads none.
            "loaded": {"planner": False, "generator": False, "projector": False},
            "preset": self.config.preset,
            "performance": self.config.performance.model_dump(),
            "load_failures": {},
            "pool": {
                "replicas": self.settings.replicas,
                "max_replicas": self.settings.max_replicas,
                "address": getattr(self.cluster, "address", None),
                "local_cluster": bool(getattr(self.cluster, "local", False)),
            },
        }

    def preload(self) -> None:
        """Nothing to load here: each replica loads its own models (``--preload``: at its start)."""

    def unload(self) -> bool:
        return False

    def admit(self, request: AnyRequest) -> Admitted:
        """The single server's admission, here: every check that needs no model, before queueing."""
        return admit(request, self.config, self.inputs)

    def run(self, admitted: Admitted, *, control: JobControl | None = None) -> AnyResult:
        """Run admitted work on a replica, relaying its progress to ``control`` and its cancel back."""
        from ray.exceptions import NodeDiedError, ObjectLostError, RayActorError, RayError, WorkerCrashedError
        from ray.serve.exceptions import BackPressureError, RequestCancelledError

        control = control if control is not None else JobControl()
        with self._lock:
            job = self._by_control.get(id(control))
        job_id = job.id if job is not None else secrets.token_urlsafe(16)
        # The replica admits the request again from its arguments (same policy, its own opens):
        # open files do not cross processes, and a file swapped since is caught where it is read.
        arguments = admitted.request.model_dump(mode="json", exclude_unset=True)
        tool = admitted.tool
        admitted.close()
        if job is None:
            self._get(self._book.add.remote(job_id, tool, self._ingress))
        ended = threading.Event()
        stream: Any = None
        answered = False  # the replica said how the job ended: nothing left to cancel

        def watch() -> None:
            # A blocked read of the stream cannot see the cancel flag: cancel it from here.
            while not ended.is_set():
                if control.wait_cancelled(0.05):
                    stream.cancel()
                    return

        try:
            stream = self._handle.options(stream=True).run.remote(job_id, tool, arguments)
            threading.Thread(target=watch, name=f"unison-pool-cancel-{job_id[:8]}", daemon=True).start()
            for event in stream:
                if event.get("job") != job_id:
                    # Each event names its job: one from another job's stream would hand this
                    # call another job's files (and a cancel the wrong job).
                    raise ModelError(
                        f"the pool answered job {job_id[:8]} with an event of job {str(event.get('job'))[:8]}; "
                        "the job was stopped"
                    )
                kind = event["event"]
                if kind == "started":
                    if job is not None:
                        job.started_at = time.time()
                        job.status = "running"
                        job.replica = event["replica"]
                    control.set_stage("starting")
                elif kind == "progress" and event["done"] == 0:  # a stage began on the replica
                    control.set_stage(event["stage"], event["total"] or None)
                elif kind == "progress":
                    if event["stage"] != control.stage or event["done"] < control.done:
                        control.set_stage(event["stage"])
                    control.step(event["done"], event["total"])
                elif kind == "done":
                    answered = True
                    return event["result"]
                elif kind == "failed":
                    answered = True
                    raise event["error"]
            # The stream ended with neither: the replica went away mid-job (its log says why).
            raise WorkerLost()
        except RequestCancelledError:
            raise Cancelled() from None
        except BackPressureError:
            raise Busy(self.waiting, self.capacity) from None
        except (RayActorError, WorkerCrashedError, NodeDiedError, ObjectLostError) as exc:
            # The replica (or its node) died mid-job: nothing wrong with the call, a retry runs it
            # on a replica that is up (Serve replaces the lost one).
            log.warning("job %s: the pool replica running it stopped (%s)", job_id[:8], type(exc).__name__)
            raise WorkerLost() from None
        except RayError as exc:
            if isinstance(exc, UnisonError):  # an engine error wrapped by Ray: the engine's own
                raise
            raise ModelError(f"the pool could not run the job ({type(exc).__name__}: {exc})") from None
        finally:
            ended.set()
            if stream is not None and not answered and not control.cancelled:
                # Ended early (an error here): never leave the request running alone.
                stream.cancel()

    # ------------------------------------------------------------------ the job queue's interface
    # get, cancel, jobs, running, waiting and idle: the jobs kept (JobKeeper), as on one server.

    def submit(
        self,
        kind: str,
        fn: Callable[[JobControl], Any],
        *,
        on_progress: ProgressListener | None = None,
        on_finish: Callable[[], None] | None = None,
    ) -> PoolJob:
        """Start ``fn`` (which calls :meth:`run`) on its own thread; :class:`Busy` when the pool's
        queue is full, :class:`ShuttingDown` once stopping."""
        with self._lock:
            if self._closing is not None:
                raise ShuttingDown(f"{self._closing}: the job was not queued; nothing was written")
            # Each replica takes one job and ``capacity`` more may wait: the single server's bound.
            active = len(self._unfinished())
            slots = self.settings.max_replicas or self.settings.replicas
            if kind != "preload" and active >= slots + self.capacity:
                raise Busy(active - slots, self.capacity)
            job = PoolJob(kind, fn, on_progress=on_progress, on_finish=on_finish)
            self._keep(job)
            self._by_control[id(job.control)] = job
        threading.Thread(target=self._run, args=(job,), name=f"unison-pool-{job.id[:8]}", daemon=True).start()
        return job

    def _run(self, job: PoolJob) -> None:
        status: JobStatus
        try:
            if job.kind != "preload":
                # Written before the replica can see the job: calls from two processes to the
                # book are not ordered, so "queued" must not arrive after "running".
                self._get(self._book.add.remote(job.id, job.kind, self._ingress))
        except Exception as exc:
            status, result, error = "failed", None, exc
        else:
            status, result, error = self._attempt(job)
        job._finish(status, result=result, error=error)
        if job.kind != "preload":
            try:
                self._book.finished.remote(
                    job.id, status, error=portable(error) if error is not None else None, result=result
                )
            except Exception:  # a result Ray cannot carry: the replica's own record stands
                log.warning("could not record %r in the job book", job, exc_info=True)
        with self._lock:
            self._by_control.pop(id(job.control), None)
        self._record_finished(job)

    def get(self, job_id: str) -> Job[Any] | BookJob | None:
        """A job of this process, else one any ingress wrote in the job book."""
        job = super().get(job_id)
        if job is not None:
            return job
        record = self._record(job_id)
        return BookJob(self, record) if record is not None else None

    def position(self, job: JobAPI) -> int:
        """Jobs waiting ahead of a queued one, every ingress's (the book's count)."""
        try:
            return int(self._get(self._book.position.remote(job.id)))
        except Exception:
            return sum(1 for j in self.jobs() if j.status == "queued" and j.created_at < job.created_at)

    def close(self, *, cancel: bool = True, timeout: float | None = None, reason: str | None = None) -> None:
        """Stop taking jobs, cancel this process's (each answered ``reason``), then stop the pool.

        The replicas are stopped with the app this process deployed; a local cluster's processes
        are ended by process id (:meth:`engine.pool.cluster.Cluster.stop`).
        """
        with self._lock:
            if self._closed:
                return
            self._closing = reason or "the server is shutting down"
        jobs = self._unfinished()
        if cancel:
            for job in jobs:
                job.cancel()
        deadline = None if timeout is None else time.monotonic() + timeout
        for job in jobs:
            job.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.shutdown()

    def shutdown(self) -> None:
        """Remove the app this process deployed (a shared one stays) and leave or stop the cluster."""
        cluster = self.cluster
        if cluster is not None and cluster.local:
            cluster.stop()  # the replicas are the cluster's processes: ended with it, by pid
            return
        if self._owned:
            try:
                from ray import serve

                serve.delete(APP_NAME, _blocking=False)
            except Exception:
                log.warning("could not remove the pool's app from the cluster", exc_info=True)
        if cluster is not None:
            cluster.stop()

    # ------------------------------------------------------------------ the job book

    def _get(self, ref: Any) -> Any:
        import ray

        return ray.get(ref, timeout=BOOK_TIMEOUT_S)

    def _record(self, job_id: str) -> dict[str, Any] | None:
        try:
            return self._get(self._book.get.remote(job_id))
        except Exception:
            log.warning("the job book did not answer", exc_info=True)
            return None


def _wait_running(timeout: float) -> None:
    """Wait for the replicas to be up; a replica that cannot start (no GPU free, a bad config)
    is an error naming why, not a wait without end."""
    from ray import serve

    deadline = time.monotonic() + timeout
    while True:
        app = serve.status().applications.get(APP_NAME)
        status = getattr(app, "status", None)
        if status == "RUNNING":
            return
        if status == "DEPLOY_FAILED":
            raise ServerConfigError(f"the pool's replicas could not start: {app.message}")
        if time.monotonic() >= deadline:
            message = getattr(app, "message", "") or "still deploying"
            raise ServerConfigError(
                f"the pool's replicas were not up within {timeout:g} s (--start-timeout-s): {message}"
            )
        time.sleep(0.2)


class BookJob:
    """A job another ingress (or a client of one gone) started, followed through the job book.

    It is a :class:`~engine.jobs.JobAPI`, as a :class:`~engine.jobs.Job` is: status, progress,
    wait, cancel (written in the book; the replica running it stops at its next step) and its
    result, presented here when the ingress that took it did not record its own.
    """

    id: str
    kind: str

    def __init__(self, pool: Pool, record: dict[str, Any]):
        self._pool = pool
        self.record = record
        self.id = record["id"]
        self.kind = record["kind"]
        self._read_at = time.monotonic()

    def _refresh(self, force: bool = False) -> dict[str, Any]:
        if force or time.monotonic() - self._read_at >= BOOK_POLL_S:
            record = self._pool._record(self.id)
            if record is not None:
                self.record = record
            self._read_at = time.monotonic()
        return self.record

    @property
    def status(self) -> JobStatus:
        return self._refresh()["status"]

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def error(self) -> BaseException | None:
        return self._refresh()["error"]

    @property
    def created_at(self) -> float:
        return self.record["created_at"]

    @property
    def started_at(self) -> float | None:
        return self._refresh()["started_at"]

    @property
    def finished_at(self) -> float | None:
        return self._refresh()["finished_at"]

    @property
    def cancel_requested(self) -> bool:
        return bool(self.record.get("cancel"))

    def progress(self) -> dict[str, Any]:
        return dict(self._refresh()["progress"])

    def info(self) -> dict[str, Any]:
        r = self._refresh()
        return {
            "id": self.id,
            "kind": self.kind,
            "status": r["status"],
            "progress": dict(r["progress"]),
            "created_at": r["created_at"],
            "started_at": r["started_at"],
            "finished_at": r["finished_at"],
            "error": str(r["error"]) if r["error"] is not None else None,
            "replica": r["replica"],
        }

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.finished:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(BOOK_POLL_S)
        return True

    def cancel(self) -> bool:
        try:
            return bool(self._pool._get(self._pool._book.cancel.remote(self.id)))
        finally:
            self._refresh(force=True)

    def add_listener(self, listener: ProgressListener) -> Callable[[], None]:
        """Poll the book's progress for ``listener`` until the job ends or it is removed."""
        stop = threading.Event()

        def poll() -> None:
            last: tuple[int, int, str] | None = None
            while not stop.is_set():
                record = self._refresh(force=True)
                p = record["progress"]
                now = (p["done"], p["total"], p["stage"])
                if now != last and record["status"] == "running":
                    listener(*now)
                    last = now
                if record["status"] in FINISHED:
                    return
                stop.wait(BOOK_POLL_S)

        threading.Thread(target=poll, name=f"unison-book-{self.id[:8]}", daemon=True).start()
        return stop.set

    def outcome(self) -> Any:
        record = self._refresh(force=True)
        status = record["status"]
        if status not in FINISHED:
            raise RuntimeError(f"job {self.id} has not finished (status {status})")
        if status != "done":
            raise record["error"] if record["error"] is not None else Cancelled()
        if record["result"] is not None:
            return record["result"]
        engine_result = record.get("engine_result")
        if engine_result is not None and self._pool._present is not None:
            return self._pool._present(self.kind, engine_result)
        raise ModelError(
            f"job {self.id} finished, but its result was not recorded; its files are in the outputs"
        )


__all__ = ["APP_NAME", "BookJob", "Pool", "PoolJob", "Presenter"]
