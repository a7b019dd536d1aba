#!/usr/bin/env python
"""The wheels ``bench_gpu.py`` needs on the lent GPU machine, downloaded here, their size checked.

The GPU machine (docs/performance.md, "Run it on the lent GPU machine") has Python 3.12, torch 2.11,
transformers 5.17, accelerate 1.15, huggingface_hub 1.33, numpy, Pillow, safetensors, scipy,
tokenizers and sentencepiece, no network, and none of the packages below. They travel with the
working tree as wheels in an ignored folder (``.whl/``, in ``.gitignore``) named in the run's
``carry``; working tree and wheels together must stay within 64 MiB. Only what the benchmark
imports is here (it never imports the MCP SDK: ``tests/test_startup.py`` checks the engine
modules it reaches), at the versions the project is tested with:

    python benchmarks/gpu_wheels.py                       # into .whl/, for the GPU machine
    python benchmarks/gpu_wheels.py --python-version 3.11 --dest /tmp/whl311   # the same set for a local check

Exits 1 when the wheels and the working tree together exceed the limit.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, Table  # noqa: E402

#: What may travel to the GPU machine in one call: the working tree and the carried folders.
LIMIT_MIB = 64.0
#: Where the wheels go, relative to the repository root (ignored by git, named in ``carry``).
DEST = ".whl"


@dataclass(frozen=True)
class Wheel:
    name: str
    version: str
    why: str
    #: What Python imports it as (the project name's spelling otherwise).
    module: str = ""

    @property
    def import_name(self) -> str:
        return self.module or self.name.replace("-", "_")


#: Each package the benchmark needs that the GPU machine lacks (or whose version there is unknown).
WHEELS = (
    Wheel("diffusers", "0.42.1", "the Wan-VACE pipeline"),
    Wheel("pydantic", "2.14.4", "engine.config's settings"),
    Wheel("pydantic-core", "2.50.5", "pydantic's compiled core"),
    Wheel("annotated-types", "0.8.0", "a pydantic dependency"),
    Wheel("typing-inspection", "0.4.5", "a pydantic dependency"),
    Wheel("typing-extensions", "4.16.0", "pydantic 2.14 needs >= 4.16; the machine's version is not known"),
    Wheel("ftfy", "6.3.1", "diffusers' Wan prompt cleaning calls ftfy.fix_text"),
    Wheel("wcwidth", "0.9.5", "an ftfy dependency"),
    Wheel("av", "18.1.1", "PyAV: the MP4 the project's rows write"),
    Wheel("torchao", "0.18.0", "the fp8 rows (built for torch >= 2.11)"),
    Wheel("llguidance", "1.9.1", "the planners' constrained decoding (the planning rows)"),
    Wheel("peft", "0.22.0", "the machine has peft, version not known; LoRA loading needs >= 0.17"),
)

#: What the GPU machine has that the benchmark's code imports, by import name (docs of the device
#: tool: its package list, Python 3.12). tests/test_bench_gpu.py checks that every package the
#: engine modules the benchmark reaches import is here, among the wheels, or never run by it.
ON_THE_MACHINE = frozenset(
    {"torch", "torchvision", "transformers", "tokenizers", "accelerate", "huggingface_hub", "safetensors"}
    | {"numpy", "PIL", "scipy", "sentencepiece", "requests", "peft"}
)

#: pip matches manylinux tags exactly: the usual ones, newest first (docs of the device tool).
PLATFORMS = (
    "manylinux_2_34_x86_64",
    "manylinux_2_31_x86_64",  # llguidance's abi3 wheel
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)


def download(wheels: tuple[Wheel, ...], dest: Path, python_version: str) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    cmd += ["--python-version", python_version, "--implementation", "cp", "-d", str(dest)]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    cmd += [f"{w.name}=={w.version}" for w in wheels]
    subprocess.run(cmd, check=True)


def wheel_files(dest: Path) -> dict[str, Path]:
    """The wheels in ``dest`` by normalised project name (``pydantic_core`` → ``pydantic-core``)."""
    return {p.name.split("-")[0].lower().replace("_", "-"): p for p in sorted(dest.glob("*.whl"))}


def tree_bytes(root: Path = REPO) -> int:
    """The working tree as the run tool sends it: tracked files and untracked ones git does not ignore."""
    listed = subprocess.run(
        ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    return sum(
        (root / name.decode()).stat().st_size for name in listed if name and (root / name.decode()).is_file()
    )


def check(
    dest: Path, wheels: tuple[Wheel, ...] = WHEELS, tree: int | None = None
) -> tuple[Table, float, list[str]]:
    """The table of wheels, the MiB that would travel, and what is wrong (missing, extra, too large)."""
    found = wheel_files(dest)
    problems = [f"missing: {w.name}=={w.version}" for w in wheels if w.name not in found]
    wanted = {w.name for w in wheels}
    problems += [
        f"not in the list (remove it: two versions stop the install): {p.name}"
        for n, p in found.items()
        if n not in wanted
    ]
    table = Table("wheel", "MiB", "why")
    why = {w.name: w.why for w in wheels}
    total = 0
    for name, path in sorted(found.items(), key=lambda item: -item[1].stat().st_size):
        size = path.stat().st_size
        total += size
        table.add(path.name, size / 2**20, why.get(name, "?"))
    tree = tree_bytes() if tree is None else tree
    table.add("the working tree (tracked + untracked, not ignored)", tree / 2**20, "travels with every call")
    mib = (total + tree) / 2**20
    if mib > LIMIT_MIB:
        problems.append(f"{mib:.1f} MiB would travel, over the {LIMIT_MIB:.0f} MiB a call may carry")
    return table, mib, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dest", type=Path, default=REPO / DEST, help=f"where the wheels go (default: {DEST}/)"
    )
    parser.add_argument(
        "--python-version", default="3.12", help="the target Python (the GPU machine's: 3.12)"
    )
    parser.add_argument("--no-download", action="store_true", help="only check what is in --dest")
    args = parser.parse_args(argv)
    args.dest.mkdir(parents=True, exist_ok=True)
    if not args.no_download:
        download(WHEELS, args.dest, args.python_version)
    table, mib, problems = check(args.dest)
    sys.stdout.write(table.markdown() + f"\n\nIn all: {mib:.1f} MiB of {LIMIT_MIB:.0f} MiB.\n")  # stdout-ok
    for problem in problems:
        sys.stderr.write(f"gpu_wheels: {problem}\n")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
