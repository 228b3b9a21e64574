#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_frame: one valid frame of each QASync v1 type
and a few malformed ones, laid out by hand from protocol.md (independently of
the C encoder). File names start with ok- or bad- (what the decoder must say).

    python3 tests/fuzz/make_corpus_frame.py [tests/fuzz/corpus/frame]
"""
import os
import struct
import sys


def u8(v): return struct.pack(">B", v)
def u16(v): return struct.pack(">H", v)
def u32(v): return struct.pack(">I", v)
def u64(v): return struct.pack(">Q", v)


def s(text):
    b = text.encode() if isinstance(text, str) else text
    return u16(len(b)) + b


def bin_(b): return u32(len(b)) + b


def props(pairs): return u16(len(pairs)) + b"".join(s(k) + s(v) for k, v in pairs)


def servers(lst): return u16(len(lst)) + b"".join(s(n) + s(st) for n, st in lst)


def frame(type_, payload): return u32(1 + len(payload)) + u8(type_) + payload


ID1 = bytes(range(16))
ID2 = bytes(range(0xF0, 0x100))
SERVERS = [("ml1", "tcpip(host=10.0.0.1;port=2439)"), ("ml2", "tls(host=gw2;port=2440)")]

MSG_OUT = (ID1 + s("bob\\inbox") + u8(4) + u64(1700000000000)
           + props([("color", "blue"), ("ias_x", "reserved")]) + bin_(b"hello"))
MSG_OUT2 = ID2 + s("carol\\q\u00e9") + u8(12) + u64(0) + props([]) + bin_(b"")
MSG_IN = (u64(42) + ID1 + s("alice") + s("inbox") + u8(7) + u64(1) + u64(2)
          + props([("ias_Originator", "alice"), ("ias_DeliveryCount", "1")]) + bin_(b"xyz"))

VALID = {
    "ok-01-hello": frame(0x01, u16(1) + s("dev-01") + s("tok") + s("gw1:2439") + u8(1)
                         + u64(1700000000123)),
    "ok-02-welcome": frame(0x02, u16(1) + s("ml1") + s("ml1") + u8(1) + servers(SERVERS)
                           + u32(1 << 20) + u16(256) + u32(30)),
    "ok-03-upload": frame(0x03, u32(7) + u16(2) + MSG_OUT + MSG_OUT2),
    "ok-04-upload-ack": frame(0x04, u32(7) + u16(2) + ID1 + u8(0) + ID2 + u8(2)),
    "ok-05-fetch": frame(0x05, u16(100) + u32(65536)),
    "ok-06-deliver": frame(0x06, u16(1) + MSG_IN + u8(1)),
    "ok-07-deliver-ack": frame(0x07, u16(2) + u64(42) + u64(43)),
    "ok-08-push": frame(0x08, u64(1) + u32(3)),
    "ok-09-push-ack": frame(0x09, u64(1)),
    "ok-10-ping": frame(0x0A, u64(0x1122334455667788)),
    "ok-11-pong": frame(0x0B, u64(0x1122334455667788)),
    "ok-12-error": frame(0x0C, u16(8) + u8(1) + s("worker ml1 is draining")),
    "ok-13-bye": frame(0x0D, b""),
    "ok-14-reassign": frame(0x0E, s("ml2") + servers(SERVERS[::-1])),
    "ok-15-status": frame(0x0F, u16(3) + ID1 + u8(60) + ID2 + u8(50) + ID1 + u8(30)),
    "ok-16-hello-v2": frame(0x01, u16(2) + b"future layout"),
}

MALFORMED = {
    "bad-length-zero": u32(0),
    "bad-length-huge": u32(0xFFFFFFFF) + u8(0x0A),
    "bad-unknown-type": frame(0x10, u64(0)),
    "bad-trailing-byte": frame(0x0A, u64(0) + b"\x00"),
    "bad-truncated-upload": frame(0x03, u32(7) + u16(2) + MSG_OUT),
    "bad-upload-count-zero": frame(0x03, u32(7) + u16(0)),
    "bad-upload-count-65535": frame(0x03, u32(7) + u16(65535)),
    "bad-hello-agent-id": frame(0x01, u16(1) + s("dev 01") + s("") + s("") + u8(0) + u64(0)),
    "bad-hello-flags": frame(0x01, u16(1) + s("dev") + s("") + s("") + u8(3) + u64(0)),
    "bad-hello-utf8": frame(0x01, u16(1) + s("dev") + s(b"\xed\xa0\x80") + s("") + u8(0)
                            + u64(0)),
    "bad-status-code": frame(0x0F, u16(1) + ID1 + u8(20)),
    "bad-deliver-more": frame(0x06, u16(0) + u8(2)),
    "bad-welcome-worker": frame(0x02, u16(1) + s("ML1") + s("") + u8(0) + servers([])
                                + u32(1 << 20) + u16(256) + u32(30)),
}


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "corpus", "frame")
    os.makedirs(out, exist_ok=True)
    for name, data in {**VALID, **MALFORMED}.items():
        with open(os.path.join(out, name), "wb") as fh:
            fh.write(data)
    print(f"wrote {len(VALID) + len(MALFORMED)} files to {out}")


if __name__ == "__main__":
    main()
