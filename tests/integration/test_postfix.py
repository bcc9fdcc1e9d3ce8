"""
Portcullis in front of a real Postfix: what a user sees in the Maildirs,
in Postfix's log and in the decision log.

One private Postfix instance serves the whole class (users alice, bob,
carol, and the UTF-8 user jürgen, @example.test); every test starts its
own Portcullis and tells its messages apart by Message-ID.
"""

import os
import re
import smtplib
import unittest
from email.message import EmailMessage

from harness import (DOMAIN, Postfix, ProxyTestCase, make_message, dot_stuff,
                     crlf_to_lf, header_fields, run_swaks, run_smtp_source,
                     has_ipv6, free_port)

ALICE = "alice@" + DOMAIN
BOB = "bob@" + DOMAIN
CAROL = "carol@" + DOMAIN
NOBODY = "nobody@" + DOMAIN
UTF8_LOCAL = "jürgen"
UTF8_USER = UTF8_LOCAL + "@" + DOMAIN

# Headers Postfix's virtual(8) and smtpd(8) put in front of the message.
POSTFIX_ADDED = {b"return-path", b"x-original-to", b"delivered-to",
                 b"received"}


def message_id(msg):
    m = re.search(rb"^Message-ID: (<[^>]+>)", msg, re.M | re.I)
    return m.group(1).decode()


class PostfixBackendTest(ProxyTestCase):
    """Base: a shared Postfix for the class."""

    postfix_options = {}

    @classmethod
    def setUpClass(cls):
        cls.postfix = Postfix(users=("alice", "bob", "carol",
                                     (UTF8_LOCAL, "juergen")),
                              **cls.postfix_options)
        cls.addClassCleanup(cls.postfix.stop)
        cls.postfix.start()

    def proxy(self, **kw):
        return self.start_proxy(backend_port=self.postfix.port, **kw)

    def delivered(self, user, msg, timeout=20):
        """The message of user carrying msg's Message-ID, or fail."""
        mid = message_id(msg).encode()
        found = self.postfix.find_message(user, b"Message-ID: " + mid,
                                          timeout)
        if not found:
            self.fail("%s did not receive %s; maillog tail:\n%s" % (
                user, mid, self.postfix.maillog()[-2500:]))
        return found

    def sessions_in_a_row(self, proxy, clients, source=None):
        """One whole session per (helo, user), one after the other, from
        source; returns [(helo, user, message, client port)]."""
        sent = []
        for helo, user in clients:
            msg = make_message("in a row " + helo, to=user + "@" + DOMAIN)
            c = self.client(proxy.port, source=source)
            port = c.local_port
            r = c.mail_transaction(BOB, [user + "@" + DOMAIN], msg, helo=helo)
            self.assertCode(r["end"], 250)
            self.assertCode(c.cmd("QUIT"), 221)
            c.close()
            sent.append((helo, user, msg, port))
        return sent

    def connects(self):
        """How many connections Postfix's smtpd has logged so far."""
        return len(re.findall(r"smtpd\[\d+\]: connect from", self.postfix.maillog()))

    def assertOwnIdentity(self, sent, addr):
        """Each message arrived with its own client's HELO and address in
        Postfix's Received: header and its port in the log."""
        for helo, user, msg, port in sent:
            got = self.delivered(user, msg)
            recv = [v for n, v in header_fields(got) if n == b"received"]
            self.assertRegex(recv[0].decode(), r"^Received: from %s \(\S+ \[%s\]\)"
                             % (re.escape(helo), re.escape(addr)))
            qid = self.postfix.queue_id_of(message_id(msg))
            m = re.search(r"postfix/smtpd\[(\d+)\]: %s: client=\S*\[%s\]:%d\b"
                          % (qid, re.escape(addr), port), self.postfix.maillog())
            self.assertTrue(m, self.postfix.maillog()[-3000:])

    def not_delivered(self, user, msg, wait=2):
        mid = message_id(msg).encode()
        found = self.postfix.find_message(user, b"Message-ID: " + mid, wait)
        self.assertFalse(found, "%s unexpectedly received %s" % (user, mid))

    def assertDeliveredIntact(self, delivered, sent):
        """delivered == (headers Postfix adds) + sent, in LF form."""
        sent_lf = crlf_to_lf(sent)
        if not delivered.endswith(sent_lf):
            self.fail("delivered message differs from the sent one:\n"
                      "--- sent\n%r\n--- delivered\n%r" % (sent_lf, delivered))
        prefix = delivered[:-len(sent_lf)]
        names = [name for name, _ in header_fields(prefix + b"\n")
                 if name]
        self.assertTrue(set(names) <= POSTFIX_ADDED,
                        "unexpected headers added: %r" % names)
        self.assertEqual(names.count(b"received"), 1,
                         "expected only Postfix's own Received header "
                         "(client identity via XCLIENT), got %r" % prefix)


