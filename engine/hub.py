"""Weights from the Hugging Face hub: found, fetched, or refused at once; failed loads remembered.

Without weights and without a reachable hub, ``huggingface_hub`` spends about 23 s in retries per
file before it gives up, and every call would pay that again. So, before a model loads (and
before torch or transformers are imported):

1. :func:`preflight` looks the weights up locally (a directory, or the hub cache) and, only when
   they are not there, probes the hub with one short TCP connect (:func:`hub_reachable`). Not on
   this machine and no hub: a :class:`~engine.errors.HubUnreachable` at once, saying what to
   do. Cached but no hub: the load runs in offline mode (:func:`offline`), which skips the retries.
2. :class:`LoadFailures` remembers a failed load per model, so the next call fails at once with
   the same message. It is tried again after :data:`RETRY_AFTER_S`, or as soon as the weights
   appear (``unison-mcp download`` in another shell), whichever comes first.

A single weights file (the projector, a LoRA) given as a local path or ``owner/repo/path/in/repo``
is found or fetched by :func:`resolve_weights_file`; torchvision's RAFT weights (the flow
annotator's) live in the torch hub cache (:func:`raft_cache_file`, :func:`fetch_raft`).

``huggingface_hub`` is imported only when a hub id is looked up.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .errors import HubUnreachable, InvalidRequest, ModelError, ServerConfigError, ServerSettingError

if TYPE_CHECKING:
    from .config import EngineConfig

log = logging.getLogger(__name__)

#: How long a failed load is answered from memory before it is tried again.
RETRY_AFTER_S = 300.0
#: One TCP connect to the hub (or the proxy) decides whether it can be reached.
PROBE_TIMEOUT_S = 2.0
#: How long a probe's answer holds (a hub that comes back is noticed within this).
PROBE_TTL_S = 30.0

#: What the user can do about weights that are neither here nor reachable.
WHAT_TO_DO = (
    "run `unison-mcp download` on a machine that reaches the hub (or copy the weights here and give "
    "their local path), or try everything on tiny models with `--preset tiny`"
)

_probe_lock = threading.Lock()
_probe: tuple[str, bool, float] | None = None  # (address, reachable, when)


def looks_local(ref: str) -> bool:
    """Whether a model reference is meant as a path (a hub id is exactly ``owner/name``).

    The same rule as the loaders' (:func:`engine.planners.adapter.looks_local`).
    """
    return (
        Path(ref).expanduser().exists()
        or ref.startswith(("/", "./", "../", "~", "."))
        or ref.count("/") > 1
        or "\\" in ref
    )


def endpoint() -> str:
    """The hub address ``huggingface_hub`` uses (``HF_ENDPOINT``, read when it was imported)."""
    from huggingface_hub import constants

    return str(constants.ENDPOINT)


def _probe_address(url: str) -> tuple[str, int]:
    """Where a request to ``url`` first connects: the proxy for its scheme when one is set."""
    parts = urlsplit(url)
    scheme = parts.scheme or "https"
    for name in (f"{scheme}_proxy", f"{scheme.upper()}_PROXY", "all_proxy", "ALL_PROXY"):
        proxy = os.environ.get(name)
        if proxy:
            parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
            break
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.hostname or "", port


def hub_reachable(url: str | None = None, *, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether one TCP connect to the hub (or its proxy) succeeds within ``timeout`` (cached a while)."""
    global _probe
    url = url or endpoint()
    with _probe_lock:
        if _probe is not None and _probe[0] == url and time.monotonic() - _probe[2] < PROBE_TTL_S:
            return _probe[1]
        host, port = _probe_address(url)
        try:
            with socket.create_connection((host, port), timeout=timeout):
                reachable = True
        except OSError as exc:
            log.debug("the hub at %s is not reachable: %s", url, exc)
            reachable = False
        _probe = (url, reachable, time.monotonic())
        return reachable


def locally_present(ref: str, probe_file: str, cache_dir: Path | None = None) -> bool:
    """Whether ``ref`` is on this machine: an existing path, or ``probe_file`` of it in the hub cache."""
    if looks_local(ref):
        return Path(ref).expanduser().exists()
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(ref, probe_file, cache_dir=str(cache_dir) if cache_dir else None)
    except Exception:  # an id the cache cannot even name (bad characters): not present
        return False
    return isinstance(found, str)


@dataclass(frozen=True)
class Weights:
    """One model's weights as configured: what it is, where it may be, the file that proves it is there."""

    role: str  # "planner", "generator"
    setting: str  # the configuration key, named in errors
    ref: str  # hub id or local path
    probe_file: str  # e.g. "config.json", "model_index.json"
    cache_dir: Path | None = None
    local_files_only: bool = False

    def present(self) -> bool:
        return locally_present(self.ref, self.probe_file, self.cache_dir)


