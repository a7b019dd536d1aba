"""The ``unison-mcp`` command: the MCP server, and the engine from a terminal.

Commands: ``serve`` (the MCP server), ``plan`` (dry run of ``run``: prints the plan as JSON),
``understand`` (prints the answer), ``run`` (plan + answer or generate, with a progress bar),
``generate`` (one typed task), ``make-tiny`` (build the tiny test models), ``doctor`` (what is
installed and found) and ``download`` (fetch the configured weights).

Results go to stdout through :func:`emit` and nowhere else; logs and progress go to stderr (stdout
belongs to the MCP protocol under ``serve``). Engine errors end the command with one line on
stderr and exit status 2. What is slow to import (the engine, the MCP SDK behind the server and
its HTTP app) is imported inside the command functions that use it, so that ``--help`` stays
instant; so is the tiny-model factory, which only ``make-tiny`` runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import textwrap
import time
import typing
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.api import parse_arguments, request_model
from engine.config import Limits, default_tiny_dir
from engine.errors import InvalidRequest, UnisonError
from engine.imports import settle_before_exit
from engine.plan import Margins
from engine.results import Sampling
from engine.tasks import GENERATION_TASKS, TASKS
from engine.vocab import MediaKind, Role, Task

from . import __version__
from .config import BY_NAME, SECTIONS, ServerConfig, load_config
from .doctor import format_report, run_doctor
from .download import ROLES, download_weights
from .errors import describe_error
from .flags import add_config_arguments, add_preset_argument
from .progress import Progress, stage_label
from .quiet import quiet_libraries

if TYPE_CHECKING:
    from engine.engine import Engine

log = logging.getLogger(__name__)

#: Every section of the engine's settings (derived: a new settings model needs no change here).
ENGINE_SECTIONS = tuple(s for s in SECTIONS if s != "server")
SERVER_SECTIONS = SECTIONS

#: Exit status of a command that failed on an engine error (bad request, missing weights...).
EXIT_ERROR = 2


def emit(text: str) -> None:
    """Write one result to stdout: the only place this program prints."""
    sys.stdout.write(text + "\n")  # stdout-ok
    sys.stdout.flush()


# ---------------------------------------------------------------------------------------------
# Commands.


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import run_server  # the MCP SDK (~0.4 s): only to serve

    config = load_config(args)
    verbose = getattr(args, "verbose", 0)
    # A server says when it is ready and when it stops, even without -v; with -v its ready
    # message lists every model, the found ones too (their lines are the service's DEBUG).
    logging.getLogger("unison_mcp.service").setLevel(logging.DEBUG if verbose else logging.INFO)
    if not verbose:
        # So does a pool: its cluster, its replicas, and their stop.
        logging.getLogger("engine.pool").setLevel(logging.INFO)
    # run_server logs the "ready" message (transport, folders, models) and owns the signals:
    # it returns 128 + the signal's number when SIGINT or SIGTERM stopped it.
    return run_server(config)


def cmd_plan(args: argparse.Namespace) -> int:
    config = load_config(args)
    engine, backend = _engine(config), config.engine.planner_backend
    if (backend or config.engine.backend) == "rules":
        plan = engine.plan(args.request, args.media or (), backend=backend)  # reads no file, loads nothing
    else:
        # A model planner reads the files: they are checked (opened, probed) before it loads.
        plan = engine.auto(args.request, args.media or (), dry_run=True, backend=backend).plan
    emit(json.dumps(plan.summary(), ensure_ascii=False))
    return 0


def cmd_understand(args: argparse.Namespace) -> int:
    config = load_config(args)
    with _Progress(config) as progress:
        result = _engine(config).understand(args.question, args.media or (), control=progress.control())
    emit(result.model_dump_json() if args.json else result.answer)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    config = load_config(args)
    with _Progress(config) as progress:
        result = _engine(config).auto(
            args.request,
            args.media or (),
            sampling=Sampling(seed=args.seed),
            dry_run=args.dry_run,
            control=progress.control(),
            backend=config.engine.planner_backend,
        )
    if args.json:
        emit(result.model_dump_json())
        return 0
    emit(json.dumps(result.plan.summary(), ensure_ascii=False))
    if result.answer is not None:
        emit(result.answer.answer)
    if result.generation is not None:
        for out in result.generation.outputs:
            emit(out.path)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    config = load_config(args)
    limits = config.engine.limits
    request = parse_arguments("generate", limits, generate_arguments(args))
    engine = _engine(config)
    admitted = engine.admit(request)  # the same checks as the generate tool's, in the same order
    with _Progress(config) as progress:
        result = engine.run(admitted, control=progress.control())
    log.info("seed %d, %d steps", result.seed, result.steps)
    if args.json:
        emit(result.model_dump_json())
    else:
        for out in result.outputs:
            emit(out.path)
    return 0


def cmd_make_tiny(args: argparse.Namespace) -> int:
    from engine.tiny import ensure_tiny  # the tiny-model factory: only to build

    root = Path(args.dir) if args.dir else default_tiny_dir()
    t0 = time.perf_counter()
    paths = ensure_tiny(root)
    log.info("tiny models ready in %s (%.1f s)", paths.root, time.perf_counter() - t0)
    emit(
        json.dumps(
            {k: str(v) for k, v in dataclasses.asdict(paths).items()},
            ensure_ascii=False,
        )
    )
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    report = run_doctor(load_config(args))
    emit(json.dumps(report.as_dict(), ensure_ascii=False) if args.json else format_report(report))
    return 0 if report.ok else 1


def cmd_download(args: argparse.Namespace) -> int:
    config = load_config(args)
    for item in download_weights(config.engine, only=args.only, dry_run=args.dry_run):
        emit(f"{item.role}\t{item.spec}\t{item.local_path or item.action}")
    return 0


def cmd_gallery(args: argparse.Namespace) -> int:
    from .http import serve_gallery  # the MCP SDK and starlette: only to serve

    serve_gallery(load_config(args))
    return 0


# ---------------------------------------------------------------------------------------------
# Helpers shared by the commands.


def _engine(config: ServerConfig) -> Engine:
    from engine.engine import Engine  # the engine and what it imports stay out of --help

    return Engine(config.engine)


def natural_role(task: Task, kind: MediaKind) -> Role | None:
    """The role an unlabelled ``--image``/``--video`` plays in ``task``: its first input of that kind.

    Read from the task table (so new tasks need no change here). Masks are never implied: a file
    is a mask only when given with ``--mask``.
    """
    for rule in TASKS[task].roles:
        if kind in rule.kinds and rule.role is not Role.MASK:
            return rule.role
    return None


#: ``generate`` request fields whose flags would repeat a configuration flag of the same name
#: (``--steps`` sets the sampling default, which for one run is the same thing).
_CONFIGURED = ("steps", "guidance", "negative_prompt", "conditioning_scale", "fps", "preserve", "turbo")
#: Shorter spellings kept from earlier versions.
_ALIASES = {"num_frames": ("--frames",), "duration_s": ("--duration",), "reference": ("--ref",)}


def _generate_fields() -> list[tuple[str, Any]]:
    """The request fields ``generate`` has flags for, with their pydantic field (help, type)."""
    fields = request_model("generate", Limits()).model_fields
    return [(name, f) for name, f in fields.items() if name not in ("task", "prompt", *_CONFIGURED)]


def generate_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The ``generate`` request a command line spells (given flags only), for ``parse_arguments``."""
    task = Task(args.task)
    data: dict[str, Any] = {"task": args.task, "prompt": args.prompt}
    for name, _ in _generate_fields():
        value = getattr(args, name, None)
        if value is None:
            continue
        if name == "margins":
            value = parse_margins(value).model_dump()
        elif name == "loras":
            value = [parse_lora_choice(v) for v in value]
        elif name in {r.value for r in Role}:
            value = [_expand(v) for v in value] if isinstance(value, list) else _expand(value)
        data[name] = value
    for dest, kind in (("image", MediaKind.IMAGE), ("video", MediaKind.VIDEO)):
        for path in getattr(args, dest, None) or []:
            role = natural_role(task, kind)
            if role is None:
                flags = [f"--{r.role.value.replace('_', '-')}" for r in TASKS[task].roles]
                takes = ", ".join(flags) if flags else "no input files"
                raise InvalidRequest.for_field(
                    f"--{dest}", path, f"{task} takes no {kind} here; it takes {takes}"
                )
            if role is Role.REFERENCE:
                data.setdefault("reference", []).append(_expand(path))
            elif role.value in data:
                raise InvalidRequest.for_field(f"--{dest}", path, f"{task} takes one {role.value}")
            else:
                data[role.value] = _expand(path)
    return data


