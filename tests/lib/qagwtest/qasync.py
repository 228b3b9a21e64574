"""QASync v1, written from the text of protocol.md alone (not from our C codec).

This is the "independent client" the spec talks about: a frame codec (every frame,
both directions, strict decoding) and a small blocking client the black-box tests use
to drive qagw frame by frame, including with hostile raw bytes.
"""

from __future__ import annotations

import dataclasses
import socket
import struct
import time
import uuid
from typing import List, Optional, Sequence, Tuple

VERSION = 1

HELLO = 0x01
WELCOME = 0x02
UPLOAD = 0x03
UPLOAD_ACK = 0x04
FETCH = 0x05
DELIVER = 0x06
DELIVER_ACK = 0x07
PUSH = 0x08
PUSH_ACK = 0x09
PING = 0x0A
PONG = 0x0B
ERROR = 0x0C
BYE = 0x0D
REASSIGN = 0x0E
STATUS = 0x0F

FRAME_NAMES = {
    HELLO: "HELLO", WELCOME: "WELCOME", UPLOAD: "UPLOAD", UPLOAD_ACK: "UPLOAD_ACK",
    FETCH: "FETCH", DELIVER: "DELIVER", DELIVER_ACK: "DELIVER_ACK", PUSH: "PUSH",
    PUSH_ACK: "PUSH_ACK", PING: "PING", PONG: "PONG", ERROR: "ERROR", BYE: "BYE",
    REASSIGN: "REASSIGN", STATUS: "STATUS",
}

FLAG_PERSIST = 0x01

# ERROR codes (protocol.md, "ERROR")
E_BAD_FRAME = 1
E_VERSION = 2
E_AUTH = 3
E_SEQUENCE = 4
E_TOO_LARGE = 5
E_STORE_UNAVAILABLE = 6
E_OVERLOADED = 7
E_DRAINING = 8
E_TIMEOUT = 9
E_SUPERSEDED = 10
E_INTERNAL = 11
ERROR_NAMES = {
    1: "bad_frame", 2: "version", 3: "auth", 4: "sequence", 5: "too_large",
    6: "store_unavailable", 7: "overloaded", 8: "draining", 9: "timeout",
    10: "superseded", 11: "internal",
}
RETRYABLE = {6, 7, 8, 9, 11}

# UPLOAD_ACK results
R_STORED = 0
R_DUPLICATE = 1
R_INVALID = 2
R_EXPIRED = 3
R_TOO_LARGE = 4
R_QUOTA = 5
R_CONFLICT = 6

# STATUS values an agent may report
S_EXPIRED = 30
S_UNRECEIVABLE = 50
S_RECEIVED = 60
AGENT_STATUSES = (S_EXPIRED, S_UNRECEIVABLE, S_RECEIVED)

DEFAULT_MAX_FRAME = 1 << 20


class DecodeError(ValueError):
    """The bytes are not a well-formed QASync v1 frame (what a server calls bad_frame)."""


# ---------------------------------------------------------------- primitives


class Writer:
    def __init__(self) -> None:
        self.parts: List[bytes] = []

    def u8(self, v: int) -> "Writer":
        self.parts.append(struct.pack(">B", v))
        return self

    def u16(self, v: int) -> "Writer":
        self.parts.append(struct.pack(">H", v))
        return self

    def u32(self, v: int) -> "Writer":
        self.parts.append(struct.pack(">I", v))
        return self

    def u64(self, v: int) -> "Writer":
        self.parts.append(struct.pack(">Q", v))
        return self

    def raw(self, b: bytes) -> "Writer":
        self.parts.append(bytes(b))
        return self

    def str(self, s) -> "Writer":
        # bytes are written as they are, so tests can send invalid UTF-8 on purpose
        b = s if isinstance(s, (bytes, bytearray)) else s.encode("utf-8")
        return self.u16(len(b)).raw(b)

    def bin(self, b: bytes) -> "Writer":
        return self.u32(len(b)).raw(b)

    def id(self, v) -> "Writer":
        b = as_id_bytes(v)
        return self.raw(b)

    def props(self, props: Sequence[Tuple[str, str]]) -> "Writer":
        props = list(props.items()) if isinstance(props, dict) else list(props)
        self.u16(len(props))
        for k, v in props:
            self.str(k).str(v)
        return self

    def bytes(self) -> bytes:
        return b"".join(self.parts)


