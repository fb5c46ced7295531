"""The web demo's limits: uploads streamed to a file (form reader), Host and Origin checks, read timeouts,
a bounded number of requests in flight and of open connections, and the server's peak memory for an
upload of the largest size it accepts (measured on ``framefusion web`` in its own process)."""

from __future__ import annotations

import email.parser
import email.policy
import html
import io
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

import framefusion
from framefusion.tools.answer import LoadedModel
from framefusion.tiny_models import make_synthetic_video, write_video, zoo
from framefusion.tools.web import Limits, WebDemo, make_server
from framefusion.tools.webform import BodyTimeout, FormLimits, read_form

ROOT = Path(framefusion.__file__).resolve().parent.parent
MiB = 1 << 20


# ------------------------------------------------------------------------------------ requests
def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]] | None = None, boundary: str = ""):
    """``(content_type, body)`` of a multipart form, as a browser sends it."""
    boundary = boundary or uuid.uuid4().hex
    head = "--{}\r\nContent-Disposition: form-data; name=\"{}\"\r\n\r\n{}\r\n"
    parts = [head.format(boundary, k, v).encode() for k, v in fields.items()]
    for k, (name, data) in (files or {}).items():
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"; filename="{name}"\r\n'
        parts.append(head.encode() + b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n")
    return f"multipart/form-data; boundary={boundary}", b"".join(parts) + f"--{boundary}--\r\n".encode()


def request(port: int, head: str, body: bytes = b"", *, timeout: float = 60, pause_after: int | None = None):
    """Send a raw HTTP request (``head`` without the blank line) and read the whole answer:
    ``(status, headers, text)``; status 0 when the server closed without answering."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(head.encode("latin-1") + b"\r\n\r\n" + body)
        data = b""
        try:
            while chunk := s.recv(1 << 16):
                data += chunk
        except ConnectionResetError:
            pass
    if not data:
        return 0, "", ""
    headers, _, text = data.partition(b"\r\n\r\n")
    return int(headers.split()[1]), headers.decode("latin-1"), text.decode("utf-8", "replace")


def post_head(port: int, content_type: str, length: int, *, host: str | None = None, extra: str = "") -> str:
    host = host or f"127.0.0.1:{port}"
    return (
        f"POST /run HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\nContent-Length: {length}"
        f"\r\nConnection: close{extra}"
    )


def post(port: int, fields, files=None, **kw):
    content_type, body = multipart(fields, files)
    return request(port, post_head(port, content_type, len(body), **kw), body)


# ---------------------------------------------------------------------------------- form reader
class Trickle(io.RawIOBase):
    """A stream that hands out the body in pieces of random size (as a socket does)."""

    def __init__(self, data: bytes, seed: int, most: int, delay: float = 0.0):
        self.data, self.at, self.rng, self.most, self.delay = data, 0, random.Random(seed), most, delay

    def read1(self, n: int = -1) -> bytes:
        time.sleep(self.delay)
        size = min(n, self.rng.randint(1, self.most))
        chunk = self.data[self.at : self.at + size]
        self.at += len(chunk)
        return chunk


def _reference(content_type: str, body: bytes) -> tuple[dict, dict]:
    """What the standard library's email parser reads from the whole body at once."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    fields, files = {}, {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        data = part.get_payload(decode=True) or b""
        if part.get_filename() is not None:
            files[name] = (part.get_filename(), data)
        else:
            fields[name] = data.decode()
    return fields, files


@pytest.mark.parametrize("seed", range(12))
def test_form_reader_reads_what_the_email_parser_reads_however_the_body_is_cut(seed, tmp_path):
    rng = np.random.default_rng(seed)
    boundary = uuid.uuid4().hex
    # file bytes full of near-boundaries: the marker may straddle two reads, or almost appear
    pieces = [rng.bytes(int(rng.integers(0, 3000))) for _ in range(6)]
    near = [b"\r\n--" + boundary.encode()[: int(rng.integers(0, len(boundary)))], b"\r\n-", b"--" + boundary.encode()]
    data = b"".join(p + near[i % 3] for i, p in enumerate(pieces)) + b"\r\n"
    fields = {"question": "Which way does it go?\r\n--", "cost": str(rng.uniform(0.1, 1)), "video": "upload"}
    content_type, body = multipart(fields, {"file": ("clip name.mp4", data)}, boundary)
    form = read_form(
        Trickle(body, seed, most=int(rng.choice([1, 7, 100, 5000]))), content_type, len(body),
        deadline=time.monotonic() + 60, upload_dir=str(tmp_path),
    )  # fmt: skip
    ref_fields, ref_files = _reference(content_type, body)
    assert form.fields == ref_fields == fields
    upload = form.files["file"]
    assert (upload.filename, upload.path.read_bytes()) == ref_files["file"] == ("clip name.mp4", data)
    assert upload.size == len(data) and upload.path.suffix == ".mp4" and upload.path.parent == tmp_path
    form.remove_files()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "content_type, body, words",
    [
        ("multipart/form-data", b"--x\r\n\r\n--x--", ["no valid boundary"]),
        ("multipart/form-data; boundary=x", b'--x\r\nContent-Disposition: form-data; name="a"\r\n\r\nb', ["ended"]),
        ("multipart/form-data; boundary=x", b'--x\r\nContent-Disposition: form-data; name="a"\r\n\r\n' + b"z" * 70000,
         ["form field 'a' is longer than the 65536 bytes"]),
        ("multipart/form-data; boundary=x",
         b"".join(f'--x\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\nv\r\n'.encode() for i in range(40)),
         ["more than 32 fields"]),
        ("multipart/form-data; boundary=x",
         b'--x\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nab\r\n'
         b'--x\r\nContent-Disposition: form-data; name="file"; filename="b"\r\n\r\ncd\r\n--x--\r\n',
         ["more than one field named 'file'"]),
        ("text/plain", b"hello", ["unsupported form encoding", "multipart/form-data"]),
    ],
)  # fmt: skip
def test_form_reader_refuses_bad_forms_and_leaves_no_files(content_type, body, words, tmp_path):
    with pytest.raises(ValueError) as exc:
        read_form(io.BytesIO(body), content_type, len(body), deadline=time.monotonic() + 60, upload_dir=str(tmp_path))
    for word in words:
        assert word in str(exc.value)
    assert list(tmp_path.iterdir()) == []


