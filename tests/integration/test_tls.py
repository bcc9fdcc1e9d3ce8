"""
test_tls.py - inbound TLS: STARTTLS (RFC 3207) and implicit TLS (RFC 8314)

A test CA, RSA and ECDSA certificates for mx.example.test, an RSA one
for other.example.test and a client certificate are made once with the
openssl command into a temporary directory. Real clients (swaks,
openssl s_client, Python's ssl module for byte-exact checks) deliver
through Portcullis to the harness's capture backend; the tests check
what a user sees: the replies, the decision record's "tls" object, the
Received: header the backend got, the certificate a client was served.
Hostile clients (commands pipelined after STARTTLS, plain text, an old
protocol, garbage) end in a connection record and the worker serves on.

Everything is on loopback; every wait is bounded.
"""

import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
import unittest

from harness import (BUILD, ProxyTestCase, children, filter_entries,
                     free_port, make_message, make_tempdir, remove_tree,
                     skip_unless_tool, wait_for, wait_listening,
                     PORTCULLIS_BIN)

PLUGIN_DIR = os.environ.get("PORTCULLIS_TEST_PLUGIN_DIR") or os.path.join(
    BUILD, "tests", "plugins", ".libs")
PROBE = os.path.join(PLUGIN_DIR, "probe.so")

NO_IDENTITY = ("PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES")
CA = {}


def openssl(*args, cwd):
    subprocess.run(("openssl",) + args, cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                   timeout=60)


def make_cert(d, name, cn, key_args, sans=None, client=False):
    """name.key and name.pem signed by the test CA."""
    req = ["req", "-new", "-nodes", "-keyout", name + ".key",
           "-out", name + ".csr", "-subj", "/O=Portcullis Test/CN=" + cn]
    req += key_args
    if sans:
        req += ["-addext", "subjectAltName=" +
                ",".join("DNS:" + s for s in sans)]
    openssl(*req, cwd=d)
    openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem",
            "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
            "-copy_extensions", "copy", "-out", name + ".pem", cwd=d)
    return os.path.join(d, name + ".pem"), os.path.join(d, name + ".key")


def setUpModule():
    if not shutil.which("openssl"):
        raise unittest.SkipTest("openssl command not installed")
    d = make_tempdir("portcullis-tls-ca-")
    CA["dir"] = d
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes",
            "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/O=Portcullis Test/CN=Portcullis Test CA", cwd=d)
    CA["ca"] = os.path.join(d, "ca.pem")
    rsa = ["-newkey", "rsa:2048"]
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    CA["rsa"] = make_cert(d, "mx-rsa", "mx.example.test", rsa,
                          ["mx.example.test"])
    CA["ecdsa"] = make_cert(d, "mx-ecdsa", "mx.example.test", ec,
                            ["mx.example.test"])
    CA["other"] = make_cert(d, "other", "other.example.test", rsa,
                            ["other.example.test"])
    CA["renewed"] = make_cert(d, "renewed", "renewed.example.test", rsa,
                              ["mx.example.test"])
    CA["client"] = make_cert(d, "client", "client.example.test", rsa,
                             client=True)


def tearDownModule():
    if CA.get("dir"):
        remove_tree(CA["dir"])


def listener(port, mode="starttls", pairs=None, name="mx", extra=""):
    pairs = pairs or [CA["rsa"]]
    return ("\n[listener %s]\naddress = 127.0.0.1:%d\ntls = %s\n"
            "tls_certificate = %s\ntls_key = %s\n%s"
            % (name, port, mode, " ".join(p[0] for p in pairs),
               " ".join(p[1] for p in pairs), extra))


def client_context(**kw):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(CA["ca"])
    ctx.check_hostname = False
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


