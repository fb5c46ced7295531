"""A local web demo: ask a question about a video, see the untouched and the FrameFusion answers,
their times, and which video tokens FrameFusion kept, side by side.

A small page of our own served by the standard library (``http.server``) on 127.0.0.1 only; no
network is needed to use it. Start it with ``framefusion web`` (or :func:`serve`); tests use
:func:`make_server` on a free port in a thread.
"""

from __future__ import annotations

import email.parser
import email.policy
import html
import os
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from .commands.run import DEFAULT_FRAMES, LoadedModel, answer, sample_video
from .visualize import UnsupportedFamilyError, build_token_map, html_fragment, page_css, page_js, results_table

__all__ = ["WebDemo", "make_server", "parse_form", "serve"]

HOST = "127.0.0.1"


def parse_form(content_type: str, body: bytes) -> tuple[dict[str, str], dict[str, tuple[str, bytes]]]:
    """``(fields, files)`` of a POSTed form (``multipart/form-data`` or url-encoded)."""
    if content_type.startswith("application/x-www-form-urlencoded"):
        return {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}, {}
    if not content_type.startswith("multipart/form-data"):
        raise ValueError(f"unsupported form encoding {content_type!r}; send multipart/form-data")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise ValueError("the form could not be read (bad multipart body)")
    fields: dict[str, str] = {}
    files: dict[str, tuple[str, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        data = part.get_payload(decode=True) or b""
        filename = part.get_filename()
        if filename is not None:
            files[name] = (filename, data)
        else:
            fields[name] = data.decode("utf-8", "replace")
    return fields, files


class WebDemo:
    """The page and what one submitted question does (thread-safe: one question at a time)."""

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        frames: int | None = None,
        max_new_tokens: int = 32,
        max_upload_bytes: int = 256 << 20,
        default_video: str | Path | None = None,
    ):
        from .models import demo_video_path

        self.loaded = loaded
        self.frames = frames
        self.max_new_tokens = max_new_tokens
        self.max_upload_bytes = max_upload_bytes
        self.default_video = Path(default_video) if default_video else demo_video_path()
        self._lock = threading.Lock()
        self._warm = False

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
        return f"up to {self.frames or DEFAULT_FRAMES} frames are sampled uniformly from the video"

    # -------------------------------------------------------------------------------------- run
    def run(self, fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> str:
        """The results section for one submitted form; raises ValueError/FileNotFoundError for bad input."""
        from .config import FrameFusionConfig

        question = fields.get("question", "").strip()
        if not question:
            raise ValueError("the question is empty: ask something about the video")
        config = FrameFusionConfig(
            cost=_number(fields, "cost", 0.3), similarity_threshold=_number(fields, "similarity_threshold", 0.6)
        )
        choice = fields.get("video", "shipped")
        if choice == "upload":
            filename, data = files.get("file", ("", b""))
            if not data:
                raise ValueError("no video uploaded: choose a file, or pick the shipped demo video")
            suffix = Path(filename).suffix[:10] or ".mp4"
            fd, tmp = tempfile.mkstemp(suffix=suffix, prefix="framefusion-upload-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                try:
                    video = sample_video(tmp, self.frames, exact=False)
                except ValueError as err:  # name the upload, not the temporary file
                    reason = str(err).replace(tmp, filename)
                    raise ValueError(f"could not read the uploaded video {filename!r}: {reason}") from None
            finally:
                os.unlink(tmp)
            name = Path(filename).name
        elif choice == "shipped":
            video, name = sample_video(self.default_video, self.frames, exact=False), self.default_video.name
        else:
            raise ValueError(f"video must be 'shipped' or 'upload', got {choice!r}")
        with self._lock:
            result = answer(
                self.loaded,
                video,
                question,
                config,
                video_name=name,
                compare=True,
                max_new_tokens=self.max_new_tokens,
                warmup=0 if self._warm else 1,
                progress=False,
            )
            self._warm = True
            try:
                tmap = build_token_map(
                    self.loaded.model, self.loaded.processor, video, question, inputs=result.inputs,
                    report=result.report, caption=f"{name}, {len(video)} frames | question: {question}",
                )  # fmt: skip
                picture = html_fragment(tmap)
            except UnsupportedFamilyError as err:
                picture = f'<p class="ff-muted">No token map: {html.escape(str(err))}</p>'
        rows = {
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
        return (
            '<section id="ff-results"><h2>Answers</h2>'
            f'<p class="ff-muted">{html.escape(name)}, {len(video)} frames, {result.video_tokens} video tokens; '
            f"question: {html.escape(question)}</p>"
            f"{results_table(rows)}<h2>What FrameFusion kept</h2>"
            f'<div class="ff-card">{picture}</div></section>'
        )


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


def _handler(app: WebDemo, quiet: bool):
    class Handler(BaseHTTPRequestHandler):
        server_version = "framefusion-web"

        def log_message(self, format: str, *args: Any) -> None:
            if not quiet:
                sys.stderr.write(f"framefusion web: {self.address_string()} {format % args}\n")

        def _send(self, status: int, body: str, content_type: str = "text/html; charset=utf-8") -> None:
            data = body.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/":
                self._send(200, app.page())
            elif path == "/healthz":
                self._send(200, "ok\n", "text/plain; charset=utf-8")
            elif path == "/run":
                self.send_response(303)
                self.send_header("Location", "/")
                self.send_header("Content-Length", "0")
                self.end_headers()
            else:
                self._send(404, app.page(error=f"no page {path}"))

        def do_POST(self) -> None:
            if self.path.split("?", 1)[0] != "/run":
                self._send(404, app.page(error=f"no form at {self.path}"))
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > app.max_upload_bytes:
                self.close_connection = True
                limit = app.max_upload_bytes >> 20
                self._send(413, app.page(error=f"the upload is larger than the {limit} MiB this demo accepts"))
                return
            body = self.rfile.read(length)
            values: dict[str, str] = {}
            try:
                values, files = parse_form(self.headers.get("Content-Type", ""), body)
                results = app.run(values, files)
            except (ValueError, TypeError, FileNotFoundError) as err:
                self._send(400, app.page(values, error=str(err)))
                return
            except Exception as err:  # keep serving; show what went wrong
                self._send(500, app.page(values, error=f"{type(err).__name__}: {err}"))
                return
            self._send(200, app.page(values, results=results))

    return Handler


def make_server(app: WebDemo, port: int = 7860, quiet: bool = True) -> ThreadingHTTPServer:
    """An HTTP server for ``app`` bound to 127.0.0.1:``port`` (0: any free port); not started yet."""
    if not 0 <= port <= 65535:
        raise ValueError(f"--port must be in [0, 65535], got {port}")
    server = ThreadingHTTPServer((HOST, port), _handler(app, quiet))
    server.daemon_threads = True
    return server


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
