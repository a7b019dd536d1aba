"""The tools as the clients and frameworks people use read them (issue 21): what the tool list
costs in every conversation, every converter accepting every tool, and results that reach the model.

The converters are the frameworks' own code, run on the tools/list this server publishes:
openai-agents (its strict-mode conversion), google-genai (its MCP conversion and typed schema),
LangChain (``convert_to_openai_tool`` on the tool langchain-mcp-adapters builds) and pydantic-ai
(its MCP toolset, in process, and each model family's schema transformer). They are in the ``dev``
extra; a test skips only when its package is absent.

langchain-mcp-adapters is the one that cannot be imported beside mcp 2: its ``tools`` module imports
``mcp.server.fastmcp`` (mcp 1 only) and reads mcp 1's camelCase attributes, and its later versions
pin ``mcp<2``. A LangChain application runs it in its own environment, with mcp 1, against this
server over stdio or HTTP; so its content converter, the function that decides what the model gets,
is read from the installed package and run on this server's results as they cross the wire
(:func:`_langchain_block_converter`).

The tokens are counted with tiktoken's ``o200k_base``. tiktoken downloads that file on first use,
which is not possible here (and CI is as offline): ``bpe-openai``'s wheel ships the same file, which
is put where tiktoken caches its download; tiktoken checks its SHA-256 when it reads it back, and
``bpe-openai``'s own tokenizer must agree on every count.
"""

from __future__ import annotations

import ast
import copy
import gzip
import hashlib
import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from mcp import Client
from test_server_tools import FakeEngine, _write_mp4

from engine.config import EngineConfig, Limits, LoraSettings, SamplingDefaults
from unison_mcp.config import ServerConfig
from unison_mcp.server import build_server

#: What one conversation may spend on the tool list: names, descriptions, input schemas and
#: annotations of the tools a model sees; and on all the output schemas together.
TOOLS_BUDGET = 3000
OUTPUT_SCHEMAS_BUDGET = 1500

#: Where tiktoken downloads o200k_base from: it caches the file under the SHA-1 of this address.
O200K_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"

#: The configurations whose tool lists differ: the default (a turbo LoRA, no user LoRAs), and
#: every option offered (user LoRAs configured).
CONFIGS = {
    "default": LoraSettings(),
    "every-option": LoraSettings(adapters=["style=/nowhere/style.safetensors"]),
}


@pytest.fixture(params=list(CONFIGS))
def server(request, tmp_path: Path):
    root, out = tmp_path / "inputs", tmp_path / "outputs"
    root.mkdir()
    out.mkdir()
    _write_mp4(root / "clip.mp4")
    econf = EngineConfig(
        planner_model=None,
        output_dir=out,
        sampling=SamplingDefaults(steps=2),
        limits=Limits(default_width=64, default_height=48, default_frames=9),
        loras=CONFIGS[request.param],
    )
    return build_server(ServerConfig(engine=econf, allowed_roots=[root]), engine=FakeEngine(econf))


async def _tools(server) -> list[Any]:
    async with Client(server) as client:
        return (await client.list_tools()).tools


def _seen_by_the_model(tool: Any) -> bool:
    """Whether hosts show the tool to the model (an MCP Apps tool may be for its app alone)."""
    visibility = ((tool.meta or {}).get("ui") or {}).get("visibility", ["model"])
    return "model" in visibility


def _wire(tool: Any) -> dict[str, Any]:
    return tool.model_dump(mode="json", by_alias=True, exclude_none=True)


# ---------------------------------------------------------------------------------------------
# What the tool list costs


@pytest.fixture(scope="module")
def o200k(tmp_path_factory: pytest.TempPathFactory):
    tiktoken = pytest.importorskip("tiktoken")
    bpe_openai = pytest.importorskip("bpe_openai")
    cache = tmp_path_factory.mktemp("tiktoken-cache")
    packaged = Path(bpe_openai.__file__).parent / "data" / "o200k_base.tiktoken.gz"
    (cache / hashlib.sha1(O200K_URL.encode()).hexdigest()).write_bytes(gzip.decompress(packaged.read_bytes()))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("TIKTOKEN_CACHE_DIR", str(cache))
        encoding = tiktoken.get_encoding("o200k_base")  # checks the file's SHA-256 as it reads it
    return encoding, bpe_openai.get_encoding("o200k_base")


def _count(o200k, text: str) -> int:
    tiktoken_encoding, bpe_encoding = o200k
    n = len(tiktoken_encoding.encode(text))
    assert len(bpe_encoding.encode(text)) == n  # two implementations of o200k_base agree
    return n


