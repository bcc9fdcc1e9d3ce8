"""
test_peers.py - Exim and OpenSMTPD as Portcullis's clients and backends

Debian's exim4-daemon-light (Exim 4.96) and opensmtpd (OpenSMTPD 6.8),
unpacked by tests/install-deps (they conflict with the suite's Postfix)
and run by the harness (Exim, OpenSMTPD) on loopback, each with a
configuration written into its own temporary directory.

As clients: the MTA takes a message on its own port and relays it to a
STARTTLS listener of Portcullis with TLS required and Portcullis's
certificate verified against the test CA; the capture backend gets the
message under Portcullis's Received: header with ESMTPS, and the
decision record has the tls object. A plain listener gets nothing: the
MTA will not send in clear.

As backends: neither offers XCLIENT nor XFORWARD, so with
client_identity auto Portcullis adds its Received: header; a client over
STARTTLS finds, in the stored message, the backend's Received: naming
Portcullis, then Portcullis's naming the client with ESMTPS and
"(using TLSv1.3 with cipher ...)". A recipient the relay filter refuses
never reaches the backend.

Everything is on loopback; every wait is bounded.
"""

import os
import re
import smtplib
import ssl
import unittest

import harness
from harness import (DOMAIN, EXIM_BIN, OPENSMTPD_BIN, PROJECT, Exim,
                     OpenSMTPD, ProxyTestCase, TestCA, free_port,
                     header_fields,
                     make_message, skip_unless_peer, skip_unless_tool,
                     wait_listening)

FILTER_DIR = os.environ.get("PORTCULLIS_FILTER_DIR") or os.path.join(
    PROJECT, "filters", ".libs")

# a backend with neither XCLIENT nor XFORWARD: Portcullis's Received: path
NO_IDENTITY = ("PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES")
CA = TestCA()

BOB = "bob@" + DOMAIN
TLS13 = "TLS_AES_256_GCM_SHA384"


def setUpModule():
    skip_unless_tool("openssl")
    CA.make()


def tearDownModule():
    CA.remove()


def tls_listener(port):
    return ("\n[listener mx]\naddress = 127.0.0.1:%d\ntls = starttls\n"
            "tls_certificate = %s\ntls_key = %s\n" % (port, CA.cert, CA.key))


def client_context():
    ctx = ssl.create_default_context(cafile=CA.ca)
    ctx.check_hostname = False
    return ctx


def received_fields(message):
    """The Received: fields of a stored message (LF line ends), unfolded
    into one line each, top first."""
    head = message.split(b"\n\n", 1)[0].decode("utf-8", "replace")
    fields = re.split(r"\n(?=\S)", head)
    return [re.sub(r"\n[ \t]+", " ", f) for f in fields
            if f.lower().startswith("received:")]


class PeerCase(ProxyTestCase):
    """What the Exim and OpenSMTPD cases share; mta is the harness class,
    package its Debian package."""

    mta = None
    package = None
    binary = None

    def setUp(self):
        skip_unless_peer(self.binary, self.package)

    def start_mta(self, **kw):
        m = self.mta(**kw)
        self.addCleanup(m.stop)
        m.start()
        return m


