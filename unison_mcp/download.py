"""Which weights a configuration needs, where they are, and fetching them from the hub.

:func:`weight_sources` turns an ``EngineConfig`` into a list of :class:`WeightSource` (local
directory/file, hub repository, or one file in a hub repository); ``doctor`` checks them offline
and :func:`download_weights` fetches the hub ones with ``huggingface_hub`` (its progress bars go
to stderr). ``huggingface_hub`` is imported only when something is actually looked up.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from engine.config import EngineConfig
from engine.errors import HubUnreachable, ModelError, ServerConfigError, shown
from engine.hub import PROBE_TIMEOUT_S, TORCHVISION_RAFT, endpoint, fetch_raft, hub_reachable
from engine.loras import configured

log = logging.getLogger(__name__)

#: ``owner/name``, as the hub spells repository ids.
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

Role = Literal[
    "planner",
    "adapter",
    "projector",
    "generator",
    "transformer",
    # LoRAs on the DiT: the step distillation for turbo, the user's (engine/loras.py).
    "turbo",
    "lora",
    # The annotators (engine/annotators/): control signals and masks from plain media.
    "segment",
    "depth",
    "pose",
    "person_detector",
    "flow",
]
#: Every role, in ``weight_sources`` order (``download --only`` takes these).
ROLES: tuple[str, ...] = get_args(Role)
#: The roles only needed to extract control signals or masks: doctor warns, not fails, without them.
ANNOTATOR_ROLES: frozenset[str] = frozenset({"segment", "depth", "pose", "person_detector", "flow"})
#: The roles whose weights are one file (a hub file is owner/name/path/to/file).
_FILE_ROLES: frozenset[str] = frozenset({"projector", "transformer", "turbo", "lora"})
SourceKind = Literal["local", "repo", "file", "torchvision", "tiny", "missing"]


@dataclass(frozen=True)
class WeightSource:
    """One configured set of weights and how to find it.

    ``kind``: ``local`` (an existing path), ``repo`` (a whole hub repository, or the part under
    ``subfolder``), ``file`` (one file ``filename`` in hub repository ``repo_id``),
    ``torchvision`` (torchvision's pretrained weights ``spec``, kept in the torch hub cache),
    ``tiny`` (a tiny preset's model not built yet: the engine builds it on first use),
    ``missing`` (a path that does not exist and is not a hub id either).
    """

    role: Role
    spec: str  # as configured
    kind: SourceKind
    repo_id: str | None = None
    filename: str | None = None  # for "file"; for "repo" the file whose presence proves the download
    subfolder: str | None = None

    @property
    def allow_patterns(self) -> list[str] | None:
        return [f"{self.subfolder}/*"] if self.subfolder else None


@dataclass(frozen=True)
class DownloadedItem:
    role: Role
    spec: str
    action: str  # "downloaded", "local", "would download ..."
    local_path: str | None = None


def weight_sources(config: EngineConfig) -> list[WeightSource]:
    """The weights ``config`` needs, in loading order; unconfigured (``None``) parts are skipped."""
    out: list[WeightSource] = []
    if config.planner_model:
        out.append(_repo_or_path("planner", config.planner_model, "config.json"))
        # The planner loads a configured adapter under every backend (the projector's input needs it).
        if config.adapter:
            sub = (config.adapter_subfolder or "").strip("/") or None
            probe = f"{sub}/adapter_config.json" if sub else "adapter_config.json"
            out.append(_repo_or_path("adapter", config.adapter, probe, subfolder=sub))
        if config.projector:
            out.append(_file_or_path("projector", config.projector))
    out.append(_repo_or_path("generator", config.generator_model, "model_index.json"))
    if config.generator_single_file:
        out.append(_file_or_path("transformer", config.generator_single_file))
    if config.loras.turbo_lora:
        out.append(_file_or_path("turbo", config.loras.turbo_lora))
    for spec in configured(config).values():
        out.append(_file_or_path("lora", spec.path))
    annotators = config.annotators
    if annotators.segment_model:
        out.append(_repo_or_path("segment", annotators.segment_model, "config.json"))
    out.append(_repo_or_path("depth", annotators.depth_model, "config.json"))
    out.append(_repo_or_path("pose", annotators.pose_model, "config.json"))
    out.append(_repo_or_path("person_detector", annotators.person_detector, "config.json"))
    out.append(_flow_source(annotators.flow_model))
    return [_tiny_to_build(s, config.tiny_dir) for s in out]


def _tiny_to_build(source: WeightSource, tiny_dir: Path | None) -> WeightSource:
    """A path of the tiny preset that is not there yet is a model to build, not a hub id or a typo."""
    if tiny_dir is None or source.kind in ("local", "torchvision"):
        return source
    path = Path(source.spec).expanduser()
    if path.is_relative_to(Path(tiny_dir).expanduser()):
        return WeightSource(source.role, source.spec, "tiny")
    return source


def _is_local(spec: str) -> bool:
    return Path(spec).expanduser().exists()


def _repo_or_path(role: Role, spec: str, probe: str, subfolder: str | None = None) -> WeightSource:
    if _is_local(spec):
        return WeightSource(role, spec, "local")
    if _REPO_ID.match(spec):
        return WeightSource(role, spec, "repo", repo_id=spec, filename=probe, subfolder=subfolder)
    return WeightSource(role, spec, "missing")


def _flow_source(spec: str) -> WeightSource:
    """torchvision's ``raft_small`` / ``raft_large``, or a local state-dict file."""
    if spec in TORCHVISION_RAFT:
        return WeightSource("flow", spec, "torchvision")
    return WeightSource("flow", spec, "local" if _is_local(spec) else "missing")


def _file_or_path(role: Role, spec: str) -> WeightSource:
    """A local file, or ``owner/repo/path/in/repo`` on the hub."""
    if _is_local(spec):
        return WeightSource(role, spec, "local")
    parts = spec.split("/")
    if len(parts) >= 3 and _REPO_ID.match("/".join(parts[:2])) and all(parts[2:]):
        return WeightSource(role, spec, "file", repo_id="/".join(parts[:2]), filename="/".join(parts[2:]))
    return WeightSource(role, spec, "missing")


def download_weights(
    config: EngineConfig, *, only: Iterable[str] | None = None, dry_run: bool = False
) -> list[DownloadedItem]:
    """Fetch every configured hub weight (or those in ``only``) into the hub cache.

    Local paths are left alone; a configured local path that does not exist is an error (there
    is nothing to fetch it from); the tiny preset's models are built. Progress bars are
    huggingface_hub's own, on stderr. A hub that cannot be reached fails at once (one short
    connect, as :mod:`engine.hub` probes it before a load), not after the hub client's retries.
    """
    wanted = set(only) if only else None
    sources = [s for s in weight_sources(config) if wanted is None or s.role in wanted]
    if wanted and not sources:
        raise ModelError(f"nothing to download for {', '.join(sorted(wanted))}: not configured")
    fetched = ("repo", "file", "torchvision")
    if config.local_files_only and not dry_run and any(s.kind in fetched for s in sources):
        raise ModelError(
            "local_files_only is set (--local-files-only / UNISON_LOCAL_FILES_ONLY): downloading is "
            "disabled; unset it to fetch the weights"
        )
    on_hub = [s for s in sources if s.kind in ("repo", "file")]
    if on_hub and not dry_run:
        _check_hub(on_hub)
    items: list[DownloadedItem] = []
    for s in sources:
        if s.kind == "missing" and s.role == "flow":
            raise ModelError(
                f"flow_model={s.spec!r}: not raft_small, raft_large or a local weights file that exists"
            )
        if s.kind == "missing":
            raise ModelError(
                f"{s.role}={s.spec!r}: not a local path that exists and not a hub id (owner/name"
                + (" or owner/name/path/to/file" if s.role in _FILE_ROLES else "")
                + "); fix the path or give a hub id"
            )
        if s.kind == "local":
            items.append(DownloadedItem(s.role, s.spec, "local", str(Path(s.spec).expanduser())))
            continue
        if s.kind == "tiny":
            if dry_run:
                items.append(DownloadedItem(s.role, s.spec, "would build the tiny model"))
                continue
            from engine.tiny import ensure_tiny  # the tiny-model factory: only to build

            ensure_tiny(config.tiny_dir)  # all of them at once (seconds); a no-op after the first
            items.append(DownloadedItem(s.role, s.spec, "built", str(Path(s.spec).expanduser())))
            continue
        what = f"{s.repo_id}" + (f" ({s.subfolder}/)" if s.subfolder else "")
        if s.kind == "file":
            what = f"{s.repo_id}: {s.filename}"
        if s.kind == "torchvision":
            what = f"torchvision's {s.spec} weights"
        if dry_run:
            items.append(DownloadedItem(s.role, s.spec, f"would download {what}"))
            continue
        log.warning("downloading %s: %s", s.role, what)  # shown without -v: this can take a while
        items.append(DownloadedItem(s.role, s.spec, "downloaded", _fetch(s, config.cache_dir)))
    return items


def _check_hub(on_hub: list[WeightSource]) -> None:
    """Fail at once, saying why, when the hub cannot be asked for ``on_hub`` at all."""
    from huggingface_hub import constants

    what = f"{on_hub[0].repo_id}" + (f" and {len(on_hub) - 1} more" if len(on_hub) > 1 else "")
    if constants.HF_HUB_OFFLINE:
        raise ServerConfigError(
            f"cannot download {what}: the hub client's offline mode is on (HF_HUB_OFFLINE); unset it and retry"
        )
    if not hub_reachable():
        first = on_hub[0]
        more = f" (and {len(on_hub) - 1} more)" if len(on_hub) > 1 else ""
        raise HubUnreachable(
            f"{first.role}: cannot download {first.repo_id}{more}: the hub ({endpoint()}) could not be "
            f"reached (no connection within {PROBE_TIMEOUT_S:g} s)"
        )


def _fetch(s: WeightSource, cache_dir: Path | None) -> str:
    if s.kind == "torchvision":
        # torchvision keeps its weights in the torch hub cache ($TORCH_HOME), not the HF cache.
        return str(fetch_raft(s.spec))
    from huggingface_hub import constants, hf_hub_download, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    repo_id = s.repo_id or ""  # always set for hub sources, the only ones fetched
    try:
        if s.kind == "file":
            return hf_hub_download(repo_id, s.filename or "", cache_dir=cache_dir)
        return snapshot_download(repo_id, cache_dir=cache_dir, allow_patterns=s.allow_patterns)
    except GatedRepoError as exc:
        raise ModelError(
            f"{s.role}: {s.repo_id} is gated: accept its terms on huggingface.co and log in "
            f"(`hf auth login` or HF_TOKEN), then retry ({_short(exc)})"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise ModelError(
            f"{s.role}: hub repository {s.repo_id!r} not found (or private: log in with `hf auth login`)"
        ) from exc
    except LocalEntryNotFoundError as exc:
        # Not in the cache and not fetched: offline by choice, or the network failed on the way.
        if constants.HF_HUB_OFFLINE:
            raise ServerConfigError(
                f"{s.role}: cannot download {s.repo_id}: offline mode is on (HF_HUB_OFFLINE); unset "
                "HF_HUB_OFFLINE to download, or give the local path of weights already here"
            ) from exc
        raise _unreachable(s, exc) from exc
    except (ConnectionError, TimeoutError) as exc:  # the connection dropped or stalled mid-download
        raise _unreachable(s, exc) from exc
    except (HfHubHTTPError, OSError) as exc:
        raise ModelError(f"{s.role}: downloading {s.repo_id} failed: {_short(exc)}") from exc


def _unreachable(s: WeightSource, exc: BaseException) -> HubUnreachable:
    """The network failed: said as such (with the transport's own words), not as a bad setting."""
    cause = exc.__cause__ or exc
    return HubUnreachable(
        f"{s.role}: cannot download {s.repo_id}: the hub ({endpoint()}) could not be reached "
        f"({type(cause).__name__}: {_short(cause)})"
    )


def _short(exc: BaseException) -> str:
    return shown(" ".join(str(exc).split()), 300, quoted=False)
