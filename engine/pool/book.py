"""The job book: every pool job's state in one named Ray actor, whichever replica runs it.

A job started through one client (or one ingress process) is followed, waited on or cancelled
through another: the state cannot live in one process's memory. The ingress that accepts a job
writes it in (``queued``) and, when it ends, its result as the tool returned it; the replica
that runs it writes ``running`` with its own name, each step's progress, and how it ended. A
cancel written here reaches the replica within a fraction of a second (it watches its job's
flag), so ``job cancel`` works from anywhere.

The actor is a plain class (:class:`JobBook`), made remote and named in :func:`open_book`; it is
detached so that several ingress processes on one cluster share it. Finished jobs are kept up
to ``keep`` (the server's ``--keep-jobs``), oldest forgotten first.
"""

from __future__ import annotations

import collections
import time
from typing import Any

from ..jobs import FINISHED
from . import NAMESPACE

BOOK_NAME = "unison-mcp-jobs"


class JobBook:
    """Job records by id: ``{id, kind, status, progress, replica, ingress, created_at, started_at,
    finished_at, error, cancel, result, engine_result}`` (``result``: what the ingress's tool
    returned; ``engine_result``: what the replica's engine made, for another ingress to present)."""

    def __init__(self, keep: int = 64):
        self._jobs: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self._keep = keep

    def add(self, job_id: str, kind: str, ingress: str) -> None:
        self._jobs[job_id] = {
            "id": job_id,
            "kind": kind,
            "status": "queued",
            "progress": {"stage": "queued", "done": 0, "total": 0},
            "replica": None,
            "ingress": ingress,
            "created_at": time.time(),
            "started_at": None,
            "finished_at": None,
            "error": None,
            "cancel": False,
            "result": None,
            "engine_result": None,
        }

    def started(self, job_id: str, replica: str) -> bool:
        """The replica took the job; ``False`` when it was cancelled meanwhile (don't run it)."""
        job = self._jobs.get(job_id)
        if job is None:  # an ingress of an older book, or forgotten: run it, untracked
            return True
        if job["cancel"] or job["status"] in FINISHED:
            return False
        job.update(status="running", replica=replica, started_at=time.time())
        job["progress"] = {"stage": "starting", "done": 0, "total": 0}
        return True

    def progress(self, job_id: str, done: int, total: int, stage: str) -> None:
        job = self._jobs.get(job_id)
        if job is not None and job["status"] not in FINISHED:
            job["progress"] = {"stage": stage, "done": done, "total": total}

    def finished(
        self,
        job_id: str,
        status: str,
        *,
        error: BaseException | None = None,
        result: Any = None,
        engine_result: Any = None,
    ) -> None:
        """The job ended. The replica says how, with the engine's result; the ingress that took
        the job adds the result as its tool returned it. Whichever comes first sets the status."""
        job = self._jobs.get(job_id)
        if job is None:
            return
        if job["status"] not in FINISHED:
            job.update(status=status, finished_at=time.time())
        if error is not None and job["error"] is None and job["status"] != "done":
            # A done job keeps no error (a stream closed after its last event reads as a cancel).
            job["error"] = error
        if result is not None:
            job["result"] = result
        if engine_result is not None:
            job["engine_result"] = engine_result
        self._forget_old()

    def cancel(self, job_id: str) -> bool:
        """Ask the job to stop; ``False`` when it is unknown or has ended."""
        job = self._jobs.get(job_id)
        if job is None or job["status"] in FINISHED:
            return False
        job["cancel"] = True
        return True

    def cancelled(self, job_ids: list[str]) -> list[str]:
        """Which of ``job_ids`` were asked to stop (one call for every job a replica watches)."""
        return [i for i in job_ids if self._jobs.get(i, {}).get("cancel")]

    def get(self, job_id: str) -> dict[str, Any] | None:
        job = self._jobs.get(job_id)
        return dict(job) if job is not None else None

    def position(self, job_id: str) -> int:
        """Jobs waiting ahead of a queued one (every ingress's, oldest first)."""
        job = self._jobs.get(job_id)
        if job is None:
            return 0
        return sum(
            1 for j in self._jobs.values() if j["status"] == "queued" and j["created_at"] < job["created_at"]
        )

    def jobs(self) -> list[dict[str, Any]]:
        """Every record without its result (for listings)."""
        return [
            {k: v for k, v in j.items() if k not in ("result", "engine_result")} for j in self._jobs.values()
        ]

    def _forget_old(self) -> None:
        finished = [i for i, j in self._jobs.items() if j["status"] in FINISHED]
        for job_id in finished[: max(0, len(finished) - self._keep)]:
            del self._jobs[job_id]


def open_book(keep: int = 64) -> Any:
    """The cluster's job book actor (created by the first ingress, found by the next ones)."""
    import ray

    actor = ray.remote(num_cpus=0, max_restarts=0)(JobBook)
    return actor.options(name=BOOK_NAME, namespace=NAMESPACE, lifetime="detached", get_if_exists=True).remote(
        keep
    )


__all__ = ["BOOK_NAME", "JobBook", "open_book"]