class ClientCases(PeerCase):
    """The MTA relays to Portcullis with STARTTLS required."""

    def submit(self, mta, subject):
        """One message to bob, through the MTA's own SMTP port."""
        msg = make_message(subject=subject)
        with smtplib.SMTP("127.0.0.1", mta.port, timeout=30) as s:
            s.ehlo("submitter.example.test")
            s.sendmail("alice@" + DOMAIN, [BOB], msg)
        return msg

    def test_relays_over_required_starttls_and_the_record_has_tls(self):
        capture = self.start_capture(keywords=NO_IDENTITY)
        tls_port = free_port()
        proxy = self.start_proxy(backend_port=capture.port,
                                 extra=tls_listener(tls_port))
        self.assertTrue(wait_listening(tls_port, 10, proxy.proc))
        mta = self.start_mta(relay_port=tls_port, ca=CA.ca)
        msg = self.submit(mta, "from %s over TLS" % mta.name)
        got = capture.wait_messages(1, timeout=30)
        self.assertEqual(len(got), 1, mta.log()[-3000:])
        rec = proxy.wait_transaction(action="accepted")[0]
        self.assertEqual(rec["client"]["helo"], mta.hostname)
        self.assertEqual(rec["tls"]["version"], "TLSv1.3")
        self.assertEqual(rec["tls"]["cipher"], TLS13)
        self.assertEqual([r["address"] for r in rec["recipients"]], [BOB])
        # Portcullis's Received: (the backend takes no XCLIENT) names the
        # MTA and TLS, then the MTA's own, then the message as submitted
        text = got[0].decode()
        self.assertRegex(
            text,
            r"^Received: from %s \(unknown \[127\.0\.0\.1\]\)\r\n"
            r"\t\(using TLSv1\.3 with cipher %s \(256/256 bits\)\)\r\n"
            r"\tby proxy\.portcullis\.test \(Portcullis\) with ESMTPS id "
            % (re.escape(mta.hostname), TLS13))
        recv = [f for name, f in header_fields(got[0]) if name == b"received"]
        self.assertEqual(len(recv), 2, text[:1500])
        self.assertIn(b"by " + mta.hostname.encode(), recv[1])
        self.assertIn(msg.split(b"\r\n\r\n", 1)[1], got[0])
        self.assertIn(b"Subject: from %s over TLS\r\n" % mta.name.encode(),
                      got[0])
        # the delivery is logged, and Portcullis ended TLS with close_notify
        # after its 221: no "TLS connection was non-properly terminated"
        self.assertTrue(mta.wait_log(self.delivered), mta.log()[-3000:])
        self.assertNotRegex(mta.log(), self.tls_error)

    def test_a_listener_without_starttls_gets_nothing(self):
        capture = self.start_capture(keywords=NO_IDENTITY)
        proxy = self.start_proxy(backend_port=capture.port)
        mta = self.start_mta(relay_port=proxy.port, ca=CA.ca)
        self.submit(mta, "must not go in clear")
        self.assertTrue(mta.wait_log(self.refusal_in_clear, 30),
                        mta.log()[-3000:])
        self.assertEqual(capture.messages(), [])
        self.assertEqual(proxy.transactions(), [])


