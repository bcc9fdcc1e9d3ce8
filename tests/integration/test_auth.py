"""
test_auth.py - AUTH on a submission listener (RFC 4954)

auth = dovecot: Portcullis checks PLAIN and LOGIN against a real Dovecot
auth service the tests start (Debian's dovecot-core, run as root from a
temporary directory with only its auth service and a passwd-file), and
tells the backend the login by XCLIENT LOGIN=. The replies of every
step, the delay and the 421 after too many failures, a Dovecot that is
down or silent (454 4.7.0, the session goes on), the relay filter that
trusts the login and the DKIM filter that signs its mail, the record's
"auth" object, and that the password reaches no log and no record.
auth = relay: the exchange is relayed to a private Postfix whose own
SASL is the same Dovecot.

Most listeners here say auth_require_tls = no, to test AUTH itself on
plain sessions; AuthUnderTLSTest keeps the default: nothing is offered
before STARTTLS, and swaks logs in under TLS (the Received: header then
says ESMTPSA).
"""

import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (DOMAIN, PROJECT, Postfix, ProxyTestCase, free_port,  # noqa: E402
                     make_message, make_tempdir, remove_tree, run_swaks,
                     skip_unless_tool, wait_for, HarnessError)
import harness  # noqa: E402

FILTER_DIR = os.environ.get("PORTCULLIS_FILTER_DIR") or os.path.join(
    PROJECT, "filters", ".libs")

ALICE = "alice@" + DOMAIN
PASSWORD = "Tr0ub4dor-s3cret"
ELSEWHERE = "someone@elsewhere.example"


def b64(data):
    return base64.b64encode(data.encode() if isinstance(data, str)
                            else data).decode()


PLAIN_OK = b64("\0%s\0%s" % (ALICE, PASSWORD))
PLAIN_BAD = b64("\0%s\0wrong-password" % ALICE)


class Dovecot:
    """Dovecot's auth service alone, in a temporary directory (root)."""

    def __init__(self, users=((ALICE, PASSWORD),)):
        self.users = users
        self.dir = None

    @property
    def socket_path(self):
        return os.path.join(self.dir, "run", "auth-client")

    def start(self):
        skip_unless_tool("dovecot")
        self.dir = make_tempdir("portcullis-dovecot-")
        os.chmod(self.dir, 0o755)
        with open(os.path.join(self.dir, "passwd"), "w") as f:
            for user, password in self.users:
                f.write("%s:{PLAIN}%s\n" % (user, password))
        conf = os.path.join(self.dir, "dovecot.conf")
        with open(conf, "w") as f:
            f.write("""\
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols =
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {d}/passwd
}}
userdb {{
  driver = static
  args = uid=65534 gid=65534 home=/nonexistent
}}
service auth {{
  unix_listener auth-client {{
    mode = 0666
  }}
}}
""".format(d=self.dir))
        # Its daemons inherit what it is given: a file, never a pipe.
        out = os.path.join(self.dir, "start.log")
        with open(out, "wb") as f:
            p = subprocess.run(["dovecot", "-c", conf], stdout=f,
                               stderr=subprocess.STDOUT, timeout=30)
        if p.returncode != 0:
            raise HarnessError("dovecot did not start: %s" % open(out).read())
        if not wait_for(lambda: os.path.exists(self.socket_path), 10):
            raise HarnessError("no Dovecot auth socket at %s" % self.socket_path)
        return self

    def stop(self):
        if not self.dir:
            return
        try:
            with open(os.path.join(self.dir, "run", "master.pid")) as f:
                pid = int(f.read().strip())
            os.kill(pid, signal.SIGTERM)
            wait_for(lambda: not harness._pid_alive(pid), 10)
        except (OSError, ValueError):
            pass
        remove_tree(self.dir)
        self.dir = None


def listener(port, auth="dovecot", socket_path=None, require_tls="no", **keys):
    text = "\n[listener submission]\naddress = 127.0.0.1:%d\nauth = %s\n" % (port, auth)
    if socket_path:
        text += "auth_socket = %s\n" % socket_path
    if require_tls is not None:
        text += "auth_require_tls = %s\n" % require_tls
    for k, v in keys.items():
        text += "%s = %s\n" % (k, v)
    return text


XCLIENT_KEYWORDS = ("PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES",
                    "SIZE 10240000", "XCLIENT NAME ADDR PORT PROTO HELO LOGIN")


