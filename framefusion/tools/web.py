"""A local web demo: ask a question about a video, see the untouched and the FrameFusion answers,
their times, and which video tokens FrameFusion kept, side by side.

A small page of our own served by the standard library (``http.server``) on 127.0.0.1 only; no
network is needed to use it. Start it with ``framefusion web`` (or :func:`serve`); tests use
:func:`make_server` on a free port in a thread.

What it takes on is bounded (:class:`Limits`): uploads are streamed to a temporary file with the size
cap applied as they arrive (:mod:`framefusion.tools.webform`), reads from a client time out, a few requests
are in flight at once (more are told the demo is busy, 503), and only pages it served itself may use
it (``Host`` and ``Origin`` are checked: no other site can post to it, not even through DNS rebinding).
"""

from __future__ import annotations

import html
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from .answer import DEFAULT_FRAMES, MAX_FPS_FRAMES, LoadedModel, VideoAnswer, answer_video, sample_clip
from .visualize import UnsupportedFamilyError, build_token_map, html_fragment, page_css, page_js, results_table
from .webform import Form, Upload, discard_body, read_form

__all__ = ["Limits", "WebDemo", "make_server", "serve"]

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Limits:
    """What the server takes on at once. With the defaults a request holds at most 16 decoded frames of
    at most 1280 x 720 pixels (44 MiB) beside the model's own work, which runs one request at a time."""

    upload_bytes: int = 256 << 20  # the largest request body (an upload and the form around it)
    in_flight: int = 4  # requests being read, decoded or answered at once; more get 503 (busy)
    connections: int = 32  # open connections at once; more are answered 503 and closed
    read_timeout: float = 30.0  # seconds one read from a client may wait
    upload_rate: int = 1 << 20  # bytes/s: a body must arrive at least this fast on average
    frame_pixels: int = 1280 * 720  # larger frames are scaled down as they are decoded

    def __post_init__(self) -> None:
        for name in ("upload_bytes", "in_flight", "connections", "upload_rate", "frame_pixels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.read_timeout > 0:
            raise ValueError(f"read_timeout must be > 0 seconds, got {self.read_timeout}")

    def body_deadline(self, length: int) -> float:
        """When a body of ``length`` bytes must have arrived (``time.monotonic()``)."""
        return time.monotonic() + self.read_timeout + length / self.upload_rate


# Beside the page's times: each is one generate, while the server may be busy, and a small model's work
# is too short for the reduction to show in wall time (the README says the same).
TIMING_NOTE = (
    '<p class="ff-muted" id="ff-timing-note">Times are single runs: indicative only, more so for a small '
    "model, whose work is too short to time reliably. For measured speed-ups use "
    "<code>framefusion run --compare --repeats 5</code> or <code>framefusion bench</code> on a quiet machine.</p>"
)


class WebDemo:
    """The page and what one submitted question does (thread-safe: the model answers one question at
    a time; up to ``limits.in_flight`` requests are read and decoded beside it)."""

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        frames: int | None = None,
        fps: float | None = None,
        max_new_tokens: int = 32,
        limits: Limits = Limits(),
        default_video: str | Path | None = None,
    ):
        from ..tiny_models import demo_video_path

        self.loaded = loaded
        self.frames = frames
        self.fps = fps
        self.max_new_tokens = max_new_tokens
        self.limits = limits
        self.default_video = Path(default_video) if default_video else demo_video_path()
        self._lock = threading.Lock()
        self._warm = False

    @property
    def max_upload_bytes(self) -> int:
        return self.limits.upload_bytes

    # ------------------------------------------------------------------------------------- page
    def page(self, values: dict[str, str] | None = None, results: str = "", error: str = "") -> str:
        e = html.escape
        v = {"question": self.loaded.question, "cost": "0.3", "similarity_threshold": "0.6", "video": "shipped"}
        v.update(values or {})
        note = f'<p class="ff-muted">Model: <b>{e(self.loaded.name)}</b>'
        note += f" ({e(self.loaded.note)})</p>" if self.loaded.note else "</p>"
        err = f'<div class="ff-card ff-error" role="alert">framefusion: error: {e(error)}</div>' if error else ""
        checked = {k: (" checked" if v["video"] == k else "") for k in ("shipped", "upload")}
        form = (
            '<form class="ff-card ff-form" id="ff-form" method="post" action="/run" enctype="multipart/form-data">'
            "<fieldset><legend>Video</legend>"
            f'<label><input type="radio" name="video" value="shipped"{checked["shipped"]}> the shipped demo video '
            f"({e(self.default_video.name)})</label>"
            f'<label><input type="radio" name="video" value="upload"{checked["upload"]}> upload: '
            '<input type="file" name="file" accept="video/*,.mp4,.webm,.mkv,.avi,.mov"></label></fieldset>'
            f'<label class="ff-wide">Question <input type="text" name="question" id="ff-question" '
            f'value="{e(v["question"])}" required></label>'
            '<div class="ff-row">'
            f'<label>cost <input type="number" name="cost" min="0.01" max="1" step="0.01" value="{e(v["cost"])}">'
            "</label>"
            '<label>similarity threshold <input type="number" name="similarity_threshold" step="0.01" '
            f'value="{e(v["similarity_threshold"])}"></label>'
            f'<span class="ff-muted">{e(self._frames_text())}</span></div>'
            '<button type="submit" id="ff-submit">Answer with both</button> '
            '<span id="ff-busy" class="ff-muted" hidden>running the untouched and the FrameFusion model ...</span>'
            "</form>"
        )
        css = page_css() + _DEMO_CSS
        return (
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">'
            f"<title>framefusion web demo</title><style>{css}</style></head><body><main>"
            "<h1>framefusion web demo</h1>"
            '<p class="ff-muted">The same question, answered by the untouched model and with FrameFusion '
            "(similar tokens of adjacent frames merged, then the least attended pruned, within the cost budget).</p>"
            f"{note}{form}{err}{results}</main><script>{page_js()}{_DEMO_JS}</script></body></html>"
        )

    def _frames_text(self) -> str:
        if self.fps:
            return f"frames shown every 1/{self.fps:g} s are sampled (at most {self.frames or MAX_FPS_FRAMES})"
        return f"up to {self.frames or DEFAULT_FRAMES} frames are sampled uniformly from the video"

    # -------------------------------------------------------------------------------------- run
    def run(self, fields: dict[str, str], files: dict[str, Upload]) -> str:
        """The results section for one submitted form; raises ValueError/FileNotFoundError for bad input."""
        question = fields.get("question", "").strip()
        if not question:
            raise ValueError("the question is empty: ask something about the video")
        config = _config_from(fields)
        clip, name = self._chosen_clip(fields, files)
        with self._lock:  # the model answers one question at a time
            result = answer_video(self.loaded, clip, question, config, video_name=name, compare=True,
                                  max_new_tokens=self.max_new_tokens, warmup=0 if self._warm else 1,
                                  progress=False)  # fmt: skip
            self._warm = True
            picture = self._token_map_html(result, f"{name}, {len(clip.frames)} frames | question: {question}")
        return (
            '<section id="ff-results"><h2>Answers</h2>'
            f'<p class="ff-muted">{html.escape(name)}, {len(clip.frames)} frames of {clip.total_frames} '
            f"({clip.duration:.2f} s), {result.video_tokens} video tokens; question: {html.escape(question)}</p>"
            f"{results_table(_answer_rows(result))}{TIMING_NOTE}<h2>What FrameFusion kept</h2>"
            f'<div class="ff-card">{picture}</div></section>'
        )

    def _chosen_clip(self, fields: dict[str, str], files: dict[str, Upload]):
        """``(clip, name)`` of the video the form picked: the upload, or the shipped demo video."""
        choice = fields.get("video", "shipped")
        if choice == "upload":
            upload = files.get("file")
            if upload is None or upload.size == 0:
                raise ValueError("no video uploaded: choose a file, or pick the shipped demo video")
            return self._sample(upload.path, upload.filename), Path(upload.filename).name
        if choice == "shipped":
            return self._sample(self.default_video), self.default_video.name
        raise ValueError(f"video must be 'shipped' or 'upload', got {choice!r}")

    def _token_map_html(self, result: VideoAnswer, caption: str) -> str:
        """The token map of the reduced answer, from its report and inputs (no second forward); a line
        saying why there is none for a family without the pictures' patch geometry."""
        try:
            tmap = build_token_map(
                self.loaded.model, self.loaded.processor, result.video_frames, result.question,
                inputs=result.inputs, report=result.report, caption=caption,
            )  # fmt: skip
            return html_fragment(tmap)
        except UnsupportedFamilyError as err:
            return f'<p class="ff-muted">No token map: {html.escape(str(err))}</p>'


    def _sample(self, path: Path, shown_as: str | None = None):
        """The clip to answer about: decoding keeps only the sampled frames, scaled down to the limit."""
        try:
            return sample_clip(path, self.frames, fps=self.fps, exact=False, max_pixels=self.limits.frame_pixels)
        except ValueError as err:
            if shown_as is None:
                raise
            reason = str(err).replace(str(path), shown_as)  # name the upload, not the temporary file
            raise ValueError(f"could not read the uploaded video {shown_as!r}: {reason}") from None