class BackendCases(PeerCase):
    """Portcullis in front of the MTA, client_identity auto."""

    def start_pair(self, **kw):
        self.backend = self.start_mta()
        self.tls_port = free_port()
        self.proxy = self.start_proxy(backend_port=self.backend.port,
                                      extra=tls_listener(self.tls_port)
                                      + kw.pop("extra", ""), **kw)
        self.assertTrue(wait_listening(self.tls_port, 10, self.proxy.proc))
        self.assertTrue(self.proxy.wait_log(r"backend offers"),
                        self.proxy.stderr()[-2000:])
        return self.proxy

    def test_starttls_client_stored_with_portcullis_received_below_the_backends(self):
        self.start_pair()
        msg = make_message(subject="through Portcullis")
        with smtplib.SMTP("127.0.0.1", self.tls_port, timeout=30) as s:
            s.ehlo("client.example.test")
            s.starttls(context=client_context())
            s.ehlo("client.example.test")
            refused = s.sendmail("alice@" + DOMAIN, [BOB], msg)
        self.assertEqual(refused, {})
        stored = self.backend.wait_messages("bob", 1)
        self.assertEqual(len(stored), 1, self.backend.log()[-3000:])
        recv = received_fields(stored[0])
        self.assertEqual(len(recv), 2, stored[0][:1500])
        # the backend's own, naming Portcullis (its HELO) at 127.0.0.1
        self.assertIn(self.backend.hostname, recv[0])
        self.assertIn("proxy.portcullis.test", recv[0])
        self.assertIn("127.0.0.1", recv[0])
        # then Portcullis's, naming the client, TLS and ESMTPS
        self.assertRegex(
            recv[1],
            r"^Received: from client\.example\.test \(unknown \[127\.0\.0\.1\]\) "
            r"\(using TLSv1\.3 with cipher %s \(256/256 bits\)\) "
            r"by proxy\.portcullis\.test \(Portcullis\) with ESMTPS id \S+ "
            r"for <bob@example\.test>; " % TLS13)
        body = msg.split(b"\r\n\r\n", 1)[1].replace(b"\r\n", b"\n")
        self.assertTrue(stored[0].endswith(body), stored[0][-300:])
        rec = self.proxy.wait_transaction(action="accepted")[0]
        self.assertEqual(rec["tls"]["version"], "TLSv1.3")
        # the backend's reply and its queue id, as the backend logged it
        qid = self.backend.wait_log(self.queue_id_logged).group(1)
        self.assertEqual(rec["backend"]["reply"], self.reply % qid)
        self.assertEqual(rec["backend"]["queue_id"], qid)

    def test_a_relay_refusal_never_reaches_the_backend(self):
        self.start_pair(filters="relay", filter_dir=FILTER_DIR,
                        extra="\n[filter relay]\nmodule = relay\n"
                              "local_domains = example.test\n"
                              "trusted_networks = 192.0.2.0/24\n")
        c = self.client(self.proxy.port)
        self.assertEqual(c.ehlo().code, 250)
        self.assertEqual(c.cmd("MAIL FROM:<alice@example.test>").code, 250)
        r = c.cmd("RCPT TO:<victim@elsewhere.example>")
        self.assertReply(r, 554, "5.7.1")
        self.assertReply(c.cmd("RCPT TO:<bob@example.test>"), 250)
        self.assertReply(c.cmd("DATA"), 354)
        c.send(harness.dot_stuff(make_message(subject="relay attempt")))
        self.assertReply(c.reply(), 250)
        self.assertReply(c.cmd("QUIT"), 221)
        stored = self.backend.wait_messages("bob", 1)
        self.assertEqual(len(stored), 1, self.backend.log()[-3000:])
        self.assertNotIn(b"elsewhere.example", stored[0])
        self.assertNotIn("elsewhere.example", self.backend.log())
        rec = self.proxy.wait_transaction(action="accepted")[0]
        refused = [r for r in rec["recipients"]
                   if r["address"] == "victim@elsewhere.example"]
        self.assertTrue(refused and refused[0]["reply"].startswith("554 5.7.1"),
                        rec)


class TestEximClient(ClientCases):
    mta, package, binary = Exim, "exim4-daemon-light", EXIM_BIN
    delivered = (r"=> bob@example\.test R=to_portcullis T=portcullis_tls "
                 r"H=127\.0\.0\.1 \[127\.0\.0\.1\] X=TLS1\.3:\S+ CV=yes "
                 r'DN="O=Portcullis Test,CN=mx\.example\.test" '
                 r'C="250 2\.0\.0 Ok: queued as CAPT1"')
    tls_error = r"TLS error"
    refusal_in_clear = (r"a TLS session is required, but the server did not "
                        r"offer TLS support")


class TestOpenSMTPDClient(ClientCases):
    mta, package, binary = OpenSMTPD, "opensmtpd", OPENSMTPD_BIN
    delivered = (r'mta server-cert-check result="success"\n.*'
                 r'mta delivery .* to=<bob@example\.test> .*result="Ok" '
                 r'stat="250 2\.0\.0 Ok: queued as CAPT1"')
    tls_error = r"(?i)ssl|tls.*error"
    refusal_in_clear = (r"mta error reason=TLS required but not supported by "
                        r"remote host")


class TestEximBackend(BackendCases):
    mta, package, binary = Exim, "exim4-daemon-light", EXIM_BIN
    queue_id_logged = r"^\S+ \S+ (\S+) <= alice@example\.test "
    reply = "250 OK id=%s"


class TestOpenSMTPDBackend(BackendCases):
    mta, package, binary = OpenSMTPD, "opensmtpd", OPENSMTPD_BIN
    queue_id_logged = r" smtp message msgid=([0-9a-f]+) "
    reply = "250 2.0.0 %s Message accepted for delivery"


del ClientCases, BackendCases, PeerCase

if __name__ == "__main__":
    unittest.main()
