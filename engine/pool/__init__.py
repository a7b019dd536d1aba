"""A pool of engine replicas on Ray Serve: the same jobs as one server, spread over GPUs.

Nothing here imports Ray at import time: :mod:`engine.pool.cluster`, :mod:`engine.pool.book`,
:mod:`engine.pool.replica` and :mod:`engine.pool.client` import it inside the functions that only
the ``--pool ray`` server runs (``pip install 'unison-mcp[serve]'``), so importing them is cheap.

- :mod:`~engine.pool.settings`: the pool's settings (plain pydantic, no Ray).
- :mod:`~engine.pool.cluster`: a local Ray kept on loopback, or a running cluster joined.
- :mod:`~engine.pool.replica`: the Serve deployment wrapping today's :class:`~engine.engine.Engine`.
- :mod:`~engine.pool.book`: the named actor holding every job's state, whichever replica runs it.
- :mod:`~engine.pool.client`: what the MCP ingress holds: admission here, the work on the pool.
"""

from __future__ import annotations

import os

from ..errors import ServerConfigError

#: The Ray version the extra pins (pyproject.toml ``serve``); another 2.x is warned about.
RAY_VERSION = "2.60.0"
#: Ray namespace of the Serve application and the job book: two pools on one cluster need two.
NAMESPACE = "unison-mcp"


#: Read by Ray when it is imported and when it starts, so set before either: keep 127.0.0.1 (Ray
#: otherwise rewrites it to the machine's routable address), send no usage statistics, and give
#: a replica a second to answer Serve's load probe (its event loop shares the GIL with a running
#: job; at Serve's 0.1 s a busy replica is passed over as if absent).
RAY_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_SERVE_QUEUE_LENGTH_RESPONSE_DEADLINE_S": "1.0",
}


def require_ray() -> None:
    """Set Ray's environment (:data:`RAY_ENV`, unless already set) and import Ray Serve, or say
    how to install it."""
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)
    try:
        import ray  # noqa: F401
        from ray import serve  # noqa: F401
    except ImportError as exc:
        raise ServerConfigError(
            f"--pool ray needs Ray Serve, which is not installed ({exc}): pip install 'unison-mcp[serve]'"
        ) from None


__all__ = ["NAMESPACE", "RAY_ENV", "RAY_VERSION", "require_ray"]