def _config_from(fields: dict[str, str]):
    from ..config import FrameFusionConfig

    return FrameFusionConfig(
        cost=_number(fields, "cost", 0.3), similarity_threshold=_number(fields, "similarity_threshold", 0.6)
    )


def _answer_rows(result: VideoAnswer) -> dict[str, dict]:
    """The results table: one column per setting (untouched, framefusion), one row per quantity."""
    return {
        n: {
            "answer": result.answers[n],
            "video tokens kept": result.video_tokens if n == "untouched" else result.kept_tokens,
            "achieved cost": "1.000" if n == "untouched" else f"{result.achieved_cost:.3f}",
            "time to first token, s": f"{result.seconds[n]['first_token']:.3f}",
            "generate, s": f"{result.seconds[n]['generate']:.3f}",
            "new tokens": result.seconds[n]["new_tokens"],
        }
        for n in ("untouched", "framefusion")
    }


def _number(fields: dict[str, str], name: str, default: float) -> float:
    raw = fields.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None


_DEMO_CSS = """
.ff-form { display: grid; gap: 10px; margin: 12px 0 16px; }
.ff-form fieldset { border: 1px solid var(--ff-line); border-radius: 8px; display: flex; gap: 22px; flex-wrap: wrap; }
.ff-form input[type=text] { width: 100%; box-sizing: border-box; padding: 7px 9px; font: inherit; }
.ff-form input[type=number] { width: 6em; padding: 4px 6px; font: inherit; }
.ff-row { display: flex; gap: 20px; align-items: center; flex-wrap: wrap; }
.ff-form button { justify-self: start; padding: 8px 18px; font: inherit; font-weight: 600; color: #fff;
                  background: var(--ff-accent); border: 0; border-radius: 7px; cursor: pointer; }
.ff-form button[disabled] { opacity: .6; cursor: progress; }
.ff-error { border-color: #e0a0a0; background: #fff3f3; color: #8a1f1f; margin-bottom: 14px; }
"""