def parse_lora_choice(text: str) -> dict[str, Any]:
    """``NAME[:STRENGTH]`` (``--use-lora``) -> one item of the request's ``loras``."""
    name, colon, strength = text.rpartition(":")
    if not colon:
        return {"name": text}
    try:
        return {"name": name, "strength": float(strength)}
    except ValueError:
        raise InvalidRequest.for_field("--use-lora", text, "must be NAME or NAME:STRENGTH") from None


def parse_margins(text: str) -> Margins:
    """``L,T,R,B`` (or one number for all four sides) in output pixels."""
    parts = [p.strip() for p in text.split(",")]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) == 1:
        values *= 4
    if len(values) != 4 or any(v < 0 for v in values):
        raise InvalidRequest.for_field(
            "--margins", text, "must be L,T,R,B (four whole numbers of pixels, 0 or more) or one number"
        )
    left, top, right, bottom = values
    return Margins(left=left, top=top, right=right, bottom=bottom)


def download_roles() -> tuple[str, ...]:
    return tuple(ROLES)


def _expand(path: str) -> str:
    return str(Path(path).expanduser())


class _Progress(Progress):
    """The commands' progress on stderr (:mod:`unison_mcp.progress`), the loading stages named
    with the size of ``config``'s weights as each begins."""

    def __init__(self, config: ServerConfig | None = None):
        super().__init__(labels=partial(stage_label, config.engine) if config is not None else None)


