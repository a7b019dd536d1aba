#!/usr/bin/env python
"""What constrained decoding costs a plan, and the libraries compared (tiny models, CPU).

Each of ``--requests`` generated requests (:func:`engine.tiny.requests.generated_requests`: eight
languages, 0 to 4 files) is planned by both model backends of the tiny random Qwen (routed
``instruct``, so the adapter stays unmerged and both models are one switch apart), through
:func:`engine.planners.route.route` with the fallback off, in each mode:

- ``free``: no grammar; the answer is parsed after the fact (the planners before issue 24);
- ``llguidance``: the project's path (:mod:`engine.planners.constrain`);
- ``xgrammar``: ``xgr.contrib.hf.LogitsProcessor`` on the same grammar (the Lark rewritten as
  xgrammar's EBNF, the added tokens as their text, which is how xgrammar matches them) and on the
  same JSON schema;
- ``outlines``: outlines 1.3's default JSON backend (outlines_core) for the instruct schema. Its
  context-free grammars go to llguidance itself, so the Unison grammar is not measured again.

The library is swapped at the planner's one seam (``QwenModel.constrainer``): the grammars, the
route and the checks are the project's in every mode. Per mode: requests that got a plan that
parses, checks and keeps a file; median ms per plan (generation included); tokens written per
plan; ms the mask took per token; ms to build and compile the request's grammar. Then how each
library treats the 14 added tokens. Times on a tiny model are mostly Python per token, and this
machine is shared: compare modes within one run, not across runs.

    python benchmarks/bench_planner.py [--requests 40] [--out FILE]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Table, describe_machine, median, write_report  # noqa: E402

log = logging.getLogger("bench_planner")

MODES = ("free", "llguidance", "xgrammar", "outlines")


def _ebnf(lark: str) -> str:
    """The Unison grammar (Lark, llguidance's dialect) as xgrammar's EBNF: the same rules, the added
    tokens as quoted text, the regular expressions as character classes."""
    lines = []
    for line in lark.strip().splitlines():
        name, body = line.split(": ", 1)
        body = re.sub(r"<[A-Z]+>", lambda m: json.dumps(m.group(0)), body).replace("/[^<]+/", "[^<]+")
        number = re.fullmatch(r"/\((.*)\)/", body)
        if number:
            alts = [re.findall(r"\[[^\]]+\]|.", alt) for alt in number.group(1).split("|")]
            body = (
                "("
                + " | ".join(" ".join(p if p.startswith("[") else json.dumps(p) for p in a) for a in alts)
                + ")"
            )
        lines.append(f"{'root' if name == 'start' else name} ::= {body}")
    return "\n".join(lines) + "\n"


class _Timed:
    """A library's logits processor, with the time its calls take added up."""

    def __init__(self, inner: Any, clock: dict[str, float]):
        self.inner, self.clock = inner, clock

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        started = time.perf_counter()
        out = self.inner(input_ids, scores)
        self.clock["mask_s"] += time.perf_counter() - started
        return out


class _Library:
    """One library at the planner's seam: ``processor(grammar)`` as :class:`Constrainer` has it."""

    def __init__(self, mode: str, planner: Any, clock: dict[str, float]):
        self.mode, self.planner, self.clock = mode, planner, clock
        self.views: dict[int, Any] = {}

    def _view(self) -> Any:
        q = self.planner
        key = id(q.tokenizer)
        if key not in self.views:
            started = time.perf_counter()
            width = int(q.model.get_output_embeddings().weight.shape[0])
            eos = q.tokenizer.convert_tokens_to_ids("<|im_end|>")
            if self.mode == "llguidance":
                from engine.planners.constrain import Constrainer

                self.views[key] = Constrainer(q.tokenizer, width, eos)
            elif self.mode == "xgrammar":
                import xgrammar as xgr

                info = xgr.TokenizerInfo.from_huggingface(q.tokenizer, vocab_size=width, stop_token_ids=[eos])
                self.views[key] = xgr.GrammarCompiler(info)
            else:
                import outlines
                from outlines.backends.outlines_core import OutlinesCoreBackend

                self.views[key] = OutlinesCoreBackend(outlines.from_transformers(q.model, q.tokenizer))
            self.clock["setup_s"] = max(self.clock.get("setup_s", 0.0), time.perf_counter() - started)
        return self.views[key]

    def processor(self, grammar: Any) -> _Timed:
        view = self._view()
        started = time.perf_counter()
        if self.mode == "llguidance":
            inner = view.processor(grammar)
        elif self.mode == "xgrammar":
            import xgrammar as xgr

            if grammar.schema is not None:
                compiled = view.compile_json_schema(
                    json.dumps(grammar.schema), any_whitespace=False, separators=(", ", ": ")
                )
            else:
                compiled = view.compile_grammar(_ebnf(grammar.lark))
            inner = xgr.contrib.hf.LogitsProcessor(compiled)
        else:
            inner = view.get_json_schema_logits_processor(json.dumps(grammar.schema), whitespace_pattern="")
        self.clock["compile_s"] += time.perf_counter() - started
        return _Timed(inner, self.clock)


def _installed(mode: str) -> bool:
    return mode == "free" or importlib.util.find_spec(mode) is not None


def _run(planner: Any, backend: str, mode: str, requests: list[str]) -> dict[str, Any]:
    """Plan every request with ``backend`` under ``mode``; what it took."""
    from engine.config import TINY_LIMITS
    from engine.errors import InvalidRequest, PlannerError
    from engine.plan import check_plan
    from engine.planners.route import route
    from engine.planners.rules import RulesPlanner
    from engine.request import parse_request

    clock = {"mask_s": 0.0, "compile_s": 0.0}
    library = _Library(mode, planner, clock)
    planner.constrainer = lambda: library  # the seam: every mode runs the project's grammars
    planner.backends[backend].constrained = mode != "free"
    real = planner.model.generate
    tokens = [0]

    def generate(*args: Any, **kwargs: Any) -> Any:
        out = real(*args, **kwargs)
        sequences = out.sequences if hasattr(out, "sequences") else out
        tokens[0] += int(sequences.shape[1] - kwargs["input_ids"].shape[1])
        return out

    planner.model.generate = generate
    times, ok = [], 0
    try:
        for text in requests:
            started = time.perf_counter()
            try:
                route(
                    parse_request(text),
                    backend,
                    primary=lambda r, want: planner.plan(r, backend=backend, want_features=want),
                    rules=RulesPlanner(),
                    check=lambda p: check_plan(p, TINY_LIMITS),
                    fallback=False,
                    want_features=False,
                )
                ok += 1
            except (PlannerError, InvalidRequest) as e:
                log.info("%s/%s: %r: %s", backend, mode, text, e)
            times.append(time.perf_counter() - started)
    finally:
        planner.model.generate = real
        del planner.constrainer
    return {"ok": ok, "ms": median(times) * 1e3, "tokens": tokens[0] / len(requests), **clock}


def _special_tokens(planner: Any) -> Table:
    """Which first tokens each library allows for "Draw a cat" under the Unison grammar: the added
    tokens themselves, and spellings of them in pieces ("<", "<C", "<CF"...)."""
    import torch

    from engine.config import TINY_LIMITS
    from engine.grammar import unison_grammar
    from engine.planners.constrain import Grammar

    table = Table("library", "<CFI> as its own token", "spellings in pieces allowed", "what they are")
    lark = unison_grammar([], TINY_LIMITS, prompt="Draw a cat")
    with planner.using(adapter=True):
        tok = planner.tokenizer
        cfi = tok.convert_tokens_to_ids("<CFI>")
        for mode in ("llguidance", "xgrammar"):
            if not _installed(mode):
                continue
            clock = {"mask_s": 0.0, "compile_s": 0.0}
            processor = _Library(mode, planner, clock).processor(Grammar(lark=lark))
            width = int(planner.model.get_output_embeddings().weight.shape[0])
            scores = processor(torch.zeros((1, 1), dtype=torch.long), torch.zeros(1, width))
            allowed = torch.nonzero(scores[0] > float("-inf")).flatten().tolist()
            pieces = [tok.convert_ids_to_tokens(i) for i in allowed if i != cfi]
            pieces = [p for p in pieces if p.startswith("<") and p not in ("<CFV>", "<|im_end|>")]
            table.add(mode, "yes" if cfi in allowed else "no", len(pieces), ", ".join(pieces[:6]) or "–")
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=40, help="generated requests per backend and mode")
    parser.add_argument("--out", type=Path, help="also write the markdown report to this file")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    from engine.config import EngineConfig
    from engine.planners.qwen import QwenPlanner
    from engine.tiny import ensure_tiny
    from engine.tiny.requests import generated_requests

    planner = QwenPlanner(EngineConfig.tiny(ensure_tiny().root, planner_backend="instruct"))
    planner.load()
    requests = generated_requests(args.requests, seed=1)
    table = Table(
        "backend", "mode", "plans that route", "median ms / plan", "tokens / plan", "mask ms / token",
        "grammar ms / plan", "tokenizer view s",
    )  # fmt: skip
    for backend in ("unison", "instruct"):
        for mode in MODES:
            if not _installed(mode) or (mode == "outlines" and backend == "unison"):
                continue
            r = _run(planner, backend, mode, requests)
            per_token = r["mask_s"] * 1e3 / max(1.0, r["tokens"] * len(requests))
            table.add(
                backend, mode, f"{r['ok']}/{len(requests)}", r["ms"], r["tokens"],
                per_token if mode != "free" else None, r["compile_s"] * 1e3 / len(requests) if mode != "free" else None,
                r.get("setup_s"),
            )  # fmt: skip
    versions = []
    for name in ("llguidance", "xgrammar", "outlines", "outlines_core"):
        try:
            from importlib.metadata import version

            versions.append(f"{name} {version(name)}")
        except Exception:  # not installed: say so rather than fail
            versions.append(f"{name} –")
    report = "\n".join(
        [
            "# Constrained decoding of the planners (tiny models, CPU)",
            "",
            *(f"- {line}" for line in describe_machine()),
            f"- {', '.join(versions)}",
            f"- {len(requests)} generated requests (seed 1), route with the fallback off",
            "",
            table.markdown(),
            "",
            '## The 14 added tokens (first token of a plan for "Draw a cat")',
            "",
            _special_tokens(planner).markdown(),
        ]
    )
    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