_DEMO_JS = """
(function () {
  var form = document.getElementById('ff-form');
  if (!form) { return; }
  form.addEventListener('submit', function () {
    document.getElementById('ff-submit').disabled = true;
    document.getElementById('ff-busy').hidden = false;
  });
  var file = form.querySelector('input[type=file]');
  file.addEventListener('change', function () {
    if (file.files.length) { form.querySelector('input[value=upload]').checked = true; }
  });
})();
"""


DRAIN_BYTES = 1 << 20  # an unread body up to this size is read and dropped before closing (see _refuse)


def allowed_hosts(port: int) -> set[str]:
    """The ``Host`` values of this server's own pages; anything else is a page of another site reaching
    127.0.0.1 through a name it controls (DNS rebinding)."""
    hosts = {f"127.0.0.1:{port}", f"localhost:{port}"}
    return hosts | {"127.0.0.1", "localhost"} if port == 80 else hosts


class _DemoHandler(BaseHTTPRequestHandler):
    """One connection to the demo. :func:`_handler` makes a subclass bound to one :class:`WebDemo`."""

    server_version = "framefusion-web"
    app: WebDemo
    quiet: bool
    in_flight: threading.BoundedSemaphore  # one place per request being read, decoded or answered

    def log_message(self, format: str, *args: Any) -> None:
        if not self.quiet:
            sys.stderr.write(f"framefusion web: {self.address_string()} {format % args}\n")

    def _send(self, status: int, body: str, content_type: str = "text/html; charset=utf-8", **headers) -> None:
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(data)

    def _foreign(self) -> str:
        """Why this request does not come from this server's own page ('' when it does)."""
        port = self.server.server_address[1]
        hosts = allowed_hosts(port)
        host = (self.headers.get("Host") or "").strip().lower()
        if host not in hosts:
            return f"Host {host!r} is not this server (http://{HOST}:{port}/)"
        origin = self.headers.get("Origin")
        if origin is not None and origin.strip().lower() not in {f"http://{h}" for h in hosts}:
            return f"Origin {origin!r} is another site: only pages of http://{HOST}:{port}/ may post here"
        return ""

    def _refuse(self, status: int, error: str, unread: int = 0, **headers) -> None:
        """An error page, then the connection closes. A small unread body is read first: closing a
        socket with data still unread resets it, and the client might lose the answer."""
        self.close_connection = True
        self._send(status, self.app.page(error=error), **headers)
        if 0 < unread <= DRAIN_BYTES:
            try:
                discard_body(self.rfile, unread, deadline=self.app.limits.body_deadline(unread))
            except (OSError, ValueError):
                pass  # the client went away: nothing left to protect

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if why := self._foreign():
            self._refuse(403, why)
        elif path == "/":
            self._send(200, self.app.page())
        elif path == "/healthz":
            self._send(200, "ok\n", "text/plain; charset=utf-8")
        elif path == "/run":
            self.send_response(303)
            self.send_header("Location", "/")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._send(404, self.app.page(error=f"no page {path}"))

    def _post_refusal(self, raw: str | None, length: int | None) -> tuple[int, str, bool] | None:
        """``(status, error, drain)`` when a POST is refused before its body is read (``drain``: read the
        body's declared bytes first, when small); None when it may go on to wait for a place in flight."""
        limits = self.app.limits
        if why := self._foreign():
            return 403, why, True
        if raw is None:
            return 411, "the request has no Content-Length: send the form with its length", False
        if length is None:
            return 400, f"bad Content-Length {raw!r}", False
        if length > limits.upload_bytes:  # refused before reading any of it
            mib = limits.upload_bytes / (1 << 20)
            return 413, f"the upload is larger than the {mib:g} MiB this demo accepts", False
        if self.path.split("?", 1)[0] != "/run":
            return 404, f"no form at {self.path}", True
        return None

    def do_POST(self) -> None:
        raw = self.headers.get("Content-Length")
        length = int(raw) if raw is not None and raw.strip().isdigit() else None
        unread = length or 0  # what is left to drain if the request is refused
        if refusal := self._post_refusal(raw, length):
            status, error, drain = refusal
            self._refuse(status, error, unread if drain else 0)
        elif not self.in_flight.acquire(blocking=False):
            n = self.app.limits.in_flight
            busy = f"busy: {n} question{'s are' if n > 1 else ' is'} being answered (the most at once); try again"
            self._refuse(503, busy, unread, Retry_After="5")
        else:
            try:
                self._answer(length)
            finally:
                self.in_flight.release()

    def _answer(self, length: int) -> None:
        app, form = self.app, Form()
        try:
            form = read_form(
                self.rfile, self.headers.get("Content-Type", ""), length, deadline=app.limits.body_deadline(length)
            )
            results = app.run(form.fields, form.files)
        except TimeoutError:  # the socket's read timeout, or the body's deadline (BodyTimeout)
            self.close_connection = True
            return self._send(408, app.page(error="the upload stopped arriving; send it again"))
        except (ValueError, TypeError, FileNotFoundError) as err:
            self.close_connection = True
            return self._send(400, app.page(form.fields, error=str(err)))
        except Exception as err:  # keep serving; show what went wrong
            self.close_connection = True
            return self._send(500, app.page(form.fields, error=f"{type(err).__name__}: {err}"))
        finally:
            form.remove_files()
        self._send(200, app.page(form.fields, results=results))


