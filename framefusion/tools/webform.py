"""Reading a POSTed form as it arrives: uploaded files go straight to temporary files, so a request
body is never held in memory (not even once), and a client that stops sending is cut off.

Used by the web demo (:mod:`framefusion.tools.web`); the standard library only. A body is read in
chunks of :data:`CHUNK` bytes, never past its declared ``Content-Length``; each read waits at most
the socket's timeout, and the whole body must arrive before a deadline the caller sets.
"""

from __future__ import annotations

import email.message
import email.parser
import email.policy
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO
from urllib.parse import parse_qs

__all__ = ["CHUNK", "BodyTimeout", "Form", "FormLimits", "Upload", "discard_body", "read_form"]

CHUNK = 256 << 10  # bytes per read: memory per request while a body arrives is about twice this


class BodyTimeout(TimeoutError):
    """The client stopped sending before the declared end of its body."""


@dataclass(frozen=True)
class FormLimits:
    """What one form may hold: bytes per text field, fields, bytes of one part's headers."""

    field_bytes: int = 64 << 10
    fields: int = 32
    header_bytes: int = 16 << 10


@dataclass
class Upload:
    filename: str  # as the client named it (for messages only; never used as a path)
    path: Path  # the temporary file holding its bytes
    size: int


@dataclass
class Form:
    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, Upload] = field(default_factory=dict)

    def remove_files(self) -> None:
        for upload in self.files.values():
            upload.path.unlink(missing_ok=True)
        self.files.clear()


class _Body:
    """At most ``length`` bytes of ``stream``, read in chunks, all of them before ``deadline``
    (``time.monotonic()``); each read returns what one receive gave (``read1``), so a client that
    trickles bytes cannot keep a read going past the deadline."""

    def __init__(self, stream: BinaryIO, length: int, deadline: float):
        self.stream, self.left, self.deadline = stream, length, deadline

    def read(self) -> bytes:
        if self.left <= 0:
            return b""
        if time.monotonic() > self.deadline:
            raise BodyTimeout(f"the request body did not arrive in time ({self.left} bytes still missing)")
        read = getattr(self.stream, "read1", self.stream.read)
        chunk = read(min(CHUNK, self.left))  # the socket's timeout bounds this one wait
        if not chunk:
            raise ValueError(f"the request body ended {self.left} bytes before its declared Content-Length")
        self.left -= len(chunk)
        return chunk

    def discard(self) -> None:
        while self.left > 0:
            self.read()


class _Scanner:
    """A multipart body as a stream of bytes that can be copied up to a marker."""

    def __init__(self, body: _Body):
        self.body, self.buffer = body, bytearray()

    def _more(self) -> None:
        chunk = self.body.read()
        if not chunk:
            raise ValueError("the form ended before its closing boundary (bad multipart body)")
        self.buffer += chunk

    def startswith(self, prefix: bytes) -> bool:
        while len(self.buffer) < len(prefix):
            self._more()
        return self.buffer.startswith(prefix)

    def copy_until(self, marker: bytes, write) -> None:
        """Hand the bytes before ``marker`` to ``write`` as they arrive, then drop the marker. The
        last ``len(marker) - 1`` bytes stay buffered: the marker may straddle two chunks."""
        keep = len(marker) - 1
        while True:
            at = self.buffer.find(marker)
            if at >= 0:
                write(bytes(self.buffer[:at]))
                del self.buffer[: at + len(marker)]
                return
            if len(self.buffer) > keep:
                write(bytes(self.buffer[: len(self.buffer) - keep]))
                del self.buffer[: len(self.buffer) - keep]
            self._more()


class _Text:
    """A text field's bytes, refused past ``limit``."""

    def __init__(self, what: str, limit: int):
        self.what, self.limit, self.data = what, limit, bytearray()

    def write(self, chunk: bytes) -> None:
        if len(self.data) + len(chunk) > self.limit:
            raise ValueError(f"{self.what} is longer than the {self.limit} bytes this form accepts")
        self.data += chunk


