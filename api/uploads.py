"""Receiving a multipart upload straight to disk: streamed, size-limited, hashed on the way."""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import anyio
from fastapi import HTTPException, Request, status
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

FILE_FIELD = "file"
MAX_FIELDS = 16
MAX_FIELD_BYTES = 4096
MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers around the file
MAX_BOUNDARY = 70  # RFC 2046
MAX_HEADER_BYTES = 8192  # one part header's name or value
_FLUSH_BYTES = 1024 * 1024


@dataclass
class Upload:
    """A received upload: its form fields and the file, in a temporary file until moved."""

    fields: dict[str, str]
    filename: str
    tmp_path: Path
    size: int
    sha256: str


def too_large(max_bytes: int) -> HTTPException:
    return HTTPException(
        status.HTTP_413_CONTENT_TOO_LARGE,
        detail=f"upload too large; the limit is {max_bytes} bytes",
    )


def bad_form(msg: str) -> HTTPException:
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT, detail=[{"loc": "body", "msg": msg}]
    )


async def receive_upload(request: Request, incoming_dir: Path, max_bytes: int) -> Upload:
    """Parse a multipart body with one file in the field `file`, writing it to a temporary file
    in `incoming_dir` (removed again on any error); 413 past `max_bytes`."""
    media_type, params = parse_options_header(request.headers.get("content-type"))
    if media_type != b"multipart/form-data" or not params.get(b"boundary"):
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            detail="send the dataset as multipart/form-data with a 'file' and a 'name' field",
        )
    if len(params[b"boundary"]) > MAX_BOUNDARY:
        raise bad_form(f"the multipart boundary is longer than {MAX_BOUNDARY} characters")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes + MULTIPART_OVERHEAD:
        raise too_large(max_bytes)
    incoming_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=incoming_dir, prefix="upload-", suffix=".part")
    tmp_path = Path(tmp_name)
    try:
        try:
            with os.fdopen(fd, "wb") as out:
                receiver = _Receiver(out, max_bytes)
                parser = MultipartParser(params[b"boundary"], receiver.callbacks())
                async for chunk in request.stream():
                    parser.write(chunk)
                    if receiver.pending_bytes >= _FLUSH_BYTES:
                        await anyio.to_thread.run_sync(receiver.flush)
                parser.finalize()
                await anyio.to_thread.run_sync(receiver.flush)
        except MultipartParseError as exc:
            raise bad_form(f"malformed multipart body: {exc}") from None
        if receiver.filename is None:
            raise bad_form(f"no file: send it in the form field {FILE_FIELD!r}")
        return Upload(
            receiver.fields, receiver.filename, tmp_path, receiver.size, receiver.sha.hexdigest()
        )
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@dataclass
class _Receiver:
    """Callbacks of python-multipart's streaming parser."""

    out: BinaryIO
    max_bytes: int
    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    size: int = 0
    sha: hashlib._Hash = field(default_factory=hashlib.sha256)
    pending: list[bytes] = field(default_factory=list)
    pending_bytes: int = 0
    _header: bytes = b""
    _value: bytes = b""
    _disposition: bytes = b""
    _name: str = ""
    _in_file: bool = False
    _data: bytearray = field(default_factory=bytearray)

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
        }

    def flush(self) -> None:
        """Hash and write what the parser produced since the last flush (in a thread)."""
        data, self.pending, self.pending_bytes = b"".join(self.pending), [], 0
        self.sha.update(data)
        self.out.write(data)

    def on_part_begin(self) -> None:
        self._disposition, self._in_file, self._data = b"", False, bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header += data[start:end]
        if len(self._header) > MAX_HEADER_BYTES:
            raise bad_form(f"a part header name is longer than {MAX_HEADER_BYTES} bytes")

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]
        if len(self._value) > MAX_HEADER_BYTES:
            raise bad_form(f"a part header value is longer than {MAX_HEADER_BYTES} bytes")

    def on_header_end(self) -> None:
        if self._header.lower() == b"content-disposition":
            self._disposition = self._value
        self._header, self._value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" not in options:
            if len(self.fields) >= MAX_FIELDS:
                raise bad_form(f"too many form fields; at most {MAX_FIELDS}")
            return
        if self._name != FILE_FIELD or self.filename is not None:
            raise bad_form(f"send exactly one file, in the form field {FILE_FIELD!r}")
        self.filename = options[b"filename"].decode("utf-8", "replace")
        self._in_file = True

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self.size += end - start
            if self.size > self.max_bytes:
                raise too_large(self.max_bytes)
            self.pending.append(data[start:end])
            self.pending_bytes += end - start
            return
        self._data += data[start:end]
        if len(self._data) > MAX_FIELD_BYTES:
            raise bad_form(f"form field {self._name!r} is longer than {MAX_FIELD_BYTES} bytes")

    def on_part_end(self) -> None:
        if not self._in_file:
            self.fields[self._name] = self._data.decode("utf-8", "replace")