def _handler(app: WebDemo, quiet: bool) -> type[_DemoHandler]:
    """The request handler class of one server: bound to ``app``, with its own count of requests in flight."""
    return type(
        "Handler",
        (_DemoHandler,),
        {
            "app": app,
            "quiet": quiet,
            "in_flight": threading.BoundedSemaphore(app.limits.in_flight),
            "timeout": app.limits.read_timeout,  # every read from (and write to) the client waits at most this
        },
    )


class _Server(ThreadingHTTPServer):
    """A threading HTTP server that keeps at most ``connections`` open: past that, a connection gets a
    short 503 and is closed instead of getting a thread of its own."""

    daemon_threads = True

    def __init__(self, address, handler, connections: int):
        super().__init__(address, handler)
        self._open = threading.BoundedSemaphore(connections)

    def process_request(self, request, client_address) -> None:
        if not self._open.acquire(blocking=False):
            try:
                request.settimeout(1.0)
                request.sendall(_TOO_MANY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._open.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._open.release()


_TOO_MANY = (
    b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nRetry-After: 5\r\n"
    b"Connection: close\r\n\r\nframefusion: busy: too many open connections; try again\n"
)


def make_server(app: WebDemo, port: int = 7860, quiet: bool = True) -> ThreadingHTTPServer:
    """An HTTP server for ``app`` bound to 127.0.0.1:``port`` (0: any free port); not started yet."""
    if not 0 <= port <= 65535:
        raise ValueError(f"--port must be in [0, 65535], got {port}")
    return _Server((HOST, port), _handler(app, quiet), app.limits.connections)


def serve(app: WebDemo, port: int = 7860, quiet: bool = False) -> None:
    """Serve until Ctrl-C."""
    try:
        server = make_server(app, port, quiet)
    except OSError as err:
        raise OSError(f"cannot listen on {HOST}:{port} ({err.strerror or err}); choose another --port") from None
    host, bound = server.server_address[:2]
    print(f"framefusion web demo on http://{host}:{bound}/  (Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("\nframefusion web: stopped", file=sys.stderr)
    finally:
        server.server_close()