class Reader:
    def __init__(self, data: bytes) -> None:
        self.data = bytes(data)
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise DecodeError(f"need {n} bytes at offset {self.pos}, have {len(self.data) - self.pos}")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack(">H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack(">I", self.take(4))[0]

    def u64(self) -> int:
        return struct.unpack(">Q", self.take(8))[0]

    def str(self) -> str:
        b = self.take(self.u16())
        try:
            s = b.decode("utf-8", errors="strict")
        except UnicodeDecodeError as e:
            raise DecodeError(f"bad UTF-8: {e}") from None
        if "\x00" in s:
            raise DecodeError("NUL in str")
        return s

    def bin(self) -> bytes:
        return self.take(self.u32())

    def id(self) -> uuid.UUID:
        return uuid.UUID(bytes=self.take(16))

    def props(self) -> List[Tuple[str, str]]:
        n = self.u16()
        return [(self.str(), self.str()) for _ in range(n)]

    def end(self) -> None:
        if self.pos != len(self.data):
            raise DecodeError(f"{len(self.data) - self.pos} trailing bytes")


def as_id_bytes(v) -> bytes:
    if isinstance(v, uuid.UUID):
        return v.bytes
    if isinstance(v, (bytes, bytearray)) and len(v) == 16:
        return bytes(v)
    if isinstance(v, str):
        return uuid.UUID(v).bytes
    raise TypeError(f"not an id: {v!r}")


def frame(ftype: int, payload: bytes = b"") -> bytes:
    """u32 length (type + payload), u8 type, payload."""
    return struct.pack(">IB", 1 + len(payload), ftype) + payload


def split_frame(data: bytes) -> Tuple[int, bytes, bytes]:
    """Splits one frame off the front of data: (type, payload, rest)."""
    if len(data) < 5:
        raise DecodeError("short header")
    (length,) = struct.unpack(">I", data[:4])
    if length == 0:
        raise DecodeError("length 0")
    if len(data) < 4 + length:
        raise DecodeError("truncated frame")
    return data[4], data[5:4 + length], data[4 + length:]


# ---------------------------------------------------------------- messages


@dataclasses.dataclass
class MsgOut:
    id: uuid.UUID
    to: str
    body: bytes = b""
    priority: int = 4
    expires_ms: int = 0
    props: List[Tuple[str, str]] = dataclasses.field(default_factory=list)

    def encode(self, w: Writer) -> None:
        w.id(self.id).str(self.to).u8(self.priority).u64(self.expires_ms)
        w.props(self.props).bin(self.body)

    @staticmethod
    def decode(r: Reader) -> "MsgOut":
        mid = r.id()
        to = r.str()
        prio = r.u8()
        exp = r.u64()
        props = r.props()
        body = r.bin()
        return MsgOut(id=mid, to=to, priority=prio, expires_ms=exp, props=props, body=body)


@dataclasses.dataclass
class MsgIn:
    seq: int
    id: uuid.UUID
    sender: str  # "from" on the wire
    queue: str
    priority: int
    created_ms: int
    expires_ms: int
    props: List[Tuple[str, str]]
    body: bytes

    @property
    def propdict(self) -> dict:
        return dict(self.props)

    def encode(self, w: Writer) -> None:
        w.u64(self.seq).id(self.id).str(self.sender).str(self.queue).u8(self.priority)
        w.u64(self.created_ms).u64(self.expires_ms).props(self.props).bin(self.body)

    @staticmethod
    def decode(r: Reader) -> "MsgIn":
        return MsgIn(seq=r.u64(), id=r.id(), sender=r.str(), queue=r.str(), priority=r.u8(),
                     created_ms=r.u64(), expires_ms=r.u64(), props=r.props(), body=r.bin())


# ---------------------------------------------------------------- frames


@dataclasses.dataclass
class Hello:
    agent_id: str
    token: str = ""
    primary: str = ""
    flags: int = 0
    now_ms: int = 0
    version: int = VERSION

    def payload(self) -> bytes:
        w = Writer().u16(self.version).str(self.agent_id).str(self.token).str(self.primary)
        return w.u8(self.flags).u64(self.now_ms).bytes()


@dataclasses.dataclass
class Welcome:
    version: int
    server: str
    primary: str
    on_primary: int
    servers: List[Tuple[str, str]]
    max_frame: int
    max_batch: int
    heartbeat_s: int

    def payload(self) -> bytes:
        w = Writer().u16(self.version).str(self.server).str(self.primary).u8(self.on_primary)
        w.u16(len(self.servers))
        for name, stream in self.servers:
            w.str(name).str(stream)
        return w.u32(self.max_frame).u16(self.max_batch).u32(self.heartbeat_s).bytes()


@dataclasses.dataclass
class Upload:
    batch: int
    msgs: List[MsgOut]

    def payload(self) -> bytes:
        w = Writer().u32(self.batch).u16(len(self.msgs))
        for m in self.msgs:
            m.encode(w)
        return w.bytes()


@dataclasses.dataclass
class UploadAck:
    batch: int
    results: List[Tuple[uuid.UUID, int]]

    def payload(self) -> bytes:
        w = Writer().u32(self.batch).u16(len(self.results))
        for i, res in self.results:
            w.id(i).u8(res)
        return w.bytes()

    @property
    def by_id(self) -> dict:
        return {i: r for i, r in self.results}


@dataclasses.dataclass
class Fetch:
    max_count: int
    max_bytes: int

    def payload(self) -> bytes:
        return Writer().u16(self.max_count).u32(self.max_bytes).bytes()


@dataclasses.dataclass
class Deliver:
    msgs: List[MsgIn]
    more: int

    def payload(self) -> bytes:
        w = Writer().u16(len(self.msgs))
        for m in self.msgs:
            m.encode(w)
        return w.u8(self.more).bytes()


@dataclasses.dataclass
class DeliverAck:
    seqs: List[int]

    def payload(self) -> bytes:
        w = Writer().u16(len(self.seqs))
        for s in self.seqs:
            w.u64(s)
        return w.bytes()


@dataclasses.dataclass
class Push:
    push_id: int
    pending: int

    def payload(self) -> bytes:
        return Writer().u64(self.push_id).u32(self.pending).bytes()


@dataclasses.dataclass
class PushAck:
    push_id: int

    def payload(self) -> bytes:
        return Writer().u64(self.push_id).bytes()


@dataclasses.dataclass
class Ping:
    nonce: int

    def payload(self) -> bytes:
        return Writer().u64(self.nonce).bytes()


@dataclasses.dataclass
class Pong:
    nonce: int

    def payload(self) -> bytes:
        return Writer().u64(self.nonce).bytes()


@dataclasses.dataclass
class Error:
    code: int
    retryable: int
    text: str

    @property
    def name(self) -> str:
        return ERROR_NAMES.get(self.code, f"code{self.code}")

    def payload(self) -> bytes:
        return Writer().u16(self.code).u8(self.retryable).str(self.text).bytes()


@dataclasses.dataclass
class Bye:
    def payload(self) -> bytes:
        return b""


@dataclasses.dataclass
class Reassign:
    primary: str
    servers: List[Tuple[str, str]]

    def payload(self) -> bytes:
        w = Writer().str(self.primary).u16(len(self.servers))
        for name, stream in self.servers:
            w.str(name).str(stream)
        return w.bytes()


@dataclasses.dataclass
class Status:
    entries: List[Tuple[uuid.UUID, int]]

    def payload(self) -> bytes:
        w = Writer().u16(len(self.entries))
        for i, st in self.entries:
            w.id(i).u8(st)
        return w.bytes()


FRAME_TYPES = {
    Hello: HELLO, Welcome: WELCOME, Upload: UPLOAD, UploadAck: UPLOAD_ACK, Fetch: FETCH,
    Deliver: DELIVER, DeliverAck: DELIVER_ACK, Push: PUSH, PushAck: PUSH_ACK, Ping: PING,
    Pong: PONG, Error: ERROR, Bye: BYE, Reassign: REASSIGN, Status: STATUS,
}


def encode(obj) -> bytes:
    """A frame object -> its bytes on the wire."""
    return frame(FRAME_TYPES[type(obj)], obj.payload())


def _servers(r: Reader) -> List[Tuple[str, str]]:
    n = r.u16()
    return [(r.str(), r.str()) for _ in range(n)]


def decode(ftype: int, payload: bytes):
    """Strictly decodes one frame's payload: every byte consumed, every field valid."""
    r = Reader(payload)
    if ftype == HELLO:
        obj = Hello(version=r.u16(), agent_id=r.str(), token=r.str(), primary=r.str(),
                    flags=r.u8(), now_ms=r.u64())
        if obj.flags & ~FLAG_PERSIST:
            raise DecodeError("unknown HELLO flag bits")
    elif ftype == WELCOME:
        obj = Welcome(version=r.u16(), server=r.str(), primary=r.str(), on_primary=r.u8(),
                      servers=_servers(r), max_frame=r.u32(), max_batch=r.u16(),
                      heartbeat_s=r.u32())
    elif ftype == UPLOAD:
        batch = r.u32()
        n = r.u16()
        if n == 0:
            raise DecodeError("UPLOAD count 0")
        obj = Upload(batch=batch, msgs=[MsgOut.decode(r) for _ in range(n)])
    elif ftype == UPLOAD_ACK:
        batch = r.u32()
        n = r.u16()
        obj = UploadAck(batch=batch, results=[(r.id(), r.u8()) for _ in range(n)])
    elif ftype == FETCH:
        obj = Fetch(max_count=r.u16(), max_bytes=r.u32())
    elif ftype == DELIVER:
        n = r.u16()
        msgs = [MsgIn.decode(r) for _ in range(n)]
        obj = Deliver(msgs=msgs, more=r.u8())
    elif ftype == DELIVER_ACK:
        n = r.u16()
        obj = DeliverAck(seqs=[r.u64() for _ in range(n)])
    elif ftype == PUSH:
        obj = Push(push_id=r.u64(), pending=r.u32())
    elif ftype == PUSH_ACK:
        obj = PushAck(push_id=r.u64())
    elif ftype == PING:
        obj = Ping(nonce=r.u64())
    elif ftype == PONG:
        obj = Pong(nonce=r.u64())
    elif ftype == ERROR:
        obj = Error(code=r.u16(), retryable=r.u8(), text=r.str())
    elif ftype == BYE:
        obj = Bye()
    elif ftype == REASSIGN:
        obj = Reassign(primary=r.str(), servers=_servers(r))
    elif ftype == STATUS:
        n = r.u16()
        entries = [(r.id(), r.u8()) for _ in range(n)]
        if any(st not in AGENT_STATUSES for _, st in entries):
            raise DecodeError("STATUS value not 30, 50 or 60")
        obj = Status(entries=entries)
    else:
        raise DecodeError(f"unknown frame type 0x{ftype:02x}")
    r.end()
    return obj


def id_hex(v) -> str:
    """A message id as the 32 lowercase hex digits of ias_StatusMessageId."""
    return as_id_bytes(v).hex()


def now_ms() -> int:
    return int(time.time() * 1000)


# ---------------------------------------------------------------- the client


class Closed(Exception):
    """The peer closed the connection (EOF or reset)."""


class ServerError(Exception):
    """The server answered with ERROR where another frame was expected."""

    def __init__(self, err: Error) -> None:
        super().__init__(f"ERROR {err.code} {err.name} retryable={err.retryable}: {err.text}")
        self.error = err


class Client:
    """A blocking QASync v1 client on one TCP connection (one session).

    recv() answers the server's PINGs by itself (so heartbeats never get in the way of a
    test) and returns every other frame decoded. Responses come in request order, so a
    DELIVER_ACK or STATUS followed by ping() is known committed when the PONG arrives.
    """

    def __init__(self, host: str, port: int, timeout: float = 10.0, source: Optional[str] = None):
        self.host, self.port, self.timeout = host, port, timeout
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.batch = 0
        self.nonce = 0
        self.welcome: Optional[Welcome] = None
        self.received: List[object] = []  # every decoded frame, for post-mortems

    # -- raw I/O
    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_frame(self, ftype: int, payload: bytes = b"") -> None:
        self.send_raw(frame(ftype, payload))

    def send(self, obj) -> None:
        self.send_raw(encode(obj))

    def half_close(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _fill(self, n: int, deadline: float) -> None:
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no complete frame within the timeout (have {len(self.buf)} bytes)")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError(f"no complete frame within the timeout (have {len(self.buf)} bytes)") from None
            except ConnectionResetError:
                raise Closed("connection reset") from None
            if not chunk:
                raise Closed(f"EOF (with {len(self.buf)} bytes of an unfinished frame)" if self.buf else "EOF")
            self.buf += chunk

    def recv_frame(self, timeout: Optional[float] = None) -> Tuple[int, bytes]:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        self._fill(4, deadline)
        (length,) = struct.unpack(">I", self.buf[:4])
        if length == 0:
            raise DecodeError("server sent a frame of length 0")
        self._fill(4 + length, deadline)
        ftype, payload = self.buf[4], self.buf[5:4 + length]
        self.buf = self.buf[4 + length:]
        return ftype, payload

    def recv(self, timeout: Optional[float] = None, answer_pings: bool = True):
        while True:
            ftype, payload = self.recv_frame(timeout)
            obj = decode(ftype, payload)
            self.received.append(obj)
            if answer_pings and isinstance(obj, Ping):
                self.send(Pong(obj.nonce))
                continue
            return obj

    def expect(self, cls, timeout: Optional[float] = None):
        obj = self.recv(timeout)
        if isinstance(obj, Error) and cls is not Error:
            raise ServerError(obj)
        if not isinstance(obj, cls):
            raise AssertionError(f"expected {cls.__name__}, got {obj!r}")
        return obj

    def expect_error_and_close(self, timeout: Optional[float] = None) -> Error:
        """The next frame must be ERROR, and the server must then close the connection."""
        err = self.expect(Error, timeout)
        self.expect_closed(timeout)
        return err

    def expect_closed(self, timeout: Optional[float] = None) -> None:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        try:
            while True:
                ftype, payload = self.recv_frame(max(0.01, deadline - time.monotonic()))
                raise AssertionError(f"expected the server to close, got {FRAME_NAMES.get(ftype, ftype)} "
                                     f"{payload[:64]!r}")
        except Closed:
            return

    # -- the session
    def hello(self, agent_id: str, token: str = "", primary: str = "", flags: int = 0,
              now: Optional[int] = None) -> Welcome:
        self.send(Hello(agent_id=agent_id, token=token, primary=primary, flags=flags,
                        now_ms=now_ms() if now is None else now))
        self.welcome = self.expect(Welcome)
        return self.welcome

    def send_upload(self, msgs: Sequence[MsgOut], batch: Optional[int] = None) -> int:
        if batch is None:
            self.batch += 1
            batch = self.batch
        self.send(Upload(batch=batch, msgs=list(msgs)))
        return batch

    def upload(self, msgs: Sequence[MsgOut], batch: Optional[int] = None) -> UploadAck:
        b = self.send_upload(msgs, batch)
        ack = self.expect(UploadAck)
        if ack.batch != b:
            raise AssertionError(f"UPLOAD_ACK for batch {ack.batch}, expected {b}")
        return ack

    def fetch(self, max_count: int = 256, max_bytes: int = 1 << 20) -> Deliver:
        self.send(Fetch(max_count=max_count, max_bytes=max_bytes))
        return self.expect(Deliver)

    def deliver_ack(self, seqs: Sequence[int]) -> None:
        self.send(DeliverAck(seqs=list(seqs)))

    def status(self, entries: Sequence[Tuple[object, int]]) -> None:
        self.send(Status(entries=[(uuid.UUID(bytes=as_id_bytes(i)), s) for i, s in entries]))

    def ping(self, nonce: Optional[int] = None) -> Pong:
        if nonce is None:
            self.nonce += 1
            nonce = self.nonce
        self.send(Ping(nonce))
        pong = self.expect(Pong)
        if pong.nonce != nonce:
            raise AssertionError(f"PONG nonce {pong.nonce}, expected {nonce}")
        return pong

    def bye(self) -> None:
        self.send(Bye())


def read_raw_frame(sock: socket.socket, timeout: float):
    """One frame from a raw socket (type, payload), or None at EOF/reset."""
    deadline = time.monotonic() + timeout
    buf = b""
    while True:
        if len(buf) >= 4:
            (n,) = struct.unpack(">I", buf[:4])
            if len(buf) >= 4 + n:
                return buf[4], buf[5:4 + n]
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no frame within {timeout}s ({len(buf)} bytes)")
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return None
        if not chunk:
            return None
        buf += chunk
