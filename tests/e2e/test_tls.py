"""Issue 5, TLS on workers (`[worker X] tls = on`, `[tls] cert`/`key`): a client that
trusts the dev CA syncs over TLS 1.3; TLS 1.1 is refused by the server; a plain TCP
client, a client trusting another CA, a wrong host name and an expired certificate all
fail (and the worker keeps serving); a client that never sends its ClientHello is closed
after tls_handshake_timeout; SIGHUP reloads the certificate, keeping the old one when the
new one does not load. Certificates come from conf/make-dev-certs.sh (fixture dev_certs).
"""

from __future__ import annotations

import shutil
import signal
import socket
import ssl
import time
import warnings
from pathlib import Path

import pytest

from qagwtest import harness
from qagwtest import qasync as q
from qagwtest.harness import msg

HANDSHAKE_TIMEOUT = 2
LIMITS = {"tls_handshake_timeout": HANDSHAKE_TIMEOUT, "hello_timeout": 10}


class TlsClient(q.Client):
    """q.Client over TLS: the handshake (and certificate verification) happens here."""

    def __init__(self, port: int, ctx: ssl.SSLContext, server_hostname: str = "localhost",
                 host: str = "127.0.0.1", timeout: float = 10.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        raw = socket.create_connection((host, port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.sock = ctx.wrap_socket(raw, server_hostname=server_hostname)
        except BaseException:
            raw.close()
            raise
        self.buf = b""
        self.batch = 0
        self.nonce = 0
        self.welcome = None
        self.received = []


def trusting(ca: Path) -> ssl.SSLContext:
    """What an agent does: verify the chain against ca and the host name."""
    return ssl.create_default_context(cafile=str(ca))


def der(cert: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert.read_text())


def tls_gateway(qagw_conf, certs: Path, name: str = "server", node=None, **kw):
    return qagw_conf(tls_workers=("ml1",), tls_cert=certs / f"{name}.crt",
                     tls_key=certs / f"{name}.key", limits=LIMITS, node=node, **kw)


def serves_tls(port: int, ca: Path, agent_id: str, hostname: str = "localhost",
               check_hostname: bool = True) -> bytes:
    """A TLS session completes HELLO/WELCOME and a PING; returns the server certificate."""
    ctx = trusting(ca)
    ctx.check_hostname = check_hostname
    with TlsClient(port, ctx, server_hostname=hostname) as c:
        c.hello(agent_id)
        c.ping()
        c.bye()
        return c.sock.getpeercert(binary_form=True)


def verification_fails(port: int, ctx: ssl.SSLContext, hostname: str = "localhost"):
    with pytest.raises(ssl.SSLCertVerificationError) as ei:
        TlsClient(port, ctx, server_hostname=hostname).close()
    return ei.value


def test_sync_over_tls_13_and_a_plain_client_is_refused(qagw_conf, dev_certs, store, uid):
    g = tls_gateway(qagw_conf, dev_certs)
    port = g.port("ml1")
    A, B = f"tls-a-{uid}", f"tls-b-{uid}"
    m = msg(f"{B}\\q", body=b"over TLS")

    with TlsClient(port, trusting(dev_certs / "ca.crt")) as a:
        assert a.sock.version() == "TLSv1.3", a.sock.version()
        w = a.hello(A)
        assert w.server == "ml1"
        streams = dict(w.servers)
        assert streams["ml1"].startswith("tls("), f"a TLS worker is listed as {streams['ml1']!r}"
        ack = a.upload([m])
        assert [r for _, r in ack.results] == [q.R_STORED]
    # connecting by name: "localhost" resolves and verifies against the SAN
    with TlsClient(port, trusting(dev_certs / "ca.crt"), host="localhost") as b:
        b.hello(B)
        d = b.fetch()
        assert [x.id for x in d.msgs] == [m.id] and d.msgs[0].body == b"over TLS"
        b.deliver_ack([d.msgs[0].seq])
        b.ping()
    assert int(store.scalar("SELECT status FROM qa_messages WHERE id = %s", (str(m.id),))) == 20

    # a plain TCP client speaking QASync: no WELCOME, and the connection is closed
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(q.encode(q.Hello(agent_id=f"plain-{uid}", now_ms=q.now_ms())))
        got = b""
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                got += chunk
        except ConnectionResetError:
            pass
        except socket.timeout:
            pytest.fail(f"a plain client to a TLS worker was kept open (got {got[:40]!r})")
    assert time.monotonic() - t0 < 5
    # at most a TLS alert record (content type 21), never a QASync frame
    assert got == b"" or got[0] == 0x15, f"plain client got {got[:40]!r}"
    assert "handshake" in g.log_text().lower()

    # the worker keeps serving
    serves_tls(port, dev_certs / "ca.crt", f"after-plain-{uid}")


def test_tls_12_accepted_tls_11_refused_by_the_server(qagw_conf, dev_certs, uid):
    g = tls_gateway(qagw_conf, dev_certs)
    port = g.port("ml1")

    ctx = trusting(dev_certs / "ca.crt")
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with TlsClient(port, ctx) as c:
        assert c.sock.version() == "TLSv1.2"
        c.hello(f"v12-{uid}")

    # A client that offers TLS 1.0-1.1 only (SECLEVEL=0 so that our own OpenSSL does send
    # the ClientHello): the server must answer with a protocol_version alert.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError) as ei:
        TlsClient(port, ctx).close()
    assert "PROTOCOL_VERSION" in str(ei.value).upper() or \
        "UNSUPPORTED_PROTOCOL" in str(ei.value).upper(), ei.value

    serves_tls(port, dev_certs / "ca.crt", f"after-v11-{uid}")


def test_other_ca_wrong_host_and_expired_fail_verification(qagw_conf, dev_certs, uid):
    good = tls_gateway(qagw_conf, dev_certs, node="good")
    wrong = tls_gateway(qagw_conf, dev_certs, name="wrong-host", node="wrong")
    expired = tls_gateway(qagw_conf, dev_certs, name="expired", node="expired")
    ca = dev_certs / "ca.crt"

    # a client trusting an unrelated CA
    e = verification_fails(good.port("ml1"), trusting(dev_certs / "other-ca.crt"))
    assert e.verify_code == 20, (e.verify_code, e.verify_message)  # unable to get issuer
    serves_tls(good.port("ml1"), ca, f"after-other-ca-{uid}")
    # by IP address too (the server certificate has 127.0.0.1 in its SAN)
    serves_tls(good.port("ml1"), ca, f"by-ip-{uid}", hostname="127.0.0.1")

    # a server certificate for not-this-host.example, reached as localhost
    e = verification_fails(wrong.port("ml1"), trusting(ca))
    assert e.verify_code == 62 or "hostname" in e.verify_message.lower(), \
        (e.verify_code, e.verify_message)
    # it is the name that fails: with the right name the chain verifies, and it serves
    serves_tls(wrong.port("ml1"), ca, f"wrong-host-chain-{uid}", check_hostname=False)

    # an expired server certificate
    e = verification_fails(expired.port("ml1"), trusting(ca))
    assert e.verify_code == 10, (e.verify_code, e.verify_message)  # certificate has expired
    insecure = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    with TlsClient(expired.port("ml1"), insecure) as c:
        c.hello(f"expired-serving-{uid}")

    for g in (good, wrong, expired):
        assert g.alive()


def test_a_client_that_never_says_client_hello_is_closed(qagw_conf, dev_certs, uid):
    g = tls_gateway(qagw_conf, dev_certs)
    port = g.port("ml1")
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=HANDSHAKE_TIMEOUT + 8) as s:
        try:
            data = s.recv(4096)
        except ConnectionResetError:
            data = b""
        except socket.timeout:
            pytest.fail(f"not closed within {HANDSHAKE_TIMEOUT + 8}s (tls_handshake_timeout "
                        f"is {HANDSHAKE_TIMEOUT}s)")
    elapsed = time.monotonic() - t0
    assert data == b"" or data[0] == 0x15, data[:40]
    # closed by the handshake deadline, not by hello_timeout (10 s)
    assert HANDSHAKE_TIMEOUT - 0.5 <= elapsed <= HANDSHAKE_TIMEOUT + 3, elapsed

    # half a ClientHello, then nothing: closed by the same deadline
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=HANDSHAKE_TIMEOUT + 8) as s:
        s.sendall(bytes([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC, 0x03, 0x03]))
        try:
            while s.recv(4096):
                pass
        except ConnectionResetError:
            pass
        except socket.timeout:
            pytest.fail("a half-finished handshake was kept open")
    assert time.monotonic() - t0 <= HANDSHAKE_TIMEOUT + 3

    serves_tls(port, dev_certs / "ca.crt", f"after-stall-{uid}")


def test_sighup_reloads_the_certificate_and_keeps_the_old_one_on_failure(
        qagw_conf, dev_certs, tmp_path, uid):
    certs = tmp_path / "certs"
    certs.mkdir()
    for f in ("server.crt", "server.key", "wrong-host.crt", "wrong-host.key"):
        shutil.copy(dev_certs / f, certs / f)
    g = tls_gateway(qagw_conf, certs)
    port, ca = g.port("ml1"), dev_certs / "ca.crt"
    assert serves_tls(port, ca, f"hup0-{uid}") == der(certs / "server.crt")

    def hup_and_wait(needle: str) -> str:
        before = g.log_text()
        g.proc.send_signal(signal.SIGHUP)
        harness.wait_until(lambda: needle in g.log_text()[len(before):], 10,
                           what=f"{needle!r} in the log after SIGHUP")
        return g.log_text()[len(before):]

    # a cert path that does not exist: the old certificate stays, and the log says why
    g.tls_cert = certs / "missing.crt"
    g.write_config()
    log = hup_and_wait("missing.crt")
    line = next(x for x in log.splitlines() if "missing.crt" in x)
    # says that the old one is kept, and why (OpenSSL's reason after the path)
    assert "keep" in line.lower() and line.split("missing.crt", 1)[1].strip(": "), line
    assert g.alive()
    assert serves_tls(port, ca, f"hup1-{uid}") == der(certs / "server.crt")

    # a certificate file that is not a certificate: the same
    (certs / "broken.crt").write_text("-----BEGIN CERTIFICATE-----\nnot base64\n"
                                      "-----END CERTIFICATE-----\n")
    g.tls_cert = certs / "broken.crt"
    g.write_config()
    line = next(x for x in hup_and_wait("broken.crt").splitlines() if "broken.crt" in x)
    assert "keep" in line.lower(), line
    assert serves_tls(port, ca, f"hup2-{uid}") == der(certs / "server.crt")

    # a new valid certificate (and key): served to new connections
    g.tls_cert, g.tls_key = certs / "wrong-host.crt", certs / "wrong-host.key"
    g.write_config()
    hup_and_wait("TLS certificate reloaded")  # not "configuration reloaded", logged first
    assert serves_tls(port, ca, f"hup3-{uid}", check_hostname=False) == der(certs / "wrong-host.crt")


def test_qaagent_over_tls(qagw_conf, agent, dev_certs, uid):
    """qaagent's tls(host=..;port=..;trusted_certificates=CA) stream: a sync succeeds with
    the dev CA; another CA, a wrong host name and an expired certificate each end the
    sync with a non-zero exit and a reason that names the verification."""
    good = tls_gateway(qagw_conf, dev_certs, node="good")
    wrong = tls_gateway(qagw_conf, dev_certs, name="wrong-host", node="wrong")
    expired = tls_gateway(qagw_conf, dev_certs, name="expired", node="expired")
    ca, other = dev_certs / "ca.crt", dev_certs / "other-ca.crt"

    a = agent(f"qa-tls-{uid}", good.tls_stream("ml1", ca))
    a.send(f"qa-tls-b-{uid}\\q", "over TLS")
    r = a.sync()
    assert r.json()["uploaded"]["stored"] == 1, r

    cases = {
        "another CA": good.tls_stream("ml1", other),
        "wrong host name": wrong.tls_stream("ml1", ca),
        "expired certificate": expired.tls_stream("ml1", ca),
    }
    for what, stream in cases.items():
        bad = agent(f"qa-bad-{len(what)}-{uid}", stream)
        bad.send(f"x-{uid}\\q", "never sent")
        r = bad.sync(expect_rc=None, timeout=60)
        assert r.rc != 0, f"{what}: sync succeeded\n{r!r}"
        text = (r.stdout + r.stderr).lower()
        assert "verif" in text or "certificate" in text, f"{what}: no reason naming verification\n{r!r}"
    for g in (good, wrong, expired):
        assert g.alive()
