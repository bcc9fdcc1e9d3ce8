"""
TLS to the backend ([backend] tls = may | encrypt, tls_ca_file,
tls_verify_name, tls_fingerprint).

The TLS backend is a private Postfix with smtpd_tls_security_level = may
and a certificate of a test CA the module makes with the openssl
command; what it stores says whether the message came over TLS (its
Received: header, "using TLSv1.x with cipher ..."). A backend without
STARTTLS is the capture server, which records every command it got: with
encrypt, not one command of the transaction may reach it in clear text.
"""

import os
import re
import shutil
import subprocess
import unittest

from harness import (DOMAIN, Postfix, ProxyTestCase, make_message,
                     make_tempdir, remove_tree)
import harness  # noqa: E402

CA = {}
ALICE = "alice@" + DOMAIN
BOB = "bob@" + DOMAIN


def openssl(*args, cwd):
    return subprocess.run(("openssl",) + args, cwd=cwd, check=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=60).stdout


def setUpModule():
    if not shutil.which("openssl"):
        raise unittest.SkipTest("openssl command not installed")
    d = make_tempdir("portcullis-backend-tls-")
    CA["dir"] = d
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
            "-out", "ca.pem", "-days", "2", "-subj", "/CN=Portcullis Test CA", cwd=d)
    openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", "mta.key",
            "-out", "mta.csr", "-subj", "/CN=backend.portcullis.test",
            "-addext", "subjectAltName=DNS:backend.portcullis.test", cwd=d)
    openssl("x509", "-req", "-in", "mta.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-copy_extensions", "copy",
            "-out", "mta.pem", cwd=d)
    out = openssl("x509", "-in", "mta.pem", "-noout", "-fingerprint", "-sha256",
                  cwd=d).decode()
    CA["fingerprint"] = out.strip().split("=", 1)[1]  # AB:CD:... as openssl prints it
    for k in ("ca.pem", "mta.pem", "mta.key"):
        CA[k] = os.path.join(d, k)


def tearDownModule():
    if CA.get("dir"):
        remove_tree(CA["dir"])


class TLSPostfix(Postfix):
    """The harness's Postfix offering STARTTLS (tlsmgr, without which
    smtpd answers STARTTLS with 454)."""

    def write_config(self):
        super().write_config()
        with open(os.path.join(self.config_dir, "master.cf"), "a") as f:
            f.write("tlsmgr    unix  -       -       n       1000?   1       tlsmgr\n")