class AuthTestBase(ProxyTestCase):

    @classmethod
    def setUpClass(cls):
        cls.dovecot = Dovecot()
        cls.addClassCleanup(cls.dovecot.stop)
        cls.dovecot.start()

    def proxy(self, backend_port, extra="", socket_path=None, **kw):
        """The daemon with a submission listener: keys starting with
        auth go to [listener submission], require_tls too, the rest to
        the daemon."""
        keys = {k: kw.pop(k) for k in list(kw)
                if k.startswith(("auth_", "tls")) or k in ("auth", "require_tls")}
        self.sub_port = free_port()
        p = self.start_proxy(
            backend_port=backend_port,
            extra=listener(self.sub_port,
                           socket_path=(self.dovecot.socket_path
                                        if socket_path is None else socket_path),
                           **keys) + extra, **kw)
        self.assertTrue(wait_for(lambda: harness.is_listening(self.sub_port), 10))
        return p

    def sub_client(self, source=None):
        """A client of the submission listener. Dovecot delays every
        attempt from an address that failed lately (its auth penalty):
        tests that fail logins do it from an address of their own."""
        return self.client(self.sub_port, source=source)

    def assertNoPassword(self, proxy):
        """The password, in clear or in any base64 that held it, is in
        neither the daemon's log nor its records."""
        texts = proxy.stderr() + open(proxy.decisions_path, errors="replace").read()
        for secret in (PASSWORD, PLAIN_OK, b64(PASSWORD), PLAIN_BAD,
                       "wrong-password", b64("wrong-password")):
            self.assertNotIn(secret, texts)


