"""The pool's settings: declared once here, spelled as flags, variables and TOML keys by the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from ..config import SettingMeta

#: Ports Ray gives its workers (``--min-worker-port``/``--max-worker-port`` defaults): a port the
#: server chooses for the cluster stays outside them, or a worker could take it first.
RAY_WORKER_PORTS = range(10002, 20000)


class PoolSettings(BaseModel):
    """Where jobs run: this process's engine (``none``) or a Ray Serve pool of engine replicas."""

    backend: Annotated[Literal["none", "ray"], SettingMeta(name="pool", flag="--pool")] = Field(
        "none",
        description="run jobs on a Ray Serve pool of engine replicas, one GPU each "
        "(pip install 'unison-mcp[serve]'); none = this process's engine",
    )
    replicas: int = Field(
        1, ge=1, le=256, description="engine replicas (the pool's size; the least with autoscaling)"
    )
    max_replicas: int | None = Field(
        None,
        ge=1,
        le=256,
        description="autoscale up to this many replicas on queue length (default: fixed size)",
    )
    autoscale_target: float = Field(
        1.0, gt=0, description="jobs per replica (running and waiting) the autoscaler aims for"
    )
    downscale_delay_s: float = Field(
        600.0, ge=0, description="seconds of low load before the autoscaler removes a replica"
    )
    # None: one GPU a replica when the cluster has GPUs, else CPU replicas (the tiny preset, tests).
    replica_gpus: float | None = Field(
        None, ge=0, description="GPUs per replica (default: 1 when the cluster has GPUs, else 0)"
    )
    # Replicas wait on their GPU, not on a core: reserving none lets N replicas start on a small host.
    replica_cpus: float = Field(0.0, ge=0, description="CPUs Ray reserves per replica")
    # Jobs last minutes: a replica stopped or scaled down finishes its job first.
    graceful_shutdown_s: float = Field(
        900.0, ge=0, description="seconds a stopping replica may take to finish its job"
    )
    ray_address: str | None = Field(
        None,
        description="join a running Ray cluster (`ray start --head` on each node), e.g. 10.0.0.5:6380; "
        "default: start a local one on loopback",
    )
    ray_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="GCS port of the local cluster (default: a free port outside Ray's worker ports 10002-19999)",
    )
    ray_temp_dir: Path | None = Field(
        None,
        description="the local cluster's session files (default ~/.cache/unison-mcp/ray; keep it short: "
        "Ray's socket paths must fit 107 bytes)",
    )
    # With --preload a replica is up once its models are loaded: minutes for large weights.
    start_timeout_s: float = Field(
        900.0,
        gt=0,
        description="seconds to wait for the cluster's address to answer and the replicas to start "
        "(with --preload: to load their models)",
    )

    @field_validator("ray_port")
    @classmethod
    def _outside_worker_ports(cls, value: int) -> int:
        if value in RAY_WORKER_PORTS:
            raise ValueError(
                f"{value} is in Ray's worker port range {RAY_WORKER_PORTS.start}-{RAY_WORKER_PORTS.stop - 1}: "
                "a worker could take it; pick one outside (e.g. 6380)"
            )
        return value

    @model_validator(mode="after")
    def _bounds(self) -> PoolSettings:
        if self.max_replicas is not None and self.max_replicas < self.replicas:
            raise ValueError(
                f"max_replicas={self.max_replicas} is below replicas={self.replicas}: "
                "autoscaling goes from replicas up to max_replicas"
            )
        return self

    @property
    def enabled(self) -> bool:
        return self.backend == "ray"


__all__ = ["RAY_WORKER_PORTS", "PoolSettings"]