# ---------------------------------------------------------------------------------------------
# The parser.


class HelpFormatter(argparse.HelpFormatter):
    """argparse's help, wrapped at spaces only: a hub id (``ali-vilab/Unison``), a path or a flag
    is never cut at a hyphen or inside itself, so what the help shows copies and pastes whole."""

    @staticmethod
    def _wrapper(width: int, indent: str = "") -> textwrap.TextWrapper:
        return textwrap.TextWrapper(
            width,
            initial_indent=indent,
            subsequent_indent=indent,
            break_on_hyphens=False,
            break_long_words=False,
        )

    def _split_lines(self, text: str, width: int) -> list[str]:
        return self._wrapper(width).wrap(" ".join(text.split()))

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return self._wrapper(width, indent).fill(" ".join(text.split()))


def _add_global(parser: argparse.ArgumentParser) -> None:
    """Flags accepted before or after the command name (defaults suppressed so neither overwrites)."""
    g = parser.add_argument_group("global")
    g.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=argparse.SUPPRESS,
        help="log to stderr: -v info, -vv debug (with tracebacks)",
    )
    g.add_argument(
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="TOML configuration file [UNISON_CONFIG]",
    )
    add_preset_argument(g)


def _request_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "request", help='the request; input files inline as ###path###, e.g. "animate ###cat.png###"'
    )
    p.add_argument(
        "--media", action="append", metavar="FILE", help="an input file not marked inline (repeatable)"
    )


def _understand_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("question", help="the question; files may also be marked inline as ###path###")
    p.add_argument(
        "--media", action="append", metavar="FILE", help="an image or video to ask about (repeatable)"
    )
    p.add_argument("--json", action="store_true", help="print the whole result as JSON")


def _run_arguments(p: argparse.ArgumentParser) -> None:
    _request_arguments(p)
    p.add_argument("--seed", type=_seed, help="random seed (default: random, reported)")
    p.add_argument("--dry-run", action="store_true", help="only plan (same as `plan`)")
    p.add_argument("--json", action="store_true", help="print the whole result as JSON")