async def test_the_tool_list_a_model_sees_costs_at_most_3000_tokens_and_the_output_schemas_1500(
    server, o200k
):
    tools = await _tools(server)
    seen = [_wire(t) for t in tools if _seen_by_the_model(t)]
    assert {t["name"] for t in seen} >= {"understand", "generate", "auto", "job"}
    # Everything a client may pass on of a tool, but its output schema and its _meta.
    listed = [{k: v for k, v in t.items() if k not in ("outputSchema", "_meta")} for t in seen]
    cost = {t["name"]: _count(o200k, json.dumps(t)) for t in listed}
    outputs = {t["name"]: _count(o200k, json.dumps(t["outputSchema"])) for t in seen if "outputSchema" in t}
    print(
        f"tools/list: {sum(cost.values())} tokens {cost}; output schemas: {sum(outputs.values())} {outputs}"
    )
    assert sum(cost.values()) <= TOOLS_BUDGET, cost
    assert sum(outputs.values()) <= OUTPUT_SCHEMAS_BUDGET, outputs
    # A measure that can fail: the tool list before issue 21 cost about 5,900 tokens (generate's
    # description alone 1,166) and its output schemas 6,800.
    assert cost["generate"] < 2000 and _count(o200k, seen[0]["description"]) > 10


# ---------------------------------------------------------------------------------------------
# Every converter accepts every tool


def _keywords(schema: Any) -> set[str]:
    """Every keyword used anywhere in a schema, and ``additionalProperties:bool`` where it is one."""
    found: set[str] = set()
    if isinstance(schema, dict):
        for key, value in schema.items():
            found.add(key)
            if key == "additionalProperties" and isinstance(value, bool):
                found.add("additionalProperties:bool")
            if key != "properties":
                found |= _keywords(value)
            else:
                for sub in value.values():
                    found |= _keywords(sub)
    elif isinstance(schema, list):
        for item in schema:
            found |= _keywords(item)
    return found


async def test_no_schema_holds_what_a_client_refuses(server):
    refused = {"$ref", "$defs", "exclusiveMinimum", "exclusiveMaximum", "additionalProperties:bool", "title"}
    for tool in await _tools(server):
        for schema in (tool.input_schema, tool.output_schema):
            assert not _keywords(schema) & refused, (tool.name, _keywords(schema) & refused)


async def test_openai_agents_converts_every_tool_in_strict_mode(server):
    pytest.importorskip("agents")
    from agents.mcp import MCPServerStdio
    from agents.mcp.util import MCPUtil
    from agents.strict_schema import ensure_strict_json_schema

    # Never started: only its conversion settings are read.
    agents_server = MCPServerStdio(params={"command": "unison-mcp", "args": ["serve"]}, name="unison")
    for tool in await _tools(server):
        strict = ensure_strict_json_schema(copy.deepcopy(tool.input_schema))
        assert strict["additionalProperties"] is False and set(strict["required"]) == set(
            strict["properties"]
        )
        converted = MCPUtil.to_function_tool(tool, agents_server, convert_schemas_to_strict=True)
        assert converted.strict_json_schema is True, tool.name  # it falls back to non-strict on any refusal


async def test_google_genai_converts_every_tool_to_its_typed_schema(server):
    pytest.importorskip("google.genai")
    from google.genai import _mcp_utils, types

    for tool in await _tools(server):
        declared = _mcp_utils.mcp_to_gemini_tool(tool).function_declarations[0]
        assert declared.name == tool.name and set(declared.parameters.properties) == set(
            tool.input_schema["properties"]
        )
        typed = types.Schema.from_json_schema(
            json_schema=types.JSONSchema(**copy.deepcopy(tool.input_schema)),
            raise_error_on_unsupported_field=True,
        )
        types.FunctionDeclaration(name=tool.name, description=tool.description, parameters=typed)
        types.FunctionDeclaration(name=tool.name, parameters_json_schema=tool.input_schema)
        if tool.name == "generate":
            width, kind = typed.properties["width"], typed.properties["control_kind"]
            assert width.nullable and (width.minimum, width.maximum) == (16, 4 * 1920)
            assert kind.nullable or any(s.nullable for s in kind.any_of or [])


async def test_langchain_converts_every_tool_as_its_mcp_adapter_builds_it(server):
    pytest.importorskip("langchain_core")
    from langchain_core.tools import StructuredTool
    from langchain_core.utils.function_calling import convert_to_openai_tool

    async def call(**_arguments: Any) -> str:
        return ""

    for tool in await _tools(server):
        # What langchain-mcp-adapters' convert_mcp_tool_to_langchain_tool makes of it.
        built = StructuredTool(
            name=tool.name, description=tool.description or "", args_schema=tool.input_schema, coroutine=call
        )
        for strict in (None, True):
            function = convert_to_openai_tool(built, strict=strict)["function"]
            assert function["parameters"]["properties"].keys() == tool.input_schema["properties"].keys()


async def test_pydantic_ai_lists_every_tool_and_each_model_family_accepts_its_schema(server):
    pytest.importorskip("pydantic_ai.mcp")
    from pydantic_ai import RunContext
    from pydantic_ai.mcp import MCPToolset
    from pydantic_ai.models.test import TestModel
    from pydantic_ai.profiles.google import GoogleJsonSchemaTransformer
    from pydantic_ai.profiles.openai import OpenAIJsonSchemaTransformer
    from pydantic_ai.usage import RunUsage

    names = {t.name for t in await _tools(server)}
    async with MCPToolset(server) as toolset:
        listed = await toolset.get_tools(RunContext(deps=None, model=TestModel(), usage=RunUsage()))
    assert set(listed) == names
    for name, tool in listed.items():
        schema = tool.tool_def.parameters_json_schema
        strict = OpenAIJsonSchemaTransformer(copy.deepcopy(schema), strict=True)
        strict.walk()
        assert strict.is_strict_compatible, name
        GoogleJsonSchemaTransformer(copy.deepcopy(schema)).walk()