class TestDelivery(PostfixBackendTest):

    def test_delivered_message_is_byte_identical_apart_from_postfix_headers(self):
        proxy = self.proxy()
        body = (b"First line\r\n"
                b".a line starting with a dot\r\n"
                b"..two dots\r\n"
                b".\r\n"
                b"\r\n"
                b"trailing spaces   \r\n"
                b"\ttab-indented\r\n"
                + b"x" * 990 + b"\r\n"
                b"From the start of a line\r\n"
                b"last line\r\n")
        msg = make_message("byte identical", body, sender=ALICE, to=BOB,
                           extra_headers=("X-Folded: one\r\n two\r\n\tthree",
                                          "x-lower-case:  spaced value"))
        c = self.client(proxy.port)
        r = c.mail_transaction(ALICE, [BOB], msg, helo="client.example.test")
        self.assertCode(r["end"], 250)
        self.assertDeliveredIntact(self.delivered("bob", msg), msg)
        c.cmd("QUIT")

    def test_one_unknown_recipient_gets_postfix_550_and_the_others_get_the_message(self):
        proxy = self.proxy()
        msg = make_message("one bad recipient", to=ALICE)
        c = self.client(proxy.port)
        c.ehlo()
        self.assertCode(c.cmd("MAIL FROM:<%s>" % BOB), 250)
        self.assertReply(c.cmd("RCPT TO:<%s>" % ALICE), 250)
        bad = c.cmd("RCPT TO:<%s>" % NOBODY)
        self.assertReply(bad, 550, "5.1.1")
        self.assertIn("User unknown in virtual mailbox table", bad.text,
                      "Postfix's own reply text should reach the client")
        self.assertReply(c.cmd("RCPT TO:<%s>" % CAROL), 250)
        self.assertCode(c.cmd("DATA"), 354)
        c.send(dot_stuff(msg))
        self.assertCode(c.reply(), 250)
        c.cmd("QUIT")
        self.delivered("alice", msg)
        self.delivered("carol", msg)
        rec = proxy.wait_transaction(action="accepted")
        self.assertTrue(rec, "no accepted transaction in the decision log")
        rcpts = {x["address"]: x["reply"] for x in rec[-1]["recipients"]}
        self.assertEqual(set(rcpts), {ALICE, NOBODY, CAROL})
        self.assertTrue(rcpts[NOBODY].startswith("550"), rcpts)
        self.assertTrue(rcpts[ALICE].startswith("250"), rcpts)
        self.assertTrue(rcpts[CAROL].startswith("250"), rcpts)

    def test_pipelined_session_in_one_write_gets_replies_in_order_and_delivers(self):
        proxy = self.proxy()
        m1 = make_message("pipelined 1", to=BOB)
        m2 = make_message("pipelined 2", to=CAROL)
        c = self.client(proxy.port)
        self.assertIn("PIPELINING", c.ehlo().keywords)
        c.send(b"RSET\r\n"
               b"MAIL FROM:<" + ALICE.encode() + b">\r\n"
               b"RCPT TO:<" + BOB.encode() + b">\r\n"
               b"RCPT TO:<" + NOBODY.encode() + b">\r\n"
               b"DATA\r\n" + dot_stuff(m1) +
               b"NOOP\r\n"
               b"MAIL FROM:<>\r\n"
               b"RCPT TO:<" + CAROL.encode() + b">\r\n"
               b"DATA\r\n" + dot_stuff(m2) +
               b"QUIT\r\n")
        codes = [c.reply(timeout=30).code for _ in range(11)]
        self.assertEqual(codes, [250, 250, 250, 550, 354, 250,
                                 250, 250, 250, 354, 250])
        self.assertEqual(c.reply().code, 221)
        self.delivered("bob", m1)
        self.delivered("carol", m2)

    def test_8bitmime_message_with_8bit_body_is_delivered_intact(self):
        proxy = self.proxy()
        c = self.client(proxy.port)
        self.assertIn("8BITMIME", c.ehlo().keywords)
        body = ("Grüße aus Köln – naïve café, 日本語\r\n").encode("utf-8") + \
            bytes(range(0x80, 0x100)) + b"\r\nend\r\n"
        msg = make_message("8bit body", body, to=BOB, eight_bit=True)
        self.assertCode(c.cmd("MAIL FROM:<%s> BODY=8BITMIME" % ALICE), 250)
        self.assertCode(c.cmd("RCPT TO:<%s>" % BOB), 250)
        self.assertCode(c.cmd("DATA"), 354)
        c.send(dot_stuff(msg))
        self.assertCode(c.reply(), 250)
        self.assertDeliveredIntact(self.delivered("bob", msg), msg)

    def test_smtputf8_message_with_utf8_addresses_is_delivered(self):
        proxy = self.proxy()
        c = self.client(proxy.port)
        self.assertIn("SMTPUTF8", c.ehlo().keywords)
        sender = "jörg@" + DOMAIN
        msg = make_message("Grüße – SMTPUTF8", "Hallo Jürgen\r\n".encode(),
                           sender=sender, to=UTF8_USER, eight_bit=True)
        self.assertCode(c.cmd("MAIL FROM:<%s> SMTPUTF8 BODY=8BITMIME"
                              % sender), 250)
        self.assertCode(c.cmd("RCPT TO:<%s>" % UTF8_USER), 250)
        self.assertCode(c.cmd("DATA"), 354)
        c.send(dot_stuff(msg))
        self.assertCode(c.reply(), 250)
        got = self.delivered("juergen", msg)
        self.assertIn(("Return-Path: <%s>" % sender).encode(), got)
        self.assertDeliveredIntact(got, msg)

    def test_message_over_postfix_size_limit_is_refused_at_mail(self):
        proxy = self.proxy()
        c = self.client(proxy.port)
        kw = c.ehlo().keywords
        self.assertIn("SIZE", kw)
        r = c.cmd("MAIL FROM:<%s> SIZE=%d" % (ALICE, 50 * 1024 * 1024))
        self.assertReply(r, 552)


