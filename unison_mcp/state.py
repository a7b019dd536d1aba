"""What a server's tools share: :class:`ServerState` (the configuration, the engine, the one job
queue) and :func:`state_of`, the state behind a built server.

Its own module so that what reads the state (the HTTP app and its gallery, the stop on a signal,
the tools) imports it from here, and :mod:`unison_mcp.server`, which builds the server and runs
the transports, imports them all without any of them importing it back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from engine.api import EngineAPI
from engine.control import JobControl
from engine.errors import UnisonError
from engine.inputs import InputPolicy
from engine.jobs import JobQueueAPI

from .config import ServerConfig

log = logging.getLogger(__name__)


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


__all__ = ["ServerState", "state_of"]