class DovecotAuthTest(AuthTestBase):

    def setUp(self):
        super().setUp()
        self.backend = self.start_capture(keywords=XCLIENT_KEYWORDS)
        self.p = self.proxy(self.backend.port, auth_failure_delay="0.2",
                            auth_failure_limit="3")

    def test_ehlo_offers_what_dovecot_announced(self):
        c = self.sub_client()
        r = c.ehlo()
        self.assertEqual(r.keywords.get("AUTH"), "PLAIN LOGIN")
        # the plain listener beside it offers nothing
        c2 = self.client(self.p.port)
        self.assertNotIn("AUTH", c2.ehlo().keywords)
        self.assertReply(c2.cmd("AUTH PLAIN " + PLAIN_OK), 502, "5.5.1")

    def backend_sessions(self):
        with self.backend.lock:
            return [list(x["commands"]) for x in self.backend.sessions]

    def swaks(self, mech, password=PASSWORD):
        return run_swaks(["--server", "127.0.0.1:%d" % self.sub_port,
                          "--from", ALICE, "--to", "bob@" + DOMAIN,
                          "--auth", mech, "--auth-user", ALICE,
                          "--auth-password", password, "--timeout", "20"])

    def test_swaks_auth_plain_and_login_succeed_and_the_backend_hears_the_login(self):
        for mech in ("PLAIN", "LOGIN"):
            r = self.swaks(mech)
            self.assertEqual(r.returncode, 0, r.stdout)
            self.assertIn("235 2.7.0 Authentication successful", r.stdout)
        msgs = self.backend.wait_messages(2)
        self.assertEqual(len(msgs), 2)
        # What the backend last heard by XCLIENT before each MAIL: an
        # XCLIENT sent at EHLO, before AUTH, is followed by another.
        before_mail = []
        for cmds in self.backend_sessions():
            last = None
            for cmd in cmds:
                if cmd.startswith(b"XCLIENT"):
                    last = cmd
                elif cmd.startswith(b"MAIL"):
                    before_mail.append(last)
        self.assertEqual(len(before_mail), 2, self.backend.commands())
        for x in before_mail:
            self.assertRegex(x, rb"^XCLIENT .* LOGIN=alice@example\.test$")
        recs = self.p.wait_decisions(lambda d: d.get("action") == "accepted", 2)
        self.assertEqual(sorted(d["auth"]["mechanism"] for d in recs), ["LOGIN", "PLAIN"])
        for d in recs:
            self.assertEqual(d["auth"]["user"], ALICE)
        self.assertNoPassword(self.p)

    def test_plain_without_initial_response_and_mail_auth_parameter(self):
        c = self.sub_client()
        c.ehlo()
        r = c.cmd("AUTH PLAIN")
        self.assertEqual(r.lines, ["334 "])
        self.assertReply(c.cmd(PLAIN_OK), 235, "2.7.0")
        self.assertReply(c.cmd("MAIL FROM:<%s> AUTH=%s" % (ALICE, "alice+40example.test")), 250)
        self.assertReply(c.cmd("RCPT TO:<bob@%s>" % DOMAIN), 250)
        mail = [m for m in self.backend.commands() if m.startswith(b"MAIL")]
        self.assertEqual(mail, [b"MAIL FROM:<%s>" % ALICE.encode()])

    def test_login_asks_twice(self):
        c = self.sub_client()
        c.ehlo()
        self.assertEqual(c.cmd("AUTH LOGIN").lines, ["334 VXNlcm5hbWU6"])
        self.assertEqual(c.cmd(b64(ALICE)).lines, ["334 UGFzc3dvcmQ6"])
        self.assertReply(c.cmd(b64(PASSWORD)), 235, "2.7.0")

    def test_exchange_errors_get_their_replies(self):
        c = self.sub_client()
        self.assertReply(c.cmd("AUTH PLAIN " + PLAIN_OK), 503, "5.5.1")  # before EHLO
        c.ehlo()
        self.assertReply(c.cmd("AUTH CRAM-MD5"), 504, "5.5.4")
        r = c.cmd("AUTH LOGIN")
        self.assertCode(r, 334)
        r = c.cmd("*")
        self.assertEqual(r.lines, ["501 5.0.0 Authentication aborted"])
        self.assertEqual(c.cmd("AUTH PLAIN !!notbase64").lines,
                         ["501 5.5.2 Invalid base64 data"])
        self.assertReply(c.cmd("AUTH PLAIN " + b64("alice-without-nuls")), 501, "5.5.2")
        self.assertReply(c.cmd("AUTH PLAIN"), 334)
        r = c.cmd("A" * 12300)
        self.assertEqual(r.lines, ["500 5.5.6 Authentication Exchange line is too long"])
        self.assertReply(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        self.assertEqual(c.cmd("AUTH PLAIN " + PLAIN_OK).lines,
                         ["503 5.5.1 Error: MAIL transaction in progress"])
        self.assertReply(c.cmd("RSET"), 250)
        self.assertReply(c.cmd("AUTH PLAIN " + PLAIN_OK), 235, "2.7.0")
        self.assertEqual(c.cmd("AUTH PLAIN " + PLAIN_OK).lines,
                         ["503 5.5.1 Error: already authenticated"])
        self.assertReply(c.cmd("NOOP"), 250)

    def test_wrong_password_is_535_after_a_growing_delay_and_too_many_end_the_session(self):
        c = self.sub_client(source="127.0.0.3")
        c.ehlo()
        times = []
        for _ in range(2):
            t0 = time.monotonic()
            r = c.cmd("AUTH PLAIN " + PLAIN_BAD)
            times.append(time.monotonic() - t0)
            self.assertEqual(r.lines, ["535 5.7.8 Authentication credentials invalid"])
        self.assertGreaterEqual(times[0], 0.18)
        self.assertGreaterEqual(times[1], 0.38)  # doubled
        r = c.cmd("AUTH PLAIN " + PLAIN_BAD)
        self.assertEqual(r.lines, ["421 4.7.0 proxy.portcullis.test Too many failed "
                                   "authentication attempts"])
        c.wait_closed()
        rec = self.p.wait_decisions(lambda d: d.get("type") == "connection")[0]
        self.assertEqual(rec["auth"], {"failures": 3})
        self.assertEqual(rec["reason"], "too many failed authentication attempts")
        self.assertNoPassword(self.p)

    def test_failures_count_per_client_address_across_sessions(self):
        first = self.sub_client(source="127.0.0.6")
        first.ehlo()
        for _ in range(2):
            self.assertReply(first.cmd("AUTH PLAIN " + PLAIN_BAD), 535, "5.7.8")
        first.cmd("QUIT")
        second = self.sub_client(source="127.0.0.6")
        second.ehlo()
        t0 = time.monotonic()
        r = second.cmd("AUTH PLAIN " + PLAIN_BAD)
        # the third of the address: its delay is the third's (0.8 s), and the limit
        self.assertGreaterEqual(time.monotonic() - t0, 0.75)
        self.assertEqual(r.lines, ["421 4.7.0 proxy.portcullis.test Too many failed "
                                   "authentication attempts"])
        # another address is not touched by them
        other = self.sub_client(source="127.0.0.7")
        other.ehlo()
        self.assertReply(other.cmd("AUTH PLAIN " + PLAIN_BAD), 535, "5.7.8")

    def test_a_failed_login_delays_only_its_own_session(self):
        slow = self.sub_client(source="127.0.0.4")
        slow.ehlo()
        slow.cmd("AUTH PLAIN " + PLAIN_BAD)
        slow.send(("AUTH PLAIN %s\r\n" % PLAIN_BAD).encode())  # 0.4 s of delay
        t0 = time.monotonic()
        other = self.sub_client()
        other.ehlo()
        self.assertReply(other.cmd("AUTH PLAIN " + PLAIN_OK), 235)
        self.assertLess(time.monotonic() - t0, 0.35)
        self.assertReply(slow.reply(), 535, "5.7.8")


class DovecotTroubleTest(AuthTestBase):

    def test_dovecot_down_gives_454_and_the_session_goes_on(self):
        backend = self.start_capture(keywords=XCLIENT_KEYWORDS)
        p = self.proxy(backend.port, socket_path="/nonexistent/auth-client")
        c = self.sub_client()
        self.assertEqual(c.ehlo().keywords.get("AUTH"), "PLAIN LOGIN")
        self.assertEqual(c.cmd("AUTH PLAIN " + PLAIN_OK).lines,
                         ["454 4.7.0 Temporary authentication failure"])
        self.assertEqual(c.cmd("AUTH LOGIN").lines, ["334 VXNlcm5hbWU6"])
        c.cmd(b64(ALICE))
        self.assertReply(c.cmd(b64(PASSWORD)), 454, "4.7.0")
        r = c.mail_transaction(ALICE, ["bob@" + DOMAIN], make_message())
        self.assertReply(r["end"], 250)
        self.assertEqual(len(backend.wait_messages(1)), 1)
        self.assertIn("dovecot auth /nonexistent/auth-client", p.stderr())

    def test_a_silent_dovecot_gives_454_after_auth_timeout(self):
        d = make_tempdir("portcullis-silent-")
        self.addCleanup(remove_tree, d)
        path = os.path.join(d, "auth-client")
        srv = socket.socket(socket.AF_UNIX)
        srv.bind(path)
        srv.listen(8)
        self.addCleanup(srv.close)
        held = []

        def accept():
            try:
                while True:
                    conn, _ = srv.accept()
                    held.append(conn)  # read nothing, answer nothing
            except OSError:
                pass
        threading.Thread(target=accept, daemon=True).start()
        backend = self.start_capture(keywords=XCLIENT_KEYWORDS)
        self.proxy(backend.port, socket_path=path, auth_timeout="1")
        c = self.sub_client()
        c.ehlo()
        t0 = time.monotonic()
        self.assertReply(c.cmd("AUTH PLAIN " + PLAIN_OK), 454, "4.7.0")
        self.assertGreaterEqual(time.monotonic() - t0, 0.9)
        # the worker was never stalled: another client is served meanwhile
        self.assertReply(c.cmd("NOOP"), 250)

    def test_without_tls_the_default_offers_no_auth(self):
        backend = self.start_capture(keywords=XCLIENT_KEYWORDS)
        self.proxy(backend.port, require_tls=None)
        c = self.sub_client()
        self.assertNotIn("AUTH", c.ehlo().keywords)
        self.assertEqual(c.cmd("AUTH PLAIN " + PLAIN_OK).lines,
                         ["538 5.7.11 Encryption required for requested "
                          "authentication mechanism"])


class AuthUnderTLSTest(AuthTestBase):
    """The default auth_require_tls = yes on a tls = starttls listener."""

    def setUp(self):
        skip_unless_tool("openssl")
        self.certdir = make_tempdir("portcullis-auth-tls-")
        self.addCleanup(remove_tree, self.certdir)
        self.cert = os.path.join(self.certdir, "mx.pem")
        self.key = os.path.join(self.certdir, "mx.key")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                        "-keyout", self.key, "-out", self.cert, "-days", "2",
                        "-subj", "/CN=mx.example.test"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # neither XCLIENT nor XFORWARD: Portcullis writes Received:
        self.backend = self.start_capture(keywords=("PIPELINING", "8BITMIME",
                                                    "ENHANCEDSTATUSCODES"))
        self.p = self.proxy(self.backend.port, require_tls=None,
                            tls="starttls", tls_certificate=self.cert,
                            tls_key=self.key)

    def test_auth_is_offered_only_after_starttls_and_the_login_is_esmtpsa(self):
        c = self.sub_client()
        self.assertNotIn("AUTH", c.ehlo().keywords)
        self.assertReply(c.cmd("AUTH PLAIN " + PLAIN_OK), 538, "5.7.11")
        r = run_swaks(["--server", "127.0.0.1:%d" % self.sub_port, "--tls",
                       "--from", ALICE, "--to", "bob@" + DOMAIN,
                       "--auth", "PLAIN", "--auth-user", ALICE,
                       "--auth-password", PASSWORD, "--timeout", "20"])
        self.assertEqual(r.returncode, 0, r.stdout)
        self.assertIn("235 2.7.0 Authentication successful", r.stdout)
        msg = self.backend.wait_messages(1)[0]
        self.assertRegex(msg, rb"^Received: from [^\r]*\r\n\t\(using TLSv1\.[23] "
                              rb"with cipher [^\r]*\r\n\tby [^\r]* with ESMTPSA id ")
        rec = self.p.wait_transaction(action="accepted")[0]
        self.assertEqual(rec["auth"]["user"], ALICE)
        self.assertIn(rec["tls"]["version"], ("TLSv1.2", "TLSv1.3"))
        self.assertNoPassword(self.p)


RELAY_SECTION = """
[filter relay]
module = relay
timeout = 5
on_error = tempfail
local_domains = example.test
trusted_networks = 10.0.0.0/8
"""


class FiltersTrustTheLoginTest(AuthTestBase):

    def test_the_relay_filter_lets_the_authenticated_user_relay(self):
        backend = self.start_capture(keywords=XCLIENT_KEYWORDS)
        self.proxy(backend.port, extra=RELAY_SECTION, filters="relay",
                   filter_dir=FILTER_DIR)
        anon = self.sub_client()
        anon.ehlo()
        self.assertReply(anon.cmd("MAIL FROM:<%s>" % ALICE), 250)
        self.assertReply(anon.cmd("RCPT TO:<%s>" % ELSEWHERE), 554, "5.7.1")
        c = self.sub_client()
        c.ehlo()
        self.assertReply(c.cmd("AUTH PLAIN " + PLAIN_OK), 235)
        self.assertReply(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        self.assertReply(c.cmd("RCPT TO:<%s>" % ELSEWHERE), 250)
        rcpts = [x for x in backend.commands() if x.startswith(b"RCPT")]
        self.assertEqual(rcpts, [b"RCPT TO:<%s>" % ELSEWHERE.encode()])



class DKIMSignsTheLoginsMailTest(AuthTestBase):
    """The dkim filter signs for pc_auth_user(): the keys, zone and DNS
    server of test_dkim_filter, a client it does not trust by address."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        import test_dkim_filter as td
        cls.td = td
        td.setUpModule()
        cls.addClassCleanup(td.tearDownModule)

    def test_the_authenticated_users_mail_is_signed_and_dkimpy_verifies_it(self):
        td = self.td
        backend = self.start_capture(keywords=XCLIENT_KEYWORDS)
        self.proxy(backend.port, filters="dkim", filter_dir=FILTER_DIR,
                   authserv_id=td.AUTHSERV,
                   extra=td.sign_section(trusted=td.UNTRUSTED))
        sender = "alice@signer.test"
        c = self.sub_client()
        c.ehlo()
        self.assertReply(c.cmd("AUTH PLAIN " + PLAIN_OK), 235)
        r = c.mail_transaction(sender, ["bob@example.org"], td.message(sender=sender))
        self.assertReply(r["end"], 250)
        anon = self.sub_client()
        anon.ehlo()
        r = anon.mail_transaction(sender, ["bob@example.org"], td.message(sender=sender))
        self.assertReply(r["end"], 250)
        signed, unsigned = backend.wait_messages(2)
        n = len(re.findall(rb"(?im)^DKIM-Signature:", td.header_block(signed)))
        self.assertEqual(n, 2, signed[:1500])
        d = td.dkim.DKIM(signed)
        self.assertEqual([d.verify(idx=i, dnsfunc=td.zone_dnsfunc) for i in range(n)],
                         [True, True])
        self.assertNotRegex(td.header_block(unsigned), rb"(?im)^DKIM-Signature:")


class RelayedAuthTest(AuthTestBase):
    """auth = relay: Postfix holds the passwords (its own SASL is the
    same Dovecot); Portcullis passes each line through and takes the
    login only from Postfix's 235."""

    def setUp(self):
        super().setUp()
        self.postfix = self.start_postfix(extra_main={
            "smtpd_sasl_auth_enable": "yes",
            "smtpd_sasl_type": "dovecot",
            "smtpd_sasl_path": self.dovecot.socket_path,
            "smtpd_tls_auth_only": "no",
        })
        self.p = self.proxy(self.postfix.port, auth="relay", socket_path="",
                            auth_failure_delay="0.1")

    def test_ehlo_offers_what_the_backend_offers(self):
        c = self.sub_client()
        self.assertEqual(c.ehlo().keywords.get("AUTH"), "PLAIN LOGIN")

    def test_plain_and_login_are_relayed_and_the_login_is_recorded(self):
        for mech in ("PLAIN", "LOGIN"):
            r = run_swaks(["--server", "127.0.0.1:%d" % self.sub_port,
                           "--from", ALICE, "--to", "bob@" + DOMAIN,
                           "--auth", mech, "--auth-user", ALICE,
                           "--auth-password", PASSWORD, "--timeout", "20"])
            self.assertEqual(r.returncode, 0, r.stdout)
            self.assertIn("235 2.7.0 Authentication successful", r.stdout)
        self.postfix.wait_messages("bob", 2)
        self.assertRegex(self.postfix.maillog(),
                         r"sasl_method=LOGIN, sasl_username=alice@example\.test")
        self.assertRegex(self.postfix.maillog(),
                         r"sasl_method=PLAIN, sasl_username=alice@example\.test")
        recs = self.p.wait_decisions(lambda d: d.get("action") == "accepted", 2)
        self.assertEqual(sorted(d["auth"]["mechanism"] for d in recs), ["LOGIN", "PLAIN"])
        for d in recs:
            self.assertEqual(d["auth"]["user"], ALICE)
        self.assertNoPassword(self.p)

    def test_the_backends_refusal_is_a_failure_and_no_login(self):
        c = self.sub_client(source="127.0.0.5")
        c.ehlo()
        r = c.cmd("AUTH PLAIN " + PLAIN_BAD)
        self.assertReply(r, 535, "5.7.8")
        self.assertEqual(c.cmd("AUTH LOGIN").lines, ["334 VXNlcm5hbWU6"])
        self.assertEqual(c.cmd("*").lines, ["501 5.0.0 Authentication aborted"])
        c.cmd("QUIT")
        rec = self.p.wait_decisions(lambda d: d.get("type") == "connection")[0]
        self.assertEqual(rec["auth"], {"failures": 1})
        self.assertNoPassword(self.p)



class ConfigTest(ProxyTestCase):

    def check(self, listener_text):
        p = harness.Portcullis(backend_port=9, extra=listener_text)
        self.addCleanup(p.stop)
        p.write_config()
        r = subprocess.run([p.binary, "-t", "-c", p.conf_path], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, universal_newlines=True, timeout=30)
        return p.conf_path, r

    def test_auth_keys_are_checked_with_file_line_and_key(self):
        path, r = self.check("\n[listener s]\naddress = 127.0.0.1:%d\nauth = dovecot\n"
                             "auth_require_tls = maybe\n"
                             "[listener t]\naddress = 127.0.0.1:%d\nauth_socket = /x\n"
                             "auth_failure_limit = 3\n" % (free_port(), free_port()))
        self.assertNotEqual(r.returncode, 0)
        for line in ("[listener s] auth_socket: required with auth = dovecot",
                     "[listener s] auth_require_tls: not one of the allowed values",
                     "[listener t] auth_socket: has no effect without auth = dovecot",
                     "[listener t] auth_failure_limit: has no effect without auth"):
            self.assertRegex(r.stdout, re.escape(path) + r":\d+: " + re.escape(line))


if __name__ == "__main__":
    unittest.main()
