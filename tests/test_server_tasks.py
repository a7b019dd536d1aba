"""Background tasks (``io.modelcontextprotocol/tasks``, SEP-2663) against a client nobody here wrote.

fastmcp's client (``fastmcp_tasks``: the SEP-2663 requester half, a ``ResultClaim`` on the SDK's
client extension framework) drives the server in memory: a long call becomes a task it polls to
the call's own result, ``tasks/cancel`` stops the job, a failing job completes with the tool
error. The SDK's own client, which does not declare the extension, still gets the ``job`` tool's
handle and is refused the task methods. The engine is the scripted one of ``test_server_tools.py``.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, TextContent
from test_server_tools import _data, _make, _outputs_on_disk, _text

from engine.pool.book import JobBook
from engine.pool.client import BOOK_POLL_S, BookJob
from unison_mcp.state import state_of
from unison_mcp.tasks import EXTENSION_ID, task_fields

# fastmcp patches camelCase read-aliases onto mcp_types classes when imported: only here.
fastmcp = pytest.importorskip("fastmcp", reason="fastmcp[tasks] (a dev dependency) drives these tests")
fastmcp_tasks = pytest.importorskip("fastmcp_tasks", reason="fastmcp[tasks] brings the tasks client")
from fastmcp_tasks.client_models import (  # noqa: E402 - after the skip above
    ClientGetTaskResult,
    GetTaskRequest,
    GetTaskRequestParams,
)


@pytest.fixture()
def dirs(tmp_path: Path) -> dict[str, Path]:
    found = {name: tmp_path / name for name in ("root", "out", "outside")}
    for d in found.values():
        d.mkdir()
    return found


def _long(prompt: str = "waves", steps: int = 4) -> dict[str, Any]:
    return {"task": "text_to_video", "prompt": prompt, "steps": steps}


async def test_the_tasks_extension_is_advertised_to_a_2026_client(dirs):
    server, _ = _make(dirs)
    async with Client(server) as client:
        assert client.protocol_version == "2026-07-28"
        assert EXTENSION_ID in (client.server_capabilities.extensions or {})


async def test_fastmcps_client_gets_a_long_call_back_as_its_own_result_through_a_task(dirs):
    server, fake = _make(dirs, wait_s=0.2, step_delay=0.05)
    fake.hold = threading.Event()
    async with fastmcp.Client(server) as client:
        task = await fastmcp_tasks.call_tool_task(client, "generate", _long())
        queue = state_of(server).queue
        job = queue.get(task.task_id)  # the task is the job: the `job` tool follows it too
        assert job is not None and job.kind == "generate"
        first = await task.status()
        assert first.status == "working" and first.poll_interval_ms and first.ttl_ms is None
        assert first.status_message in ("starting", "queued: next")
        fake.hold.set()
        with anyio.fail_after(10):
            while (now := await task.status()).status == "working" and "/" not in (now.status_message or ""):
                await anyio.sleep(0.02)
        assert now.status == "completed" or now.status_message.startswith("denoising ")
        result = await task.result()
        # Transparent: a plain call_tool polls its task to the same kind of result.
        again = await client.call_tool("generate", _long("again"))
    data = result.structured_content
    assert data["status"] == "done" and data["plan"]["task"] == "text_to_video"
    assert any(c.type == "image" for c in result.content)  # the preview, as a direct call gives it
    assert again.structured_content["status"] == "done"
    assert len(_outputs_on_disk(dirs["out"])) == 2
    assert job.status == "done" and job.outcome().structured_content == data


async def test_a_call_done_within_the_grace_comes_back_as_itself_not_as_a_task(dirs):
    server, _ = _make(dirs)
    async with fastmcp.Client(server) as client:
        with pytest.raises(fastmcp.exceptions.ToolError, match="did not run as a task"):
            await fastmcp_tasks.call_tool_task(client, "understand", {"prompt": "quick"})
        result = await client.call_tool("understand", {"prompt": "quick"})
    assert result.structured_content["answer"] == "I see 0 file(s). quick"


async def test_tasks_cancel_stops_the_job_at_its_next_step_and_nothing_is_written(dirs):
    server, _ = _make(dirs, wait_s=0.2, step_delay=0.02)
    async with fastmcp.Client(server) as client:
        task = await fastmcp_tasks.call_tool_task(client, "generate", _long(steps=200))
        await task.cancel()
        final = await task.wait(timeout=10)
        again = await task.status()  # a finished task is still there, and cancelling it is acknowledged
        await task.cancel()
    assert final.status == "cancelled" and "cancelled" in (final.status_message or "")
    assert final.result is None and again.status == "cancelled"
    job = state_of(server).queue.get(task.task_id)
    assert job is not None and job.status == "cancelled" and job.progress()["done"] < 200
    assert list(dirs["out"].iterdir()) == []


async def test_a_job_that_fails_completes_its_task_with_the_tool_error_as_the_result(dirs):
    server, fake = _make(dirs, wait_s=0.2)
    fake.hold = threading.Event()
    async with fastmcp.Client(server) as client:
        task = await fastmcp_tasks.call_tool_task(client, "generate", _long("raise:model"))
        fake.hold.set()
        final = await task.wait(timeout=10)
        with pytest.raises(fastmcp.exceptions.ToolError, match="adapter not found"):
            await task.result()
    # Not "failed": that status is for JSON-RPC errors; a tool error is a completed call.
    assert final.status == "completed" and final.result is not None and final.result["isError"] is True
    assert "adapter not found" in final.result["content"][0]["text"]


async def test_a_client_without_the_extension_gets_a_job_handle_and_is_refused_the_task_methods(dirs):
    server, fake = _make(dirs, wait_s=0.2)
    fake.hold = threading.Event()
    async with Client(server) as client:
        handle = _data(await client.call_tool("generate", _long()))
        assert handle["status"] in ("queued", "running") and handle["job_id"]
        with pytest.raises(MCPError) as refused:
            await client.session.send_request(
                GetTaskRequest(params=GetTaskRequestParams(task_id=handle["job_id"])), ClientGetTaskResult
            )
        fake.hold.set()
        done = _data(await client.call_tool("job", {"action": "wait", "job_id": handle["job_id"]}))
    assert refused.value.error.code == -32021
    assert EXTENSION_ID in str(refused.value.error.data)
    assert done["status"] == "done"


async def test_an_unknown_task_is_invalid_params_and_the_server_serves_on(dirs):
    server, _ = _make(dirs)
    async with fastmcp.Client(server) as client:
        with pytest.raises(MCPError) as unknown:
            await client.session.send_request(
                GetTaskRequest(params=GetTaskRequestParams(task_id="no-such-task")), ClientGetTaskResult
            )
        answer = await client.call_tool("understand", {"prompt": "still here"})
    assert unknown.value.error.code == -32602 and "not found" in unknown.value.error.message
    assert "still here" in _text(answer)


def test_a_task_another_ingress_took_is_read_from_the_pools_job_book(dirs):
    # The pool's follower of another ingress's job (BookJob) over a plain book: no cluster needed.
    book = JobBook()
    book.add("j1", "generate", "other-host:1")
    book.started("j1", "EngineReplica#a")
    book.progress("j1", 3, 10, "generating")
    presented = CallToolResult(content=[TextContent(type="text", text="made it")])

    class Reader:  # what BookJob asks of the pool: the book's record, the presenter
        _present = staticmethod(lambda kind, result: presented)

        def _record(self, job_id: str) -> dict[str, Any] | None:
            return book.get(job_id)

    job = BookJob(Reader(), book.get("j1"))  # type: ignore[arg-type]
    state = state_of(_make(dirs)[0])
    working = task_fields(state, job)
    assert (working["taskId"], working["status"], working["statusMessage"]) == (
        "j1",
        "working",
        "generating 3/10",
    )
    book.finished("j1", "done", engine_result={"outputs": []})
    time.sleep(BOOK_POLL_S)  # the follower reads the book again after this long
    done = task_fields(state, job)
    assert done["status"] == "completed" and done["result"]["content"][0]["text"] == "made it"
