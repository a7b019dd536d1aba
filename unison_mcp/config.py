"""Server configuration: engine settings plus what only the MCP layer needs.

Filled from (lowest to highest precedence) defaults, an optional TOML file, ``UNISON_*``
environment variables and CLI flags; see :func:`load_config`.

Each setting is declared once, as a pydantic field of :class:`ServerConfig` or
:class:`~engine.config.EngineConfig` with its help text as the field's ``description``.
:data:`SETTINGS` is derived by walking those models (a nested model is a section): the flag is
``--<name>`` (``--max-side``), the variable ``UNISON_<NAME>`` (``UNISON_MAX_SIDE``) and the TOML
key the field's path (``[limits] max_side``), where ``<name>`` is the field name unless the
field's :class:`~engine.config.SettingMeta` says otherwise. The kind of value (bool, int, float,
path, paths, optional, choice) comes from the field's type, the choices from its ``Literal``.
:mod:`unison_mcp.flags` adds those flags to the command line's parser.

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
import re
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from engine.config import EngineConfig, Preset, SettingMeta, default_tiny_dir
from engine.errors import InvalidRequest, shown
from engine.pool.settings import PoolSettings

log = logging.getLogger(__name__)

#: Engine fields the server's own constructor also takes (they used to live here).
_ENGINE_INPUT_POLICY = ("allowed_roots", "max_input_bytes")

#: Units of a duration ("90s", "10m", "1h", "1h30m"); a bare number is seconds.
_DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_FOREVER_WORDS = frozenset({"forever", "never", "inf", "infinite", "none", "off"})
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([smhd])")


def parse_duration(value: Any) -> float:
    """Seconds in ``value``: ``"90s"``, ``"10m"``, ``"1h30m"``, ``"2.5"`` (seconds) or a number.

    ``"forever"`` (or ``never``, ``none``, ``off``) and negative numbers mean -1: keep forever.
    """
    if isinstance(value, bool):
        raise ValueError(f"{shown(value)} is not a duration")
    if isinstance(value, (int, float)):
        return -1.0 if value < 0 else float(value)
    text = str(value).strip().lower()
    if text in _FOREVER_WORDS:
        return -1.0
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        return -1.0 if number < 0 else number
    compact = text.replace(" ", "")
    parts = _DURATION.findall(compact)
    if not parts or "".join(n + u for n, u in parts) != compact:
        raise ValueError(
            f"{shown(value)} is not a duration: use e.g. '90s', '10m', '1h30m', seconds, or 'forever'"
        )
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


#: A duration setting: a float of seconds, also spelled '10m' on the command line, env and TOML.
Duration = Annotated[float, BeforeValidator(parse_duration)]


class ServerConfig(BaseModel):
    engine: Annotated[EngineConfig, SettingMeta(section="models and devices")] = Field(
        default_factory=EngineConfig
    )
    wait_s: float = Field(45.0, ge=0, description="seconds a tool call waits before returning a job handle")
    queue_size: int = Field(8, ge=0, description="jobs that may wait behind the running one")
    transport: Literal["stdio", "http"] = Field("stdio", description="MCP transport")
    host: str = Field("127.0.0.1", description="HTTP bind address")
    port: int = Field(8765, ge=1, le=65535, description="HTTP port")
    # A token is taken as written: "none" or "off" is a (bad) token, never "authentication off".
    auth_token: Annotated[str | None, SettingMeta(none_words=False)] = Field(
        None, description="HTTP bearer token (prefer the env var: flags show in `ps`)"
    )
    preload: bool = Field(False, description="load the models at start (in the background)")
    preview_side: int = Field(
        384,
        ge=16,
        le=1024,
        description="longest side of inline previews in pixels (of each frame of a video's sheet)",
    )
    keep_jobs: int = Field(64, ge=1, description="finished jobs kept for the job tool")
    # --no-auth is the word people look for: the field is its positive, so that argparse's
    # --auth/--no-auth pair spells it.
    auth: bool = Field(
        True,
        description="require the token to serve HTTP beyond this machine; --no-auth serves a "
        "non-loopback host without one, on purpose (anyone who can reach the port can use it)",
    )
    allowed_hosts: Annotated[list[str], SettingMeta(flag="--allowed-host")] = Field(
        default_factory=list,
        description="a Host name a reverse proxy sends, admitted besides localhost "
        "(NAME: any port, NAME:PORT: that port; repeatable; env: comma-separated)",
    )
    keep_alive: Duration = Field(
        -1.0,
        description="unload the models after this long without a job, freeing the GPU; the next call "
        "loads them again (e.g. '10m', '90s', '1h'; 'forever' or negative: never, the default)",
    )
    public_url: str | None = Field(
        None,
        description="the server's address as users reach it, for gallery links "
        "(e.g. https://gpu.example.com; default http://HOST:PORT)",
    )
    max_read_bytes: int = Field(
        16 * 1024**2,
        ge=1,
        description="largest output resources/read returns (base64 in one message); a larger one is "
        "read from its file path or the gallery",
    )
    http_session_idle: Duration = Field(
        600.0,
        description="HTTP: an MCP session with no request for this long is closed, freeing its slot "
        "(e.g. '10m'; 'forever': never)",
    )
    http_max_sessions: int = Field(
        100, ge=1, description="HTTP: MCP sessions open at once; one more is answered 503 until one ends"
    )
    # The pool's own settings (engine/pool/settings.py); nothing of Ray is imported to read them.
    pool: Annotated[PoolSettings, SettingMeta(section="pool of GPUs (Ray Serve)")] = Field(
        default_factory=PoolSettings
    )

    @model_validator(mode="before")
    @classmethod
    def _input_policy_goes_to_the_engine(cls, data: Any) -> Any:
        # ServerConfig(allowed_roots=..., max_input_bytes=...) keeps working: the engine applies
        # the input policy now (so the CLI and the Python API get the same checks as MCP).
        if not isinstance(data, Mapping) or not any(k in data for k in _ENGINE_INPUT_POLICY):
            return data
        data = dict(data)
        moved = {k: data.pop(k) for k in _ENGINE_INPUT_POLICY if k in data}
        engine = data.get("engine")
        if isinstance(engine, EngineConfig):
            data["engine"] = EngineConfig.model_validate({**engine.model_dump(), **moved})
        else:
            data["engine"] = {**(engine or {}), **moved}
        return data

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

    @property
    def max_input_bytes(self) -> int:
        return self.engine.max_input_bytes

    @property
    def http_session_idle_s(self) -> float | None:
        """Seconds an idle HTTP session lives; ``None``: until its client ends it."""
        return None if self.http_session_idle <= 0 else self.http_session_idle

    @property
    def keep_alive_s(self) -> float | None:
        """Seconds the models stay loaded without a job; ``None``: forever."""
        return None if self.keep_alive < 0 else self.keep_alive

    def roots(self) -> list[Path]:
        """Allowed input roots, resolved, with the output directory last.

        No roots configured (``None``) means only the output directory here: a server answers
        whoever connects, so it reads nothing else unless told to.
        """
        out = [Path(r).expanduser().resolve() for r in self.engine.allowed_roots or ()]
        if self.output_dir not in out:
            out.append(self.output_dir)
        return out


class ConfigError(InvalidRequest):
    """A configuration value or key is wrong; the message names where it came from."""

    code = "config_error"


# ---------------------------------------------------------------------------------------------
# The settings, derived from the models.

Kind = Literal["str", "optional", "path", "paths", "strs", "int", "float", "bool", "choice"]

#: Values of an ``optional`` setting that mean "not set" (e.g. ``--projector none``).
_NONE_WORDS = frozenset({"", "none", "null", "off"})
_TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
_FALSE_WORDS = frozenset({"0", "false", "no", "off"})

#: ``UNISON_*`` variables that are read but are not settings (no "unknown variable" warning).
OTHER_ENV = frozenset({"UNISON_CONFIG", "UNISON_TINY_DIR"})

PRESETS: tuple[str, ...] = typing.get_args(Preset)


@dataclass(frozen=True)
class Setting:
    """One configurable value, as derived from its field: where it lives and how it is spelled."""

    name: str  # argparse dest; the flag and env var are derived from it
    path: tuple[str, ...]  # field path inside ServerConfig
    kind: Kind
    help: str
    section: str  # CLI help group
    flag_name: str | None = None  # when the flag is not --<name>
    aliases: tuple[str, ...] = ()
    choices: tuple[str, ...] | None = None
    hub_or_path: bool = False
    #: A float of seconds that is also written '10m', '90s' (:data:`Duration`).
    duration: bool = False

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


def _meta(field: FieldInfo) -> SettingMeta:
    return next((m for m in field.metadata if isinstance(m, SettingMeta)), SettingMeta())


def _submodel(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _kind(annotation: Any, meta: SettingMeta) -> tuple[Kind, tuple[str, ...] | None]:
    """The setting kind (and choices) a field's type implies: ``int | None`` is an optional int."""
    args = typing.get_args(annotation)
    is_union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    optional = is_union and type(None) in args
    inner = [a for a in args if a is not type(None)] if is_union else [annotation]
    if len(inner) != 1:
        raise TypeError(f"no setting kind for {annotation!r}: one type, optionally with None")
    (t,) = inner
    if typing.get_origin(t) is Literal:
        return "choice", tuple(str(a) for a in typing.get_args(t))
    if typing.get_origin(t) is list and typing.get_args(t) == (Path,):
        return "paths", None
    if typing.get_origin(t) is list and typing.get_args(t) == (str,):
        return "strs", None
    simple: dict[Any, Kind] = {bool: "bool", int: "int", float: "float", Path: "path"}
    if t in simple:
        return simple[t], None
    if t is str:
        return ("optional" if optional and meta.none_words else "str"), None
    raise TypeError(f"no setting kind for {annotation!r}")