class TLSCase(ProxyTestCase):

    def start(self, mode="starttls", pairs=None, listener_extra="",
              keywords=NO_IDENTITY, extra="", **kw):
        self.capture = self.start_capture(keywords=keywords)
        self.tls_port = free_port()
        self.proxy = self.start_proxy(
            backend_port=self.capture.port,
            extra=listener(self.tls_port, mode, pairs, extra=listener_extra)
            + extra, **kw)
        self.assertTrue(wait_listening(self.tls_port, 10, self.proxy.proc))
        return self.proxy

    def raw(self, port=None):
        s = socket.create_connection(("127.0.0.1", port or self.tls_port),
                                     timeout=10)
        self.addCleanup(s.close)
        return s

    def read_reply(self, f):
        """One reply from a file-like socket: its lines."""
        lines = []
        while True:
            line = f.readline()
            if not line:
                raise ConnectionError("closed after %r" % lines)
            lines.append(line.decode().rstrip("\r\n"))
            if len(line) < 4 or line[3:4] != b"-":
                return lines

    def starttls(self, s, ehlo=True, server_hostname=None, ctx=None):
        """Greeting, EHLO, STARTTLS on s; the TLS socket and its reader."""
        f = s.makefile("rb")
        self.assertTrue(self.read_reply(f)[0].startswith("220 "))
        if ehlo:
            s.sendall(b"EHLO client.example.test\r\n")
            self.assertIn("250-STARTTLS", self.read_reply(f))
        s.sendall(b"STARTTLS\r\n")
        self.assertEqual(self.read_reply(f), ["220 2.0.0 Ready to start TLS"])
        t = (ctx or client_context()).wrap_socket(
            s, server_hostname=server_hostname)
        return t, t.makefile("rb")

    def cmd(self, t, f, line):
        t.sendall(line.encode() + b"\r\n")
        return self.read_reply(f)

    def deliver_over(self, t, f, sender="a@example.test"):
        self.assertEqual(self.cmd(t, f, "EHLO client.example.test")[0][:4],
                         "250-")
        self.assertEqual(self.cmd(t, f, "MAIL FROM:<%s>" % sender)[0][:4],
                         "250 ")
        self.assertEqual(self.cmd(t, f, "RCPT TO:<b@example.test>")[0][:4],
                         "250 ")
        self.data_over(t, f)

    def data_over(self, t, f):
        self.assertEqual(self.cmd(t, f, "DATA")[0][:3], "354")
        t.sendall(b"Subject: t\r\n\r\nhello\r\n.\r\n")
        self.assertEqual(self.read_reply(f)[0][:3], "250")
        self.assertEqual(self.cmd(t, f, "QUIT")[0][:3], "221")

    def record_of_port(self, port, kind="transaction"):
        recs = self.proxy.wait_decisions(
            lambda d: d.get("type") == kind and d["client"]["port"] == port)
        self.assertEqual(len(recs), 1, self.proxy.decisions())
        return recs[0]

    def assertServes(self):
        """The worker still answers a plain STARTTLS session."""
        t, f = self.starttls(self.raw())
        self.assertEqual(self.cmd(t, f, "NOOP"), ["250 2.0.0 Ok"])
        t.close()