def read_form(
    stream: BinaryIO,
    content_type: str,
    length: int,
    *,
    deadline: float,
    limits: FormLimits = FormLimits(),
    upload_dir: str | None = None,
) -> Form:
    """The fields and uploaded files of a POSTed form of ``length`` bytes (``multipart/form-data``, or
    url-encoded text fields), read from ``stream`` by ``deadline``. Raises ``ValueError`` for a form
    that cannot be read or breaks ``limits``, :class:`BodyTimeout` when the body stops arriving
    (the socket's own timeout raises ``TimeoutError`` too). Files left by a failure are removed;
    on success the caller removes them (:meth:`Form.remove_files`)."""
    body = _Body(stream, length, deadline)
    if content_type.startswith("application/x-www-form-urlencoded"):
        text = _Text("the url-encoded form", limits.field_bytes)
        while chunk := body.read():
            text.write(chunk)
        return Form({k: v[-1] for k, v in parse_qs(text.data.decode("utf-8", "replace")).items()})
    if not content_type.startswith("multipart/form-data"):
        raise ValueError(f"unsupported form encoding {content_type!r}; send multipart/form-data")
    form = Form()
    try:
        _read_parts(_Scanner(body), _boundary(content_type), form, limits, upload_dir)
        body.discard()  # an epilogue after the closing boundary, if any
    except BaseException:
        form.remove_files()
        raise
    return form


def discard_body(stream: BinaryIO, length: int, *, deadline: float) -> None:
    """Read and drop a body of ``length`` bytes (by ``deadline``)."""
    _Body(stream, length, deadline).discard()


def _boundary(content_type: str) -> bytes:
    header = email.message.Message()
    header["content-type"] = content_type
    boundary = header.get_param("boundary")
    if not isinstance(boundary, str) or not 1 <= len(boundary) <= 70:
        raise ValueError("the multipart form has no valid boundary in its Content-Type")
    return boundary.encode("latin-1")


def _read_parts(scan: _Scanner, boundary: bytes, form: Form, limits: FormLimits, upload_dir: str | None) -> None:
    delimiter = b"--" + boundary
    scan.copy_until(delimiter, _Text("the text before the form", limits.field_bytes).write)
    while not scan.startswith(b"--"):  # "--" right after a delimiter closes the form
        head = _Text("a form part's headers", limits.header_bytes)
        scan.copy_until(b"\r\n\r\n", head.write)
        name, filename = _part_names(bytes(head.data))
        if len(form.fields) + len(form.files) >= limits.fields:
            raise ValueError(f"the form has more than {limits.fields} fields")
        if name in form.files or name in form.fields:
            raise ValueError(f"the form has more than one field named {name!r}")
        if filename is not None:
            form.files[name] = _receive_file(scan, delimiter, filename, upload_dir)
            continue
        text = _Text(f"form field {name!r}", limits.field_bytes)
        scan.copy_until(b"\r\n" + delimiter, text.write)
        form.fields[name] = text.data.decode("utf-8", "replace")


def _part_names(head: bytes) -> tuple[str, str | None]:
    """``(name, filename)`` from a part's headers (``filename`` None for a text field)."""
    part = email.parser.BytesHeaderParser(policy=email.policy.HTTP).parsebytes(head.strip() + b"\r\n\r\n")
    name = part.get_param("name", header="content-disposition")
    return (name if isinstance(name, str) else ""), part.get_filename()


def _receive_file(scan: _Scanner, delimiter: bytes, filename: str, upload_dir: str | None) -> Upload:
    suffix = Path(filename).suffix  # kept (when plain) as a hint to FFmpeg; the name itself is never used
    suffix = suffix if re.fullmatch(r"\.[A-Za-z0-9]{1,8}", suffix) else ""
    fd, tmp = tempfile.mkstemp(suffix=suffix, prefix="framefusion-upload-", dir=upload_dir)
    upload = Upload(filename, Path(tmp), 0)
    try:
        with os.fdopen(fd, "wb") as f:

            def write(chunk: bytes) -> None:
                f.write(chunk)
                upload.size += len(chunk)

            scan.copy_until(b"\r\n" + delimiter, write)
    except BaseException:
        upload.path.unlink(missing_ok=True)
        raise
    return upload