# ---------------------------------------------------------------------------------------------
# Results that reach the model


async def _generate_video(server) -> Any:
    async with Client(server) as client:
        result = await client.call_tool("generate", {"task": "text_to_video", "prompt": "waves", "seed": 7})
    assert not result.is_error, result.content
    return result


async def test_the_structured_content_alone_says_what_each_file_is_compactly(server):
    data = (await _generate_video(server)).structured_content
    (out,) = data["outputs"]
    assert out["uri"].startswith("unison://outputs/") and Path(out["path"]).is_file()
    # (Each candidate's own seed is the real engine's: test_server_real.py.)
    assert (out["kind"], out["num_frames"], out["fps"]) == ("video", 9, 16.0)
    assert out["size_bytes"] == Path(out["path"]).stat().st_size and out["duration_s"] > 0
    assert data["status"] == "done" and data["seed"] == 7 and data["plan"]["task"] == "text_to_video"
    # Nothing unset is sent (no nulls), and the whole is small.
    assert "null" not in json.dumps(data) and len(json.dumps(data)) < 1500


def _langchain_block_converter():
    """langchain-mcp-adapters' own ``_convert_mcp_content_to_lc_block``, read from the installed
    package (see the module's docstring for why it is not imported), with mcp 1's content types:
    the wire's names as attributes, as mcp 1's models hold them."""
    spec = importlib.util.find_spec("langchain_mcp_adapters")
    if spec is None or spec.origin is None:
        pytest.skip("langchain-mcp-adapters is not installed")
    content = pytest.importorskip("langchain_core.messages.content")
    source = Path(spec.origin).with_name("tools.py")
    tree = ast.parse(source.read_text(encoding="utf-8"))
    (function,) = [n for n in tree.body if getattr(n, "name", None) == "_convert_mcp_content_to_lc_block"]
    wire_types = {
        name: type(name, (SimpleNamespace,), {})
        for name in (
            "TextContent",
            "ImageContent",
            "AudioContent",
            "ResourceLink",
            "EmbeddedResource",
            "TextResourceContents",
            "BlobResourceContents",
        )
    }
    namespace: dict[str, Any] = {
        **wire_types,
        "ContentBlock": Any,
        "ToolMessageContentBlock": Any,
        "create_text_block": content.create_text_block,
        "create_image_block": content.create_image_block,
        "create_file_block": content.create_file_block,
    }
    exec(compile(ast.Module([function], type_ignores=[]), str(source), "exec"), namespace)  # noqa: S102
    by_type = {
        "text": "TextContent",
        "image": "ImageContent",
        "audio": "AudioContent",
        "resource_link": "ResourceLink",
        "resource": "EmbeddedResource",
    }

    def convert(block: dict[str, Any]) -> dict[str, Any]:
        fields = dict(block)
        if "resource" in fields:
            inner = fields["resource"]
            kind = "TextResourceContents" if "text" in inner else "BlobResourceContents"
            fields["resource"] = wire_types[kind](**{"mimeType": None, **inner})
        held = wire_types[by_type[block["type"]]](**{"mimeType": None, **fields})
        return namespace["_convert_mcp_content_to_lc_block"](held)

    return convert


async def test_langchain_gets_the_text_and_an_inline_preview_never_a_url_no_provider_can_fetch(server):
    convert = _langchain_block_converter()
    from langchain_core.messages.block_translators.openai import convert_to_openai_data_block

    result = await _generate_video(server)
    wire = [block.model_dump(mode="json", by_alias=True, exclude_none=True) for block in result.content]
    blocks = [convert(block) for block in wire]
    assert [b["type"] for b in blocks] == ["text", "image"]
    (uri,) = [o["uri"] for o in result.structured_content["outputs"]]
    assert uri in blocks[0]["text"]
    assert "url" not in blocks[1] and blocks[1]["mime_type"] == "image/jpeg"
    sent = convert_to_openai_data_block(blocks[1])  # what an OpenAI chat model is sent
    assert sent["image_url"]["url"].startswith("data:image/jpeg;base64,")
    # The trap avoided: a resource link to an image becomes an image part with its unison:// URL.
    link = {"type": "resource_link", "uri": uri, "name": "x.png", "mimeType": "image/png"}
    assert convert(link)["url"] == uri


async def test_pydantic_ai_passes_the_model_the_text_and_the_preview(server):
    pytest.importorskip("pydantic_ai.mcp")
    from pydantic_ai.mcp import MCPToolset
    from pydantic_ai.messages import BinaryImage

    async with MCPToolset(server) as toolset:
        text, preview = await toolset.direct_call_tool(
            "generate", {"task": "text_to_video", "prompt": "waves"}
        )
    assert "unison://outputs/" in text and "frames at 0.0 s" in text
    assert isinstance(preview, BinaryImage) and preview.media_type == "image/jpeg"
