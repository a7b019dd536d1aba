"""Headless Chromium driven over the DevTools protocol, for the browser tests.

Chromium is Debian's ``chromium`` (``.ci/run`` installs it; ``UNISON_TEST_CHROMIUM`` names another).
It is driven through ``--remote-debugging-pipe``: the protocol's JSON messages, each ended by a NUL
byte, on the child's file descriptors 3 (commands in) and 4 (answers and events out), so there is
no debugging port and no extra package (a short ``python -c`` puts the pipes there and becomes
Chromium). :class:`Browser` sends commands and dispatches events on
its own threads; :class:`Page` is one tab with its frames: the out-of-process frames a page embeds
(a sandboxed ``srcdoc`` frame is one) are attached as they appear, paused until their network log
is on, so every request any of them makes is seen.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: What keeps a headless Chromium quiet and local: nothing of its own goes to the network.
FLAGS = (
    "--headless",
    "--no-sandbox",  # CI containers run as root
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-sync",
    "--mute-audio",
    "--remote-debugging-pipe",
)


#: Run as ``python -c`` with (read end, write end, program, args...): the ends on fds 3 and 4, then
#: the program in its place. Each end is first moved to 10 or above, so neither move overwrites the
#: other whatever numbers they came with.
_AT_3_AND_4 = (
    "import fcntl, os, sys\n"
    "ends = [fcntl.fcntl(int(fd), fcntl.F_DUPFD, 10) for fd in sys.argv[1:3]]\n"
    "os.dup2(ends[0], 3)\n"
    "os.dup2(ends[1], 4)\n"
    "os.execv(sys.argv[3], sys.argv[3:])\n"
)


def find_chromium() -> str | None:
    for name in (os.environ.get("UNISON_TEST_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


class CDPError(RuntimeError):
    pass


class Browser:
    """One Chromium process and its DevTools pipe."""

    def __init__(self, executable: str, profile: Path, stderr: Path):
        commands_r, commands_w = os.pipe()  # we write, Chromium reads on fd 3
        events_r, events_w = os.pipe()  # Chromium writes on fd 4, we read
        self._stderr = stderr.open("wb")
        # The two ends go to 3 and 4 in a small Python that then becomes Chromium: Popen's
        # preexec_fn could do it, but it may deadlock in a process with threads (a test suite).
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _AT_3_AND_4, str(commands_r), str(events_w), executable, *FLAGS]
            + [f"--user-data-dir={profile}", "about:blank"],
            pass_fds=(commands_r, events_w),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
        )
        os.close(commands_r)
        os.close(events_w)
        self._out = os.fdopen(commands_w, "wb")
        self._in = os.fdopen(events_r, "rb")
        self._lock = threading.Lock()
        self._next = 0
        self._waiting: dict[int, tuple[threading.Event, list[dict]]] = {}
        self._events: queue.SimpleQueue[dict | None] = queue.SimpleQueue()
        self._handlers: dict[str, list[Callable[[dict], None]]] = {}
        threading.Thread(target=self._read, name="cdp-read", daemon=True).start()
        threading.Thread(target=self._dispatch, name="cdp-events", daemon=True).start()

    def _read(self) -> None:
        buffer = b""
        while True:
            chunk = self._in.read1(1 << 16)
            if not chunk:
                break
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for raw in messages:
                message = json.loads(raw)
                waiting = self._waiting.pop(message["id"], None) if "id" in message else None
                if waiting is not None:
                    waiting[1].append(message)
                    waiting[0].set()
                elif "method" in message:
                    self._events.put(message)
        self._events.put(None)
        for event, _ in list(self._waiting.values()):
            event.set()

    def _dispatch(self) -> None:
        while (message := self._events.get()) is not None:
            for handler in self._handlers.get(message["method"], []):
                handler(message)

    def on(self, method: str, handler: Callable[[dict], None]) -> None:
        """Call ``handler(message)`` for each event ``method`` (on the event thread, in order)."""
        self._handlers.setdefault(method, []).append(handler)

    def send(
        self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 60
    ) -> dict:
        with self._lock:
            self._next += 1
            ident = self._next
            done: tuple[threading.Event, list[dict]] = (threading.Event(), [])
            self._waiting[ident] = done
            message: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
            if session is not None:
                message["sessionId"] = session
            self._out.write(json.dumps(message).encode() + b"\0")
            self._out.flush()
        if not done[0].wait(timeout) or not done[1]:
            raise CDPError(f"{method}: no answer in {timeout} s")
        answer = done[1][0]
        if "error" in answer:
            raise CDPError(f"{method}: {answer['error']}")
        return answer["result"]

    def close(self) -> None:
        with contextlib.suppress(CDPError, OSError):
            self.send("Browser.close", timeout=5)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._stderr.close()


class Page:
    """One tab: its session, the frames it embeds (their sessions, newest last), what they loaded,
    what they printed and threw."""

    def __init__(self, browser: Browser, width: int = 1000, height: int = 1000):
        self.browser = browser
        self.frames: list[str] = []
        #: (session, url) of every request the page and its frames made.
        self.requests: list[tuple[str, str]] = []
        self.errors: list[tuple[str, str]] = []
        self.console: list[tuple[str, str]] = []
        self._frame_attached = threading.Condition()
        browser.on("Target.attachedToTarget", self._attached)
        browser.on("Network.requestWillBeSent", self._request)
        browser.on("Runtime.exceptionThrown", self._exception)
        browser.on("Runtime.consoleAPICalled", self._printed)
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for method in ("Page.enable", "Network.enable", "Runtime.enable"):
            browser.send(method, session=self.session)
        browser.send(
            "Target.setAutoAttach",
            {"autoAttach": True, "waitForDebuggerOnStart": True, "flatten": True},
            session=self.session,
        )
        browser.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session=self.session,
        )

    # ------------------------------------------------------------------ events (event thread)

    def _attached(self, message: dict) -> None:
        params = message["params"]
        session = params["sessionId"]
        if params["targetInfo"]["type"] == "iframe":
            for method in ("Network.enable", "Runtime.enable"):
                self.browser.send(method, session=session)
        self.browser.send("Runtime.runIfWaitingForDebugger", session=session)
        if params["targetInfo"]["type"] == "iframe":
            with self._frame_attached:
                self.frames.append(session)
                self._frame_attached.notify_all()

    def _request(self, message: dict) -> None:
        self.requests.append((message.get("sessionId", ""), message["params"]["request"]["url"]))

    def _exception(self, message: dict) -> None:
        details = message["params"]["exceptionDetails"]
        text = details.get("exception", {}).get("description") or details.get("text", "")
        self.errors.append((message.get("sessionId", ""), text))

    def _printed(self, message: dict) -> None:
        args = message["params"].get("args", [])
        text = " ".join(str(a.get("value", a.get("description", ""))) for a in args)
        self.console.append((message.get("sessionId", ""), text))

    # ------------------------------------------------------------------ commands

    def bind(self, name: str, handler: Callable[[str], None]) -> None:
        """``window.<name>(text)`` in the page calls ``handler(text)`` (on the event thread)."""
        self.browser.send("Runtime.addBinding", {"name": name}, session=self.session)

        def called(message: dict) -> None:
            if message.get("sessionId") == self.session and message["params"]["name"] == name:
                handler(message["params"]["payload"])

        self.browser.on("Runtime.bindingCalled", called)

    def navigate(self, url: str) -> None:
        self.browser.send("Page.navigate", {"url": url}, session=self.session)
        self.wait_for("document.readyState === 'complete'", timeout=30)

    def evaluate(self, expression: str, session: str | None = None) -> Any:
        answer = self.browser.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            session=session or self.session,
        )
        if "exceptionDetails" in answer:
            details = answer["exceptionDetails"]
            raise CDPError(details.get("exception", {}).get("description") or details.get("text"))
        return answer["result"].get("value")

    def wait_for(
        self, expression: str, session: str | None = None, timeout: float = 60, every: float = 0.1
    ) -> Any:
        """Evaluate ``expression`` until it is truthy; its value."""
        deadline = threading.Event()
        timer = threading.Timer(timeout, deadline.set)
        timer.start()
        try:
            while True:
                try:
                    value = self.evaluate(expression, session)
                except CDPError as exc:
                    value, last = None, str(exc)
                else:
                    last = repr(value)
                if value:
                    return value
                if deadline.wait(every):
                    raise TimeoutError(f"{expression!r} still false after {timeout} s (last: {last[:300]})")
        finally:
            timer.cancel()

    def next_frame(self, after: int, timeout: float = 30) -> str:
        """The session of the first frame attached after the first ``after`` ones."""
        with self._frame_attached:
            if not self._frame_attached.wait_for(lambda: len(self.frames) > after, timeout):
                raise TimeoutError("no frame was attached")
            return self.frames[after]

    def mouse(self, kind: str, x: float, y: float, buttons: int = 0) -> None:
        params = {
            "type": kind,
            "x": x,
            "y": y,
            "button": "left" if kind != "mouseMoved" or buttons else "none",
        }
        if kind != "mouseMoved":
            params["clickCount"] = 1
        params["buttons"] = buttons
        self.browser.send("Input.dispatchMouseEvent", params, session=self.session)

    def screenshot(self, path: Path, clip: dict | None = None) -> None:
        params: dict[str, Any] = {"format": "png"}
        if clip is not None:
            params["clip"] = {**clip, "scale": 1}
        data = self.browser.send("Page.captureScreenshot", params, session=self.session)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