class TestClients(PostfixBackendTest):

    def test_swaks_delivers_through_the_proxy(self):
        proxy = self.proxy()
        for extra in ([], ["--pipeline"]):
            subject = "swaks %s" % (extra or "plain")
            r = run_swaks(["--server", "127.0.0.1", "--port", str(proxy.port),
                           "--from", ALICE, "--to", BOB,
                           "--helo", "swaks.example.test",
                           "--h-Subject", subject,
                           "--timeout", "30"] + extra)
            self.assertEqual(r.returncode, 0, r.stdout)
            self.assertTrue(self.postfix.find_message(
                "bob", ("Subject: " + subject).encode()),
                "bob did not receive %r" % subject)

    def test_smtplib_delivers_several_messages_in_one_session(self):
        proxy = self.proxy()
        ids = []
        with smtplib.SMTP("127.0.0.1", proxy.port, timeout=30) as s:
            s.ehlo("smtplib.example.test")
            for i in range(3):
                m = EmailMessage()
                m["From"] = ALICE
                m["To"] = "%s, %s" % (BOB, CAROL)
                m["Subject"] = "smtplib %d" % i
                m["Message-ID"] = "<smtplib-%d-%d@%s>" % (os.getpid(), i,
                                                         DOMAIN)
                m.set_content("Message %d from smtplib.\n.\n..\n" % i)
                refused = s.send_message(m)
                self.assertEqual(refused, {})
                ids.append(m["Message-ID"])
        for mid in ids:
            for user in ("bob", "carol"):
                self.assertTrue(self.postfix.find_message(
                    user, ("Message-ID: " + mid).encode()),
                    "%s missing %s" % (user, mid))

    def test_smtp_source_20_messages_over_5_sessions_all_delivered(self):
        proxy = self.proxy(workers=2)
        before = len(self.postfix.message_files("bob"))
        r = run_smtp_source(["-s", "5", "-m", "20", "-f", ALICE, "-t", BOB,
                             "-M", "source.example.test", "-S",
                             "smtp-source load",
                             "127.0.0.1:%d" % proxy.port], timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout)
        msgs = self.postfix.wait_messages("bob", before + 20, timeout=60)
        self.assertEqual(len(msgs) - before, 20, self.postfix.maillog()[-2000:])
        accepted = proxy.wait_transaction(count=20, action="accepted",
                                          timeout=20)
        self.assertEqual(len(accepted), 20)


