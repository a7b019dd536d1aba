"""Ask when it cannot know (issue 24 item 4): the engine finds what a plan guesses and the request
leaves open, asks through the job's ``ask`` seam, and otherwise plans its best guess with a note;
over MCP the seam is the client's elicitation form, mid-call on a handshake-era connection and
as an ``InputRequiredResult`` on a 2026-07-28 one (tested with the SDK's in-memory client)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.server.elicitation import render_elicitation_schema
from mcp_types import ElicitResult
from PIL import Image
from test_server_tools import FakeEngine

from engine.api import Admitted, AnyResult
from engine.asking import Ambiguity
from engine.config import EngineConfig, Limits, SamplingDefaults
from engine.control import JobControl
from engine.engine import Engine
from engine.job import plan_request
from engine.plan import check_plan
from engine.planners.ambiguity import ambiguities, settle
from engine.planners.rules import RulesPlanner
from engine.request import parse_request
from engine.results import AutoResult
from unison_mcp.asking import form_model
from unison_mcp.config import ServerConfig
from unison_mcp.server import build_server
from unison_mcp.state import state_of

# ---------------------------------------------------------------------------------------------
# The engine: what is ambiguous, and the plan once asked (or not).


def checked(text: str):
    request = parse_request(text)
    return request, check_plan(RulesPlanner().plan(request))


@pytest.mark.parametrize(
    ("text", "keys"),
    [
        ("Replace the sky in ###a.png### ###b.png###", ["mask"]),  # two images, no word for the mask
        ("Edit ###a.png###", ["region"]),  # an edit that names nothing to change, and no mask
        ("Add a hat ###a.png###", ["region"]),
        ("A 3 second video of rain, 81 frames", ["length"]),  # 49 frames or 81?
        ("Edit ###a.png### and ###b.png###", ["mask"]),
        ("Edit ###clip.mp4### and ###m.mp4###, 2 seconds, 81 frames", ["mask", "length"]),
        # Said, so nothing to ask:
        ("Replace the sky in ###a.png###, the mask is ###b.png###", []),
        ("Replace the sky in ###a.png### ###mask.png###", []),
        ("Replace the dog in ###a.png### with a cat", []),
        ("Entferne das Auto aus ###strasse.mp4###", []),
        ("删除###a.png###里的狗", []),
        ("A 3 second video of rain, 49 frames", []),
        ("A 5 second video at 24 frames per second of a train", []),
        ("What is in ###a.png### and ###b.png###?", []),
    ],
)
def test_what_a_plan_guesses_and_the_request_leaves_open_is_found(text, keys):
    request, plan = checked(text)
    assert [a.key for a in ambiguities(plan, request)] == keys


def test_an_answered_question_sets_the_plan_and_is_noted():
    request, plan = checked("Replace the sky in ###a.png### ###b.png###")
    assert [(m.path, m.role.value) for m in plan.inputs] == [("a.png", "source"), ("b.png", "mask")]
    asked: list[list[Ambiguity]] = []

    def ask(questions):
        asked.append(list(questions))
        return {"mask": "a.png"}

    settled = settle(plan, request, ask=ask, check=check_plan)
    assert list(asked[0][0].choices) == ["a.png", "b.png"] and asked[0][0].guess == "b.png"
    assert [(m.path, m.role.value) for m in settled.inputs] == [("a.png", "mask"), ("b.png", "source")]
    assert settled.notes == [
        "asked: Which file is the mask (white where the picture changes)? Answer: 'a.png'"
    ]


@pytest.mark.parametrize(
    ("ask", "why"),
    [
        (None, "Not asked (no client to answer: it has no elicitation, or the call had returned)"),
        (lambda questions: {}, "Not answered"),
        (lambda questions: {"length": "forever"}, "The answer 'forever' is not one offered"),
    ],
    ids=["cannot-ask", "declined", "not-offered"],
)
def test_an_unanswered_question_keeps_the_best_guess_and_says_so(ask, why):
    request, plan = checked("A 3 second video of rain, 81 frames")
    settled = settle(plan, request, ask=ask, check=check_plan)
    assert settled.num_frames == 81
    assert settled.notes == [
        f"ambiguous: The request says 81 frames and 3 seconds: which length? {why}; planned the best "
        "guess: 81 frames"
    ]


def test_a_free_text_answer_names_the_region_to_repaint():
    request, plan = checked("Edit ###a.png###")
    settled = settle(plan, request, ask=lambda q: {"region": "the red car"}, check=check_plan)
    assert settled.target == "the red car" and settled.notes[0].startswith("asked: What should change?")


def test_the_job_asks_through_its_control_and_the_planner_stays_mcp_free(tmp_path: Path):
    config = EngineConfig(planner_model=None, output_dir=tmp_path, allowed_roots=[tmp_path])
    engine = Engine(config)
    for name in ("a.png", "b.png"):
        Image.new("RGB", (40, 32), (9, 9, 9)).save(tmp_path / name)
    text = f"Replace the sky in ###{tmp_path / 'a.png'}### ###{tmp_path / 'b.png'}###"
    control = JobControl(ask=lambda questions: {"mask": "a.png"})
    planned = plan_request(engine.models, parse_request(text), control=control)
    assert [m.role.value for m in planned.plan.inputs] == ["mask", "source"]
    unasked = plan_request(engine.models, parse_request(text))
    assert [m.role.value for m in unasked.plan.inputs] == ["source", "mask"]
    assert "Not asked" in unasked.plan.notes[0]


def test_the_form_has_one_optional_field_per_question_choices_as_an_enum():
    questions = [
        question
        for text in ("Edit ###a.mp4### and ###b.mp4###, 2 seconds, 81 frames", "Edit ###c.png###")
        for question in ambiguities(checked(text)[1], parse_request(text))
    ]
    schema = render_elicitation_schema(form_model(questions))  # as the client receives it
    assert list(schema["properties"]) == ["mask", "length", "region"]
    assert schema["properties"]["mask"]["enum"] == ["a.mp4", "b.mp4"]
    assert schema["properties"]["length"]["enum"] == ["81 frames", "2 seconds (33 frames at 16 fps)"]
    assert schema["properties"]["region"]["type"] == "string"
    assert not schema.get("required")


# ---------------------------------------------------------------------------------------------
# Over MCP: the SDK's in-memory client with an elicitation callback.


class PlanningFake(FakeEngine):
    """The fake engine whose ``auto`` plans with the real engine (the rules planner, asking
    through the job's control) and then generates with the script, so a full call runs."""

    def run(self, admitted: Admitted, *, control: JobControl | None = None) -> AnyResult:
        request = admitted.request
        if admitted.tool != "auto" or getattr(request, "dry_run", False):
            return super().run(admitted, control=control)
        control = control or JobControl()
        with admitted:
            assert admitted.parsed is not None
            planned = plan_request(
                self._engine.models, admitted.parsed, sources=admitted.sources, control=control
            )
            generation = self._generate(planned.plan, admitted.sampling(), control)
        return AutoResult(plan=planned.plan, generation=generation)


def make_server(tmp_path: Path, **server_kw: Any):
    root, out = tmp_path / "in", tmp_path / "out"
    root.mkdir()
    out.mkdir()
    for name in ("photo.png", "other.png"):
        Image.new("RGB", (40, 32), (200, 30, 30)).save(root / name)
    econf = EngineConfig(
        planner_model=None,
        output_dir=out,
        sampling=SamplingDefaults(steps=2),
        limits=Limits(default_width=64, default_height=48, default_frames=9),
    )
    cfg = ServerConfig(engine=econf, allowed_roots=[root], **server_kw)
    server = build_server(cfg, engine=PlanningFake(econf))
    server.root = root  # type: ignore[attr-defined]
    return server


@pytest.fixture()
def server(tmp_path: Path):
    return make_server(tmp_path)


class User:
    """An elicitation callback: records each form and answers as scripted (``None``: declines),
    after ``thinks`` seconds."""

    def __init__(self, answers: dict[str, Any] | None, thinks: float = 0.0):
        self.answers = answers
        self.thinks = thinks
        self.forms: list[Any] = []

    async def __call__(self, context, params) -> ElicitResult:
        self.forms.append(params)
        await anyio.sleep(self.thinks)
        if self.answers is None:
            return ElicitResult(action="decline")
        return ElicitResult(action="accept", content=self.answers)


def _roles(result) -> list[tuple[str, str]]:
    assert not result.is_error, result.content
    return [(Path(m["path"]).name, m["role"]) for m in result.structured_content["plan"]["inputs"]]


def _notes(result) -> list[str]:
    return result.structured_content["notes"]


MODES = ["auto", "legacy"]  # 2026-07-28 (input required), and 2025-11-25 (mid-call)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dry_run", [False, True], ids=["queued", "dry-run"])
async def test_auto_asks_a_client_with_elicitation_which_file_is_the_mask(server, mode, dry_run):
    user = User({"mask": "photo.png"})
    prompt = f"Replace the sky in ###{server.root / 'photo.png'}### ###{server.root / 'other.png'}###"
    async with Client(server, elicitation_callback=user, mode=mode) as client:
        with anyio.fail_after(30):
            result = await client.call_tool("auto", {"prompt": prompt, "dry_run": dry_run})
    assert len(user.forms) == 1
    form = user.forms[0]
    assert "Which file is the mask" in form.message
    assert form.requested_schema["properties"]["mask"]["enum"] == ["photo.png", "other.png"]
    assert _roles(result) == [("photo.png", "mask"), ("other.png", "source")]
    assert any(n.startswith("asked: Which file is the mask") for n in _notes(result))
    if not dry_run:
        assert result.structured_content["outputs"]  # it went on to generate
        # 2026-07-28: the first job stopped at its question (nothing generated) and the call came
        # back with the answer; mid-call: one job waited for the answer.
        statuses = [job.status for job in state_of(server).queue.jobs()]
        assert statuses == (["cancelled", "done"] if mode == "auto" else ["done"])


@pytest.mark.parametrize("mode", MODES)
async def test_a_declined_question_is_planned_as_the_best_guess_with_a_note(server, mode):
    user = User(None)
    prompt = f"Replace the sky in ###{server.root / 'photo.png'}### ###{server.root / 'other.png'}###"
    async with Client(server, elicitation_callback=user, mode=mode) as client:
        with anyio.fail_after(30):
            result = await client.call_tool("auto", {"prompt": prompt})
    assert len(user.forms) == 1
    assert _roles(result) == [("photo.png", "source"), ("other.png", "mask")]
    assert any("Not answered; planned the best guess: other.png" in n for n in _notes(result))


@pytest.mark.parametrize("mode", MODES)
async def test_a_client_without_elicitation_gets_the_best_guess_with_a_note(server, mode):
    prompt = f"Replace the sky in ###{server.root / 'photo.png'}### ###{server.root / 'other.png'}###"
    async with Client(server, mode=mode) as client:
        result = await client.call_tool("auto", {"prompt": prompt})
    assert _roles(result) == [("photo.png", "source"), ("other.png", "mask")]
    assert any("Not asked (no client to answer" in n for n in _notes(result))


@pytest.mark.parametrize("mode", MODES)
async def test_a_free_text_region_and_a_length_are_asked_and_set(server, mode):
    user = User({"region": "the sky"})
    prompt = f"Edit ###{server.root / 'photo.png'}###"
    async with Client(server, elicitation_callback=user, mode=mode) as client:
        result = await client.call_tool("auto", {"prompt": prompt, "dry_run": True})
    assert result.structured_content["plan"]["target"] == "the sky"
    length_user = User({"length": "3 seconds (49 frames at 16 fps)"})
    async with Client(server, elicitation_callback=length_user, mode=mode) as client:
        length = await client.call_tool(
            "auto", {"prompt": "A 3 second video of rain, 81 frames", "dry_run": True}
        )
    assert length.structured_content["plan"]["num_frames"] == 49


async def test_a_request_with_nothing_open_asks_nothing(server):
    user = User({"mask": "photo.png"})
    prompt = f"Replace the dog in ###{server.root / 'photo.png'}### with a cat"
    async with Client(server, elicitation_callback=user) as client:
        result = await client.call_tool("auto", {"prompt": prompt, "dry_run": True})
    assert user.forms == []
    assert not [n for n in _notes(result) if n.startswith(("asked", "ambiguous"))]


async def test_the_call_keeps_waiting_while_the_user_answers_mid_call(tmp_path: Path):
    # wait_s is far shorter than the user takes: the call still returns the result, not a handle.
    server = make_server(tmp_path, wait_s=1.0)
    user = User({"mask": "photo.png"}, thinks=2.5)
    prompt = f"Replace the sky in ###{server.root / 'photo.png'}### ###{server.root / 'other.png'}###"
    async with Client(server, elicitation_callback=user, mode="legacy") as client:
        with anyio.fail_after(30):
            result = await client.call_tool("auto", {"prompt": prompt})
            while result.structured_content["status"] != "done":  # the generation after the answer
                job_id = result.structured_content["job_id"]
                result = await client.call_tool("job", {"action": "wait", "job_id": job_id})
    # The answer reached the job: the call did not give up on the question after wait_s.
    assert _roles(result) == [("photo.png", "mask"), ("other.png", "source")]


@pytest.mark.parametrize("mode", MODES)
async def test_a_question_met_after_the_call_returned_keeps_the_best_guess(tmp_path: Path, mode):
    # The job waits in the queue past the call's wait: when it plans, nobody waits to pass a
    # question on, so it plans its best guess (it is not stopped for answers no call collects).
    server = make_server(tmp_path, wait_s=0)
    fake = state_of(server).engine
    fake.hold = threading.Event()
    user = User({"mask": "photo.png"})
    prompt = f"Replace the sky in ###{server.root / 'photo.png'}### ###{server.root / 'other.png'}###"
    async with Client(server, elicitation_callback=user, mode=mode) as client:
        await client.call_tool("understand", {"prompt": "first in the queue"})  # held
        handle = (await client.call_tool("auto", {"prompt": prompt})).structured_content
        assert handle["status"] == "queued"
        fake.hold.set()
        with anyio.fail_after(30):
            result = await client.call_tool("job", {"action": "wait", "job_id": handle["job_id"]})
            while result.structured_content["status"] != "done":
                result = await client.call_tool("job", {"action": "wait", "job_id": handle["job_id"]})
    assert user.forms == []
    assert _roles(result) == [("photo.png", "source"), ("other.png", "mask")]
    assert any("Not asked (no client to answer" in n for n in _notes(result))
