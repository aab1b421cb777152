"""Fuzz: mutated requests against the real server over sockets.

Every case is derived from (seed, case number) alone, so any case can be replayed
with `scripts/harden fuzz --seed S --case N`. A case is a valid multipart upload
(random boundary, parts, framing, pacing) with 0..3 mutations applied: hostile
filenames and Content-Disposition parameters, part headers, boundaries, the
Content-Type, Content-Length and Transfer-Encoding, chunk sizes, the request line and
headers, and raw byte flips, insertions, deletions and truncations. Every tenth case
is left valid and must be stored exactly.

Checks: the process stays alive; every request gets a response or a close within a
bound; no 5xx from the application; every 200 names files that exist with the
reported size; every stored name is sane; nothing appears outside the upload
directory; no temporary file, descriptor or upload in flight remains at the end;
the JSON access log stays valid; /healthz keeps answering within a second.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import glob
import hashlib
import json
import os
import random
import socket
import tempfile
import time

import pytest

from common import (
    REPORT,
    MiB,
    Server,
    Workspace,
    _parse_head,
    exception_text,
    file_sha256,
    healthz,
    log,
    staging_args,
    stagings,
    temp_files,
    tree_snapshot,
)

CRLF = b"\r\n"
IDLE_TIMEOUT = 2
MAX_UPLOAD = 2 * MiB
FIRST_WAIT = 0.5                    # then the client half-closes (most cases)
BOUND = FIRST_WAIT + IDLE_TIMEOUT + 3.0   # response or close by then, or it is a hang
SERVER_ERRORS = {500, 502, 503, 504, 507}
BOUNDARY_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'()+_,-./:=?"


# --------------------------------------------------------------------------- the request model

@dataclasses.dataclass
class PartSpec:
    headers: list[bytes]
    data: bytes
    filename: str | None          # the benign name (None for a plain field), for control cases


@dataclasses.dataclass
class Spec:
    method: bytes = b"POST"
    path: bytes = b"/upload"
    version: bytes = b"HTTP/1.1"
    headers: list[tuple[bytes, bytes]] = dataclasses.field(default_factory=list)
    content_type: bytes | None = None
    boundary: bytes = b""         # in the body
    parts: list[PartSpec] = dataclasses.field(default_factory=list)
    preamble: bytes = b""
    epilogue: bytes = b""
    delimiter_padding: bytes = b""
    final_dashes: bytes = b"--"
    line_end: bytes = CRLF
    framing: str = "length"        # length | chunked | none
    length_value: bytes | None = None   # overrides the Content-Length value
    length_delta: int = 0
    extra_length_headers: list[bytes] = dataclasses.field(default_factory=list)
    te_value: bytes = b"chunked"
    chunk_sizes: list[int] = dataclasses.field(default_factory=list)   # empty: one chunk
    chunk_size_format: str = "hex"
    chunk_mutation: str = ""
    trailers: list[bytes] = dataclasses.field(default_factory=list)

    def body(self) -> bytes:
        le = self.line_end
        out = (self.preamble + le) if self.preamble else b""
        for index, part in enumerate(self.parts):
            if index:
                out += le
            out += b"--" + self.boundary + self.delimiter_padding + le
            out += b"".join(h + le for h in part.headers) + le + part.data
        out += le + b"--" + self.boundary + self.final_dashes + le + self.epilogue
        return out

    def encode(self) -> bytes:
        body = self.body()
        head = self.method + b" " + self.path + b" " + self.version + CRLF
        headers = list(self.headers)
        if self.content_type is not None:
            headers.append((b"Content-Type", self.content_type))
        if self.framing == "length":
            value = self.length_value if self.length_value is not None else str(len(body) + self.length_delta).encode()
            headers.append((b"Content-Length", value))
            for extra in self.extra_length_headers:
                headers.append((b"Content-Length", extra))
            encoded = body
        elif self.framing == "chunked":
            headers.append((b"Transfer-Encoding", self.te_value))
            for extra in self.extra_length_headers:
                headers.append((b"Content-Length", extra))
            encoded = self.chunk(body)
        else:
            encoded = body
        for name, value in headers:
            head += name + b": " + value + CRLF
        return head + CRLF + encoded

    def chunk(self, body: bytes) -> bytes:
        sizes = self.chunk_sizes or [len(body)]
        out: list[bytes] = []
        offset = 0
        index = 0
        while offset < len(body):
            size = sizes[index % len(sizes)]
            if offset >= 64 * 1024 and size < 4096:
                size = len(body)          # tiny chunks for the first 64 KiB only
            size = min(size, len(body) - offset)
            index += 1
            piece = body[offset:offset + size]
            offset += size
            if self.chunk_size_format == "upper":
                line = b"%X" % size
            elif self.chunk_size_format == "zeros":
                line = b"%08x" % size
            elif self.chunk_size_format == "ext":
                line = b"%x;name=value" % size
            elif self.chunk_size_format == "space":
                line = b"%x " % size
            else:
                line = b"%x" % size
            if self.chunk_mutation == "short-data" and index == 1:
                piece = piece[:-1] if piece else piece
            if self.chunk_mutation == "long-data" and index == 1:
                piece = piece + b"X"
            if self.chunk_mutation == "missing-crlf" and index == 1:
                out += [line, CRLF, piece]
                continue
            out += [line, CRLF, piece, CRLF]
        prefix = {"bad-hex": b"zz", "negative": b"-1", "huge": b"ffffffffffffffff",
                  "overflow": b"1" + b"0" * 40}.get(self.chunk_mutation)
        if prefix is not None:
            out.insert(0, prefix + CRLF)
        if self.chunk_mutation != "no-last-chunk":
            out.append(b"0" + CRLF)
            for trailer in self.trailers:
                out.append(trailer + CRLF)
            out.append(CRLF)
        return b"".join(out)


@dataclasses.dataclass
class Case:
    index: int
    request: bytes
    pieces: list[int]              # split offsets for pacing
    pause: float                   # seconds between pieces
    half_close: bool
    control: bool
    expected: dict[str, str]       # control cases: name -> sha256
    mutations: list[str]


# --------------------------------------------------------------------------- generation

def random_boundary(rng: random.Random) -> bytes:
    # RFC 2046 allows 1 to 70 characters; libmicrohttpd 0.9.75 rejects a boundary of
    # one character (MHD_create_post_processor: blen < 2), so valid cases use 2 or more
    # and the one-character case is a mutation.
    length = rng.choice([2, 8, 16, 24, 40, 69, 70])
    text = "".join(rng.choice(BOUNDARY_CHARS) for _ in range(length))
    if rng.random() < 0.1 and length > 2:
        text = text[:length // 2] + " " + text[length // 2 + 1:]
    return text.rstrip(" ").encode() or b"b"


def random_data(rng: random.Random, boundary: bytes) -> bytes:
    roll = rng.random()
    if roll < 0.25:
        size = rng.randint(0, 16)
    elif roll < 0.75:
        size = rng.randint(17, 4096)
    elif roll < 0.95:
        size = rng.randint(4097, 300_000)
    else:
        size = rng.randint(300_001, 2_500_000)   # some over the 2 MiB limit
    data = bytearray(rng.randbytes(size))
    # Things that look like delimiters inside the content.
    for _ in range(rng.choice([0, 0, 0, 1, 3])):
        if not data:
            break
        at = rng.randrange(len(data))
        data[at:at] = rng.choice([b"\r\n--" + boundary[:-1], b"--" + boundary, b"x--" + boundary + b"--",
                                  b"\r\n\r\n", b"\r\n--", b"\n--" + boundary + b"\r\n", b"\r--" + boundary])
    # The delimiter itself (CRLF "--" boundary) must not occur in the content.
    delimiter = b"\r\n--" + boundary
    while True:
        at = (b"\r\n" + bytes(data)).find(delimiter)
        if at < 0:
            return bytes(data)
        data[at + 1] ^= 0x20    # its second "-" becomes a CR


def disposition(name: bytes, filename: bytes | None) -> bytes:
    value = b'Content-Disposition: form-data; name="' + name + b'"'
    if filename is not None:
        value += b'; filename="' + filename + b'"'
    return value


def base_spec(rng: random.Random, index: int, port: int) -> Spec:
    spec = Spec()
    boundary = random_boundary(rng)
    spec.boundary = boundary
    quoted = rng.random() < 0.3 or b" " in boundary or any(c in boundary for c in b"()',/:=?")
    spec.content_type = b"multipart/form-data; boundary=" + (b'"' + boundary + b'"' if quoted else boundary)
    spec.headers = [(b"Host", f"127.0.0.1:{port}".encode())]
    if rng.random() < 0.1:
        spec.headers.append((b"Expect", b"100-continue"))
    if rng.random() < 0.2:
        spec.headers.append((b"Connection", rng.choice([b"close", b"keep-alive"])))
    if rng.random() < 0.2:
        spec.headers.append((b"User-Agent", b"harden-fuzz/1"))
    rng.shuffle(spec.headers)
    count = rng.choice([1, 1, 1, 2, 3])
    files = 0
    for k in range(count):
        if k > 0 and rng.random() < 0.3:
            spec.parts.append(PartSpec([disposition(b"note", None)], rng.randbytes(rng.randint(0, 64)), None))
            continue
        if rng.random() < 0.1:
            # Shared names exercise the rename policy; the longest ones its shortening.
            name = rng.choice(["same.bin", "same", ".env", "a.tar.gz", "x" * 250 + ".bin", "é" * 127])
        else:
            name = f"fz-{index}-{k}.bin"
        files += 1
        headers = [disposition(b"file", name.encode())]
        if rng.random() < 0.7:
            headers.append(b"Content-Type: application/octet-stream")
        spec.parts.append(PartSpec(headers, random_data(rng, boundary), name))
    if files == 0:
        spec.parts.insert(0, PartSpec([disposition(b"file", f"fz-{index}-x.bin".encode())], b"x", f"fz-{index}-x.bin"))
    if rng.random() < 0.2:
        spec.framing = "chunked"
        spec.chunk_sizes = rng.choice([[], [1], [7, 3000], [rng.randint(1, 70000)], [65536]])
        spec.chunk_size_format = rng.choice(["hex", "hex", "upper", "zeros", "ext"])
    return spec


def hostile_filenames(index: int) -> list[bytes]:
    tag = f"fz-esc-{index}".encode()
    return [
        b"../" + tag, b"../../" + tag, b"../../../../../../" + tag, b"/tmp/" + tag, b"/" + tag,
        b"..\\..\\" + tag, b"a/../../" + tag, b"./../" + tag, b"%2e%2e%2f" + tag, b"..%2f" + tag,
        b"....//" + tag, b"..", b".", b"", b" ", b"...", b"../", b"/", b"\\", b"a/", b"a\\",
        b'a\\"b' + tag, b'a"b', b'"', b'a"; filename="../' + tag, b"a\x00b", b"\x00", b"a%00b",
        b"\x01\x02\x03", b"a\x7fb", b"\xc2\x85x", b"a\tb", b"a\x1bb",
        b"x" * 255, b"x" * 256, b"x" * 1000, b"x" * 10_000, b"x" * 100_000,
        "é".encode() * 127 + b"e", "é".encode() * 128, "😀".encode() * 64,
        "\u202etxt.exe".encode(), "e\u0301".encode(), "ｆｕｌｌ".encode(), "a\u2215b".encode(), "a\uff0fb".encode(),
        b"\xff\xfe", b"\xc0\xaf" + tag, b"\xe0\x80\xaf" + tag, b"\xed\xa0\x80", b"a\xc3",
        b".upload-0123456789abcdef.part", b".upload-", b".upload-x", b"../.upload-0123456789abcdef.part",
        b"con", b"nul.txt", b"trailing.", b"trailing ", b"-rf", b"~", b"$HOME", b"*", b"a;b", b"a=b",
    ]


def set_first(part: PartSpec, header: bytes) -> None:
    if part.headers:
        part.headers[0] = header
    else:
        part.headers.append(header)


def pick_file_part(rng: random.Random, spec: Spec) -> PartSpec:
    files = [p for p in spec.parts if p.filename is not None]
    return rng.choice(files or spec.parts)


def m_filename(rng, spec, index):
    part = pick_file_part(rng, spec)
    name = rng.choice(hostile_filenames(index))
    form = rng.random()
    if form < 0.6:
        set_first(part, disposition(b"file", name))
    elif form < 0.7:
        set_first(part, b"Content-Disposition: form-data; name=file; filename=" + name)
    elif form < 0.8:
        set_first(part, b"Content-Disposition: form-data; name=\"file\"; filename*=UTF-8''" + name)
    elif form < 0.9:
        set_first(part, disposition(b"file", b"ok.bin") + b'; filename="' + name + b'"')
    else:
        set_first(part, b'Content-Disposition: form-data; filename="' + name + b'"; name="file"')
    part.filename = None
    return "filename"


def m_disposition(rng, spec, index):
    part = pick_file_part(rng, spec)
    part.filename = None
    set_first(part, rng.choice([
        b'Content-Disposition: form-data; filename="a.bin"',
        b'Content-Disposition: form-data; name="FILE"; filename="a.bin"',
        b'Content-Disposition: form-data; name=""; filename="a.bin"',
        b'Content-Disposition: form-data; name="file"',
        b'Content-Disposition: form-data; name="file"; filename=',
        b'Content-Disposition: form-data; name="file"; filename',
        b'Content-Disposition: form-data; name="file"; filename="unterminated',
        b'Content-Disposition: form-data; name="file; filename="a.bin"',
        b'Content-Disposition: form-data; name="file"; filename="a.bin"; filename="b.bin"',
        b'Content-Disposition: attachment; name="file"; filename="a.bin"',
        b'Content-Disposition: Form-Data; NAME="file"; FILENAME="a.bin"',
        b'Content-Disposition:form-data;name="file";filename="a.bin"',
        b'Content-Disposition: form-data ; name = "file" ; filename = "a.bin"',
        b'content-disposition: form-data; name="file"; filename="a.bin"',
        b'Content-Disposition: form-data; name="file"; filename="a.bin"' + b"; x=" + b"y" * 70_000,
        b'Content-Disposition: form-data; ' + b'a=b; ' * 2000 + b'name="file"; filename="a.bin"',
        b'Content-Disposition form-data; name="file"; filename="a.bin"',
        b'Content-Disposition: form-data; name="file"; filename="a\r\nX-Injected: 1"',
        b'Content-Disposition: form-data; name="file"; filename="a\nb"',
        b'Content-Disposition: ',
        b'',
    ]))
    return "disposition"


def m_part_headers(rng, spec, index):
    part = rng.choice(spec.parts)
    choice = rng.randrange(6)
    if choice == 0:
        part.headers.append(b"Content-Type: " + rng.choice([b"", b"text/plain; charset=\xff", b"x" * 5000]))
    elif choice == 1:
        part.headers += [b"X-Part-%d: v" % i for i in range(rng.choice([10, 500, 5000]))]
    elif choice == 2:
        part.headers.append(b"no colon here")
    elif choice == 3:
        part.headers.insert(0, b"Content-Transfer-Encoding: base64")
    elif choice == 4:
        part.headers.append(b" folded continuation")
    else:
        part.headers = []
    part.filename = None if choice in (2, 4, 5) else part.filename
    return "part-headers"


def m_boundary(rng, spec, index):
    choice = rng.randrange(12)
    if choice == 0:
        spec.content_type = b"multipart/form-data; boundary=" + spec.boundary + b"x"
    elif choice == 1:
        spec.boundary = b"b" * rng.choice([71, 200, 5000, 100_000])
        spec.content_type = b"multipart/form-data; boundary=" + spec.boundary
    elif choice == 2:
        spec.content_type = b"multipart/form-data; boundary="
    elif choice == 3:
        spec.content_type = b'multipart/form-data; boundary=""'
    elif choice == 4:
        spec.final_dashes = rng.choice([b"", b"-", b"---"])
    elif choice == 5:
        spec.line_end = b"\n"
    elif choice == 6:
        spec.preamble = rng.choice([b"preamble text", b"--" + spec.boundary, b"\r\n" * 3])
        spec.epilogue = rng.choice([b"epilogue", b"--" + spec.boundary + b"--\r\n", rng.randbytes(100)])
    elif choice == 7:
        spec.delimiter_padding = rng.choice([b"  ", b"\t", b" x", b"--"])
    elif choice == 8:
        spec.content_type = b"multipart/form-data; boundary=" + spec.boundary + b"; boundary=other"
    elif choice == 9:
        spec.boundary = "é∂".encode() + spec.boundary
        spec.content_type = b"multipart/form-data; boundary=" + spec.boundary
    elif choice == 10:
        spec.content_type = b"multipart/form-data; boundary=" + spec.boundary[:1]
        if rng.random() < 0.5:
            spec.boundary = spec.boundary[:1]
    else:
        spec.boundary = b"--" + spec.boundary[2:] if len(spec.boundary) > 2 else b"--"
        spec.content_type = b"multipart/form-data; boundary=" + spec.boundary
    for part in spec.parts:
        part.filename = None
    return "boundary"


def m_content_type(rng, spec, index):
    value = spec.content_type or b""
    spec.content_type = rng.choice([
        None, b"", b"text/plain", b"multipart/mixed; boundary=" + spec.boundary, b"multipart/form-data",
        b"MULTIPART/FORM-DATA; BOUNDARY=" + spec.boundary, value + b"; charset=utf-8",
        b"multipart/form-data;boundary=" + spec.boundary, b"multipart/form-data; boundary =" + spec.boundary,
        b"application/x-www-form-urlencoded", b"multipart/form-data; boundary=" + spec.boundary + b"\x00",
        value + b"; " + b"p=v; " * 3000,
    ])
    if rng.random() < 0.2:
        spec.headers.append((b"Content-Type", b"text/plain"))
    for part in spec.parts:
        part.filename = None
    return "content-type"


def m_length(rng, spec, index):
    spec.framing = "length"
    choice = rng.randrange(9)
    if choice == 0:
        spec.length_delta = rng.randint(1, 2000)
    elif choice == 1:
        spec.length_delta = -rng.randint(1, 200)
    elif choice == 2:
        spec.length_value = rng.choice([b"abc", b"-1", b"+5", b" 5", b"0x10", b"1e3", b"", b"5 5", b"0"])
    elif choice == 3:
        spec.length_value = rng.choice([b"99999999999999999999", b"18446744073709551615", b"18446744073709551616",
                                        b"9223372036854775807", str(MAX_UPLOAD + 1).encode(), b"1073741825"])
    elif choice == 4:
        spec.extra_length_headers = [rng.choice([b"0", b"1", b"12345"])]
    elif choice == 5:
        spec.framing = "none"
    elif choice == 6:
        spec.headers.append((b"Transfer-Encoding", b"chunked"))
    elif choice == 7:
        spec.length_value = b"00000000000000000000000000000000001"
    else:
        spec.length_delta = -len(spec.body())
    for part in spec.parts:
        part.filename = None
    return "content-length"


def m_chunked(rng, spec, index):
    spec.framing = "chunked"
    choice = rng.randrange(10)
    if choice == 0:
        spec.te_value = rng.choice([b"CHUNKED", b"gzip, chunked", b"chunked, gzip", b"identity", b"xchunked",
                                    b" chunked", b"chunked\t", b"chunked, chunked", b"", b"deflate"])
    elif choice == 1:
        spec.chunk_mutation = rng.choice(["bad-hex", "negative", "huge", "overflow"])
    elif choice == 2:
        spec.chunk_mutation = rng.choice(["short-data", "long-data", "missing-crlf"])
    elif choice == 3:
        spec.chunk_mutation = "no-last-chunk"
    elif choice == 4:
        spec.trailers = rng.choice([[b"X-Trailer: 1"], [b"Content-Length: 5"], [b"bad trailer"], [b"X: " + b"y" * 9000]])
    elif choice == 5:
        spec.chunk_sizes = [1]
    elif choice == 6:
        spec.chunk_size_format = rng.choice(["space", "ext", "zeros", "upper"])
    elif choice == 7:
        spec.extra_length_headers = [b"10"]
    elif choice == 8:
        spec.chunk_sizes = [rng.randint(1, 5) for _ in range(50)]
    else:
        spec.chunk_sizes = [0x7fffffff]
    for part in spec.parts:
        part.filename = None
    return "chunked"


def m_request_line(rng, spec, index):
    choice = rng.randrange(8)
    if choice == 0:
        spec.method = rng.choice([b"post", b"PUT", b"GET", b"HEAD", b"DELETE", b"OPTIONS", b"PATCH", b"X" * 300, b"P\x00ST"])
    elif choice == 1:
        spec.path = rng.choice([b"/upload?x=1", b"/upload/", b"//upload", b"/upload%00", b"/UPLOAD", b"/upload#x",
                                b"http://127.0.0.1/upload", b"*", b"/upload/../upload", b"/" + b"a" * 10_000,
                                b"/%2e%2e/upload", b"/upload\x01", b"upload", b"/healthz", b"/metrics"])
    elif choice == 2:
        spec.version = rng.choice([b"HTTP/1.0", b"HTTP/1.2", b"HTTP/2.0", b"HTTP/0.9", b"HTTP/1.1 extra", b"HTTP/11",
                                   b"http/1.1", b"", b"HTTP/1.1\x00"])
    elif choice == 3:
        spec.headers = [h for h in spec.headers if h[0] != b"Host"]
    elif choice == 4:
        spec.headers.append(rng.choice([(b"X-No-Colon", b""), (b"Bad Name", b"v"), (b"X-Nul", b"a\x00b"),
                                        (b"X-Long", b"v" * rng.choice([8000, 70_000, 300_000])), (b"", b"empty name"),
                                        (b"X-Fold", b"a\r\n continued"), (b"X-Bare-CR", b"a\rb"),
                                        (b"X-High", bytes(range(128, 256)))]))
    elif choice == 5:
        spec.headers += [(b"X-H%d" % i, b"v") for i in range(rng.choice([100, 1000, 10_000]))]
    elif choice == 6:
        spec.headers.append((b"Expect", rng.choice([b"100-continue", b"200-ok", b"100-CONTINUE", b""])))
    else:
        spec.headers.append((b"Authorization", b"Bearer " + b"x" * rng.choice([1, 5000])))
    for part in spec.parts:
        part.filename = None
    return "request-line"


def m_many_parts(rng, spec, index):
    count = rng.choice([99, 100, 101, 150])
    spec.parts = [PartSpec([disposition(b"file", f"fz-{index}-m{k}.bin".encode())], rng.randbytes(rng.randint(0, 40)),
                           None) for k in range(count)]
    return f"{count}-parts"


STRUCTURAL = [(m_filename, 30), (m_disposition, 12), (m_part_headers, 8), (m_boundary, 12),
              (m_content_type, 6), (m_length, 10), (m_chunked, 10), (m_request_line, 8), (m_many_parts, 2)]


def raw_mutation(rng: random.Random, request: bytes) -> tuple[bytes, str]:
    data = bytearray(request)
    head_end = request.find(b"\r\n\r\n")
    head_end = head_end + 4 if head_end >= 0 else len(request)
    choice = rng.randrange(7)
    if choice == 0 and len(data) > head_end:
        for _ in range(rng.randint(1, 10)):
            at = rng.randrange(head_end, len(data))
            data[at] ^= 1 << rng.randrange(8)
        return bytes(data), "flip-body"
    if choice == 1:
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(0, head_end)
            data[at] ^= 1 << rng.randrange(8)
        return bytes(data), "flip-head"
    if choice == 2:
        at = rng.randrange(len(data) + 1)
        data[at:at] = rng.choice([rng.randbytes(rng.randint(1, 64)), b"\r\n", b"\r\n\r\n", b"\x00", b"--"])
        return bytes(data), "insert"
    if choice == 3 and len(data) > 1:
        at = rng.randrange(len(data))
        del data[at:at + rng.randint(1, 64)]
        return bytes(data), "delete"
    if choice == 4 and len(data) > 1:
        at = rng.randrange(len(data))
        size = rng.randint(1, 256)
        data[at:at] = data[at:at + size]
        return bytes(data), "duplicate"
    if choice == 5:
        return bytes(data[:rng.randrange(len(data) + 1)]), "truncate"
    return bytes(data), "none"


def make_case(seed: int, index: int, port: int) -> Case:
    rng = random.Random(f"{seed}:{index}")
    spec = base_spec(rng, index, port)
    control = index % 10 == 0
    mutations: list[str] = []
    if not control:
        for _ in range(rng.choice([1, 1, 1, 2, 2, 3])):
            if rng.random() < 0.8:
                function = rng.choices([m for m, _ in STRUCTURAL], weights=[w for _, w in STRUCTURAL])[0]
                mutations.append(function(rng, spec, index))
            else:
                mutations.append("raw")
    request = spec.encode()
    if "raw" in mutations:
        mutations.remove("raw")
        request, what = raw_mutation(rng, request)
        mutations.append("raw-" + what)
    expected = {}
    if control:
        for part in spec.parts:
            if part.filename is not None:
                expected[part.filename] = hashlib.sha256(part.data).hexdigest()
        body_size = len(spec.body())
        if body_size > MAX_UPLOAD:
            control = False       # a valid request over the limit: 413 is right
            mutations.append("over-limit")
    # Pacing: all at once, or cut into pieces at random offsets.
    pieces: list[int] = []
    pause = 0.0
    if rng.random() < 0.3 and len(request) > 1:
        pieces = sorted(rng.sample(range(1, len(request)), min(len(request) - 1, rng.randint(1, 12))))
        pause = rng.choice([0.0, 0.0, 0.001, 0.005])
    half_close = rng.random() < 0.95
    # Shared names are not unique, so a control case has only unique names.
    if control and any(not name.startswith("fz-") for name in expected):
        expected = {k: v for k, v in expected.items() if k.startswith("fz-")}
    return Case(index, request, pieces, pause, half_close, control, expected, mutations or ["none"])


# --------------------------------------------------------------------------- running a case

@dataclasses.dataclass
class Outcome:
    case: Case
    kind: str                      # response | closed | hang | error
    status: int | None = None
    body: bytes = b""
    seconds: float = 0.0
    detail: str = ""


def execute(case: Case, port: int) -> Outcome:
    start = time.monotonic()
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    except OSError as error:
        return Outcome(case, "error", detail=f"connect: {exception_text(error)}")
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(BOUND)
        sent_all = True
        offsets = [0] + case.pieces + [len(case.request)]
        try:
            for a, b in zip(offsets, offsets[1:]):
                sock.sendall(case.request[a:b])
                if case.pause:
                    time.sleep(case.pause)
        except (TimeoutError, BrokenPipeError, ConnectionResetError):
            sent_all = False    # the server answered early and closed; read what it said
        buffer = b""
        half_closed = False
        deadline = time.monotonic() + BOUND  # counted from the last byte sent
        first_deadline = time.monotonic() + FIRST_WAIT
        while True:
            now = time.monotonic()
            if now >= deadline:
                return Outcome(case, "hang", seconds=now - start, detail=f"{len(buffer)} bytes of response")
            wait_until = deadline
            if not half_closed and case.half_close and sent_all:
                wait_until = min(deadline, first_deadline)
            sock.settimeout(max(0.01, wait_until - now))
            try:
                data = sock.recv(65536)
            except TimeoutError:
                if not half_closed and case.half_close and sent_all and time.monotonic() >= first_deadline:
                    half_closed = True
                    try:
                        sock.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                continue
            except (ConnectionResetError, OSError):
                data = b""
            if not data:
                response = parse_response(buffer)
                if response is not None:
                    return Outcome(case, "response", response[0], response[1], time.monotonic() - start)
                return Outcome(case, "closed", seconds=time.monotonic() - start, detail=f"{len(buffer)} bytes")
            buffer += data
            response = parse_response(buffer)
            if response is not None:
                return Outcome(case, "response", response[0], response[1], time.monotonic() - start)
    finally:
        sock.close()


def parse_response(buffer: bytes) -> tuple[int, bytes] | None:
    """The first final response in `buffer` if it is complete."""
    while True:
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return None
        try:
            status, _, headers = _parse_head(buffer[:end])
        except ValueError:
            return (-1, buffer[:200])
        rest = buffer[end + 4:]
        if 100 <= status < 200:
            buffer = rest
            continue
        length = int(headers.get("content-length", "0") or 0)
        if len(rest) < length:
            return None
        return status, rest[:length]


# --------------------------------------------------------------------------- checks

def sane_name(name: str) -> str:
    """Why a stored name is not acceptable, or ''."""
    raw = os.fsencode(name)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8"
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in text):
        return "control character"
    if len(raw) > 255:
        return "longer than 255 bytes"
    if text in (".", "..") or "/" in text:
        return "a path"
    if text.startswith(".upload-"):
        return "reserved prefix"
    return ""


@dataclasses.dataclass
class Target:
    staging: str
    server: Server
    up: str
    base_fds: int = 0
    base_targets: list = dataclasses.field(default_factory=list)


pytestmark = pytest.mark.slow
BOTH_STAGINGS = True


def test_fuzz(binary, options):
    ws = Workspace("fuzz", keep=options.keep)
    artifacts = options.fuzz_artifacts or tempfile.mkdtemp(prefix="harden-fuzz-failures-")
    os.makedirs(artifacts, exist_ok=True)
    # One server per staging mode, each with its upload directory three levels below
    # the workspace root, so that an escape by "../" lands where it can be seen.
    targets: list[Target] = []
    for staging in stagings(options, True):
        up = ws.path(f"outer-{staging}", "mid", "up")
        os.makedirs(up)
        server = Server(binary, up, ["--timeout", str(IDLE_TIMEOUT), "--max-upload-size", str(MAX_UPLOAD),
                                     "--on-conflict", "rename"] + staging_args(staging),
                        workdir=ws.root, name=f"fuzz-{staging}")
        targets.append(Target(staging, server, up))
    try:
        for target in targets:
            target.server.start()
            target.base_fds = target.server.fd_count()
            target.base_targets = target.server.fd_targets()
        if options.case is not None:
            replay(targets[options.case % len(targets)].server, options)
            return
        ups = [t.up for t in targets]
        before_tree = tree_snapshot(ws.root, ups)
        escapes_before = set(glob.glob("/tmp/fz-esc-*") + glob.glob("/fz-esc-*"))
        total = options.cases
        log(f"{total} cases, seed {options.seed}, {options.fuzz_workers} workers; servers "
            f"({', '.join(t.staging for t in targets)} staging, case N goes to server N mod {len(targets)}) with "
            f"--timeout {IDLE_TIMEOUT} --max-upload-size {MAX_UPLOAD} --on-conflict rename; "
            f"replay one with --seed {options.seed} --case N")

        outcomes: list[Outcome] = []
        problems: dict[str, list[str]] = {"hang": [], "server-error": [], "control": [], "bad-200": [],
                                          "bad-json": [], "error": []}
        health_failures: list[str] = []
        health_worst = 0.0
        died: list[str] = []
        t0 = time.monotonic()

        def save(outcome: Outcome) -> str:
            path = os.path.join(artifacts, f"case-{outcome.case.index}.bin")
            with open(path, "wb") as f:
                f.write(outcome.case.request)
            return path

        def judge(outcome: Outcome, target: Target) -> None:
            case = outcome.case
            label = f"case {case.index} [{target.staging}] ({','.join(case.mutations)})"
            up = target.up
            if outcome.kind == "hang":
                problems["hang"].append(f"{label}: no response or close in {outcome.seconds:.1f}s; "
                                        f"{outcome.detail}; saved {save(outcome)}")
            elif outcome.kind == "error":
                problems["error"].append(f"{label}: {outcome.detail}")
            if outcome.kind == "response" and outcome.status in SERVER_ERRORS:
                problems["server-error"].append(f"{label}: {outcome.status} {outcome.body[:160]!r}; "
                                                f"saved {save(outcome)}")
            if outcome.kind == "response" and outcome.status == 200:
                try:
                    files = json.loads(outcome.body)["files"]
                except (ValueError, KeyError, TypeError) as error:
                    problems["bad-json"].append(f"{label}: {outcome.body[:160]!r} ({error})")
                    files = []
                for entry in files:
                    name, size = entry.get("name"), entry.get("size")
                    path = os.path.join(up, name) if isinstance(name, str) else ""
                    why = sane_name(name) if isinstance(name, str) else "not a string"
                    if why or not os.path.isfile(path) or os.path.islink(path) or os.path.getsize(path) != size:
                        problems["bad-200"].append(f"{label}: answered {entry!r} ({why or 'not stored so'}); "
                                                   f"saved {save(outcome)}")
                if case.control:
                    names = {e.get("name") for e in files if isinstance(e, dict)}
                    for name, digest in case.expected.items():
                        path = os.path.join(up, name)
                        if name not in names or not os.path.isfile(path) or file_sha256(path) != digest:
                            problems["control"].append(f"{label}: {name} not stored with its bytes")
            elif case.control:
                problems["control"].append(f"{label}: valid request answered {outcome.kind} {outcome.status} "
                                           f"{outcome.body[:160]!r}; saved {save(outcome)}")

        def execute_on(case: Case) -> tuple[Outcome, Target]:
            target = targets[case.index % len(targets)]
            return execute(case, target.server.port), target

        with concurrent.futures.ThreadPoolExecutor(options.fuzz_workers) as pool:
            batch = 100
            for start in range(0, total, batch):
                cases = [make_case(options.seed, i, targets[i % len(targets)].server.port)
                         for i in range(start, min(total, start + batch))]
                for outcome, target in pool.map(execute_on, cases):
                    outcomes.append(outcome)
                    judge(outcome, target)
                for target in targets:
                    if not target.server.alive():
                        died.append(f"[{target.staging}] during cases {start}..{start + batch - 1}: "
                                    f"{target.server.crash_text()}")
                        for case in cases:
                            save(Outcome(case, "crash"))
                    else:
                        ok, latency, detail = healthz(target.server.port, 1.0)
                        health_worst = max(health_worst, latency)
                        if not ok:
                            health_failures.append(f"[{target.staging}] after case {start + batch - 1}: "
                                                   f"{detail} in {latency:.2f}s")
                if died:
                    break
        seconds = time.monotonic() - t0

        statuses: dict[str, int] = {}
        for outcome in outcomes:
            key = str(outcome.status) if outcome.kind == "response" else outcome.kind
            statuses[key] = statuses.get(key, 0) + 1
        histogram = ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items()))
        controls = sum(1 for o in outcomes if o.case.control)
        slow = sum(1 for o in outcomes if o.seconds > 1.0)
        log(f"{slow} cases took over 1 s (waiting for the idle timeout); slowest "
            f"{max((o.seconds for o in outcomes), default=0):.1f}s; mutations used: "
            + ", ".join(f"{k} {v}" for k, v in sorted(_mutation_counts(outcomes).items())))
        REPORT.figure("fuzz cases", f"{len(outcomes)} in {seconds:.0f}s (seed {options.seed}; {controls} valid "
                                    f"controls); outcomes {histogram}")
        REPORT.check("servers alive after every batch", not died,
                     "; ".join(died) + f"; requests saved in {artifacts}" if died else "")
        for key, title in (("hang", "every request answered or closed within the bound"),
                           ("server-error", "no 5xx answer to any request"),
                           ("control", "every valid control upload stored with its bytes"),
                           ("bad-200", "every 200 names sanely named files stored with the reported size"),
                           ("bad-json", "every 200 body is valid JSON"),
                           ("error", "every case could connect")):
            found = problems[key]
            REPORT.check(title, not found, f"{len(found)}: " + " | ".join(found[:3]) if found else "")
        REPORT.check("/healthz answered within 1 s after every batch", not health_failures,
                     "; ".join(health_failures[:3]) if health_failures else f"worst {health_worst * 1000:.0f} ms")

        # The end state, once every connection is gone.
        escaped = sorted(set(glob.glob("/tmp/fz-esc-*") + glob.glob("/fz-esc-*")) - escapes_before)
        for target in targets:
            tag = f"[{target.staging}]"
            server, up = target.server, target.up
            ok_fds, fds, _ = server.wait_fds(target.base_fds, IDLE_TIMEOUT + 5)
            leftovers = temp_files(up)
            REPORT.check(f"{tag} no temporary file left, no file in progress open", not leftovers
                         and not server.staged_files(), str(leftovers[:5] + server.staged_files()[:5]))
            extra = sorted(set(server.fd_targets()) - set(target.base_targets))
            REPORT.check(f"{tag} descriptors back to the start value", ok_fds,
                         f"{target.base_fds} -> {fds}" + (f"; new: {extra[:5]}" if not ok_fds else ""))
            REPORT.check(f"{tag} no upload left in flight", server.wait_in_flight_zero(3))
            stored = os.listdir(up)
            insane = [(n, sane_name(n)) for n in stored if sane_name(n)]
            odd = [n for n in stored if not os.path.isfile(os.path.join(up, n)) or os.path.islink(os.path.join(up, n))]
            REPORT.check(f"{tag} every stored name is sane and a regular file", not insane and not odd,
                         f"{insane[:3]} {odd[:3]}" if insane or odd else f"{len(stored)} files")
            bad_lines = []
            for line in server.log_lines():
                try:
                    json.loads(line)
                except ValueError:
                    bad_lines.append(line[:160])
            REPORT.check(f"{tag} every log line is valid JSON", not bad_lines, str(bad_lines[:2]))
            REPORT.check(f"{tag} nothing on stderr (no crash report)", not server.stderr().strip(),
                         server.stderr()[-500:])
        escaped += sorted(tree_snapshot(ws.root, ups) - before_tree)
        REPORT.check("nothing written outside the upload directories", not escaped, str(escaped[:5]))
        if any(problems.values()) or died:
            log(f"failing requests saved in {artifacts}")
    finally:
        for target in targets:
            code = target.server.stop()
            REPORT.check(f"[{target.staging}] server exits 0 on SIGTERM", code == 0, f"exit {code}")
        ws.cleanup()
        if not os.listdir(artifacts) and not options.fuzz_artifacts:
            os.rmdir(artifacts)


def _mutation_counts(outcomes) -> dict[str, int]:
    counts: dict[str, int] = {}
    for outcome in outcomes:
        for mutation in outcome.case.mutations:
            counts[mutation] = counts.get(mutation, 0) + 1
    return counts


def replay(server: Server, options) -> None:
    case = make_case(options.seed, options.case, server.port)
    print(f"case {case.index}: mutations {case.mutations}; {len(case.request)} bytes; pieces {case.pieces[:12]} "
          f"pause {case.pause}; half-close {case.half_close}; control {case.control}")
    shown = case.request if len(case.request) <= 2000 else case.request[:1500] + b"..." + case.request[-300:]
    print(repr(shown))
    outcome = execute(case, server.port)
    print(f"outcome: {outcome.kind} {outcome.status} in {outcome.seconds:.2f}s {outcome.body[:300]!r} {outcome.detail}")
    print(f"stored: {sorted(os.listdir(server.upload_dir))[:20]}")
    REPORT.check(f"replayed case {case.index}", outcome.kind in ("response", "closed")
                 and outcome.status not in SERVER_ERRORS and server.alive(), f"{outcome.kind} {outcome.status}")