def planner_weights(config: EngineConfig) -> Weights:
    """The planner's weights (Qwen2.5-VL: a directory or a hub id with its ``config.json``)."""
    return Weights(
        role="planner",
        setting="planner_model",
        ref=config.planner_model or "",
        probe_file="config.json",
        cache_dir=config.cache_dir,
        local_files_only=config.local_files_only,
    )


def generator_weights(config: EngineConfig) -> Weights:
    """The generator's weights (Wan2.1-VACE in the diffusers layout, with its ``model_index.json``)."""
    return Weights(
        role="generator",
        setting="generator_model",
        ref=config.generator_model,
        probe_file="model_index.json",
        cache_dir=config.cache_dir,
        local_files_only=config.local_files_only,
    )


def preflight(weights: Weights) -> bool:
    """Check that ``weights`` can load before anything heavy is imported; ``True``: load offline.

    Raises :class:`ServerConfigError` at once when they are neither on this machine nor
    fetchable (``local_files_only``, or the hub unreachable).
    """
    if looks_local(weights.ref):
        if not Path(weights.ref).expanduser().exists():
            raise ServerConfigError(
                f"{weights.setting}={weights.ref!r}: no such directory or file; give the local path of "
                f"the {weights.role} weights or a hub id, or try everything on tiny models with `--preset tiny`"
            )
        return False
    _one_log_line_per_record()
    if weights.present():
        # Cached: without a hub, skip its retries and use the cache straight away.
        return not weights.local_files_only and not hub_reachable()
    if weights.local_files_only:
        raise ServerConfigError(
            f"{weights.setting}={weights.ref!r}: not downloaded, and local_files_only is set; {WHAT_TO_DO}"
        )
    if not hub_reachable():
        raise HubUnreachable(
            f"{weights.setting}={weights.ref!r}: not on this machine, and the hub ({endpoint()}) cannot be "
            f"reached; {WHAT_TO_DO}"
        )
    log.info(
        "%s %s is not on this machine: downloading it from the hub (first use)", weights.role, weights.ref
    )
    return False


@contextmanager
def offline(enabled: bool = True) -> Iterator[None]:
    """``huggingface_hub``'s offline mode for the block (cached files only, no retries).

    Process-wide while it lasts; model loads run one at a time under the engine's lock.
    """
    if not enabled:
        yield
        return
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def _one_log_line_per_record() -> None:
    """``huggingface_hub`` adds its own stderr handler *and* propagates: every warning came out twice.

    Where the application has set up logging, its handler is the one kept.
    """
    if not logging.getLogger().handlers:
        return
    hub = logging.getLogger("huggingface_hub")
    for handler in list(hub.handlers):
        if type(handler) is logging.StreamHandler:
            hub.removeHandler(handler)


@dataclass
class _Failure:
    error: ModelError
    at: float
    was_present: bool


class LoadFailures:
    """Failed loads remembered per model, so a model that cannot load fails the next calls at once.

    A remembered failure is retried after ``retry_after_s``, or at once when the weights that
    were missing appear (downloaded meanwhile). ``clock`` is injectable for tests.
    """

    def __init__(self, retry_after_s: float = RETRY_AFTER_S, clock: Callable[[], float] = time.monotonic):
        self.retry_after_s = retry_after_s
        self._clock = clock
        self._failures: dict[str, _Failure] = {}
        self._lock = threading.Lock()

    def check(self, weights: Weights) -> None:
        """Raise the remembered failure of ``weights.role`` again, unless it is time to retry."""
        with self._lock:
            failure = self._failures.get(weights.role)
        if failure is None:
            return
        ago = self._clock() - failure.at
        if ago >= self.retry_after_s or (not failure.was_present and _present(weights)):
            self.forget(weights.role)
            log.info("trying to load the %s again", weights.role)
            return
        left = self.retry_after_s - ago
        raise type(failure.error)(
            f"{failure.error} (this failure is remembered: tried again in {left:.0f} s, or at once "
            "when the weights are there)"
        )

    def record(self, weights: Weights, error: ModelError) -> None:
        with self._lock:
            self._failures[weights.role] = _Failure(error, self._clock(), _present(weights))
        # The one line the server's log gets for this failure; the calls get the message itself.
        log.warning("the %s cannot be loaded: %s", weights.role, error)

    def forget(self, role: str | None = None) -> None:
        """Forget one model's failure (``role``) or all of them."""
        with self._lock:
            if role is None:
                self._failures.clear()
            else:
                self._failures.pop(role, None)

    def failed(self) -> dict[str, str]:
        """The remembered failures by role, as messages (for status displays)."""
        with self._lock:
            return {role: str(f.error) for role, f in self._failures.items()}

    @contextmanager
    def guard(self, weights: Weights) -> Iterator[None]:
        """Load ``weights`` in the block: fail at once if remembered or not fetchable; remember a failure.

        What fails while loading (weights, a device this machine lacks, an unknown device name
        raised as an ``InvalidRequest``) is the server's configuration, not the caller's request:
        it is re-raised as a :class:`ServerConfigError` with the same message (a
        :class:`~engine.errors.ServerSettingError`, still an ``InvalidRequest``, for a setting).
        """
        self.check(weights)
        try:
            load_offline = preflight(weights)
            with offline(load_offline):
                yield
        except ServerConfigError as exc:
            self.record(weights, exc)
            raise
        except (ModelError, InvalidRequest) as exc:
            # Weights, devices and settings are the server's: said so, in the same words (a bad
            # setting stays an InvalidRequest naming it, too).
            error: ServerConfigError = (
                ServerSettingError(str(exc), field=exc.field, value=exc.value, rule=exc.rule)
                if isinstance(exc, InvalidRequest)
                else ServerConfigError(str(exc))
            )
            self.record(weights, error)
            raise error from exc


