"""Server configuration: engine settings plus what only the MCP layer needs.

Filled from (lowest to highest precedence) defaults, an optional TOML file, ``UNISON_*``
environment variables and CLI flags; see :func:`load_config`.

Every setting is one row of :data:`SETTINGS`: its place in :class:`ServerConfig`, its flag
(``--max-side``) and its environment variable (``UNISON_MAX_SIDE``). The CLI builds its options
from the same table, so a flag, its variable and its TOML key can never drift apart.

The TOML file mirrors :class:`ServerConfig`; engine keys may sit at the top level or under
``[engine]``::

    output_dir = "~/unison-outputs"        # paths in the file are relative to the file
    allowed_roots = ["~/Pictures", "~/Movies"]
    device = "cuda"
    wait_s = 30

    [sampling]
    steps = 30

    [limits]
    max_frames = 81

``preset = "tiny"`` (or ``--preset tiny`` / ``UNISON_PRESET=tiny``) starts from
``EngineConfig.tiny()`` — tiny random models built on demand into ``UNISON_TINY_DIR`` (default
``~/.cache/unison-mcp/tiny``) — and every explicit setting, from any source, still wins over it.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import sys
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator

from engine.config import EngineConfig, PerformanceOptions
from engine.errors import InvalidRequest

log = logging.getLogger(__name__)


class ServerConfig(BaseModel):
    engine: EngineConfig = Field(default_factory=EngineConfig)
    #: Directories inputs may be read from (the output directory is always allowed too).
    allowed_roots: list[Path] = Field(default_factory=list)
    #: How long a tool call waits for its job before returning a job handle.
    wait_s: float = Field(45.0, ge=0)
    #: Jobs that may wait behind the running one before calls are refused as busy.
    queue_size: int = Field(8, ge=0)
    max_input_bytes: int = Field(2 * 1024**3, ge=1)
    transport: Literal["stdio", "http"] = "stdio"
    host: str = "127.0.0.1"
    port: int = Field(8765, ge=1, le=65535)
    auth_token: str | None = None
    preload: bool = False
    #: Longest side of inline previews (pixels).
    preview_side: int = Field(384, ge=16, le=1024)
    #: Finished jobs kept for the `job` tool.
    keep_jobs: int = Field(64, ge=1)

    @field_validator("auth_token")
    @classmethod
    def _token_not_blank(cls, value: str | None) -> str | None:
        # A blank token given on purpose must not quietly turn HTTP authentication off.
        if value is not None and not value.strip():
            raise ValueError(
                "is blank: give a real token (e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))') "
                "or leave the setting out"
            )
        return value

    @property
    def output_dir(self) -> Path:
        return self.engine.output_dir.expanduser().resolve()

    def roots(self) -> list[Path]:
        """Allowed input roots, resolved, with the output directory last."""
        out = [Path(r).expanduser().resolve() for r in self.allowed_roots]
        if self.output_dir not in out:
            out.append(self.output_dir)
        return out


class ConfigError(InvalidRequest):
    """A configuration value or key is wrong; the message names where it came from."""

    code = "config_error"


# ---------------------------------------------------------------------------------------------
# The settings table.

Kind = Literal["str", "optional", "path", "paths", "int", "float", "bool", "choice"]

#: Values of an ``optional`` setting that mean "not set" (e.g. ``--projector none``).
_NONE_WORDS = frozenset({"", "none", "null", "off"})
_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
_FALSE_WORDS = frozenset({"0", "false", "no", "off"})

#: ``UNISON_*`` variables that are read but are not settings (no "unknown variable" warning).
OTHER_ENV = frozenset({"UNISON_CONFIG", "UNISON_TINY_DIR"})

PRESETS = ("tiny",)


@dataclass(frozen=True)
class Setting:
    """One configurable value: where it lives and how it is spelled on the command line and in env."""

    name: str  # argparse dest; the flag and env var are derived from it
    path: tuple[str, ...]  # field path inside ServerConfig
    kind: Kind
    help: str
    section: str  # CLI help group
    flag_name: str | None = None  # when the flag is not --<name>
    aliases: tuple[str, ...] = ()
    choices: tuple[str, ...] | None = None

    @property
    def flag(self) -> str:
        return self.flag_name or "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "UNISON_" + self.name.upper()

    @property
    def toml_key(self) -> str:
        # Engine keys are written without the "engine." prefix (it is optional in the file).
        path = self.path[1:] if self.path[0] == "engine" else self.path
        return ".".join(path)


def _literal_choices(model: type[BaseModel], field: str) -> tuple[str, ...]:
    """The allowed strings of a ``Literal`` field (optional or not), read from the model itself."""
    annotation = model.model_fields[field].annotation
    for arg in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(arg) is Literal:
            return tuple(str(a) for a in typing.get_args(arg))
    raise TypeError(f"{model.__name__}.{field} is not a Literal")


_M, _L, _S, _U, _P, _SRV = (
    "models and devices",
    "limits",
    "sampling defaults",
    "understanding",
    "performance",
    "server",
)


def _rows() -> tuple[Setting, ...]:
    e = ("engine",)
    # fmt: off
    lim, smp, und, prf = (*e, "limits"), (*e, "sampling"), (*e, "understanding"), (*e, "performance")
    return (
        # Models, devices, files.
        Setting("preset", (*e, "preset"), "choice", "start from a preset: 'tiny' = tiny random models on a CPU", _M, choices=PRESETS),
        Setting("planner_model", (*e, "planner_model"), "optional", "Qwen2.5-VL planner: hub id or local dir; 'none' = no planner (rules planner, no understanding)", _M),
        Setting("adapter", (*e, "adapter"), "optional", "Unison LoRA adapter: hub id or local dir; 'none' = plain instruct planner", _M),
        Setting("adapter_subfolder", (*e, "adapter_subfolder"), "optional", "subfolder of the adapter repo holding the LoRA", _M),
        Setting("projector", (*e, "projector"), "optional", "projector.pth: local file or owner/repo/path/in/repo; 'none' = plain Wan-VACE conditioning", _M),
        Setting("generator_model", (*e, "generator_model"), "str", "Wan2.1-VACE diffusers pipeline: hub id or local dir", _M),
        Setting("generator_single_file", (*e, "generator_single_file"), "optional", "original-format VACE transformer checkpoint (single file) to use instead of the pipeline's", _M, aliases=("--transformer-file",)),
        Setting("planner_backend", (*e, "planner_backend"), "choice", "planner backend (default: unison with an adapter, instruct without, rules without a planner)", _M, aliases=("--planner",), choices=_literal_choices(EngineConfig, "planner_backend")),
        Setting("device", (*e, "device"), "str", "auto | cuda | cuda:N | cpu | mps", _M),
        Setting("planner_device", (*e, "planner_device"), "optional", "device for the planner (default: --device)", _M),
        Setting("dtype", (*e, "dtype"), "choice", "weights dtype ('auto': bfloat16 on GPU, float32 on CPU)", _M, choices=_literal_choices(EngineConfig, "dtype")),
        Setting("output_dir", (*e, "output_dir"), "path", "where outputs are written (the only place written)", _M),
        Setting("cache_dir", (*e, "cache_dir"), "path", "hub cache directory (default: huggingface_hub's)", _M),
        Setting("local_files_only", (*e, "local_files_only"), "bool", "never reach the hub; use local dirs and the hub cache only", _M),
        # Limits.
        Setting("min_side", (*lim, "min_side"), "int", "smallest output side in pixels", _L),
        Setting("max_side", (*lim, "max_side"), "int", "largest output side in pixels", _L),
        Setting("max_pixels", (*lim, "max_pixels"), "int", "largest output width×height", _L),
        Setting("min_frames", (*lim, "min_frames"), "int", "fewest video frames", _L),
        Setting("max_frames", (*lim, "max_frames"), "int", "most video frames (4k+1)", _L),
        Setting("max_fps", (*lim, "max_fps"), "float", "highest output fps", _L),
        Setting("max_steps", (*lim, "max_steps"), "int", "most denoising steps per request", _L),
        Setting("max_prompt_chars", (*lim, "max_prompt_chars"), "int", "longest prompt in characters", _L),
        Setting("max_inputs", (*lim, "max_inputs"), "int", "most input files per request", _L),
        Setting("default_width", (*lim, "default_width"), "int", "output width when a request gives none", _L),
        Setting("default_height", (*lim, "default_height"), "int", "output height when a request gives none", _L),
        Setting("default_frames", (*lim, "default_frames"), "int", "video frames when a request gives none", _L),
        # Sampling defaults (each overridable per request).
        Setting("steps", (*smp, "steps"), "int", "denoising steps", _S),
        Setting("guidance", (*smp, "guidance"), "float", "classifier-free guidance scale", _S),
        Setting("flow_shift", (*smp, "flow_shift"), "float", "flow-matching shift of the UniPC scheduler", _S),
        Setting("conditioning_scale", (*smp, "conditioning_scale"), "float", "VACE context scale", _S),
        Setting("negative_prompt", (*smp, "negative_prompt"), "str", "negative prompt", _S),
        Setting("fps", (*smp, "fps"), "float", "frames per second of written videos", _S),
        Setting("text_len", (*smp, "text_len"), "int", "DiT text context length (the reference's 2048)", _S),
        Setting("max_sequence_length", (*smp, "max_sequence_length"), "int", "umT5 tokenizer cap", _S),
        # Understanding.
        Setting("max_new_tokens", (*und, "max_new_tokens"), "int", "longest answer in tokens", _U),
        Setting("temperature", (*und, "temperature"), "float", "answer sampling temperature (0 = greedy)", _U),
        Setting("video_fps", (*und, "video_fps"), "float", "frames per second sampled from a video to understand", _U),
        Setting("video_max_frames", (*und, "video_max_frames"), "int", "most frames sampled from a video to understand", _U),
        Setting("understand_max_pixels", (*und, "max_pixels"), "int", "pixel cap per image/frame given to the planner", _U),
        # Performance switches.
        Setting("attention_backend", (*prf, "attention_backend"), "optional", "diffusers attention backend name ('none' = SDPA)", _P),
        Setting("compile", (*prf, "compile"), "bool", "regional torch.compile of the DiT blocks", _P),
        Setting("batch_cfg", (*prf, "batch_cfg"), "bool", "conditional and unconditional passes in one batch", _P),
        Setting("step_cache", (*prf, "cache"), "choice", "reuse work across denoising steps", _P, choices=_literal_choices(PerformanceOptions, "cache")),
        Setting("cache_threshold", (*prf, "cache_threshold"), "float", "step-cache reuse threshold", _P),
        Setting("vae_tiling", (*prf, "vae_tiling"), "bool", "decode the VAE in tiles (less memory)", _P),
        Setting("offload", (*prf, "offload"), "choice", "CPU offload mode for small GPUs", _P, choices=_literal_choices(PerformanceOptions, "offload")),
        # Server.
        Setting("allowed_roots", ("allowed_roots",), "paths", "directory inputs may be read from (repeatable; env: os.pathsep-separated); the output dir is always allowed", _SRV, flag_name="--allow-root"),
        Setting("wait_s", ("wait_s",), "float", "seconds a tool call waits before returning a job handle", _SRV),
        Setting("queue_size", ("queue_size",), "int", "jobs that may wait behind the running one", _SRV),
        Setting("max_input_bytes", ("max_input_bytes",), "int", "largest input file in bytes", _SRV),
        Setting("transport", ("transport",), "choice", "MCP transport", _SRV, choices=_literal_choices(ServerConfig, "transport")),
        Setting("host", ("host",), "str", "HTTP bind address", _SRV),
        Setting("port", ("port",), "int", "HTTP port", _SRV),
        Setting("auth_token", ("auth_token",), "str", "HTTP bearer token (prefer the env var: flags show in `ps`)", _SRV),
        Setting("preload", ("preload",), "bool", "load the models at start (in the background)", _SRV),
        Setting("preview_side", ("preview_side",), "int", "longest side of inline previews in pixels", _SRV),
        Setting("keep_jobs", ("keep_jobs",), "int", "finished jobs kept for the job tool", _SRV),
    )
    # fmt: on


SETTINGS: tuple[Setting, ...] = _rows()
BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
BY_PATH: dict[tuple[str, ...], Setting] = {s.path: s for s in SETTINGS}
BY_ENV: dict[str, Setting] = {s.env: s for s in SETTINGS}

#: Fields holding filesystem paths: relative values in a TOML file are taken relative to the file.
_PATH_FIELDS = {("engine", "output_dir"), ("engine", "cache_dir"), ("allowed_roots",)}
#: Fields holding a hub id or a local path: ``~`` and ``./``-style values are paths.
_MODEL_FIELDS = {
    ("engine", f)
    for f in ("planner_model", "adapter", "projector", "generator_model", "generator_single_file")
}


# ---------------------------------------------------------------------------------------------
# CLI integration.


def add_config_arguments(parser: argparse.ArgumentParser, sections: Sequence[str] | None = None) -> None:
    """Add the flags of ``sections`` (default: every section but the preset) to ``parser``.

    Defaults are suppressed, so the namespace holds exactly the flags the user gave: that is how
    :func:`load_config` knows a flag outranks the same value from TOML or the environment.
    """
    defaults = _defaults_for_help()
    groups: dict[str, argparse._ArgumentGroup] = {}
    for s in SETTINGS:
        if s.name == "preset":
            continue  # a global flag: see add_preset_argument
        if sections is not None and s.section not in sections:
            continue
        group = groups.get(s.section) or groups.setdefault(s.section, parser.add_argument_group(s.section))
        help_text = f"{s.help} [{s.env}]"
        default = defaults.get(s.path)
        if default not in (None, "", []):
            help_text += f" (default: {default})"
        _add_flag(group, s, help_text)


def add_preset_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    s = BY_NAME["preset"]
    _add_flag(parser, s, f"{s.help} [{s.env}]")


def _add_flag(parser: Any, s: Setting, help_text: str) -> None:
    common: dict[str, Any] = {"dest": s.name, "default": argparse.SUPPRESS, "help": help_text}
    names = (s.flag, *s.aliases)
    if s.kind == "bool":
        parser.add_argument(*names, action=argparse.BooleanOptionalAction, **common)
    elif s.kind == "paths":
        parser.add_argument(*names, action="append", metavar="DIR", **common)
    elif s.kind == "choice":
        parser.add_argument(*names, choices=s.choices, **common)
    elif s.kind == "int":
        parser.add_argument(*names, type=int, metavar="N", **common)
    elif s.kind == "float":
        parser.add_argument(*names, type=float, metavar="X", **common)
    else:
        parser.add_argument(*names, metavar=s.name.upper().split("_")[-1], **common)


def _defaults_for_help() -> dict[tuple[str, ...], Any]:
    cfg = ServerConfig().model_dump()
    out: dict[tuple[str, ...], Any] = {}
    for s in SETTINGS:
        node: Any = cfg
        for key in s.path:
            node = node[key]
        out[s.path] = node
    return out


# ---------------------------------------------------------------------------------------------
# Loading.


def load_config(
    args: argparse.Namespace | Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    toml_path: Path | str | None = None,
) -> ServerConfig:
    """Build the configuration: defaults < TOML file < ``UNISON_*`` env < CLI flags.

    ``args`` is the CLI's namespace (only flags the user gave are present; unrelated attributes
    are ignored) or a mapping from setting names (:data:`SETTINGS`) to values. The TOML file is
    ``toml_path``, else ``args.config`` (``--config``), else ``$UNISON_CONFIG``. A preset
    (``tiny``) replaces the defaults; explicit settings from any source still win.

    Raises :class:`ConfigError` naming the flag, variable or TOML key of any bad value or key.
    """
    env = os.environ if env is None else env
    cli, cli_src, config_arg = _cli_layer(args)
    path = toml_path or config_arg or env.get("UNISON_CONFIG") or None
    toml, toml_src = _toml_layer(Path(path)) if path else ({}, {})
    env_values, env_src = _env_layer(env)

    sources = {**toml_src, **env_src, **cli_src}
    merged: dict[str, Any] = {}
    for layer in (toml, env_values, cli):
        _deep_merge(merged, layer)

    preset = _get(merged, ("engine", "preset"))
    if preset is not None:
        if preset not in PRESETS:
            src = sources.get(("engine", "preset"), "preset")
            raise ConfigError.for_field(src, preset, f"unknown preset; one of {', '.join(PRESETS)}")
        merged = _deep_merge(_preset_base(preset, env), merged)

    _normalise_models(merged)
    try:
        return ServerConfig.model_validate(merged)
    except ValidationError as exc:
        raise _config_error(exc, sources) from None


def _preset_base(preset: str, env: Mapping[str, str]) -> dict[str, Any]:
    """The configuration a preset starts from, as a nested dict to merge explicit settings over."""
    from engine.tiny import default_tiny_dir

    root = Path(env["UNISON_TINY_DIR"]) if env.get("UNISON_TINY_DIR") else default_tiny_dir()
    log.info("preset %s: tiny models in %s (built on first use)", preset, root)
    # build=False: the engine builds missing tiny models on first load, so `serve` answers at once.
    return {"engine": EngineConfig.tiny(root, build=False).model_dump()}


def _cli_layer(
    args: argparse.Namespace | Mapping[str, Any] | None,
) -> tuple[dict[str, Any], dict[tuple[str, ...], str], str | None]:
    if args is None:
        return {}, {}, None
    strict = not isinstance(args, argparse.Namespace)
    items = dict(vars(args) if isinstance(args, argparse.Namespace) else args)
    config_arg = items.pop("config", None)
    out: dict[str, Any] = {}
    src: dict[tuple[str, ...], str] = {}
    for name, value in items.items():
        s = BY_NAME.get(name)
        if s is None:
            if strict:
                raise ConfigError.for_field(name, value, "unknown setting" + _did_you_mean(name, BY_NAME))
            continue  # a subcommand's own argument
        if value is None:
            continue
        if s.kind == "optional" and isinstance(value, str) and value.strip().lower() in _NONE_WORDS:
            value = None
        elif s.kind == "paths":
            value = [value] if isinstance(value, (str, Path)) else list(value)
        _set(out, s.path, value)
        src[s.path] = s.flag
    return out, src, str(config_arg) if config_arg else None


def _env_layer(env: Mapping[str, str]) -> tuple[dict[str, Any], dict[tuple[str, ...], str]]:
    out: dict[str, Any] = {}
    src: dict[tuple[str, ...], str] = {}
    for key, raw in env.items():
        if not key.startswith("UNISON_"):
            continue
        s = BY_ENV.get(key)
        if s is None:
            if key not in OTHER_ENV:
                log.warning("ignoring unknown variable %s%s", key, _did_you_mean(key, [*BY_ENV, *OTHER_ENV]))
            continue
        _set(out, s.path, _parse_env(s, raw))
        src[s.path] = s.env
    return out, src


def _parse_env(s: Setting, raw: str) -> Any:
    text = raw.strip()
    if s.kind == "bool":
        if text.lower() in _TRUE_WORDS:
            return True
        if text.lower() in _FALSE_WORDS:
            return False
        raise ConfigError.for_field(s.env, raw, "must be one of 1/0, true/false, yes/no, on/off")
    if s.kind == "paths":
        return [p for p in text.split(os.pathsep) if p]
    if s.kind == "optional" and text.lower() in _NONE_WORDS:
        return None
    if s.kind == "choice" and s.choices is not None and text not in s.choices:
        raise ConfigError.for_field(s.env, raw, f"must be one of {', '.join(s.choices)}")
    # Numbers stay strings here: pydantic converts them and its error is mapped to the variable.
    return text


def _toml_layer(path: Path) -> tuple[dict[str, Any], dict[tuple[str, ...], str]]:
    path = path.expanduser()
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError.for_field("config", str(path), "no such file") from None
    except OSError as exc:
        raise ConfigError.for_field("config", str(path), f"cannot be read ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError.for_field("config", str(path), f"is not valid TOML ({exc})") from None

    out: dict[str, Any] = {}
    src: dict[tuple[str, ...], str] = {}
    engine_part: dict[str, Any] = {}
    for key, value in data.items():
        if key == "engine":
            if not isinstance(value, dict):
                raise ConfigError.for_field(f"{path}: engine", value, "must be a table ([engine])")
            for k, v in value.items():
                engine_part[k] = (v, f"engine.{k}")
        elif key in ServerConfig.model_fields:
            out[key] = value
            _walk(ServerConfig, key, value, (key,), key, path, src)
        elif key in EngineConfig.model_fields:
            engine_part[key] = (value, key)
        else:
            raise _unknown_key(path, key, key, [*ServerConfig.model_fields, *EngineConfig.model_fields])
    if engine_part:
        engine_out: dict[str, Any] = {}
        for key, (value, shown) in engine_part.items():
            if key not in EngineConfig.model_fields:
                raise _unknown_key(path, shown, key, EngineConfig.model_fields)
            engine_out[key] = value
            _walk(EngineConfig, key, value, ("engine", key), shown, path, src)
        out["engine"] = engine_out
    for s in SETTINGS:  # TOML has no null: "none" switches an optional model off, as on the CLI
        value = _get(out, s.path)
        if s.kind == "optional" and isinstance(value, str) and value.strip().lower() in _NONE_WORDS:
            _set(out, s.path, None)
    _resolve_file_paths(out, path.parent)
    return out, src


def _walk(
    model: type[BaseModel],
    key: str,
    value: Any,
    at: tuple[str, ...],
    shown: str,
    file: Path,
    src: dict[tuple[str, ...], str],
) -> None:
    """Check a TOML key (and, for a table, its keys) against the model; record where each came from."""
    annotation = model.model_fields[key].annotation
    sub = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    if sub is None:
        src[at] = f"{file}: {shown}"
        return
    if not isinstance(value, dict):
        raise ConfigError.for_field(f"{file}: {shown}", value, f"must be a table ([{shown}])")
    for k, v in value.items():
        if k not in sub.model_fields:
            raise _unknown_key(file, f"{shown}.{k}", k, sub.model_fields)
        _walk(sub, k, v, (*at, k), f"{shown}.{k}", file, src)


def _unknown_key(file: Path, shown: str, key: str, valid: Any) -> ConfigError:
    hint = _did_you_mean(key, valid)
    setting = BY_NAME.get(key)
    if not hint and setting is not None:
        hint = f" (did you mean {setting.toml_key}?)"
    return ConfigError(f"{file}: unknown key {shown!r}{hint}", field=shown, value=key, rule="unknown key")


def _did_you_mean(word: str, options: Any) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _resolve_file_paths(out: dict[str, Any], base: Path) -> None:
    """Relative paths in a TOML file are relative to the file, not to wherever the server starts."""

    def fix(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        p = Path(value).expanduser()
        return str(p if p.is_absolute() else base / p)

    for at in _PATH_FIELDS:
        value = _get(out, at)
        if value is None:
            continue
        _set(out, at, [fix(v) for v in value] if isinstance(value, list) else fix(value))
    for at in _MODEL_FIELDS:
        value = _get(out, at)
        # Hub ids look like relative paths; only values written as paths are paths.
        if isinstance(value, str) and value.startswith(("./", "../")):
            _set(out, at, str(base / value))


def _normalise_models(merged: dict[str, Any]) -> None:
    """Expand ``~`` in paths from every source: client configs pass flags and env without a shell."""
    for at in _MODEL_FIELDS:
        value = _get(merged, at)
        if isinstance(value, str) and value.startswith("~"):
            _set(merged, at, str(Path(value).expanduser()))
    for at in _PATH_FIELDS:
        value = _get(merged, at)
        if isinstance(value, (list, tuple)):
            _set(merged, at, [_expand_home(v) for v in value])
        elif value is not None:
            _set(merged, at, _expand_home(value))


def _expand_home(value: Any) -> Any:
    # "~nobody/x" (an unknown user) stays as given; pydantic or the path policy reports it.
    if isinstance(value, (str, Path)) and str(value).startswith("~"):
        try:
            return Path(value).expanduser()
        except RuntimeError:
            return value
    return value


def _config_error(exc: ValidationError, sources: Mapping[tuple[str, ...], str]) -> ConfigError:
    """A pydantic error re-worded to name the flag, variable or TOML key the bad value came from."""
    messages = []
    fields: list[tuple[str, Any, str]] = []
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"])
        name = ".".join(loc)
        for n in range(len(loc), 0, -1):
            if loc[:n] in sources:
                name = sources[loc[:n]]
                break
        else:
            s = BY_PATH.get(loc)
            if s is not None:
                name = s.toml_key
        value = err.get("input")
        rule = err["msg"]
        messages.append(f"{name}={value!r}: {rule}")
        fields.append((name, value, rule))
    name, value, rule = fields[0] if fields else ("config", None, str(exc))
    return ConfigError("; ".join(messages) or str(exc), field=name, value=value, rule=rule)


# ---------------------------------------------------------------------------------------------
# Nested-dict helpers.


def _get(tree: Mapping[str, Any], at: Sequence[str]) -> Any:
    node: Any = tree
    for key in at:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def _set(tree: dict[str, Any], at: Sequence[str], value: Any) -> None:
    node = tree
    for key in at[:-1]:
        node = node.setdefault(key, {})
    node[at[-1]] = value


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``over`` into ``base`` in place (tables merge, everything else is replaced)."""
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _deep_merge(base[key], value)
        else:
            base[key] = value
    return base
