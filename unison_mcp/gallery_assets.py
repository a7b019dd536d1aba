"""The gallery's page, script and style (kept as text here so they ship inside the package).

The HTML holds no user data: the script fetches it as JSON and puts it in the DOM with
``textContent`` and attributes only (never ``innerHTML``), and the page's Content-Security-Policy
(:data:`unison_mcp.gallery.SECURITY_HEADERS`) runs no inline script.
"""

from __future__ import annotations

from html import escape


def _doc(title: str, body: str, head: str = "") -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title>"
        # An icon of its own, so the browser does not ask for /favicon.ico (behind /mcp's token).
        '<link rel="icon" href="gallery/static/icon.svg" type="image/svg+xml">'
        '<link rel="stylesheet" href="gallery/static/gallery.css">'
        f"{head}</head>\n<body>{body}</body></html>\n"
    )


def page(title: str, *, sign_out: bool = False) -> str:
    """The gallery itself: empty sections the script fills in (``sign_out``: with the button that
    ends the sign-in, when the gallery asks for a token)."""
    button = (
        "<form method='post' action='gallery/logout' id='sign-out'><button type='submit'>Sign out</button></form>"
        if sign_out
        else ""
    )
    return _doc(
        title,
        f"<header><h1>{escape(title)}</h1><span id='status'>loading…</span>{button}</header>"
        "<section id='jobs'><h2>Jobs</h2><ul id='job-list'></ul></section>"
        "<section><h2>Outputs</h2><p id='empty' hidden>No outputs yet.</p><div id='outputs'></div></section>"
        '<script src="gallery/static/gallery.js"></script>',
    )


def login_page(title: str, error: str | None) -> str:
    """Asks for the server's token (a browser cannot send the bearer header itself)."""
    message = f"<p class='error'>{escape(error)}</p>" if error else ""
    return _doc(
        title,
        f"<main class='login'><h1>{escape(title)}</h1>{message}"
        "<form method='post' action='gallery/login'>"
        "<label>Server token <input type='password' name='token' autocomplete='current-password' "
        "required autofocus></label> <button type='submit'>Sign in</button></form>"
        "<p>The token is the server's <code>--auth-token</code> (<code>UNISON_AUTH_TOKEN</code>).</p></main>",
    )


def signed_in_page(title: str) -> str:
    """Sets the cookie (the response's header) and moves on to the gallery, without the token."""
    return _doc(
        title,
        "<p>Signed in. <a href='gallery'>Open the gallery</a>.</p>",
        head='<meta http-equiv="refresh" content="0; url=gallery">',
    )