def test_form_reader_stops_at_the_declared_length_and_at_the_deadline(tmp_path):
    content_type, body = multipart({"question": "q"}, {"file": ("a.mp4", b"x" * 5000)})
    with pytest.raises(ValueError, match=r"ended \d+ bytes before its declared Content-Length"):
        read_form(io.BytesIO(body[:-10]), content_type, len(body), deadline=time.monotonic() + 60)
    slow = Trickle(body, 0, most=1, delay=0.01)  # a byte every 10 ms: each read is quick, the whole is not
    start = time.monotonic()
    with pytest.raises(BodyTimeout, match="did not arrive in time"):
        read_form(slow, content_type, len(body), deadline=start + 0.2, upload_dir=str(tmp_path))
    assert time.monotonic() - start < 1
    assert list(tmp_path.iterdir()) == []
    urlencoded = b"question=what%3F&cost=0.5"
    form = read_form(io.BytesIO(urlencoded), "application/x-www-form-urlencoded", len(urlencoded), deadline=1e12)
    assert form.fields == {"question": "what?", "cost": "0.5"} and form.files == {}
    assert FormLimits().field_bytes == 64 << 10


# -------------------------------------------------------------------------------- server limits
@pytest.fixture(scope="module")
def tiny():
    model, processor = zoo.build("qwen2_vl", num_layers=1)
    return LoadedModel(model, processor, "tiny random Qwen2-VL", "random weights", "What moves?")


