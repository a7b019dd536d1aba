"""One engine replica of the pool: today's :class:`~engine.engine.Engine`, unchanged, as a Serve deployment.

Each replica holds one engine (its models on its own GPU in production) and runs one job at a
time (``max_ongoing_requests=1``); the jobs beyond wait in Serve's queue, bounded by
``max_queued_requests`` (the server's ``--queue-size`` plus one per replica, as Serve counts a job
queued until a replica takes it), so a full pool answers "busy" at once.

:meth:`EngineReplica.run` is an async generator, streamed to the caller: it admits the request
again here (the same path policy, each file opened once, so a link swapped after the ingress
looked is caught where the file is read), runs the engine in a thread, and yields
``started`` (with the replica's name), each step's ``progress``, then ``done`` with the result
(paths and metadata, never file bytes) or ``failed`` with the error. A cancel, whether the
caller cancelled its stream (``CancelledError``/``GeneratorExit`` here) or ``job cancel`` flagged
it in the job book from anywhere, sets the job's cancel flag: the engine stops within one step
and writes nothing, and the replica holds its slot until the engine has let go, so the next job
never shares the GPU with a dying one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from ..api import parse_arguments
from ..config import EngineConfig
from ..control import JobControl
from ..engine import Engine
from ..errors import Cancelled, UnisonError
from ..inputs import InputPolicy
from . import NAMESPACE
from .book import BOOK_NAME

log = logging.getLogger(__name__)

#: How often a running job's cancel flag is read from the job book.
CANCEL_POLL_S = 0.1


def portable(exc: BaseException) -> BaseException:
    """An error that pickles across processes: the engine's own as it is, others by name only
    (their traceback stays in this replica's log)."""
    if isinstance(exc, UnisonError):
        return exc
    return RuntimeError(f"{type(exc).__name__} on a pool replica (its log has the traceback)")


def _keep_on_loopback() -> None:
    """Bind this replica's inter-deployment gRPC server on 127.0.0.1, as the rest of a local cluster.

    Serve 2.60 starts it, after the constructor, on every interface (``"[::]:0"``, hard-coded in
    ``ray/serve/_private/replica.py``), which would expose a port of a cluster meant to stay on
    this machine; the address is rewritten where that module looks it up. Another Ray version
    without that name is left as it is, with a warning.
    """
    from ray.serve._private import replica as serve_replica

    original = getattr(serve_replica, "add_port_to_grpc_server", None)
    if original is None:
        log.warning(
            "this Ray Serve version has no add_port_to_grpc_server: its replica port may listen beyond loopback"
        )
        return
    if getattr(original, "unison_loopback", False):
        return

    def on_loopback(server: Any, address: str) -> int:
        if address.startswith("[::]:"):
            address = "127.0.0.1:" + address[len("[::]:") :]
        return original(server, address)

    on_loopback.unison_loopback = True  # type: ignore[attr-defined]
    serve_replica.add_port_to_grpc_server = on_loopback


class EngineReplica:
    """The deployment's class (made a Serve deployment by :func:`deployment`)."""

    def __init__(
        self, engine_config: str, roots: list[str] | None, preload: bool = False, loopback: bool = False
    ):
        import ray
        from ray import serve

        if loopback:
            _keep_on_loopback()
        config = EngineConfig.model_validate_json(engine_config)
        self.engine = Engine(config)
        # The server's own policy (its roots, with the shared output directory last).
        self.engine.inputs = InputPolicy(
            [Path(r) for r in roots] if roots is not None else None,
            config.output_dir,
            config.max_input_bytes,
            config.limits.max_input_pixels,
        )
        context = serve.get_replica_context()
        self.name = f"{context.deployment}#{context.replica_id.unique_id}"
        self.book = ray.get_actor(BOOK_NAME, namespace=NAMESPACE)
        if preload:
            # Here, not in the background: a replica is routed jobs once it is up, and one still
            # loading (the GIL busy) answers Serve's load probes too late to be chosen, so the
            # first jobs would all queue on whichever replica loaded first.
            try:
                self.engine.preload()
            except Exception:
                log.exception("replica %s: preloading the models failed; each job tries again", self.name)
        log.info("replica %s ready (engine on %s)", self.name, config.device)

    async def run(self, job_id: str, tool: str, arguments: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Run one tool call's work; yields ``started``, ``progress``…, then ``done`` or ``failed``."""
        if not await self.book.started.remote(job_id, self.name):
            yield {"job": job_id, "event": "failed", "error": Cancelled(), "replica": self.name}
            return
        yield {"job": job_id, "event": "started", "replica": self.name}
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[int, int, str]] = asyncio.Queue()

        def on_step(done: int, total: int, stage: str) -> None:  # the engine's thread
            loop.call_soon_threadsafe(events.put_nowait, (done, total, stage))

        control = JobControl(on_progress=on_step)
        work = asyncio.ensure_future(asyncio.to_thread(self._work, tool, arguments, control))
        watch = asyncio.ensure_future(self._watch(job_id, control))
        answered = False  # the last event is out: a close after it is no cancel
        try:
            while True:
                step = asyncio.ensure_future(events.get())
                await asyncio.wait({work, step}, return_when=asyncio.FIRST_COMPLETED)
                if not step.done():
                    step.cancel()
                    break
                done, total, stage = step.result()
                self.book.progress.remote(job_id, done, total, stage)
                yield {"job": job_id, "event": "progress", "done": done, "total": total, "stage": stage}
            while not events.empty():  # steps reported just before the end
                done, total, stage = events.get_nowait()
                yield {"job": job_id, "event": "progress", "done": done, "total": total, "stage": stage}
            try:
                result = work.result()
            except Cancelled as exc:
                self.book.finished.remote(job_id, "cancelled", error=exc)
                answered = True
                yield {"job": job_id, "event": "failed", "error": exc, "replica": self.name}
                return
            except BaseException as exc:
                if not isinstance(exc, UnisonError):
                    log.exception("replica %s: job %s failed", self.name, job_id[:8])
                error = portable(exc)
                self.book.finished.remote(job_id, "failed", error=error)
                answered = True
                yield {"job": job_id, "event": "failed", "error": error, "replica": self.name}
                return
            result = result.model_copy(update={"replica": self.name})
            self.book.finished.remote(job_id, "done", engine_result=result)
            answered = True
            yield {"job": job_id, "event": "done", "result": result, "replica": self.name}
        except (asyncio.CancelledError, GeneratorExit):
            if answered:
                raise
            # The caller cancelled (or dropped) the stream: stop the engine at its next step and
            # hold this slot until it has let go of the GPU.
            control.cancel()
            await asyncio.shield(asyncio.wait({work}))
            self.book.finished.remote(job_id, "cancelled", error=Cancelled())
            log.info("replica %s: job %s cancelled by its caller", self.name, job_id[:8])
            raise
        finally:
            watch.cancel()

    def _work(self, tool: str, arguments: dict[str, Any], control: JobControl) -> Any:
        request = parse_arguments(tool, self.engine.config.limits, arguments)  # type: ignore[arg-type]
        admitted = self.engine.admit(request)
        return self.engine.run(admitted, control=control)

    async def _watch(self, job_id: str, control: JobControl) -> None:
        """Honour a cancel written in the job book (``job cancel`` from any client)."""
        while not control.cancelled:
            await asyncio.sleep(CANCEL_POLL_S)
            if await self.book.cancelled.remote([job_id]):
                log.info("replica %s: job %s cancelled through the job book", self.name, job_id[:8])
                control.cancel()

    def name_of(self) -> str:
        return self.name


def deployment(
    *,
    name: str,
    num_replicas: int,
    max_replicas: int | None,
    autoscale_target: float,
    downscale_delay_s: float,
    gpus: float,
    cpus: float,
    max_queued: int,
    graceful_shutdown_s: float,
) -> Any:
    """The Serve deployment of :class:`EngineReplica` with the pool's settings."""
    from ray import serve

    scaling: dict[str, Any]
    if max_replicas is not None and max_replicas > num_replicas:
        scaling = {
            "autoscaling_config": {
                "min_replicas": num_replicas,
                "initial_replicas": num_replicas,
                "max_replicas": max_replicas,
                "target_ongoing_requests": autoscale_target,
                "downscale_delay_s": downscale_delay_s,
            }
        }
    else:
        scaling = {"num_replicas": num_replicas}
    return serve.deployment(
        EngineReplica,
        name=name,
        ray_actor_options={"num_gpus": gpus, "num_cpus": cpus},
        # One job at a time per replica: a job holds the whole GPU.
        max_ongoing_requests=1,
        # Beyond it Serve refuses at once (BackPressureError, answered "busy" by the ingress).
        max_queued_requests=max(1, max_queued),
        graceful_shutdown_timeout_s=graceful_shutdown_s,
        graceful_shutdown_wait_loop_s=1.0,
        health_check_period_s=10.0,
        # A replica that cannot build its engine says why in its log; retrying does not help.
        max_constructor_retry_count=1,
        **scaling,
    )


__all__ = ["CANCEL_POLL_S", "EngineReplica", "deployment", "portable"]
