"""The independent Python codec checked against byte layouts written out by hand from
protocol.md, so the black-box tests do not rest on a codec that is wrong in the same way
as the one under test. No processes are started here."""

import uuid

import pytest

from qagwtest import qasync as q

MID = uuid.UUID("00112233-4455-6677-8899-aabbccddeeff")


def hx(s: str) -> bytes:
    return bytes.fromhex(s.replace(" ", "").replace("\n", ""))


def test_hello_layout():
    got = q.encode(q.Hello(agent_id="A1", token="", primary="ml1", flags=q.FLAG_PERSIST,
                           now_ms=0x0102030405060708))
    want = (hx("00000017 01")          # length 23 = type + 22 bytes; HELLO
            + hx("0001")                # version 1
            + hx("0002") + b"A1"        # agent_id
            + hx("0000")                # token ""
            + hx("0003") + b"ml1"       # primary
            + hx("01")                  # flags PERSIST
            + hx("0102030405060708"))   # now_ms
    assert got == want
    assert len(got) - 4 == 23
    assert q.decode(got[4], got[5:]) == q.Hello("A1", "", "ml1", 1, 0x0102030405060708)


def test_upload_and_msg_out_layout():
    m = q.MsgOut(id=MID, to="B\\q", priority=9, expires_ms=5, props=[("k", "v")], body=b"xy")
    payload = q.Upload(batch=7, msgs=[m]).payload()
    want = (hx("00000007 0001") + MID.bytes + hx("0003") + b"B\\q" + hx("09 0000000000000005")
            + hx("0001 0001") + b"k" + hx("0001") + b"v" + hx("00000002") + b"xy")
    assert payload == want
    assert q.decode(q.UPLOAD, payload) == q.Upload(7, [m])


def test_upload_count_zero_is_malformed():
    with pytest.raises(q.DecodeError):
        q.decode(q.UPLOAD, hx("00000001 0000"))


def test_upload_ack_layout():
    payload = hx("0000002a 0002") + MID.bytes + b"\x00" + MID.bytes + b"\x01"
    ack = q.decode(q.UPLOAD_ACK, payload)
    assert ack.batch == 42 and ack.results == [(MID, 0), (MID, 1)]
    assert ack.payload() == payload


def test_welcome_layout():
    payload = (hx("0001") + hx("0003") + b"ml2" + hx("0003") + b"ml1" + hx("00")
               + hx("0002") + hx("0003") + b"ml1" + hx("0014") + b"tcpip(host=h;port=1)"
               + hx("0003") + b"ml2" + hx("0000")
               + hx("00100000") + hx("0100") + hx("0000001e"))
    w = q.decode(q.WELCOME, payload)
    assert w == q.Welcome(1, "ml2", "ml1", 0, [("ml1", "tcpip(host=h;port=1)"), ("ml2", "")],
                          1 << 20, 256, 30)
    assert w.payload() == payload


def test_fetch_deliver_ack_layouts():
    assert q.Fetch(5, 1000).payload() == hx("0005 000003e8")
    assert q.DeliverAck([1, 2**40]).payload() == hx("0002 0000000000000001 0000010000000000")


def test_deliver_layout():
    payload = (hx("0001") + hx("0000000000000063") + MID.bytes + hx("0001") + b"A"
               + hx("0002") + b"q1" + hx("03") + hx("0000018bcfe56800") + hx("0000000000000000")
               + hx("0001") + hx("000e") + b"ias_Originator" + hx("0001") + b"A"
               + hx("00000000") + hx("01"))
    d = q.decode(q.DELIVER, payload)
    assert d.more == 1 and len(d.msgs) == 1
    m = d.msgs[0]
    assert (m.seq, m.id, m.sender, m.queue, m.priority) == (99, MID, "A", "q1", 3)
    assert m.created_ms == 0x18bcfe56800 and m.expires_ms == 0
    assert m.props == [("ias_Originator", "A")] and m.body == b""
    assert d.payload() == payload


def test_error_ping_pong_bye_layouts():
    e = q.decode(q.ERROR, hx("0006 01 0002") + b"pg")
    assert (e.code, e.retryable, e.text, e.name) == (6, 1, "pg", "store_unavailable")
    assert q.encode(q.Ping(3)) == hx("00000009 0a 0000000000000003")
    assert q.encode(q.Pong(3)) == hx("00000009 0b 0000000000000003")
    assert q.encode(q.Bye()) == hx("00000001 0d")


def test_push_reassign_status_layouts():
    assert q.Push(1, 2).payload() == hx("0000000000000001 00000002")
    assert q.PushAck(1).payload() == hx("0000000000000001")
    r = q.decode(q.REASSIGN, hx("0003") + b"ml3" + hx("0000"))
    assert r == q.Reassign("ml3", [])
    st = q.Status([(MID, 60)]).payload()
    assert st == hx("0001") + MID.bytes + hx("3c")
    with pytest.raises(q.DecodeError):
        q.decode(q.STATUS, hx("0001") + MID.bytes + hx("3d"))


@pytest.mark.parametrize("ftype,payload", [
    (q.PING, hx("00000000000001")),                  # one byte short
    (q.PING, hx("000000000000000100")),              # one byte trailing
    (q.ERROR, hx("0001 00 0002 c328")),              # bad UTF-8
    (q.ERROR, hx("0001 00 0001 00")),                # NUL in str
    (q.HELLO, hx("0001 0001 41 0000 0000 02 0000000000000000")),  # unknown flag bit
    (0x7F, b""),                                     # unknown type
])
def test_malformed_payloads_are_rejected(ftype, payload):
    with pytest.raises(q.DecodeError):
        q.decode(ftype, payload)


def test_split_frame():
    t, p, rest = q.split_frame(q.encode(q.Ping(1)) + b"zz")
    assert (t, p, rest) == (q.PING, hx("0000000000000001"), b"zz")
    with pytest.raises(q.DecodeError):
        q.split_frame(hx("00000000 0a"))
    with pytest.raises(q.DecodeError):
        q.split_frame(hx("00000009 0a 00"))


def test_id_hex_is_32_lowercase_hex():
    assert q.id_hex(MID) == "00112233445566778899aabbccddeeff"