def _derive(
    model: type[BaseModel], at: tuple[str, ...], section: str
) -> tuple[list[Setting], dict[tuple[str, ...], str]]:
    """Walk ``model``'s fields: each leaf is a setting unless its metadata marks it internal."""
    settings: list[Setting] = []
    internal: dict[tuple[str, ...], str] = {}
    for key, field in model.model_fields.items():
        meta, path = _meta(field), (*at, key)
        sub = _submodel(field.annotation)
        if sub is not None:
            more, hidden = _derive(sub, path, meta.section or section)
            settings += more
            internal.update(hidden)
        elif meta.internal is not None:
            internal[path] = meta.internal
        else:
            kind, choices = _kind(field.annotation, meta)
            settings.append(
                Setting(
                    name=meta.name or key,
                    path=path,
                    kind=kind,
                    help=field.description or "",
                    section=meta.section or section,
                    flag_name=meta.flag,
                    aliases=meta.aliases,
                    choices=choices,
                    hub_or_path=meta.hub_or_path,
                    duration=any(
                        isinstance(m, BeforeValidator) and m.func is parse_duration for m in field.metadata
                    ),
                )
            )
    return settings, internal


def _check_unique(settings: Sequence[Setting]) -> None:
    # Two fields of the same name in different sections need a SettingMeta(name=...) apart.
    for spelling in ("name", "flag", "env"):
        seen: dict[str, Setting] = {}
        for s in settings:
            word = getattr(s, spelling)
            if word in seen:
                raise TypeError(f"{'.'.join(s.path)} and {'.'.join(seen[word].path)} are both {word}")
            seen[word] = s