def _present(weights: Weights) -> bool:
    try:
        return weights.present()
    except Exception:  # a lookup that fails says nothing new
        return False


def resolve_weights_file(
    spec: str | Path,
    *,
    local_files_only: bool = False,
    cache_dir: str | Path | None = None,
    what: str = "projector",
) -> Path:
    """A local file path, or ``owner/repo/path/in/repo`` fetched with ``hf_hub_download``.

    A local file wins; anything else with at least three ``/``-separated parts is tried on the hub
    (honouring ``local_files_only``: then only the local hub cache is looked at).
    """
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    text = str(spec)
    parts = text.split("/")
    looks_like_hub = (
        not path.is_absolute()
        and not text.startswith((".", "~"))
        and len(parts) >= 3
        and all(parts)
        and not path.exists()
    )
    if not looks_like_hub:
        raise ModelError(f"{what}={text!r}: no such file (give a local file or owner/repo/path/in/repo)")
    from huggingface_hub import hf_hub_download

    repo_id, filename = "/".join(parts[:2]), "/".join(parts[2:])
    try:
        local = hf_hub_download(
            repo_id=repo_id,
            filename=filename,
            local_files_only=local_files_only,
            cache_dir=str(cache_dir) if cache_dir is not None else None,
        )
    except Exception as exc:  # hub errors come in many types (offline, 404, gated, cache miss)
        hint = " (local_files_only is set: only the hub cache was searched)" if local_files_only else ""
        raise ModelError(
            f"{what}={text!r}: not a local file, and file {filename!r} of hub repo {repo_id!r} "
            f"could not be fetched{hint}: {exc}"
        ) from exc
    return Path(local)


# ---------------------------------------------------------------------------------------------
# torchvision's RAFT (the flow annotator's weights): in the torch hub cache, not the HF one.

#: ``flow_model`` names that mean torchvision's pretrained weights.
TORCHVISION_RAFT: tuple[str, ...] = ("raft_small", "raft_large")


def torchvision_weights(name: str) -> Any:
    """torchvision's pretrained-weights entry for ``raft_small`` / ``raft_large``."""
    from torchvision.models.optical_flow import Raft_Large_Weights, Raft_Small_Weights

    return {"raft_small": Raft_Small_Weights, "raft_large": Raft_Large_Weights}[name].DEFAULT


def raft_cache_file(name: str) -> Path:
    """Where torchvision keeps ``raft_small`` / ``raft_large`` weights (present or not)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / Path(torchvision_weights(name).url).name


def fetch_raft(name: str) -> Path:
    """Download torchvision's ``raft_small`` / ``raft_large`` weights (once) and say where they are."""
    file = raft_cache_file(name)
    if not file.exists():
        log.warning("downloading flow: torchvision %s weights into %s", name, file.parent)
        try:
            torchvision_weights(name).get_state_dict(progress=True, check_hash=True)
        except Exception as exc:  # urllib, hash and disk errors all mean "not fetched"
            raise ModelError(f"flow_model={name!r}: downloading torchvision's weights failed: {exc}") from exc
    return file


__all__ = [
    "RETRY_AFTER_S",
    "TORCHVISION_RAFT",
    "LoadFailures",
    "Weights",
    "endpoint",
    "fetch_raft",
    "generator_weights",
    "hub_reachable",
    "locally_present",
    "looks_local",
    "offline",
    "planner_weights",
    "preflight",
    "raft_cache_file",
    "resolve_weights_file",
    "torchvision_weights",
]