class TestStartTLS(TLSCase):

    def test_swaks_starttls_delivers_and_the_record_and_received_header_tell_tls(self):
        skip_unless_tool("swaks")
        self.start()
        out = subprocess.run(
            ["swaks", "--server", "127.0.0.1:%d" % self.tls_port, "--tls",
             "--from", "a@example.test", "--to", "b@example.test",
             "--helo", "client.example.test"],
            capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertIn("<-  250-STARTTLS", out.stdout)
        # Under TLS the EHLO reply no longer offers STARTTLS.
        after = out.stdout.split("TLS started")[1]
        self.assertNotIn("STARTTLS", after)
        rec = self.proxy.wait_decisions(
            lambda d: d.get("type") == "transaction")[0]
        self.assertEqual(rec["action"], "accepted")
        self.assertEqual(rec["tls"]["version"], "TLSv1.3")
        self.assertEqual(rec["tls"]["cipher"], "TLS_AES_256_GCM_SHA384")
        self.assertEqual(rec["tls"]["bits"], 256)
        self.assertIs(rec["tls"]["resumed"], False)
        self.assertNotIn("peer", rec["tls"])
        msg = self.capture.wait_messages(1)[0].decode()
        self.assertRegex(
            msg.split("\r\n\r\n")[0],
            r"^Received: from client\.example\.test \(unknown \[127\.0\.0\.1\]\)\r\n"
            r"\t\(using TLSv1\.3 with cipher TLS_AES_256_GCM_SHA384 "
            r"\(256/256 bits\)\)\r\n"
            r"\tby proxy\.portcullis\.test \(Portcullis\) with ESMTPS id ")

    def test_openssl_s_client_starttls_smtp_delivers(self):
        self.start()
        script = (b"EHLO client.example.test\r\nMAIL FROM:<a@example.test>\r\n"
                  b"RCPT TO:<b@example.test>\r\nDATA\r\n")
        p = subprocess.Popen(
            ["openssl", "s_client", "-starttls", "smtp", "-quiet",
             "-connect", "127.0.0.1:%d" % self.tls_port, "-tls1_2"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT)
        try:
            # Each group after the server answered the one before.
            for chunk in (script, b"Subject: s\r\n\r\nbody\r\n.\r\n",
                          b"QUIT\r\n"):
                p.stdin.write(chunk)
                p.stdin.flush()
                time.sleep(0.5)
            out, _ = p.communicate(timeout=20)
        finally:
            if p.poll() is None:
                p.kill()
        self.assertIn(b"354 ", out)
        self.assertIn(b"250 2.0.0 Ok", out)
        rec = self.proxy.wait_decisions(
            lambda d: d.get("type") == "transaction")[0]
        self.assertEqual(rec["tls"]["version"], "TLSv1.2")
        self.assertEqual(rec["action"], "accepted")
        msg = self.capture.wait_messages(1)[0].decode()
        self.assertIn("\t(using TLSv1.2 with cipher ECDHE-RSA-AES", msg)
        self.assertIn(") with ESMTPS id ", msg)

    def test_commands_pipelined_after_starttls_in_clear_are_discarded(self):
        # CVE-2011-0411: what follows STARTTLS in the same packet was
        # written before the handshake and must never be executed.
        self.start()
        for injected in (b"RSET\r\n", b"MAIL FROM:<evil@example.test>\r\n",
                         b"MAIL FROM:<evil@example.test>\r\n"
                         b"RCPT TO:<b@example.test>\r\n"):
            s = self.raw()
            f = s.makefile("rb")
            self.read_reply(f)
            s.sendall(b"EHLO client.example.test\r\n")
            self.read_reply(f)
            s.sendall(b"STARTTLS\r\n" + injected)
            self.assertEqual(self.read_reply(f),
                             ["220 2.0.0 Ready to start TLS"])
            t = client_context().wrap_socket(s)
            tf = t.makefile("rb")
            # The first reply under TLS answers our EHLO, and nothing
            # remembers a sender: MAIL is accepted as the first one.
            ehlo = self.cmd(t, tf, "EHLO client.example.test")
            self.assertEqual(ehlo[0], "250-proxy.portcullis.test", ehlo)
            self.assertEqual(self.cmd(t, tf, "RCPT TO:<b@example.test>"),
                             ["503 5.5.1 Error: need MAIL command"])
            self.assertEqual(self.cmd(t, tf, "QUIT")[0][:3], "221")
            t.close()
        self.assertFalse([c for c in self.capture.commands()
                          if b"evil" in c], self.capture.commands())
        self.assertTrue(self.proxy.wait_log(
            r"bytes pipelined after STARTTLS discarded", count=3))

    def test_a_large_message_in_small_and_large_writes_arrives_byte_for_byte(self):
        # Records of every size, and more input than one read takes: the
        # bytes OpenSSL holds decrypted must be read without a new event.
        self.start()
        line = b"x" * 998 + b"\r\n"
        body = b"Subject: big\r\n\r\n" + line * 3000 + b"last line\r\n"
        t, f = self.starttls(self.raw())
        self.assertEqual(self.cmd(t, f, "EHLO client.example.test")[0][:4], "250-")
        self.assertEqual(self.cmd(t, f, "MAIL FROM:<a@example.test>")[0][:4], "250 ")
        self.assertEqual(self.cmd(t, f, "RCPT TO:<b@example.test>")[0][:4], "250 ")
        self.assertEqual(self.cmd(t, f, "DATA")[0][:3], "354")
        t.sendall(body[:7])  # a tiny record first
        for i in range(7, len(body), 100000):
            t.sendall(body[i:i + 100000])
        t.sendall(b".\r\n")
        self.assertEqual(self.read_reply(f)[0][:3], "250")
        got = self.capture.wait_messages(1)[0]
        self.assertTrue(got.startswith(b"Received: "), got[:200])
        self.assertEqual(got[got.index(b"Subject: big"):], body)

    def test_starttls_forgets_the_helo_and_the_transaction(self):
        # RFC 3207 4.2: the client must say EHLO again.
        self.start()
        t, f = self.starttls(self.raw())
        self.assertEqual(self.cmd(t, f, "MAIL FROM:<a@example.test>"),
                         ["503 5.5.1 Error: send HELO/EHLO first"])
        self.deliver_over(t, f)

    def test_starttls_with_an_argument_a_second_one_and_inside_mail(self):
        self.start()
        s = self.raw()
        f = s.makefile("rb")
        self.read_reply(f)
        s.sendall(b"EHLO client.example.test\r\n")
        self.read_reply(f)
        s.sendall(b"STARTTLS now\r\n")
        self.assertEqual(self.read_reply(f), ["501 5.5.4 Syntax: STARTTLS"])
        s.sendall(b"MAIL FROM:<a@example.test>\r\n")
        self.assertEqual(self.read_reply(f)[0][:4], "250 ")
        s.sendall(b"STARTTLS\r\n")
        self.assertEqual(self.read_reply(f),
                         ["503 5.5.1 Error: MAIL transaction in progress"])
        s.sendall(b"RSET\r\nSTARTTLS\r\n")
        self.assertEqual(self.read_reply(f), ["250 2.0.0 Ok"])
        self.assertEqual(self.read_reply(f), ["220 2.0.0 Ready to start TLS"])
        t = client_context().wrap_socket(s)
        tf = t.makefile("rb")
        self.assertEqual(self.cmd(t, tf, "STARTTLS"),
                         ["503 5.5.1 Error: TLS already active"])
        ehlo = self.cmd(t, tf, "EHLO client.example.test")
        self.assertNotIn("250-STARTTLS", ehlo)
        self.assertNotIn("250 STARTTLS", ehlo)

    def test_a_plain_listener_does_not_offer_starttls(self):
        self.start()
        c = self.client(self.proxy.port)
        self.assertNotIn("STARTTLS", c.ehlo().keywords)
        r = c.cmd("STARTTLS")
        self.assertReply(r, 502, "5.5.1")

    def test_require_tls_refuses_mail_before_starttls_and_accepts_after(self):
        self.start(listener_extra="require_tls = yes\n")
        s = self.raw()
        f = s.makefile("rb")
        self.read_reply(f)
        for line, want in (("EHLO client.example.test", None),
                           ("NOOP", ["250 2.0.0 Ok"]),
                           ("RSET", ["250 2.0.0 Ok"]),
                           ("MAIL FROM:<a@example.test>",
                            ["530 5.7.0 Must issue a STARTTLS command first"]),
                           ("RCPT TO:<b@example.test>",
                            ["530 5.7.0 Must issue a STARTTLS command first"]),
                           ("VRFY b", ["530 5.7.0 Must issue a STARTTLS command first"]),
                           ("DATA", ["530 5.7.0 Must issue a STARTTLS command first"])):
            s.sendall(line.encode() + b"\r\n")
            got = self.read_reply(f)
            if want:
                self.assertEqual(got, want, line)
        s.sendall(b"STARTTLS\r\n")
        self.assertEqual(self.read_reply(f), ["220 2.0.0 Ready to start TLS"])
        t = client_context().wrap_socket(s)
        tf = t.makefile("rb")
        self.deliver_over(t, tf)
        self.assertEqual(len(self.capture.wait_messages(1)), 1)

    def test_resumption_with_a_ticket_across_connections_and_workers(self):
        # The ticket keys are made before the workers fork: a ticket one
        # worker issued resumes at the other. Which worker accepts is the
        # kernel's choice, so connect until the other one served one
        # (the first six hex digits of a session id name its worker).
        self.start(workers="2")
        d = make_tempdir("portcullis-tls-sess-")
        self.addCleanup(remove_tree, d)
        sess = os.path.join(d, "sess.pem")

        def s_client(flag):
            before = len(self.proxy.decisions())
            out = subprocess.run(
                ["openssl", "s_client", "-starttls", "smtp", "-ign_eof",
                 "-connect", "127.0.0.1:%d" % self.tls_port, flag, sess],
                input=b"QUIT\r\n", capture_output=True, timeout=20)
            text = out.stdout.decode("utf-8", "replace")
            recs = self.proxy.wait_decisions(count=before + 1)
            return bool(re.search(r"^Reused, ", text, re.M)), recs[-1]

        reused, first = s_client("-sess_out")
        self.assertFalse(reused)
        self.assertIs(first["tls"]["resumed"], False)
        other = None
        for _ in range(60):
            reused, rec = s_client("-sess_in")
            self.assertTrue(reused)
            self.assertIs(rec["tls"]["resumed"], True)
            if rec["session"][:6] != first["session"][:6]:
                other = rec
                break
        self.assertIsNotNone(other, "the other worker never accepted")

    def test_a_client_certificate_shows_in_the_record(self):
        self.start()
        ctx = client_context()
        ctx.load_cert_chain(*CA["client"])
        t, f = self.starttls(self.raw(), ctx=ctx)
        port = t.getsockname()[1]
        self.deliver_over(t, f)
        rec = self.record_of_port(port)
        peer = rec["tls"]["peer"]
        self.assertEqual(peer["subject"],
                         "CN=client.example.test,O=Portcullis Test")
        der = open(CA["client"][0]).read()
        fp = subprocess.run(["openssl", "x509", "-noout", "-fingerprint",
                             "-sha256", "-in", CA["client"][0]],
                            capture_output=True, text=True).stdout
        want = "sha256:" + fp.split("=", 1)[1].strip().replace(":", "").lower()
        self.assertTrue(der)
        self.assertEqual(peer["fingerprint"], want)


class TestPostfixSends(TLSCase):

    def test_a_real_postfix_with_smtp_tls_security_level_encrypt_delivers(self):
        skip_unless_tool("postfix", os.path.exists("/usr/sbin/postfix"))
        if os.geteuid() != 0:
            self.skipTest("a private Postfix needs root")
        self.start()
        pf = self.start_postfix(extra_main={
            "relayhost": "[127.0.0.1]:%d" % self.tls_port,
            "smtp_tls_security_level": "encrypt",
            "smtp_tls_loglevel": "1",
        })
        # Postfix's TLS client needs its tlsmgr service (PRNG, caches).
        with open(os.path.join(pf.config_dir, "master.cf"), "a") as f:
            f.write("tlsmgr    unix  -       -       n       1000?   1       tlsmgr\n")
        pf._postfix("reload")
        c = self.client(pf.port)
        msg = make_message(subject="through postfix", sender="a@example.test",
                           to="b@remote.example.test")
        r = c.mail_transaction("a@example.test", ["b@remote.example.test"],
                               msg, helo="client.example.test")
        self.assertEqual(r["end"].code, 250, r)
        got = self.capture.wait_messages(1, timeout=30)
        self.assertEqual(len(got), 1, pf.maillog())
        self.assertIn("through postfix", got[0].decode())
        rec = self.proxy.wait_decisions(
            lambda d: d.get("type") == "transaction")[0]
        self.assertEqual(rec["action"], "accepted")
        self.assertEqual(rec["client"]["helo"], pf.hostname)
        self.assertEqual(rec["tls"]["version"], "TLSv1.3")
        self.assertIn(") with ESMTPS id ", got[0].decode())
        # Postfix's own log says the connection to Portcullis was encrypted.
        self.assertTrue(pf.wait_log(
            r"(Untrusted|Anonymous|Trusted|Verified) TLS connection "
            r"established to 127\.0\.0\.1\[127\.0\.0\.1\]:%d" % self.tls_port))


class TestBehindABalancer(TLSCase):

    def test_implicit_tls_behind_a_proxy_header_with_the_hello_in_its_segment(self):
        # HAProxy sends the PROXY header with the first bytes it has: on
        # port 465 that is the client's TLS hello, which must not be lost.
        self.start(mode="implicit",
                   listener_extra="proxy_protocol = v1\nproxy_from = 127.0.0.1\n")
        s = self.raw()
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = client_context().wrap_bio(inc, out)
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            pass
        s.sendall(b"PROXY TCP4 192.0.2.7 127.0.0.1 53428 465\r\n" + out.read())

        def pump(op):
            while True:
                try:
                    return op()
                except ssl.SSLWantReadError:
                    if out.pending:
                        s.sendall(out.read())
                    data = s.recv(65536)
                    if not data:
                        raise ConnectionError("closed")
                    inc.write(data)
        pump(tls.do_handshake)
        if out.pending:
            s.sendall(out.read())
        greeting = b""
        while b"\r\n" not in greeting:
            greeting += pump(lambda: tls.read(4096))
        self.assertTrue(greeting.startswith(b"220 proxy.portcullis.test ESMTP"),
                        greeting)
        tls.write(b"QUIT\r\n")
        s.sendall(out.read())
        self.assertTrue(pump(lambda: tls.read(4096)).startswith(b"221 "))
        rec = self.proxy.wait_decisions(
            lambda d: d.get("type") == "connection")[0]
        self.assertEqual(rec["client"]["address"], "192.0.2.7")
        self.assertEqual(rec["tls"]["version"], "TLSv1.3")


class TestFilters(TLSCase):

    def probes(self):
        if not os.path.exists(PROBE):
            self.skipTest("probe filter not built (make check): " + PROBE)
        return ("\n[filter atconnect]\nmodule = %s\nstage = connect\n"
                "report_tls = yes\n"
                "\n[filter atmail]\nmodule = %s\nstage = mail\n"
                "report_tls = yes\n" % (PROBE, PROBE))

    def results(self, rec, name):
        out = {}
        for e in filter_entries(rec, name):
            out.update(e.get("results") or {})
        return out

    def test_filters_see_tls_after_starttls_and_not_before(self):
        extra = self.probes()
        self.start(extra=extra, filters="atconnect, atmail")
        ctx = client_context()
        ctx.load_cert_chain(*CA["client"])
        t, f = self.starttls(self.raw(), ctx=ctx,
                             server_hostname="mx.example.test")
        port = t.getsockname()[1]
        self.deliver_over(t, f)
        rec = self.record_of_port(port)
        self.assertEqual(self.results(rec, "atconnect"), {"tls": 0}, rec)
        mail = self.results(rec, "atmail")
        self.assertEqual(mail["tls"], 1, rec)
        self.assertEqual(mail["tls_version"], "TLSv1.3")
        self.assertEqual(mail["tls_cipher"], "TLS_AES_256_GCM_SHA384")
        self.assertEqual(mail["tls_bits"], 256)
        self.assertEqual(mail["tls_sni"], "mx.example.test")
        self.assertEqual(mail["tls_peer_subject"],
                         "CN=client.example.test,O=Portcullis Test")
        self.assertEqual(mail["tls_peer_fingerprint"],
                         rec["tls"]["peer"]["fingerprint"])

    def test_a_connect_filter_sees_tls_on_an_implicit_listener(self):
        self.start(mode="implicit", extra=self.probes(),
                   filters="atconnect, atmail")
        t = client_context().wrap_socket(self.raw())
        f = t.makefile("rb")
        self.assertEqual(self.read_reply(f)[0][:4], "220 ")
        port = t.getsockname()[1]
        self.deliver_over(t, f)
        rec = self.record_of_port(port)
        conn = self.results(rec, "atconnect")
        self.assertEqual(conn["tls"], 1, rec)
        self.assertEqual(conn["tls_version"], "TLSv1.3")
        self.assertNotIn("tls_peer_subject", conn)


class TestCertificates(TLSCase):

    def served(self, port, *args):
        """The subject of the certificate s_client was served, and its key type."""
        out = subprocess.run(
            ["openssl", "s_client", "-starttls", "smtp", "-ign_eof",
             "-connect", "127.0.0.1:%d" % port] + list(args),
            input=b"QUIT\r\n", capture_output=True, timeout=20)
        text = out.stdout.decode("utf-8", "replace")
        subject = re.search(r"^subject=(.*)$", text, re.M)
        key = re.search(r"^Server public key is (\d+) bit", text, re.M)
        peer_sig = re.search(r"^Peer signature type: (\S+)", text, re.M)
        return (subject.group(1) if subject else text,
                key.group(1) if key else None,
                peer_sig.group(1) if peer_sig else None)

    def test_sni_picks_the_certificate_and_an_unknown_name_gets_the_first(self):
        self.start(pairs=[CA["rsa"], CA["other"]])
        subj, _, _ = self.served(self.tls_port, "-servername", "other.example.test")
        self.assertIn("CN = other.example.test", subj)
        for args in (["-servername", "mx.example.test"],
                     ["-servername", "unknown.example.test"], ["-noservername"]):
            subj, _, _ = self.served(self.tls_port, *args)
            self.assertIn("CN = mx.example.test", subj, args)
        recs = self.proxy.wait_decisions(
            lambda d: d.get("type") == "connection", count=4)
        self.assertEqual([r["tls"]["sni"] for r in recs],
                         ["other.example.test", "mx.example.test",
                          "unknown.example.test", None])

    def test_rsa_and_ecdsa_side_by_side_chosen_by_signature_algorithms(self):
        self.start(pairs=[CA["rsa"], CA["ecdsa"]])
        _, bits, sig = self.served(self.tls_port, "-sigalgs",
                                   "ECDSA+SHA256")
        self.assertEqual((bits, sig), ("256", "ECDSA"))
        _, bits, sig = self.served(self.tls_port, "-sigalgs",
                                   "RSA-PSS+SHA256:RSA+SHA256")
        self.assertEqual(bits, "2048")
        self.assertIn(sig, ("RSA-PSS", "RSA"))

    def test_implicit_tls_with_swaks_tlsc(self):
        skip_unless_tool("swaks")
        self.start(mode="implicit")
        out = subprocess.run(
            ["swaks", "--server", "127.0.0.1:%d" % self.tls_port, "--tlsc",
             "--from", "a@example.test", "--to", "b@example.test",
             "--helo", "client.example.test"],
            capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        # The greeting comes under TLS; no STARTTLS on offer.
        self.assertIn("<~  220 proxy.portcullis.test ESMTP", out.stdout)
        self.assertNotIn("STARTTLS", out.stdout)
        rec = self.proxy.wait_decisions(
            lambda d: d.get("type") == "transaction")[0]
        self.assertEqual(rec["action"], "accepted")
        self.assertEqual(rec["tls"]["version"], "TLSv1.3")
        self.assertIn(") with ESMTPS id ",
                      self.capture.wait_messages(1)[0].decode())

    def test_received_header_always_adds_it_behind_xclient(self):
        self.start(keywords=NO_IDENTITY + ("XCLIENT NAME ADDR PORT PROTO HELO",),
                   backend_received_header="always")
        t, f = self.starttls(self.raw())
        self.deliver_over(t, f)
        msg = self.capture.wait_messages(1)[0].decode()
        self.assertTrue(msg.startswith("Received: from client.example.test"), msg)
        self.assertIn(") with ESMTPS id ", msg)
        self.assertTrue([c for c in self.capture.commands()
                         if c.startswith(b"XCLIENT")])

    def test_a_key_readable_by_root_only_serves_workers_running_as_nobody(self):
        if os.geteuid() != 0:
            self.skipTest("needs root")
        d = make_tempdir("portcullis-tls-root-")
        self.addCleanup(remove_tree, d)
        os.chmod(d, 0o755)
        cert, key = (os.path.join(d, "c.pem"), os.path.join(d, "k.pem"))
        shutil.copy(CA["rsa"][0], cert)
        shutil.copy(CA["rsa"][1], key)
        os.chown(key, 0, 0)
        os.chmod(key, 0o600)
        self.start(pairs=[(cert, key)], user="nobody")
        workers = children(self.proxy.pid)
        self.assertTrue(workers)
        for w in workers:
            self.assertNotEqual(os.stat("/proc/%d" % w).st_uid, 0)
        t, f = self.starttls(self.raw())
        self.deliver_over(t, f)

    def test_sighup_reloads_a_key_readable_by_root_only(self):
        if os.geteuid() != 0:
            self.skipTest("needs root")
        d = make_tempdir("portcullis-tls-rootreload-")
        self.addCleanup(remove_tree, d)
        os.chmod(d, 0o755)
        cert, key = (os.path.join(d, "c.pem"), os.path.join(d, "k.pem"))
        shutil.copy(CA["rsa"][0], cert)
        shutil.copy(CA["rsa"][1], key)
        os.chmod(key, 0o600)
        self.start(pairs=[(cert, key)], user="nobody")
        # A renewal: the new pair, the key again root's alone.
        shutil.copy(CA["renewed"][0], cert)
        shutil.copy(CA["renewed"][1], key)
        os.chmod(key, 0o600)
        old_workers = set(children(self.proxy.pid))
        self.proxy.signal(signal.SIGHUP)
        self.assertTrue(self.proxy.wait_log(r"reloading", timeout=10),
                        self.proxy.stderr())
        self.assertTrue(wait_for(
            lambda: set(children(self.proxy.pid)) - old_workers, 10))
        def new_cn():
            t, f = self.starttls(self.raw())
            cn = dict(x[0] for x in t.getpeercert()["subject"])["commonName"]
            t.close()
            return cn == "renewed.example.test"
        self.assertTrue(wait_for(new_cn, 10))
        for w in children(self.proxy.pid):
            self.assertNotEqual(os.stat("/proc/%d" % w).st_uid, 0)

    def test_sighup_serves_a_new_certificate_while_an_open_session_delivers(self):
        d = make_tempdir("portcullis-tls-reload-")
        self.addCleanup(remove_tree, d)
        cert, key = os.path.join(d, "c.pem"), os.path.join(d, "k.pem")
        shutil.copy(CA["rsa"][0], cert)
        shutil.copy(CA["rsa"][1], key)
        self.start(pairs=[(cert, key)])
        old_t, old_f = self.starttls(self.raw())
        # A reload retires a session at its next command outside a
        # transaction: this one is inside one when the reload comes.
        self.assertEqual(self.cmd(old_t, old_f, "EHLO client.example.test")[0][:4], "250-")
        self.assertEqual(self.cmd(old_t, old_f, "MAIL FROM:<a@example.test>")[0][:4], "250 ")
        self.assertEqual(self.cmd(old_t, old_f, "RCPT TO:<b@example.test>")[0][:4], "250 ")
        self.assertEqual(
            dict(x[0] for x in old_t.getpeercert()["subject"])["commonName"],
            "mx.example.test")
        shutil.copy(CA["renewed"][0], cert)
        shutil.copy(CA["renewed"][1], key)
        old_workers = set(children(self.proxy.pid))
        self.proxy.signal(signal.SIGHUP)
        self.assertTrue(self.proxy.wait_log(r"reloading", timeout=10))
        self.assertTrue(wait_for(
            lambda: set(children(self.proxy.pid)) - old_workers, 10))
        # New sessions get the new certificate (from the new workers).
        def new_cn():
            t, f = self.starttls(self.raw())
            cn = dict(x[0] for x in t.getpeercert()["subject"])["commonName"]
            t.close()
            return cn == "renewed.example.test"
        self.assertTrue(wait_for(new_cn, 10))
        # The session opened before the reload still delivers.
        self.assertEqual(self.cmd(old_t, old_f, "DATA")[0][:3], "354")
        old_t.sendall(b"Subject: t\r\n\r\nhello\r\n.\r\n")
        self.assertEqual(self.read_reply(old_f)[0][:3], "250")
        self.assertEqual(len(self.capture.wait_messages(1)), 1)


class TestFailedHandshakes(TLSCase):

    def dropped(self, count):
        recs = self.proxy.wait_decisions(
            lambda d: d.get("type") == "connection" and
            d.get("action") == "dropped", count=count)
        self.assertEqual(len(recs), count, self.proxy.decisions())
        return recs

    def test_plain_text_after_starttls_is_recorded_and_the_worker_serves_on(self):
        self.start()
        s = self.raw()
        f = s.makefile("rb")
        self.read_reply(f)
        s.sendall(b"EHLO client.example.test\r\n")
        self.read_reply(f)
        s.sendall(b"STARTTLS\r\n")
        self.assertEqual(self.read_reply(f), ["220 2.0.0 Ready to start TLS"])
        s.sendall(b"MAIL FROM:<a@example.test>\r\n")
        s.settimeout(10)
        try:
            # Closed with a TLS alert at most, never a word in clear.
            got = s.recv(100)
            self.assertTrue(got == b"" or got[:1] == b"\x15", got)
        except ConnectionResetError:
            pass
        rec = self.dropped(1)[0]
        self.assertEqual(rec["reason"], "TLS handshake failed: wrong version number")
        self.assertTrue(self.proxy.wait_log(
            r"TLS handshake failed: wrong version number"))
        self.assertServes()

    def test_a_tls_1_0_only_client_is_refused_and_recorded(self):
        self.start(mode="implicit")
        out = subprocess.run(
            ["openssl", "s_client", "-connect", "127.0.0.1:%d" % self.tls_port,
             "-tls1", "-cipher", "DEFAULT@SECLEVEL=0"],
            input=b"", capture_output=True, timeout=20)
        self.assertNotEqual(out.returncode, 0)
        rec = self.dropped(1)[0]
        self.assertEqual(rec["reason"], "TLS handshake failed: unsupported protocol")
        self.assertNotIn("tls", rec)

    def test_garbage_and_a_silent_client_on_an_implicit_listener(self):
        self.start(mode="implicit", listener_extra="tls_timeout = 1\n")
        s = self.raw()
        s.sendall(b"\x16\x03\x01\x00\x05hello" + os.urandom(200))
        s2 = self.raw()  # says nothing
        s.settimeout(10)
        try:
            self.assertEqual(s.recv(100)[:1], b"\x15")  # a TLS alert at most
        except ConnectionResetError:
            pass
        recs = self.dropped(2)
        reasons = sorted(r["reason"] for r in recs)
        self.assertTrue(reasons[0].startswith("TLS handshake failed: "), reasons)
        self.assertIn("TLS handshake failed: timeout", reasons)
        s2.close()
        t = client_context().wrap_socket(self.raw())
        self.assertTrue(t.recv(100).startswith(b"220 "))


class TestConfigErrors(unittest.TestCase):

    def check(self, listener_text):
        d = make_tempdir("portcullis-tls-conf-")
        self.addCleanup(remove_tree, d)
        path = os.path.join(d, "p.conf")
        with open(path, "w") as f:
            f.write("[portcullis]\nspool_dir = %s\n[backend]\n"
                    "servers = 127.0.0.1:1\n[listener mx]\n"
                    "address = 127.0.0.1:%d\n%s" % (d, free_port(), listener_text))
        out = subprocess.run([PORTCULLIS_BIN, "-t", "-c", path],
                             capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 1, out.stdout)
        return path, out.stderr

    def test_a_missing_certificate_file(self):
        path, err = self.check("tls = starttls\ntls_certificate = /nonexistent.pem\n"
                               "tls_key = %s\n" % CA["rsa"][1])
        self.assertIn("%s:8: [listener mx] tls_certificate: /nonexistent.pem: "
                      "cannot read a certificate: No such file or directory" % path,
                      err)

    def test_a_key_that_does_not_match_its_certificate(self):
        path, err = self.check("tls = starttls\ntls_certificate = %s\n"
                               "tls_key = %s\n" % (CA["rsa"][0], CA["other"][1]))
        self.assertRegex(err, re.escape("%s:9: [listener mx] tls_key: " % path) +
                         ".*(key values mismatch|does not match)")

    def test_a_certificate_file_that_holds_no_certificate(self):
        path, err = self.check("tls = starttls\ntls_certificate = %s\n"
                               "tls_key = %s\n" % (CA["rsa"][1], CA["rsa"][1]))
        self.assertIn("%s:8: [listener mx] tls_certificate: %s: cannot read a "
                      "certificate: no start line" % (path, CA["rsa"][1]), err)

    def test_tls_without_a_certificate(self):
        path, err = self.check("tls = starttls\n")
        self.assertIn("%s:7: [listener mx] tls_certificate: required with "
                      "tls = starttls or implicit" % path, err)

    def test_more_keys_than_certificates(self):
        path, err = self.check("tls = implicit\ntls_certificate = %s\n"
                               "tls_key = %s %s\n" % (CA["rsa"][0], CA["rsa"][1],
                                                      CA["ecdsa"][1]))
        self.assertIn("%s:9: [listener mx] tls_key: tls_certificate and tls_key "
                      "must list as many files each" % path, err)

    def test_check_passes_with_good_files(self):
        d = make_tempdir("portcullis-tls-conf-")
        self.addCleanup(remove_tree, d)
        path = os.path.join(d, "p.conf")
        with open(path, "w") as f:
            f.write("[portcullis]\nspool_dir = %s\n[backend]\nservers = 127.0.0.1:1\n"
                    % d + listener(free_port(), "starttls",
                                   [CA["rsa"], CA["ecdsa"], CA["other"]]))
        out = subprocess.run([PORTCULLIS_BIN, "-t", "-c", path],
                             capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)


if __name__ == "__main__":
    unittest.main()