_settings, _internal = _derive(ServerConfig, (), "server")
_check_unique(_settings)

#: Every setting, in declaration order (the order of the CLI help).
SETTINGS: tuple[Setting, ...] = tuple(_settings)
#: Fields that are not settings, with why: the program sets them itself.
INTERNAL: Mapping[tuple[str, ...], str] = types.MappingProxyType(_internal)
#: The CLI help groups, in order.
SECTIONS: tuple[str, ...] = tuple(dict.fromkeys(s.section for s in SETTINGS))
BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
BY_PATH: dict[tuple[str, ...], Setting] = {s.path: s for s in SETTINGS}
BY_ENV: dict[str, Setting] = {s.env: s for s in SETTINGS}

#: Fields holding filesystem paths: relative values in a TOML file are taken relative to the file.
_PATH_FIELDS = {s.path for s in SETTINGS if s.kind in ("path", "paths")}
#: Fields holding a hub id or a local path: ``~`` and ``./``-style values are paths.
_MODEL_FIELDS = {s.path for s in SETTINGS if s.hub_or_path}


# ---------------------------------------------------------------------------------------------
# Loading.


def load_config(
    args: argparse.Namespace | Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    toml_path: Path | str | None = None,
) -> ServerConfig:
    """Build the configuration: defaults < TOML file < ``UNISON_*`` env < CLI flags.

    ``args`` is the CLI's namespace (only flags the user gave are present; unrelated attributes
    are ignored) or a mapping from setting names (:data:`BY_NAME`) to values. The TOML file is
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
    root = Path(env["UNISON_TINY_DIR"]) if env.get("UNISON_TINY_DIR") else default_tiny_dir()
    log.info("preset %s: tiny models in %s (built on first use)", preset, root)
    # Nothing is built here: the engine builds missing tiny models on first load, so `serve`
    # answers at once.
    return {"engine": EngineConfig.tiny(root).model_dump()}


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
        elif s.kind in ("paths", "strs"):
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
        # An empty variable is "not set", as if it were absent.
        return [p for p in text.split(os.pathsep) if p] or None
    if s.kind == "strs":
        # Commas, not os.pathsep: host names carry ":port".
        return [w.strip() for w in text.split(",") if w.strip()]
    if s.kind == "optional" and text.lower() in _NONE_WORDS:
        return None
    if s.kind == "choice" and s.choices is not None and text not in s.choices:
        raise ConfigError.for_field(s.env, raw, f"must be one of {', '.join(s.choices)}")
    # Numbers stay strings here: pydantic converts them and its error is mapped to the variable.
    return text


def _toml_layer(path: Path) -> tuple[dict[str, Any], dict[tuple[str, ...], str]]:
    path = path.expanduser()
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
    if at in INTERNAL:
        why = INTERNAL[at]
        raise ConfigError(f"{file}: {shown} is not a setting ({why})", field=shown, value=value, rule=why)
    sub = _submodel(model.model_fields[key].annotation)
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
        messages.append(f"{name}={shown(value)}: {rule}")
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