@pytest.fixture
def serve_demo(tiny, tmp_path, monkeypatch):
    """Start a demo server with the given limits on a free port; uploads go to a folder of the test's own."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    servers = []

    def start(**limits):
        server = make_server(WebDemo(tiny, frames=4, max_new_tokens=2, limits=Limits(**limits)), port=0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.server_address[1]

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
    assert not list(tmp_path.glob("framefusion-upload-*")), "an upload was left behind"


@pytest.fixture(scope="module")
def clip_bytes(tmp_path_factory):
    return write_video(make_synthetic_video(4, 56, seed=9), tmp_path_factory.mktemp("w") / "c.mp4").read_bytes()


def test_foreign_host_or_origin_is_refused(serve_demo, clip_bytes):
    port = serve_demo()
    fields = {"video": "upload", "question": "q"}
    files = {"file": ("c.mp4", clip_bytes)}
    status, _, page = request(port, f"GET / HTTP/1.1\r\nHost: evil.example:{port}\r\nConnection: close")
    assert status == 403 and f"Host &#x27;evil.example:{port}&#x27; is not this server" in page
    status, _, page = post(port, fields, files, host=f"rebound.example:{port}")
    assert status == 403 and "is not this server" in page
    status, _, page = post(port, fields, files, extra="\r\nOrigin: http://evil.example")
    assert status == 403 and "is another site" in page
    status, _, page = post(port, fields, files, extra="\r\nOrigin: null")
    assert status == 403
    status, _, page = request(port, "GET / HTTP/1.0")  # no Host at all
    assert status == 403
    for origin in (f"http://127.0.0.1:{port}", f"http://localhost:{port}"):
        status, _, page = post(port, fields, files, host=origin[7:], extra=f"\r\nOrigin: {origin}")
        assert status == 200 and 'id="answer-framefusion"' in page, page[-2000:]
    assert post(port, fields, files)[0] == 200  # no Origin: not a browser form, allowed


def test_lengths_missing_bad_or_too_large(serve_demo):
    port = serve_demo(upload_bytes=1 * MiB)
    ct = "multipart/form-data; boundary=x"
    head = f"POST /run HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {ct}\r\nConnection: close"
    assert request(port, head)[0] == 411
    status, _, page = request(port, head + "\r\nContent-Length: lots")
    assert status == 400 and "bad Content-Length" in page
    status, _, page = request(port, post_head(port, ct, 2 * MiB))  # refused before any body is read
    assert status == 413 and "larger than the 1 MiB this demo accepts" in page


def test_a_client_that_stops_sending_is_cut_off_and_frees_its_place(serve_demo, clip_bytes):
    """It declares 1000 bytes and sends 10: the server answers 408 after its read timeout, and the one
    place in flight is free again for the next request."""
    port = serve_demo(in_flight=1, read_timeout=0.5)
    start = time.monotonic()
    head = post_head(port, "multipart/form-data; boundary=x", 1000)
    status, _, page = request(port, head, b"--x\r\nabcd", timeout=10)
    assert status == 408 and "stopped arriving" in page
    assert time.monotonic() - start < 5
    status, _, page = post(port, {"video": "upload", "question": "q"}, {"file": ("c.mp4", clip_bytes)})
    assert status == 200, page[-2000:]


def test_requests_past_the_limit_in_flight_get_503_busy(serve_demo, clip_bytes):
    port = serve_demo(in_flight=1, read_timeout=5)
    content_type, body = multipart({"video": "upload", "question": "q"}, {"file": ("c.mp4", clip_bytes)})
    slow = socket.create_connection(("127.0.0.1", port), timeout=30)
    slow.sendall((post_head(port, content_type, len(body)) + "\r\n\r\n").encode() + body[:100])  # holds the place
    time.sleep(0.3)
    status, headers, page = post(port, {"video": "shipped", "question": "q"})
    assert status == 503 and "busy: 1 question is being answered (the most at once)" in page
    assert "Retry-After: 5" in headers
    slow.sendall(body[100:])  # the first one finishes and is answered
    answer = b""
    while chunk := slow.recv(1 << 16):
        answer += chunk
    slow.close()
    assert answer.startswith(b"HTTP/1.0 200")
    assert post(port, {"video": "shipped", "question": "q"})[0] == 200  # the place is free again


def test_open_connections_are_bounded(serve_demo):
    port = serve_demo(connections=2, read_timeout=1)
    idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(2)]  # say nothing
    time.sleep(0.3)
    status, _, text = request(port, f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close", timeout=10)
    assert status == 503 and "too many open connections" in text
    for s in idle:
        s.close()
    time.sleep(1.5)  # the idle ones time out and give their places back
    assert request(port, f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close")[0] == 200


def test_limits_are_checked():
    with pytest.raises(ValueError, match="in_flight must be >= 1, got 0"):
        Limits(in_flight=0)
    with pytest.raises(ValueError, match="read_timeout must be > 0 seconds"):
        Limits(read_timeout=0)


# ------------------------------------------------------------ the CLI server in its own process
def start_cli_server(tmp_path: Path, *args: str) -> tuple[subprocess.Popen, int]:
    """``framefusion web --port 0`` of this checkout, one torch thread, and the port it serves on."""
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "framefusion.cli", "web", "--port", "0", "--quiet", *args],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if found := re.search(r"http://127\.0\.0\.1:(\d+)/", line):
            return proc, int(found.group(1))
    proc.kill()
    raise AssertionError("framefusion web did not start")


def memory_mib(pid: int) -> dict[str, float]:
    """Current (VmRSS) and peak (VmHWM) resident memory of a process, MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return {k: int(re.search(rf"{k}:\s+(\d+)", status).group(1)) / 1024 for k in ("VmRSS", "VmHWM")}


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A saved tiny Qwen2-VL (random weights) for ``framefusion web --model``."""
    folder = tmp_path_factory.mktemp("ckpt") / "tiny"
    model, processor = zoo.build("qwen2_vl", num_layers=2)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _raw_video(path: Path, frames: int, width: int, height: int) -> Path:
    """Uncompressed 4:2:0 video in an AVI: the file is as large as its frames, written in a second."""
    import av

    base = np.random.default_rng(0).integers(0, 256, (height * 3 // 2, width), dtype=np.uint8)
    with av.open(str(path), mode="w", format="avi") as container:
        stream = container.add_stream("rawvideo", rate=8)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for k in range(frames):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.roll(base, 8 * k, axis=1), format="yuv420p")))
        container.mux(stream.encode())
    return path


def send_file_form(port: int, fields: dict[str, str], path: Path, timeout: float = 300):
    """POST a form with the file at ``path``, streamed from disk (the client holds little of it)."""
    boundary = uuid.uuid4().hex
    content_type, head = multipart(fields, boundary=boundary)
    head = head[: -len(f"--{boundary}--\r\n")]
    file_head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
                 "Content-Type: video/x-msvideo\r\n\r\n").encode()  # fmt: skip
    tail = f"\r\n--{boundary}--\r\n".encode()
    length = len(head) + len(file_head) + path.stat().st_size + len(tail)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall((post_head(port, content_type, length) + "\r\n\r\n").encode() + head + file_head)
        with open(path, "rb") as f:
            while chunk := f.read(MiB):
                s.sendall(chunk)
        s.sendall(tail)
        data = b""
        while chunk := s.recv(1 << 16):
            data += chunk
    return length, int(data.split()[1]), data.decode("utf-8", "replace")


def test_peak_memory_of_the_server_for_an_upload_of_the_largest_size(tmp_path, tiny_checkpoint):
    """An upload as large as the default limit (256 MiB: 1080p uncompressed video, 86 frames) raises the
    server's peak RSS by less than 160 MiB: the body goes to a temporary file, 16 frames are kept,
    scaled down to 1280 x 720 as they are decoded (42 MiB). Reading the body into memory would cost
    256 MiB (512 MiB before: it was read, then joined and parsed again), all its frames 510 MiB more."""
    big = _raw_video(tmp_path / "big.avi", 86, 1920, 1080)
    proc, port = start_cli_server(tmp_path, "--model", str(tiny_checkpoint), "--max-new-tokens", "2")
    try:
        warm = write_video(make_synthetic_video(8, 112, seed=1), tmp_path / "warm.mp4")
        for _ in range(2):  # warm up: the model, the decoder, the page
            assert send_file_form(port, {"video": "upload", "question": "q"}, warm)[1] == 200
        before = memory_mib(proc.pid)
        length, status, page = send_file_form(port, {"video": "upload", "question": "what moves?"}, big)
        after = memory_mib(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
    assert status == 200, page[-3000:]
    assert "big.avi, 16 frames of 86" in page
    assert 0.99 * Limits().upload_bytes < length <= Limits().upload_bytes
    rise = after["VmHWM"] - before["VmHWM"]
    print(f"server peak RSS for a {length / MiB:.1f} MiB upload: +{rise:.0f} MiB ({before} -> {after})")
    assert rise < 160


# ------------------------------------------------------------------------------------------ soak
def _answers_on(page: str) -> dict[str, str]:
    found = re.findall(r'<pre class="ff-answer" id="answer-(\w+)">(.*?)</pre>', page, flags=re.S)
    return {name: html.unescape(text) for name, text in found}


def _soak_requests(port: int, clips: dict[str, bytes], seed: int = 0) -> list[dict]:
    """About 200 requests: good questions about tiny clips (and the shipped video), and bad ones of
    every kind the server must refuse, shuffled. Each: how to send it and the status it must get."""
    rng = random.Random(seed)
    own = f"127.0.0.1:{port}"
    good = []
    for k in range(60):
        name = rng.choice([*clips, "shipped"])
        fields = {"video": "shipped" if name == "shipped" else "upload",
                  "question": rng.choice(["What moves?", "which way does the red shape go?", "colour?"]),
                  "cost": rng.choice(["0.3", "0.7"])}  # fmt: skip
        files = None if name == "shipped" else {"file": (name, clips[name])}
        good.append(dict(kind="good", key=(name, fields["question"], fields["cost"]), form=(fields, files), status=200))
    q = {"video": "upload", "question": "q"}
    ct = "multipart/form-data; boundary=x"
    bad_forms = [
        ((q, {"file": ("junk.mp4", random.Random(1).randbytes(5000))}), 400, "could not read the uploaded video"),
        ((q, {"file": ("notes.mp4", b"not a video\n" * 100)}), 400, "could not read the uploaded video"),
        ((q, {"file": ("none.mp4", b"")}), 400, "no video uploaded"),
        (({"video": "shipped", "question": "  "}, None), 400, "question is empty"),
        (({"video": "shipped", "question": "q", "cost": "2"}, None), 400, "(0, 1]"),
        (({"video": "shipped", "question": "q", "cost": "lots"}, None), 400, "cost must be a number"),
        (({"video": "elsewhere", "question": "q"}, None), 400, "elsewhere"),
    ]
    bad = [dict(kind="bad", form=form, status=status, words=words) for form, status, words in bad_forms * 12]
    raw = [
        (post_head(port, ct, 3 * MiB), b"", 413, "larger than the 2 MiB"),
        (post_head(port, ct, 100, host=f"evil.example:{port}"), b"--x--\r\n".ljust(100), 403, "is not this server"),
        (post_head(port, ct, 100, extra="\r\nOrigin: http://evil.example"), b"--x--".ljust(100), 403, "another site"),
        (f"POST /run HTTP/1.1\r\nHost: {own}\r\nContent-Type: {ct}\r\nConnection: close", b"", 411, "Content-Length"),
        (f"GET / HTTP/1.1\r\nHost: {own}\r\nConnection: close", b"", 200, "framefusion web demo"),
        (f"GET /healthz HTTP/1.1\r\nHost: {own}\r\nConnection: close", b"", 200, "ok"),
        (f"GET /nowhere HTTP/1.1\r\nHost: {own}\r\nConnection: close", b"", 404, "no page /nowhere"),
    ]
    bad += [dict(kind="raw", head=h, body=b, status=s, words=w) for h, b, s, w in raw * 7]
    bad += [dict(kind="slow", status=408, words="stopped arriving") for _ in range(4)]  # 1000 bytes declared, 10 sent
    bad += [dict(kind="cut", status=400, words="before its declared Content-Length") for _ in range(4)]  # then EOF
    everything = good + bad
    rng.shuffle(everything)
    return everything


def _send_soak(port: int, r: dict, clips: dict[str, bytes]) -> tuple[int, str]:
    if r["kind"] in ("good", "bad"):
        return post(port, *r["form"])[::2]
    if r["kind"] == "raw":
        return request(port, r["head"], r["body"])[::2]
    head = post_head(port, "multipart/form-data; boundary=x", 1000) + "\r\n\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(head.encode() + b"--x\r\nabcd")
        if r["kind"] == "cut":
            s.shutdown(socket.SHUT_WR)  # the client closes its side early
        data = b""
        while chunk := s.recv(1 << 16):
            data += chunk
    return int(data.split()[1]), data.decode("utf-8", "replace")


def test_soak_mixed_requests_against_framefusion_web(tmp_path, tiny_checkpoint):
    """About 200 good and bad requests, four clients at once, against ``framefusion web`` in its own
    process: every one gets its status (503 busy answers are retried, as a client should), every good
    answer equals what the same question gets directly, no upload is left on disk, the server's memory
    is flat afterwards (RSS within 40 MiB of where it was after the first quarter) and it all takes
    well under two minutes."""
    import torch

    from framefusion import FrameFusionConfig
    from framefusion.tools.answer import answer_video, load_video_model, sample_clip
    from framefusion.tools.loading import ModelOptions
    from framefusion.tools.visualize import _shown

    videos = {f"c{k}.mp4": write_video(make_synthetic_video(n, s, seed=20 + k), tmp_path / f"c{k}.mp4")
              for k, (n, s) in enumerate([(4, 56), (6, 56), (3, 112), (2, 56)])}  # fmt: skip
    clips = {name: path.read_bytes() for name, path in videos.items()}
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    os.environ["TMPDIR"], saved = str(uploads), os.environ.get("TMPDIR")
    try:
        proc, port = start_cli_server(
            tmp_path, "--model", str(tiny_checkpoint), "--frames", "4", "--max-new-tokens", "3",
            "--max-in-flight", "3", "--read-timeout", "1", "--max-upload-mb", "2",
        )  # fmt: skip
    finally:
        os.environ.pop("TMPDIR") if saved is None else os.environ.__setitem__("TMPDIR", saved)
    todo = _soak_requests(port, clips)
    results: list[tuple[dict, int, str, int]] = []
    memory: list[dict] = []
    lock = threading.Lock()
    start = time.monotonic()

    def client() -> None:
        while True:
            with lock:
                if not todo:
                    return
                r = todo.pop()
            status, page = _send_soak(port, r, clips)
            busy, give_up = 0, time.monotonic() + 60
            while status == 503 and time.monotonic() < give_up:  # busy: try again shortly
                time.sleep(0.1)
                status, page = _send_soak(port, r, clips)
                busy += 1
            with lock:
                results.append((r, status, page, busy))
                if len(results) == 50:
                    memory.append(memory_mib(proc.pid))

    try:
        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        seconds = time.monotonic() - start
        memory.append(memory_mib(proc.pid))
    finally:
        proc.terminate()
        proc.wait(30)
    assert len(results) == 201 and seconds < 120, (len(results), seconds)
    for r, status, page, _ in results:
        assert status == r["status"], (r.get("key") or r.get("words"), status, page[-1500:])
        if r["kind"] != "good":
            assert r["words"] in html.unescape(page), (r["words"], page[-1500:])
    assert list(uploads.iterdir()) == [], "uploads were left behind"

    # every good answer equals what the same question gets directly (one thread, as the server)
    loaded = load_video_model(str(tiny_checkpoint), ModelOptions(device="cpu"))
    threads_before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        expected = {}
        for r, _, page, _ in (x for x in results if x[0]["kind"] == "good"):
            name, question, cost = r["key"]
            if r["key"] not in expected:
                path = framefusion.tiny_models.demo_video_path() if name == "shipped" else videos[name]
                clip = sample_clip(path, 4, exact=False, max_pixels=Limits().frame_pixels)
                config = FrameFusionConfig(cost=float(cost), similarity_threshold=0.6)
                result = answer_video(loaded, clip, question, config, max_new_tokens=3, warmup=0, progress=False)
                expected[r["key"]] = {n: _shown(a) for n, a in result.answers.items()}
            assert _answers_on(page) == expected[r["key"]], r["key"]
    finally:
        torch.set_num_threads(threads_before)
    retried = sum(busy for *_, busy in results)
    growth = memory[-1]["VmRSS"] - memory[0]["VmRSS"]
    rss = f"{memory[0]['VmRSS']:.0f} -> {memory[-1]['VmRSS']:.0f} MiB"
    print(f"soak: {len(results)} requests in {seconds:.1f} s, {retried} busy answers retried, "
          f"{len(expected)} distinct good questions; server RSS {rss}")
    assert growth < 40, memory


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--fps", "0"], "--fps must be a number > 0, got 0.0"),
        (["--max-in-flight", "0"], "--max-in-flight >= 1"),
        (["--max-upload-mb", "-1"], "--max-upload-mb and --read-timeout must be > 0"),
        (["--read-timeout", "0"], "--max-upload-mb and --read-timeout must be > 0"),
    ],
)
def test_web_command_refuses_bad_limits_before_loading_anything(argv, words, capsys):
    from framefusion.cli import main

    assert main(["web", *argv]) == 2
    assert words in capsys.readouterr().err


def test_results_say_next_to_the_times_that_single_runs_are_indicative_only(tiny):
    section = WebDemo(tiny, frames=4, max_new_tokens=2).run({"question": "What moves?", "video": "shipped"}, {})
    times_at = section.index("time to first token, s")
    note_at = section.index('id="ff-timing-note"')
    assert times_at < note_at < section.index("What FrameFusion kept")  # right under the table of times
    assert "single runs: indicative only" in section[note_at:] and "--repeats" in section[note_at:]
