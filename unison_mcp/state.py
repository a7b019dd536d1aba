"""What a server's tools share: :class:`ServerState` (the configuration, the engine, the one job
queue) and :func:`state_of`, the state behind a built server.

Its own module so that what reads the state (the HTTP app and its gallery, the stop on a signal,
the tools) imports it from here, and :mod:`unison_mcp.server`, which builds the server and runs
the transports, imports them all without any of them importing it back.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from engine.api import EngineAPI
from engine.control import JobControl
from engine.errors import UnisonError
from engine.inputs import InputPolicy
from engine.jobs import JobQueueAPI

from .config import ServerConfig

log = logging.getLogger(__name__)


class JobCalls:
    """Which call queued each recent job, by a digest of the tool and its checked request.

    The result viewer of a call still running finds its job here from the call's arguments (which
    the host gives it), and so its progress and its cancel. A job id is a capability (it can cancel
    the job), so nothing lists jobs without knowing what they were asked to do. Only the last
    ``keep`` jobs are remembered.
    """

    def __init__(self, keep: int = 256):
        self.keep = keep
        self._by_job: OrderedDict[str, str] = OrderedDict()

    @staticmethod
    def digest(tool: str, request: BaseModel) -> str:
        """The same for the same tool and checked request, however its arguments were spelled."""
        return hashlib.sha256(f"{tool}\0{request.model_dump_json()}".encode()).hexdigest()

    def add(self, job_id: str, digest: str) -> None:
        self._by_job[job_id] = digest
        while len(self._by_job) > self.keep:
            self._by_job.popitem(last=False)

    def matching(self, digest: str) -> list[str]:
        """The ids of the jobs queued by calls with this digest, oldest first."""
        return [job_id for job_id, d in self._by_job.items() if d == digest]


@dataclass
class ServerState:
    """What the tools share: configuration, the engine (with its input policy) and the one job queue."""

    config: ServerConfig
    engine: EngineAPI
    #: The one job queue, or in pool mode the pool (``engine.pool.client.Pool``).
    queue: JobQueueAPI
    #: Take SIGINT/SIGTERM while serving (``run_server``; never for an in-process server).
    handle_signals: bool = False
    #: Engine tool calls in progress: a stop lets their answers out before the process exits.
    active_calls: int = field(default=0, init=False)
    #: The call that queued each job (the viewer's ``viewer_jobs`` finds a call's job by it).
    calls: JobCalls = field(default_factory=JobCalls, init=False)
    _preloading: bool = field(default=False, init=False, repr=False)

    @property
    def inputs(self) -> InputPolicy:
        """The input policy (narrowed to the server's roots), also used to read outputs back."""
        return self.engine.inputs

    def start_preload(self) -> None:
        """Load the models on the job queue's thread (once), so start-up never waits for them."""
        if self._preloading:
            return
        self._preloading = True
        engine = self.engine

        def preload(control: JobControl) -> None:
            try:
                engine.preload()
            except UnisonError as exc:
                # The engine logged the failure once and remembers it: each call reports it at
                # once, and it is tried again after a while or when the weights appear.
                log.warning("preloading the models stopped (%s); the calls will say why", exc.code)
                raise
            except Exception:
                log.exception("preloading the models failed; each call will try to load them again")
                raise

        self.queue.submit("preload", preload)


def state_of(server: Any) -> ServerState:
    """The shared state behind a server from :func:`unison_mcp.server.build_server` (tests, the
    CLI, the HTTP app)."""
    state = getattr(server, "state", None)
    if not isinstance(state, ServerState):
        raise TypeError("not a server built by unison_mcp.server.build_server")
    return state


__all__ = ["JobCalls", "ServerState", "state_of"]