class TestClientIdentity(PostfixBackendTest):

    def test_postfix_received_header_shows_client_helo_via_xclient(self):
        proxy = self.proxy()
        msg = make_message("xclient helo", to=ALICE)
        c = self.client(proxy.port)
        r = c.mail_transaction(BOB, [ALICE], msg,
                               helo="real-client.example.test")
        self.assertCode(r["end"], 250)
        got = self.delivered("alice", msg)
        recv = [v for n, v in header_fields(got) if n == b"received"]
        self.assertEqual(len(recv), 1, recv)
        self.assertRegex(recv[0].decode(),
                         r"^Received: from real-client\.example\.test "
                         r"\(\S+ \[127\.0\.0\.1\]\)")
        self.assertNotIn(b"proxy.portcullis.test", recv[0])
        # smtpd's log names the real client: XCLIENT ADDR and PORT
        qid = self.postfix.queue_id_of(message_id(msg))
        self.assertTrue(qid)
        self.assertRegex(self.postfix.maillog(),
                         r"%s: client=\S*\[127\.0\.0\.1\]:%d\b"
                         % (qid, c.local_port))

    def test_reused_connection_gives_postfix_each_clients_own_identity(self):
        """Two sessions back to back share one smtpd (one connection): XCLIENT
        again for the second client, whose HELO and port Postfix records."""
        before = self.connects()
        proxy = self.proxy()
        sent = self.sessions_in_a_row(proxy, (("first.example.test", "alice"),
                                              ("second.example.test", "carol")))
        self.assertOwnIdentity(sent, "127.0.0.1")
        # the capability probe's connection served both
        self.assertEqual(self.connects() - before, 1, self.postfix.maillog()[-3000:])
        recs = proxy.wait_transaction(count=2, action="accepted")
        self.assertEqual([r["backend"]["reused"] for r in recs], [False, True])

    @unittest.skipUnless(has_ipv6(), "no IPv6 loopback")
    def test_postfix_log_shows_ipv6_client_address_via_xclient(self):
        port6 = free_port()
        proxy = self.proxy(port6=port6)
        msg = make_message("xclient ipv6", to=CAROL)
        c = self.client(port6, host="::1")
        r = c.mail_transaction(ALICE, [CAROL], msg, helo="v6.example.test")
        self.assertCode(r["end"], 250)
        got = self.delivered("carol", msg)
        recv = [v for n, v in header_fields(got) if n == b"received"]
        self.assertRegex(recv[0].decode(),
                         r"^Received: from v6\.example\.test "
                         r"\(\S+ \[IPv6:::1\]\)")
        qid = self.postfix.queue_id_of(message_id(msg))
        self.assertTrue(qid)
        self.assertRegex(self.postfix.maillog(),
                         r"%s: client=\S*\[::1\]" % qid)
        rec = proxy.wait_transaction(action="accepted")
        self.assertEqual(rec[-1]["client"]["address"], "::1")

    def test_decision_log_queue_id_matches_postfix_queue_id(self):
        proxy = self.proxy()
        msg = make_message("queue id", to=BOB)
        c = self.client(proxy.port)
        r = c.mail_transaction(ALICE, [BOB, CAROL], msg,
                               helo="qid.example.test")
        self.assertCode(r["end"], 250)
        m = re.search(r"queued as (\w+)", r["end"].text)
        self.assertTrue(m, "Postfix's 'queued as' should reach the client: "
                        "%r" % r["end"])
        qid = self.postfix.queue_id_of(message_id(msg))
        self.assertEqual(m.group(1), qid)
        self.delivered("bob", msg)
        recs = proxy.wait_transaction(action="accepted")
        self.assertEqual(len(recs), 1, proxy.decisions())
        rec = recs[0]
        self.assertEqual(rec["backend"]["queue_id"], qid)
        self.assertEqual(rec["backend"]["server"],
                         "127.0.0.1:%d" % self.postfix.port)
        self.assertTrue(rec["backend"]["reply"].startswith("250"))
        self.assertTrue(rec["reply"].startswith("250"))
        self.assertEqual(rec["sender"], ALICE)
        self.assertEqual([x["address"] for x in rec["recipients"]],
                         [BOB, CAROL])
        self.assertEqual(rec["size"], len(msg))
        self.assertEqual(rec["client"]["address"], "127.0.0.1")
        self.assertEqual(rec["client"]["port"], c.local_port)
        self.assertEqual(rec["client"]["helo"], "qid.example.test")
        self.assertRegex(rec["time"],
                         r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
        self.assertTrue(rec["session"])
        # Postfix's log says where it went: the queue id is delivered.
        self.assertTrue(self.postfix.wait_log(
            r"%s: to=<%s>.*status=sent" % (qid, re.escape(BOB))))

    def test_null_sender_is_logged_as_empty_string(self):
        proxy = self.proxy()
        msg = make_message("bounce", to=ALICE)
        c = self.client(proxy.port)
        c.ehlo()
        self.assertCode(c.cmd("MAIL FROM:<>"), 250)
        self.assertCode(c.cmd("RCPT TO:<%s>" % ALICE), 250)
        self.assertCode(c.cmd("DATA"), 354)
        c.send(dot_stuff(msg))
        self.assertCode(c.reply(), 250)
        got = self.delivered("alice", msg)
        self.assertTrue(got.startswith(b"Return-Path: <>"), got[:100])
        rec = proxy.wait_transaction(action="accepted")
        self.assertEqual(rec[-1]["sender"], "")


class TestReuseWithStrictXclientHosts(PostfixBackendTest):
    """Postfix checks smtpd_authorized_xclient_hosts again after XCLIENT,
    against the address XCLIENT gave, and stops offering XCLIENT: with only
    the proxy's address listed (127.0.0.1), a connection that spoke for a
    client at 127.0.0.2 cannot speak for the next one. It must never be
    used for the next client (the message would go out under the earlier
    client's identity, with its rights): every session gets its own
    connection and its own identity."""

    postfix_options = {"xclient": "127.0.0.1"}

    def test_a_connection_that_cannot_take_the_next_xclient_is_not_reused(self):
        before = self.connects()
        proxy = self.proxy()
        sent = self.sessions_in_a_row(
            proxy, [("remote%d.example.test" % n, user)
                    for n, user in enumerate(("alice", "carol", "bob"))],
            source="127.0.0.2")
        self.assertOwnIdentity(sent, "127.0.0.2")
        log = self.postfix.maillog()
        self.assertNotIn("insufficient authorization", log)
        # the probe's connection served the first client only
        self.assertEqual(self.connects() - before, 3, log[-3000:])
        recs = proxy.wait_transaction(count=3, action="accepted")
        self.assertEqual([r["backend"]["reused"] for r in recs], [False] * 3)


class TestReuseWithXclientForAll(PostfixBackendTest):
    """The listener only the proxy reaches authorizes every address for
    XCLIENT (as README suggests for reuse): a connection that spoke for a
    client at 127.0.0.2 takes the next client's XCLIENT."""

    postfix_options = {"xclient": "0.0.0.0/0 [::]/0"}

    def test_remote_clients_share_one_connection_each_with_its_identity(self):
        before = self.connects()
        proxy = self.proxy()
        sent = self.sessions_in_a_row(proxy, (("far0.example.test", "alice"),
                                              ("far1.example.test", "carol")),
                                      source="127.0.0.2")
        self.assertOwnIdentity(sent, "127.0.0.2")
        self.assertEqual(self.connects() - before, 1, self.postfix.maillog()[-3000:])
        recs = proxy.wait_transaction(count=2, action="accepted")
        self.assertEqual([r["backend"]["reused"] for r in recs], [False, True])


class TestClientCannotSpoof(PostfixBackendTest):

    def test_client_xclient_command_is_refused_and_not_relayed(self):
        proxy = self.proxy()
        msg = make_message("spoof attempt", to=CAROL)
        c = self.client(proxy.port)
        kw = c.ehlo("honest.example.test").keywords
        self.assertNotIn("XCLIENT", kw)
        self.assertNotIn("XFORWARD", kw)
        self.assertCode(c.cmd("XCLIENT ADDR=192.0.2.66 NAME=spoofed.example "
                              "HELO=spoofed.example"), 5)
        self.assertCode(c.cmd("XFORWARD ADDR=192.0.2.67 HELO=spoofed2"), 5)
        r = c.mail_transaction(ALICE, [CAROL], msg)
        self.assertCode(r["end"], 250)
        got = self.delivered("carol", msg)
        self.assertNotIn(b"192.0.2.6", got)
        self.assertNotIn(b"spoofed", got)
        qid = self.postfix.queue_id_of(message_id(msg))
        self.assertRegex(self.postfix.maillog(),
                         r"%s: client=\S*\[127\.0\.0\.1\]" % qid)

    def test_helo_with_xtext_special_characters_reaches_postfix_intact(self):
        """XCLIENT values are xtext: '+' and '=' must be encoded."""
        proxy = self.proxy()
        helo = "odd+helo=name.example.test"
        c = self.client(proxy.port)
        e = c.ehlo(helo)
        if e.code == 501:
            return  # refusing a syntactically bad HELO is fine too
        self.assertCode(e, 250)
        msg = make_message("xtext helo", to=ALICE)
        r = c.mail_transaction(BOB, [ALICE], msg)
        self.assertCode(r["end"], 250)
        got = self.delivered("alice", msg)
        recv = [v for n, v in header_fields(got) if n == b"received"]
        self.assertTrue(recv[0].startswith(
            ("Received: from " + helo + " ").encode()), recv)

    def test_quoted_local_part_sender_is_relayed(self):
        proxy = self.proxy()
        sender = '"john doe"@' + DOMAIN
        msg = make_message("quoted sender", to=BOB)
        c = self.client(proxy.port)
        c.ehlo()
        self.assertCode(c.cmd("MAIL FROM:<%s>" % sender), 250)
        self.assertCode(c.cmd("RCPT TO:<%s>" % BOB), 250)
        self.assertCode(c.cmd("DATA"), 354)
        c.send(dot_stuff(msg))
        self.assertCode(c.reply(), 250)
        got = self.delivered("bob", msg)
        self.assertTrue(got.startswith(("Return-Path: <%s>" % sender)
                                       .encode()), got[:80])


class TestXforwardOnly(PostfixBackendTest):
    """A Postfix that trusts the proxy for XFORWARD but not XCLIENT."""

    postfix_options = {"xclient": False}

    def test_postfix_log_shows_original_client_via_xforward(self):
        proxy = self.proxy()
        msg = make_message("xforward", to=BOB)
        c = self.client(proxy.port)
        self.assertCode(c.ehlo("xforward-client.example.test"), 250)
        r = c.mail_transaction(ALICE, [BOB], msg)
        self.assertCode(r["end"], 250)
        got = self.delivered("bob", msg)
        recv = [v for n, v in header_fields(got) if n == b"received"]
        self.assertEqual(len(recv), 1, "expected no Received header from "
                         "the proxy when XFORWARD is offered: %r" % recv)
        # Postfix logs XFORWARD data as orig_client (its Received header
        # keeps the proxy's own HELO and address).
        qid = self.postfix.queue_id_of(message_id(msg))
        self.assertRegex(self.postfix.maillog(),
                         r"%s: client=\S+, orig_client=\S*\[127\.0\.0\.1\]"
                         r":%d\b" % (qid, c.local_port))


class TestEsmtpParameters(PostfixBackendTest):

    def test_dsn_parameters_reach_postfix_and_come_back_in_the_dsn(self):
        """NOTIFY=SUCCESS makes Postfix send a delivery report to the
        sender (alice), which carries ENVID and ORCPT; RET=HDRS returns
        only the headers."""
        proxy = self.proxy()
        c = self.client(proxy.port)
        kw = c.ehlo().keywords
        self.assertIn("DSN", kw)
        envid = "portcullis-envid-%d" % os.getpid()
        msg = make_message("dsn params", "secret body text\r\n", to=BOB)
        self.assertCode(c.cmd("MAIL FROM:<%s> SIZE=%d BODY=8BITMIME RET=HDRS "
                              "ENVID=%s" % (ALICE, len(msg), envid)), 250)
        self.assertCode(c.cmd("RCPT TO:<%s> NOTIFY=SUCCESS,FAILURE "
                              "ORCPT=rfc822;original-bob@%s" % (BOB, DOMAIN)),
                        250)
        self.assertCode(c.cmd("DATA"), 354)
        c.send(dot_stuff(msg))
        self.assertCode(c.reply(), 250)
        self.delivered("bob", msg)
        report = self.postfix.find_message(
            "alice", ("Original-Envelope-Id: " + envid).encode(), 30)
        self.assertTrue(report, "no success DSN with the ENVID for alice; "
                        "maillog:\n" + self.postfix.maillog()[-2000:])
        self.assertIn(("Original-Recipient: rfc822;original-bob@" + DOMAIN)
                      .encode(), report)
        self.assertNotIn(b"secret body text", report,
                         "RET=HDRS: the report must not return the body")


if __name__ == "__main__":
    unittest.main()