SCRIPT = r"""
"use strict";
// Everything shown comes from the JSON API and goes into the DOM as text or attributes only.
const POLL_MS = 1000;
const outputsBox = document.getElementById("outputs");
const jobList = document.getElementById("job-list");
const statusLine = document.getElementById("status");
let version = null;
let loading = false;
let scrolled = false;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value !== null && value !== undefined && value !== false) node.setAttribute(key, String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

async function getJSON(url) {
  const response = await fetch(url, { credentials: "same-origin", cache: "no-store" });
  if (response.status === 401) throw new Error("signed out: reload the page to sign in again");
  if (!response.ok) throw new Error(url + ": HTTP " + response.status);
  return response.json();
}

function player(item, small) {
  if (item.kind === "video") {
    const video = el("video", { src: item.url, controls: "", preload: "metadata", muted: "", playsinline: "" });
    video.muted = true;
    const facts = el("span", { class: "meta" }, "video: loading…");
    // The loaded metadata is written into the DOM too: it is what a headless check reads.
    video.addEventListener("loadedmetadata", () => {
      video.dataset.readyState = String(video.readyState);
      video.dataset.duration = video.duration.toFixed(3);
      facts.textContent = `video: ${video.duration.toFixed(2)} s, ${video.videoWidth}×${video.videoHeight}`;
    });
    video.addEventListener("error", () => {
      video.dataset.error = String(video.error ? video.error.code : "unknown");
      facts.textContent = "video: cannot be played here; download it below";
    });
    return el("div", { class: small ? "player small" : "player" }, video, facts);
  }
  if (item.kind === "image") {
    return el("div", { class: small ? "player small" : "player" }, el("img", { src: item.url, alt: item.prompt || item.name, loading: "lazy" }));
  }
  return el("div", { class: "player" }, el("a", { href: item.url }, item.name));
}

function fact(list, label, value) {
  if (value === null || value === undefined || value === "") return;
  list.append(el("dt", {}, label), el("dd", {}, String(value)));
}

function card(item) {
  const facts = el("dl", {});
  fact(facts, "task", item.task);
  fact(facts, "prompt", item.prompt);
  fact(facts, "seed", item.seed);
  fact(facts, "steps", item.steps);
  if (item.width) fact(facts, "size", `${item.width}×${item.height}` + (item.num_frames > 1 ? `, ${item.num_frames} frames at ${item.fps} fps` : ""));
  fact(facts, "created", item.created);
  const node = el("article", { id: item.name, class: "output", "data-name": item.name, "data-kind": item.kind },
    player(item, false),
    el("h3", {}, el("a", { href: item.url, download: item.name }, item.name)),
    facts);
  if (item.output && item.output !== "result") node.append(el("p", { class: "role" }, "this file: " + item.output));
  if (item.notes && item.notes.length) {
    node.append(el("ul", { class: "notes" }, ...item.notes.map((n) => el("li", {}, n))));
  }
  if (item.plan) {
    node.append(el("details", {}, el("summary", {}, "plan"), el("pre", {}, JSON.stringify(item.plan, null, 2))));
  }
  if (item.extras && item.extras.length) {
    const extras = el("div", { class: "extras" }, el("h4", {}, "extra outputs"));
    for (const extra of item.extras) {
      extras.append(el("figure", { class: "extra", "data-name": extra.name, "data-output": extra.output },
        player(extra, true),
        el("figcaption", {}, el("a", { href: extra.url, download: extra.name }, extra.output + ": " + extra.name))));
    }
    node.append(extras);
  }
  return node;
}

function renderOutputs(items) {
  const current = new Map();
  for (const node of outputsBox.children) current.set(node.dataset.name, node);
  const same = items.length === current.size && items.every((item, i) => outputsBox.children[i].dataset.name === item.name);
  if (!same) {
    // Cards already shown are kept (a playing video keeps playing); new ones are added in order.
    const nodes = items.map((item) => current.get(item.name) || card(item));
    outputsBox.replaceChildren(...nodes);
  }
  document.getElementById("empty").hidden = items.length > 0;
  document.body.dataset.outputs = String(items.length);
  if (!scrolled && location.hash.length > 1) {
    const target = document.getElementById(decodeURIComponent(location.hash.slice(1)));
    if (target) { target.classList.add("target"); target.scrollIntoView(); scrolled = true; }
  }
}

function renderJobs(jobs, hasQueue) {
  if (!hasQueue) {
    jobList.replaceChildren(el("li", { class: "none" }, "Jobs are shown by the server in HTTP mode; this gallery only reads the output directory."));
    return;
  }
  if (!jobs.length) {
    jobList.replaceChildren(el("li", { class: "none" }, "No jobs."));
    return;
  }
  jobList.replaceChildren(...jobs.map((job) => {
    const where = job.status === "queued" ? `queued, ${job.ahead} ahead` : job.status;
    const row = el("li", { class: "job " + job.status, "data-status": job.status }, el("strong", {}, job.kind), ` ${job.id} · ${where}`);
    if (job.status === "running") {
      const total = job.total || 0;
      row.append(" · ", el("progress", total ? { max: total, value: job.done } : {}), ` ${job.stage || ""} ${total ? job.done + "/" + total : ""}`);
    }
    return row;
  }));
}

async function loadOutputs() {
  if (loading) return;
  loading = true;
  try {
    const data = await getJSON("gallery/api/outputs");
    version = data.version;
    renderOutputs(data.outputs);
  } finally {
    loading = false;
  }
}

async function poll() {
  try {
    const data = await getJSON("gallery/api/jobs");
    renderJobs(data.jobs, data.queue);
    if (data.version !== version) await loadOutputs();
    statusLine.textContent = "updated " + new Date().toLocaleTimeString();
    statusLine.className = "";
  } catch (error) {
    statusLine.textContent = String(error.message || error);
    statusLine.className = "error";
  }
  setTimeout(poll, POLL_MS);
}

poll();
"""

STYLE = """
body { font: 15px/1.4 system-ui, sans-serif; margin: 0 auto; max-width: 1200px; padding: 0 1rem 3rem; color: #222; background: #fafafa; }
header { display: flex; align-items: baseline; gap: 1rem; }
#sign-out { margin-left: auto; }
#status { color: #666; font-size: 0.9em; }
.error { color: #b00020; }
#outputs { display: grid; grid-template-columns: repeat(auto-fill, minmax(320px, 1fr)); gap: 1rem; }
.output { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 0.75rem; overflow-wrap: anywhere; }
.output.target { border-color: #3367d6; box-shadow: 0 0 0 2px #3367d6; }
.player img, .player video { width: 100%; max-height: 420px; object-fit: contain; background: #111; border-radius: 4px; }
.player.small img, .player.small video { max-height: 160px; }
.meta { display: block; color: #666; font-size: 0.85em; }
h3 { font-size: 0.9em; margin: 0.5rem 0; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 0.1rem 0.75rem; margin: 0; }
dt { color: #666; }
dd { margin: 0; white-space: pre-wrap; }
pre { font-size: 0.8em; max-height: 300px; overflow: auto; background: #f3f3f3; padding: 0.5rem; }
.extras { display: grid; grid-template-columns: repeat(auto-fill, minmax(140px, 1fr)); gap: 0.5rem; }
.extras h4 { grid-column: 1 / -1; margin: 0.5rem 0 0; }
figure { margin: 0; }
figcaption { font-size: 0.8em; }
#job-list { list-style: none; padding: 0; }
.job { padding: 0.25rem 0; }
.job.failed { color: #b00020; }
.login { max-width: 420px; margin: 4rem auto; }
"""

#: The static files by name: text and content type.
#: The tab's icon: a dark square with a light frame (a picture), no text, nothing fetched.
ICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
    '<rect width="16" height="16" rx="3" fill="#222"/>'
    '<rect x="3" y="4" width="10" height="8" rx="1" fill="none" stroke="#ddd" stroke-width="1.5"/></svg>'
)

ASSETS: dict[str, tuple[str, str]] = {
    "gallery.js": (SCRIPT, "text/javascript; charset=utf-8"),
    "gallery.css": (STYLE, "text/css; charset=utf-8"),
    "icon.svg": (ICON, "image/svg+xml"),
}
