"""The server as a service: the line that says it is ready, and a clean stop on SIGINT/SIGTERM.

:func:`log_ready` logs the ready message when the server starts: one short line (the transport,
the output directory, how many models are here), then one short line each for the allowed roots
and for every model that is not here (will be downloaded or built on first use, or missing, with
what to do); ``-v`` lists the found models too. A missing root gets a warning of its own.

:class:`Stopper` makes SIGINT and SIGTERM stop the process within :data:`STOP_S`, on stdio as on
HTTP: the running job is cancelled (the engine writes nothing after a cancel, and every file is
written atomically), the queued jobs fail with "the server is shutting down", the calls waiting
on them get that answer, and the process exits with 128 + the signal's number. It exits with
``os._exit``: the stdio transport reads stdin in a thread that nothing can interrupt, so a clean
return would wait for the client to close stdin (which is what Ctrl-C used to do).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from engine.hub import hub_reachable

from . import __version__
from .config import ServerConfig
from .doctor import locate
from .download import weight_sources
from .state import ServerState

log = logging.getLogger(__name__)

#: The stop, from the signal to the exit: cancel, let the answers out, exit.
STOP_S = 1.5
#: What the jobs a stop cancels say.
SHUTTING_DOWN = "the server is shutting down"
#: The hub probe at start is shorter than a load's: it only decides what the ready line says.
START_PROBE_S = 1.0
SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: A model that cannot load as configured (the ready line says what to do, once).
MISSING = "missing"
#: A model on this machine (the ready line counts them; ``-v`` lists them).
FOUND = "found locally"
#: A tiny preset's model that the first call builds.
TINY = "tiny, built on first use"


# ---------------------------------------------------------------------------------------------
# The ready line


def model_states(config: ServerConfig) -> list[tuple[str, str, str]]:
    """``(role, spec, state)`` for each configured model: found locally, will download, or missing.

    Looked up as ``unison-mcp doctor`` does (no network), plus one short hub probe when
    something is not here.
    """
    cfg = config.engine
    states: list[tuple[str, str, str]] = []
    reachable: bool | None = None
    for source in weight_sources(cfg):
        if source.kind == "tiny":
            states.append((source.role, source.spec, TINY))
            continue
        status, _detail = locate(source, cfg.cache_dir)
        if status != "fail":
            state = FOUND
        elif source.kind == "missing":
            state = f"{MISSING} (no such path)"
        elif cfg.local_files_only:
            state = f"{MISSING} (not downloaded; local_files_only is set)"
        else:
            if reachable is None:
                reachable = hub_reachable(timeout=START_PROBE_S)
            state = (
                "will download on first use"
                if reachable
                else f"{MISSING} (not downloaded; the hub cannot be reached)"
            )
        states.append((source.role, source.spec, state))
    return states


def ready_line(config: ServerConfig, *, output_dir: Path, roots: list[Path], detail: bool = False) -> str:
    """The message that says the server is ready: one short first line, then what needs a look.

    The first line: version, transport, output directory and how many models are found. Then,
    one indented line each: the inputs, every model that is not found locally (what happens to
    it, and what to do), whether models are unloaded. ``detail`` (``-v``) lists the found ones too.
    """
    where = "stdio" if config.transport == "stdio" else f"http://{config.host}:{config.port}/mcp"
    states = model_states(config)
    found = sum(state == FOUND for _, _, state in states)
    counted = f"{found} of {len(states)} models found locally" if states else "no models configured"
    lines = [f"unison-mcp {__version__} ready, serving on {where}; outputs in {output_dir}; {counted}"]
    shown = [f"{r}{'' if r.is_dir() else ' (missing)'}" for r in roots if r != output_dir]
    lines.append(f"  inputs from {', '.join(shown) if shown else 'the output directory only'}")
    lines += [f"  {role} {spec}: {state}" for role, spec, state in states if detail or state != FOUND]
    if any(state.startswith(MISSING) for _, _, state in states):
        lines.append("  for the missing: run `unison-mcp download`, give local paths, or try --preset tiny")
    keep = config.keep_alive_s
    lines.append(
        "  models kept loaded" if keep is None else f"  models unloaded after {keep:g} s without a job"
    )
    return "\n".join(lines)


def log_ready(
    config: ServerConfig, *, output_dir: Path, roots: list[Path], background: bool = False
) -> threading.Thread | None:
    """Warn about each allowed root that does not exist, then log the ready line.

    ``background``: the model lookup (a few seconds when it imports what the annotators need)
    runs on a thread while the server already answers; the thread is returned.
    """
    for root in roots:
        if root != output_dir and not root.is_dir():
            log.warning("allowed root %s does not exist: inputs under it are refused until it does", root)

    def report() -> None:
        try:
            # -v (the service's DEBUG): the found models are listed too.
            detail = log.isEnabledFor(logging.DEBUG)
            line = ready_line(config, output_dir=output_dir, roots=roots, detail=detail)
        except Exception:  # the report must never keep the server from serving
            log.warning("could not look up the models for the ready line", exc_info=True)
            line = f"unison-mcp {__version__} ready, serving on {config.transport}; outputs in {output_dir}"
        log.info("%s", line)

    if not background:
        report()
        return None
    thread = threading.Thread(target=report, name="unison-ready", daemon=True)
    thread.start()
    return thread


# ---------------------------------------------------------------------------------------------
# The stop


class Stopper:
    """SIGINT/SIGTERM: cancel the running job, refuse the queued ones, exit with 128 + signum.

    :meth:`install` takes the signals from whoever had them (uvicorn installs its own while it
    serves, so the server installs this from its lifespan, once the transport runs);
    :meth:`restore` gives them back. ``exit`` is injectable for tests.
    """

    def __init__(self, state: ServerState, *, exit: Callable[[int], Any] = os._exit):
        self.state = state
        self._exit = exit
        self._previous: dict[int, Any] = {}
        self._stopping: int | None = None
        self.thread: threading.Thread | None = None

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may take signals (an embedding host keeps its own)
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._on_signal)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self._stopping is not None:  # a second signal: stop waiting
            self._exit(128 + self._stopping)
            return
        self._stopping = signum
        # The work happens off the signal handler: it may wait (the running job's next step).
        self.thread = threading.Thread(target=self.stop, args=(signum,), name="unison-stop", daemon=True)
        self.thread.start()

    def stop(self, signum: int) -> None:
        """Cancel and drain the queue, give the waiting calls their answer, then exit."""
        deadline = time.monotonic() + STOP_S
        name = signal.Signals(signum).name
        running = self.state.queue.running
        log.info(
            "%s: stopping (%s, %d queued)",
            name,
            f"cancelling {running}" if running is not None else "no job running",
            self.state.queue.waiting,
        )
        self.state.queue.close(
            cancel=True, timeout=max(0.0, deadline - time.monotonic() - 0.3), reason=SHUTTING_DOWN
        )
        # The calls that waited on those jobs now answer "shutting down": let them reach the client.
        while self.state.active_calls and time.monotonic() < deadline - 0.1:
            time.sleep(0.01)
        time.sleep(0.1)  # the transport's writer flushes the last answers
        log.info("%s: stopped", name)
        for handler in logging.getLogger().handlers:
            handler.flush()
        self._exit(128 + signum)


__all__ = ["SHUTTING_DOWN", "STOP_S", "Stopper", "log_ready", "model_states", "ready_line"]