def _generate_arguments(p: argparse.ArgumentParser) -> None:
    _add_generate_arguments(p)
    # After the task's own flags, so that --help shows the inputs before 140 lines of settings.
    add_config_arguments(p, ENGINE_SECTIONS)


def _make_tiny_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", nargs="?", help="where (default: $UNISON_TINY_DIR or ~/.cache/unison-mcp/tiny)")


def _json_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def _download_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--only", action="append", choices=download_roles(), help="fetch only these (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="list what would be fetched")


def _gallery_arguments(p: argparse.ArgumentParser) -> None:
    output_dir = BY_NAME["output_dir"]
    p.add_argument(
        output_dir.flag,
        dest=output_dir.name,
        metavar="DIR",
        default=argparse.SUPPRESS,
        help=f"{output_dir.help} [{output_dir.env}]",
    )


@dataclasses.dataclass(frozen=True)
class Command:
    """One command of the CLI: its name, short usage, function, what it does, the settings sections
    it takes flags for, and its own arguments."""

    name: str
    usage: str
    run: Callable[[argparse.Namespace], int]
    about: str
    sections: Sequence[str] = ()
    arguments: Callable[[argparse.ArgumentParser], None] | None = None


#: The commands, in the order ``--help`` lists them.
COMMANDS: tuple[Command, ...] = (
    Command("serve", "", cmd_serve, "run the MCP server (stdio by default)", SERVER_SECTIONS),
    Command(
        "plan",
        "REQUEST",
        cmd_plan,
        "print the plan for a request as JSON (the dry run of `run`)",
        ENGINE_SECTIONS,
        _request_arguments,
    ),
    Command(
        "understand",
        "QUESTION",
        cmd_understand,
        "answer a question about text, images or a video",
        ENGINE_SECTIONS,
        _understand_arguments,
    ),
    Command(
        "run",
        "REQUEST",
        cmd_run,
        "plan a request, then answer it or generate for it (progress on stderr)",
        ENGINE_SECTIONS,
        _run_arguments,
    ),
    Command(
        "generate",
        "--task TASK --prompt TEXT",
        cmd_generate,
        "run one generation task with typed parameters (progress on stderr)",
        arguments=_generate_arguments,
    ),
    Command(
        "make-tiny",
        "[DIR]",
        cmd_make_tiny,
        "build the tiny random test models (real on-disk formats)",
        arguments=_make_tiny_arguments,
    ),
    Command(
        "doctor",
        "",
        cmd_doctor,
        "check devices, versions and which weights are present (exit 1 if something is missing)",
        SERVER_SECTIONS,
        _json_argument,
    ),
    Command(
        "download",
        "",
        cmd_download,
        "fetch the configured weights from the Hugging Face hub (progress on stderr)",
        ENGINE_SECTIONS,
        _download_arguments,
    ),
    Command(
        "gallery",
        "",
        cmd_gallery,
        "serve the gallery of an output directory on 127.0.0.1 (for stdio users; Ctrl-C stops it)",
        ("server",),
        _gallery_arguments,
    ),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unison-mcp",
        description="Unison (Qwen2.5-VL planner + Wan2.1-VACE generator) as an MCP server and a CLI.",
        epilog="Settings: flags > UNISON_* environment variables > TOML file (--config) > defaults.",
        allow_abbrev=False,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"unison-mcp {__version__}")
    _add_global(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        # A short usage line: the full one would list every configuration flag.
        p = sub.add_parser(
            command.name,
            help=command.about,
            description=command.about,
            usage=f"%(prog)s {command.usage}".rstrip() + " [options]",
            allow_abbrev=False,
            formatter_class=HelpFormatter,
        )
        _add_global(p)
        if command.sections:
            add_config_arguments(p, command.sections)
        if command.arguments is not None:
            command.arguments(p)
        p.set_defaults(func=command.run)
    return parser


def _add_generate_arguments(p: argparse.ArgumentParser) -> None:
    """``generate``'s flags: one per field of the engine's ``generate`` request (its help text too)."""
    tasks = sorted(t.value for t in GENERATION_TASKS)
    p.add_argument("--task", required=True, choices=tasks, metavar="TASK", help="one of: " + ", ".join(tasks))
    p.add_argument("--prompt", required=True, help="what to make")
    files = p.add_argument_group(
        "input files",
        "--image/--video take the task's natural role (image_edit: source, image_to_video: first frame, "
        "video_control: control...); the other flags name the role",
    )
    files.add_argument("--image", action="append", metavar="PATH", help="an input image (repeatable)")
    files.add_argument("--video", action="append", metavar="PATH", help="an input video")
    shape = p.add_argument_group("output")
    roles = {r.value for r in Role}
    for name, field in _generate_fields():
        group = files if name in roles else shape
        flags = ("--" + name.replace("_", "-"), *_ALIASES.get(name, ()))
        kind = typing.get_args(field.annotation) or (field.annotation,)
        common: dict[str, Any] = {"dest": name, "help": (field.description or "") + _range_text(field)}
        if name in roles:
            multi = typing.get_origin(field.annotation) is list
            group.add_argument(*flags, metavar="PATH", action="append" if multi else None, **common)
        elif name == "margins":
            group.add_argument(*flags, metavar="L,T,R,B", **common)
        elif name == "loras":
            # "--lora" configures one (NAME=PATH); this picks configured ones for the run.
            group.add_argument("--use-lora", action="append", metavar="NAME[:STRENGTH]", **common)
        elif name == "seed":
            group.add_argument(*flags, type=_seed, **common)
        elif int in kind:
            group.add_argument(*flags, type=int, metavar="N", **common)
        elif float in kind:
            group.add_argument(*flags, type=float, metavar="X", **common)
        else:
            group.add_argument(*flags, **common)
    shape.add_argument("--json", action="store_true", help="print the whole result as JSON")


def _range_text(field: Any) -> str:
    """A number's range as the help states it (`` (1-4)``): the schema states it to a calling model,
    the request field's words do not repeat it; a person reading ``--help`` sees no schema. Lengths
    and the seed's (any 64-bit number) are left out."""
    low = next((m.ge for m in field.metadata if hasattr(m, "ge")), None)
    high = next((m.le for m in field.metadata if hasattr(m, "le")), None)
    if low is None or high is None or high >= 2**62:
        return ""
    return f" ({low:g}-{high:g})"


def _seed(text: str) -> int:
    value = int(text)
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"seed {value} must be between 0 and 2**63-1")
    return value