class BackendTLSTest(ProxyTestCase):

    def start_tls_postfix(self):
        pf = TLSPostfix(extra_main={
            "smtpd_tls_security_level": "may",
            "smtpd_tls_cert_file": CA["mta.pem"],
            "smtpd_tls_key_file": CA["mta.key"],
            "smtpd_tls_received_header": "yes",
        })
        self.addCleanup(pf.stop)
        pf.start()
        return pf

    def send(self, proxy, subject):
        c = self.client(proxy.port)
        self.assertCode(c.ehlo(), 250)
        return c.mail_transaction(ALICE, [BOB], make_message(subject))

    def delivered_over_tls(self, pf, subject):
        msg = pf.find_message("bob", subject.encode())
        self.assertIsNotNone(msg, "not delivered: %s" % subject)
        head = msg.split(b"\n\n", 1)[0]
        # Postfix's own Received: (the first one) says how it got it
        first = re.search(rb"^Received: .*?(?=^\S)", head, re.M | re.S).group(0)
        return b"using TLSv1." in first, first

    def test_encrypt_delivers_over_tls_and_the_record_says_so(self):
        pf = self.start_tls_postfix()
        p = self.start_proxy(backend_port=pf.port, backend_tls="encrypt")
        r = self.send(p, "backend tls encrypt")
        self.assertCode(r["end"], 250)
        tls, first = self.delivered_over_tls(pf, "backend tls encrypt")
        self.assertTrue(tls, first)
        rec = p.wait_transaction(action="accepted")[0]
        self.assertRegex(rec["backend"]["tls"]["version"], r"^TLSv1\.[23]$")
        self.assertTrue(rec["backend"]["tls"]["cipher"])

    def test_verified_chain_name_and_fingerprint(self):
        pf = self.start_tls_postfix()
        good = [
            {"backend_tls_ca_file": CA["ca.pem"]},
            {"backend_tls_ca_file": CA["ca.pem"],
             "backend_tls_verify_name": "backend.portcullis.test"},
            {"backend_tls_fingerprint": CA["fingerprint"]},
            {"backend_tls_fingerprint": "sha256:" + CA["fingerprint"].replace(":", "").lower()},
        ]
        for i, keys in enumerate(good):
            with self.subTest(keys=keys):
                p = self.start_proxy(backend_port=pf.port, backend_tls="encrypt", **keys)
                subject = "verified %d" % i
                self.assertCode(self.send(p, subject)["end"], 250)
                self.assertTrue(self.delivered_over_tls(pf, subject)[0])
                p.stop()

    def test_a_backend_that_fails_verification_gets_no_message(self):
        pf = self.start_tls_postfix()
        bad = [
            ({"backend_tls_ca_file": CA["ca.pem"],
              "backend_tls_verify_name": "other.portcullis.test"},
             "certificate verify failed"),
            ({"backend_tls_fingerprint": "00" * 32},
             "is not one of tls_fingerprint"),
        ]
        before = pf.total_messages()
        for keys, why in bad:
            with self.subTest(why=why):
                p = self.start_proxy(backend_port=pf.port, backend_tls="encrypt", **keys)
                c = self.client(p.port)
                c.ehlo()
                r = c.cmd("MAIL FROM:<%s>" % ALICE)
                self.assertReply(r, 451, "4.7.5")
                self.assertIn(why, p.stderr())
                p.stop()
        self.assertEqual(pf.total_messages(), before)

    def test_encrypt_with_a_backend_without_starttls_is_451_475_and_nothing_in_clear(self):
        cap = self.start_capture()
        p = self.start_proxy(backend_port=cap.port, backend_tls="encrypt")
        c = self.client(p.port)
        c.ehlo()
        r = c.cmd("MAIL FROM:<%s>" % ALICE)
        self.assertReply(r, 451, "4.7.5")
        sent = [x for x in cap.commands() if not x.upper().startswith((b"EHLO", b"QUIT"))]
        self.assertEqual(sent, [], "sent in clear text: %r" % sent)
        self.assertIn("does not offer STARTTLS", p.stderr())

    def test_may_with_a_backend_without_starttls_delivers_in_clear(self):
        cap = self.start_capture()
        p = self.start_proxy(backend_port=cap.port, backend_tls="may")
        self.assertCode(self.send(p, "may plain")["end"], 250)
        self.assertEqual(len(cap.wait_messages(1)), 1)
        rec = p.wait_transaction(action="accepted")[0]
        self.assertNotIn("tls", rec["backend"])

    def test_may_uses_tls_when_offered(self):
        pf = self.start_tls_postfix()
        p = self.start_proxy(backend_port=pf.port, backend_tls="may")
        self.assertCode(self.send(p, "may tls")["end"], 250)
        self.assertTrue(self.delivered_over_tls(pf, "may tls")[0])

    def test_may_falls_back_to_clear_text_after_a_failed_handshake(self):
        # A backend that offers STARTTLS and says 220, then never answers
        # the client hello: the handshake fails (its timeout), the
        # connection is made again without TLS, and the message goes
        # through.
        def hook(sess, line):
            if line.upper() == b"STARTTLS":
                return b"220 2.0.0 Ready to start TLS"
            return None
        cap = self.start_capture(hook=hook, keywords=(
            "PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "STARTTLS"))
        p = self.start_proxy(backend_port=cap.port, backend_tls="may",
                             backend_timeout_command=2)
        self.assertCode(self.send(p, "fallback")["end"], 250)
        self.assertEqual(len(cap.wait_messages(1)), 1)
        self.assertIn("trying again without TLS", p.stderr())

    def test_config_errors_name_the_key(self):
        p = harness.Portcullis(backend_port=1)
        self.addCleanup(p.stop)
        p.write_config()
        base = p.config_text()
        cases = [
            ("tls_ca_file = %s\n" % CA["ca.pem"], "[backend] tls_ca_file:",
             "has no effect without tls = may or encrypt"),
            ("tls = encrypt\ntls_verify_name = x.example\n", "[backend] tls_verify_name:",
             "needs tls_ca_file"),
            ("tls = encrypt\ntls_ca_file = /nonexistent/ca.pem\n", "[backend] tls_ca_file:",
             "/nonexistent/ca.pem"),
            ("tls = encrypt\ntls_fingerprint = 12:34\n", "[backend] tls_fingerprint:",
             "not a SHA-256 fingerprint"),
            ("tls = sometimes\n", "[backend] tls:", "sometimes"),
        ]
        for extra, where, what in cases:
            with self.subTest(extra=extra):
                text = base.replace("[backend]\n", "[backend]\n" + extra, 1)
                r = p.check_config(text)
                self.assertNotEqual(r.returncode, 0)
                err = r.stderr.decode()
                self.assertIn(where, err)
                self.assertIn(what, err)
                self.assertRegex(err, r"check\.conf:\d+: ")


if __name__ == "__main__":
    unittest.main()