# ---------------------------------------------------------------------------------------------
# Entry point.


class _StderrHandler(logging.StreamHandler):
    """Always writes to the *current* ``sys.stderr`` (which tests and embedders may swap)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def setup_logging(verbose: int) -> None:
    """Logs to stderr only: -v shows this project's INFO, -vv everything at DEBUG.

    Without -v the libraries' known noise is hidden (:mod:`unison_mcp.quiet`); with it, nothing is.
    """
    if not verbose:
        quiet_libraries()
    root = logging.getLogger()
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose >= 2 else logging.WARNING)
    ours = logging.DEBUG if verbose >= 2 else logging.INFO if verbose == 1 else logging.WARNING
    for name in ("engine", "unison_mcp"):
        logging.getLogger(name).setLevel(ours)


def entry() -> None:
    """The ``unison-mcp`` command and ``python -m unison_mcp``: :func:`main`, then the process ends.

    :func:`main` is also called in-process (the tests); only here, with nothing left to run, are
    the objects put out of the collector's sight first (:func:`engine.imports.settle_before_exit`).
    """
    status = main()
    settle_before_exit()
    raise SystemExit(status)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 ok, 1 doctor found problems, 2 error)."""
    args = build_parser().parse_args(argv)
    verbose = getattr(args, "verbose", 0)
    setup_logging(verbose)
    try:
        return int(args.func(args) or 0)
    except UnisonError as exc:
        if verbose:
            log.error("%s failed", args.command, exc_info=exc)
        # The MCP tools' words and hints ("run `unison-mcp doctor`..."), on one line.
        message = " ".join(describe_error(exc, tool=args.command, cli=True).split())
        sys.stderr.write(f"unison-mcp {args.command}: {message}\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        sys.stderr.write(f"unison-mcp {args.command}: interrupted\n")
        return 130
