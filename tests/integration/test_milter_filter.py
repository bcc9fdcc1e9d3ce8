"""
The built-in milter filter (filters/milter): an external milter in the
chain, spoken to over the Sendmail milter protocol 6.

The milter is tests/tools/testmilter, built with libmilter (the library
every real milter uses), which does what the message asks (see its
comment): each reply and each header change a milter can make. A milter
that is down, slow, or sends garbage is a small Python server here, since
no real milter misbehaves on demand. The capture server is the backend
and keeps the exact bytes it got.

TESTMILTER names the test milter (default: beside FILTERHOST, else
tests/tools/testmilter in the tree).
"""

import os
import socket
import struct
import subprocess
import tempfile
import threading
import time
import unittest

from harness import (DOMAIN, PROJECT, ProxyTestCase, make_message,
                     make_tempdir, remove_tree, wait_for, filter_entries,
                     header_fields)
import harness  # noqa: E402
import rspamd_helper  # noqa: E402


def setUpModule():
    harness.require_filters()


FILTER_DIR = os.environ.get("PORTCULLIS_FILTER_DIR") or os.path.join(
    PROJECT, "filters", ".libs")
TESTMILTER = os.environ.get("TESTMILTER") or (
    os.path.join(os.path.dirname(os.environ["FILTERHOST"]), "testmilter")
    if os.environ.get("FILTERHOST") else
    os.path.join(PROJECT, "tests", "tools", "testmilter"))

ALICE = "alice@" + DOMAIN
BOB = "bob@" + DOMAIN
CAROL = "carol@" + DOMAIN


def milter_section(sock, **options):
    options = dict({"timeout": "5", "on_error": "tempfail"}, **options)
    lines = ["", "[filter milter]", "module = milter", "socket = %s" % sock]
    lines += ["%s = %s" % (k, v) for k, v in options.items()]
    return "\n".join(lines) + "\n"


class TestMilter:
    """testmilter on a UNIX socket, with its event log."""

    def __init__(self, connect_action=None):
        self.dir = make_tempdir("portcullis-milter-")
        self.sock = os.path.join(self.dir, "milter.sock")
        self.log = os.path.join(self.dir, "milter.log")
        args = [TESTMILTER, "-l", self.log]
        if connect_action:
            args += ["-c", connect_action]
        self.proc = subprocess.Popen(args + ["unix:" + self.sock],
                                     stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        if not wait_for(lambda: os.path.exists(self.sock), 10):
            self.stop()
            raise AssertionError("testmilter did not open %s" % self.sock)

    @property
    def spec(self):
        return "unix:" + self.sock

    def events(self):
        try:
            with open(self.log) as f:
                return [line.rstrip("\n") for line in f]
        except OSError:
            return []

    def wait_event(self, prefix, count=1, timeout=10):
        def look():
            found = [e for e in self.events() if e.startswith(prefix)]
            return found if len(found) >= count else None
        return wait_for(look, timeout) or []

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        remove_tree(self.dir)


class FakeMilter:
    """A misbehaving milter on a UNIX socket: answer(conn) is called for
    each connection after the negotiation packet is read."""

    def __init__(self, answer):
        self.dir = make_tempdir("portcullis-fakemilter-")
        self.sock_path = os.path.join(self.dir, "fake.sock")
        self.answer = answer
        self.connections = 0
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(self.sock_path)
        self.srv.listen(8)
        self.srv.settimeout(0.2)
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    @property
    def spec(self):
        return "unix:" + self.sock_path

    def _loop(self):
        while not self.stopping:
            try:
                conn, _ = self.srv.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,),
                             daemon=True).start()

    def _serve(self, conn):
        try:
            conn.settimeout(10)
            head = conn.recv(4)
            if len(head) == 4:
                n = struct.unpack(">I", head)[0]
                while n > 0:
                    got = conn.recv(n)
                    if not got:
                        break
                    n -= len(got)
            self.answer(conn)
            # hold the connection until the filter closes it
            conn.settimeout(3)
            while conn.recv(4096):
                pass
        except OSError:
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def stop(self):
        self.stopping = True
        self.srv.close()
        self.thread.join(2)
        remove_tree(self.dir)


class FakeTCPMilter(FakeMilter):
    """FakeMilter on 127.0.0.1 over TCP, Nagle on as a libmilter milter
    has it."""

    def __init__(self, answer):
        self.dir = make_tempdir("portcullis-fakemilter-")
        self.answer = answer
        self.connections = 0
        self.srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.srv.bind(("127.0.0.1", 0))
        self.port = self.srv.getsockname()[1]
        self.srv.listen(8)
        self.srv.settimeout(0.2)
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    @property
    def spec(self):
        return "inet:%d@127.0.0.1" % self.port


def packet(cmd, data=b""):
    return struct.pack(">I", len(data) + 1) + cmd + data


OPTNEG = packet(b"O", struct.pack(">III", 6, 0, 0))
# SMFIP_NR_*: no reply to any event before the end of the message
NR_ALL = 0x80 | 0x1000 | 0x2000 | 0x4000 | 0x8000 | 0x10000 | 0x20000 | \
    0x40000 | 0x80000


def recv_exactly(conn, n):
    data = b""
    while len(data) < n:
        got = conn.recv(n - len(data))
        if not got:
            raise OSError("closed")
        data += got
    return data


class MilterFilterTest(ProxyTestCase):

    def setUp(self):
        for path in (os.path.join(FILTER_DIR, "milter.so"), TESTMILTER):
            if not os.access(path, os.R_OK):
                self.skipTest("not built: %s" % path)
        self.cap = self.start_capture()

    def start_milter(self, **kw):
        m = TestMilter(**kw)
        self.addCleanup(m.stop)
        return m

    def proxy(self, spec, **options):
        return self.start_proxy(backend_port=self.cap.port, filters="milter",
                                filter_dir=FILTER_DIR,
                                extra=milter_section(spec, **options))

    def session(self, proxy, helo="client.example.test"):
        c = self.client(proxy.port)
        self.assertCode(c.ehlo(helo), 250)
        return c

    def send(self, c, sender, rcpts, message):
        return c.mail_transaction(sender, rcpts, message)

    def milter_results(self, record):
        entries = filter_entries(record, "milter")
        self.assertTrue(entries, "no milter entry in %r" % record)
        return entries


class TestHeaderChanges(MilterFilterTest):

    def setUp(self):
        super().setUp()
        self.m = self.start_milter()
        self.p = self.proxy(self.m.spec)

    def test_changes_reach_the_backend_in_the_milters_order(self):
        body = b"line one\r\nline two\r\n"
        msg = make_message("change me", body=body,
                           extra_headers=["X-Remove-Me: please",
                                          "X-Folded: first part\r\n\tsecond part"])
        c = self.session(self.p)
        r = self.send(c, ALICE, [BOB, CAROL], msg)
        self.assertCode(r["end"], 250)
        got = self.cap.wait_messages(1)[0]
        fields = header_fields(got)
        names = [n for n, _ in fields]
        self.assertEqual(names[0], b"x-testmilter-top", names)
        self.assertEqual(names[1], b"x-testmilter-second", names)
        self.assertNotIn(b"x-remove-me", names)
        self.assertIn(b"Subject: changed by testmilter\r\n", got)
        seen = dict(fields)[b"x-testmilter"]
        # 5 fields of make_message + 2 extra; the body byte for byte
        self.assertIn(b"from=<%s> rcpts=2 headers=7 body=%d chunks=1"
                      % (ALICE.encode(), len(body)), seen)
        self.assertTrue(got.endswith(b"\r\n\r\n" + body), got)
        # the folded field went to the milter with its fold as a newline
        self.m.wait_event("eom")
        with open(self.m.log) as f:
            self.assertIn("header X-Folded: [first part\n\tsecond part]\n",
                          f.read())
        rec = self.p.wait_transaction(action="accepted")[0]
        res = self.milter_results(rec)[-1]
        self.assertEqual(res["results"]["milter"], "continue")
        self.assertEqual(res["results"]["changes"], 7)

    def test_macros_and_client(self):
        c = self.session(self.p, helo="helo.example.test")
        r = self.send(c, ALICE, [BOB], make_message("macros"))
        self.assertCode(r["end"], 250)
        got = self.cap.wait_messages(1)[0]
        rec = self.p.wait_transaction(action="accepted")[0]
        fields = dict(header_fields(got))
        macros = fields[b"x-testmilter-macros"].decode()
        sid = rec["session"]
        self.assertIn(" i=%s " % sid, macros + " ")
        self.assertIn("{daemon_name}=127.0.0.1:%d" % self.p.port, macros)
        self.assertIn("_=unknown [127.0.0.1]", macros)
        self.assertIn("{auth_authen}=-", macros)
        client = fields[b"x-testmilter-client"].decode()
        self.assertIn("[127.0.0.1] helo=helo.example.test", client)
        mail = self.m.wait_event("mail")[0]
        self.assertIn("{mail_addr}=%s" % ALICE, mail)
        self.assertIn("<%s>" % ALICE, mail)

    def test_body_in_chunks_of_at_most_64k(self):
        body = b"".join(b"%078d\r\n" % i for i in range(2500))  # 200,000 bytes
        c = self.session(self.p)
        r = self.send(c, ALICE, [BOB], make_message("big", body=body))
        self.assertCode(r["end"], 250)
        got = self.cap.wait_messages(1)[0]
        seen = dict(header_fields(got))[b"x-testmilter"]
        self.assertIn(b"body=200000 chunks=4", seen)
        sizes = [int(e.split()[1]) for e in self.m.events() if e.startswith("body ")]
        self.assertEqual(sum(sizes), 200000)
        self.assertTrue(all(s <= 65535 for s in sizes), sizes)

    def test_skip_stops_the_body(self):
        body = b"".join(b"%078d\r\n" % i for i in range(2500))
        c = self.session(self.p)
        r = self.send(c, "skip@" + DOMAIN, [BOB], make_message("skip", body=body))
        self.assertCode(r["end"], 250)
        got = self.cap.wait_messages(1)[0]
        self.assertIn(b"chunks=1", dict(header_fields(got))[b"x-testmilter"])
        # the whole message still reaches the backend
        self.assertTrue(got.endswith(body))

    def test_one_connection_per_session_and_abort(self):
        c = self.session(self.p)
        self.assertCode(self.send(c, ALICE, [BOB], make_message("one"))["end"], 250)
        self.assertCode(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        self.assertCode(c.cmd("RSET"), 250)
        self.assertCode(self.send(c, ALICE, [BOB], make_message("two"))["end"], 250)
        c.cmd("QUIT")
        self.m.wait_event("close")
        ev = [e.split()[0] for e in self.m.events()]
        self.assertEqual(ev.count("connect"), 1, ev)
        self.assertEqual(ev.count("mail"), 3, ev)
        self.assertEqual(ev.count("eom"), 2, ev)
        self.assertEqual(ev.count("abort"), 1, ev)
        self.assertEqual(ev[-1], "close")


class TestVerdicts(MilterFilterTest):

    def setUp(self):
        super().setUp()
        self.m = self.start_milter()
        self.p = self.proxy(self.m.spec)

    def test_sender_refused_with_the_milters_reply(self):
        c = self.session(self.p)
        r = c.cmd("MAIL FROM:<reject@%s>" % DOMAIN)
        self.assertReply(r, 550, "5.7.1")
        self.assertIn("Sender refused by testmilter", r.text)
        rec = self.p.wait_transaction(action="rejected")[0]
        self.assertEqual(self.milter_results(rec)[-1]["results"]["milter"], "replycode")

    def test_tempfail_gets_the_default_reply(self):
        c = self.session(self.p)
        self.assertReply(c.cmd("MAIL FROM:<tempfail@%s>" % DOMAIN), 451, "4.7.1")

    def test_multiline_reply_gives_its_first_line(self):
        c = self.session(self.p)
        r = c.cmd("MAIL FROM:<multiline@%s>" % DOMAIN)
        self.assertReply(r, 550, "5.7.1")
        self.assertIn("first line", r.text)

    def test_recipient_refused_alone(self):
        c = self.session(self.p)
        r = self.send(c, ALICE, [BOB, "refused@" + DOMAIN], make_message("rcpt"))
        self.assertCode(r["rcpt"][0], 250)
        self.assertReply(r["rcpt"][1], 550, "5.1.1")
        self.assertIn("Recipient refused by testmilter", r["rcpt"][1].text)
        self.assertCode(r["end"], 250)
        got = self.cap.wait_messages(1)[0]
        self.assertIn(b"rcpts=1", dict(header_fields(got))[b"x-testmilter"])
        self.assertNotIn("RCPT TO:<refused@%s>" % DOMAIN, self.cap.commands())

    def test_discard_takes_and_delivers_nothing(self):
        c = self.session(self.p)
        r = self.send(c, "discard@" + DOMAIN, [BOB], make_message("discard"))
        self.assertCode(r["end"], 250)
        self.p.wait_transaction(action="discarded")
        self.assertEqual(self.cap.messages(), [])

    def test_message_refused_at_its_end(self):
        c = self.session(self.p)
        r = self.send(c, "eomreject@" + DOMAIN, [BOB], make_message("eom"))
        self.assertReply(r["end"], 554, "5.7.1")
        self.assertIn("Message refused by testmilter", r["end"].text)
        self.assertEqual(self.cap.messages(), [])

    def test_accept_leaves_the_message_alone(self):
        c = self.session(self.p)
        msg = make_message("accepted")
        r = self.send(c, "accept@" + DOMAIN, [BOB], msg)
        self.assertCode(r["end"], 250)
        got = self.cap.wait_messages(1)[0]
        self.assertNotIn(b"X-Testmilter", got)
        self.assertNotIn("eom", [e.split()[0] for e in self.m.events()])

    def test_helo_refused(self):
        c = self.client(self.p.port)
        r = c.ehlo("reject.helo")
        self.assertReply(r, 550, "5.7.1")
        self.assertIn("HELO refused by testmilter", r.text)

    def test_progress_keeps_a_slow_milter_in_time(self):
        p = self.proxy(self.m.spec, content_timeout="2s")
        c = self.session(p)
        r = self.send(c, "progress@" + DOMAIN, [BOB], make_message("progress"))
        self.assertCode(r["end"], 250)
        self.assertEqual(len(self.cap.wait_messages(1)), 1)


def envelope_commands(cap):
    """The backend's commands from the first MAIL on, as text, without
    XFORWARD (which the relay sends again after RSET) and QUIT."""
    cmds = [c.decode() for c in cap.commands()]
    first = next(i for i, c in enumerate(cmds) if c.startswith("MAIL"))
    return [c for c in cmds[first:] if c != "QUIT" and not c.startswith("XFORWARD")]


class TestEnvelopeChanges(MilterFilterTest):
    """What testmilter changes beyond the header reaches the backend as
    if the message had come that way: the capture server shows the
    commands and bytes it got."""

    def setUp(self):
        super().setUp()
        self.m = self.start_milter()
        self.p = self.proxy(self.m.spec)

    def transaction(self, mail, rcpts, message, proxy=None):
        c = self.session(proxy or self.p)
        self.assertCode(c.cmd(mail), 250)
        for r in rcpts:
            self.assertCode(c.cmd(r), 250)
        self.assertCode(c.cmd("DATA"), 354)
        c.send(harness.dot_stuff(message))
        return c.reply()

    def test_changed_sender_keeps_the_clients_parameters(self):
        sender = "chgfrom@" + DOMAIN
        end = self.transaction("MAIL FROM:<%s> SIZE=1000" % sender,
                               ["RCPT TO:<%s>" % BOB], make_message("from"))
        self.assertEqual(end.code, 250, end)
        self.cap.wait_messages(1)
        new = "new-sender@" + DOMAIN
        self.assertEqual(envelope_commands(self.cap), [
            "MAIL FROM:<%s> SIZE=1000" % sender, "RCPT TO:<%s>" % BOB,
            "RSET", "MAIL FROM:<%s> SIZE=1000" % new, "RCPT TO:<%s>" % BOB,
            "DATA"])
        # the backend still learns who the client is for the new transaction
        cmds = [c.decode() for c in self.cap.commands()]
        self.assertTrue(cmds[cmds.index("RSET") + 1].startswith(
            "XFORWARD NAME=[UNAVAILABLE] ADDR=127.0.0.1 "), cmds)
        rec = self.p.wait_transaction(action="accepted")[0]
        self.assertEqual(rec["sender"], sender)
        self.assertEqual(rec["changes"], {"sender": new})

    def test_changed_sender_with_its_own_arguments(self):
        sender = "chgfromargs@" + DOMAIN
        end = self.transaction("MAIL FROM:<%s> SIZE=1000" % sender,
                               ["RCPT TO:<%s>" % BOB], make_message("from"))
        self.assertEqual(end.code, 250, end)
        self.cap.wait_messages(1)
        self.assertIn("MAIL FROM:<new-sender@%s> BODY=7BIT" % DOMAIN,
                      envelope_commands(self.cap))
        rec = self.p.wait_transaction(action="accepted")[0]
        self.assertEqual(rec["changes"]["sender_parameters"], "BODY=7BIT")

    def test_added_recipients_with_and_without_arguments(self):
        sender = "addrcpt@" + DOMAIN
        end = self.transaction("MAIL FROM:<%s>" % sender,
                               ["RCPT TO:<%s> NOTIFY=SUCCESS" % BOB],
                               make_message("add"))
        self.assertEqual(end.code, 250, end)
        got = self.cap.wait_messages(1)[0]
        added, par = "added@" + DOMAIN, "added-par@" + DOMAIN
        self.assertEqual(envelope_commands(self.cap)[2:], [
            "RSET", "MAIL FROM:<%s>" % sender,
            "RCPT TO:<%s> NOTIFY=SUCCESS" % BOB, "RCPT TO:<%s>" % added,
            "RCPT TO:<%s> NOTIFY=NEVER" % par, "DATA"])
        # the header changes of the same reply still apply
        self.assertIn(b"X-Testmilter: from=<%s> rcpts=1" % sender.encode(), got)
        rec = self.p.wait_transaction(action="accepted")[0]
        self.assertEqual(rec["changes"], {
            "recipients_added": [added, par], "recipients_deleted": [],
            "recipients": [BOB, added, par]})
        # 5 header fields and 2 recipients
        self.assertEqual(self.milter_results(rec)[-1]["results"]["changes"], 7)

    def test_deleted_recipient_is_left_out(self):
        sender = "delrcpt@" + DOMAIN
        end = self.transaction("MAIL FROM:<%s>" % sender,
                               ["RCPT TO:<%s>" % BOB, "RCPT TO:<%s>" % CAROL],
                               make_message("del"))
        self.assertEqual(end.code, 250, end)
        self.cap.wait_messages(1)
        self.assertEqual(envelope_commands(self.cap)[3:], [
            "RSET", "MAIL FROM:<%s>" % sender, "RCPT TO:<%s>" % CAROL, "DATA"])
        rec = self.p.wait_transaction(action="accepted")[0]
        self.assertEqual(rec["changes"]["recipients_deleted"], [BOB])
        self.assertEqual(rec["changes"]["recipients"], [CAROL])

    def test_every_recipient_deleted_is_taken_and_delivered_to_nobody(self):
        sender = "delall@" + DOMAIN
        end = self.transaction("MAIL FROM:<%s>" % sender,
                               ["RCPT TO:<%s>" % BOB, "RCPT TO:<%s>" % CAROL],
                               make_message("nobody"))
        self.assertReply(end, 250, "2.0.0")
        rec = self.p.wait_transaction(action="discarded")[0]
        self.assertEqual(rec["reason"], "every recipient was deleted by a filter")
        self.assertEqual(rec["changes"]["recipients"], [])
        self.assertEqual(self.cap.messages(), [])
        self.assertNotIn("DATA", envelope_commands(self.cap))

    def test_replaced_body_over_64k_in_several_packets(self):
        sender = "replbody@" + DOMAIN
        end = self.transaction("MAIL FROM:<%s>" % sender, ["RCPT TO:<%s>" % BOB],
                               make_message("body", body=b"the old body\r\n"))
        self.assertEqual(end.code, 250, end)
        got = self.cap.wait_messages(1)[0]
        body = b"%-20s\r\n" % b".dot line" + b"".join(
            b"replaced line %06d\r\n" % i for i in range(1, 7001))
        self.assertEqual(len(body), 154022)
        # after the changed header block and its blank line, dot-stuffed
        self.assertTrue(got.endswith(b"\r\n\r\n." + body), got[-300:])
        self.assertNotIn(b"the old body", got)
        self.assertIn(b"X-Testmilter: from=<%s>" % sender.encode(), got)
        self.assertNotIn("RSET", envelope_commands(self.cap))
        rec = self.p.wait_transaction(action="accepted")[0]
        self.assertEqual(rec["changes"], {"body": "replaced", "body_size": 154022})
        self.assertEqual(self.milter_results(rec)[-1]["results"]["body"], "replaced")

    def test_backend_refusing_the_new_sender_refuses_the_message(self):
        def refuse(sess, line):
            if line.startswith(b"MAIL FROM:<new-sender@"):
                return b"550 5.7.1 not that sender"
            return None
        cap = self.start_capture(hook=refuse)
        p = self.start_proxy(backend_port=cap.port, filters="milter",
                             filter_dir=FILTER_DIR,
                             extra=milter_section(self.m.spec))
        end = self.transaction("MAIL FROM:<chgfrom@%s>" % DOMAIN,
                               ["RCPT TO:<%s>" % BOB], make_message("no"), proxy=p)
        self.assertReply(end, 554, "5.1.0")
        self.assertEqual(end.text, "5.1.0 Error: the backend mail server refused the changed envelope")
        rec = p.wait_transaction(action="rejected")[0]
        self.assertEqual(rec["reason"], "the backend refused the changed envelope "
                         "at MAIL: 550 5.7.1 not that sender")
        self.assertEqual(cap.messages(), [])

    def test_backend_tempfailing_an_added_recipient_tempfails_the_message(self):
        def later(sess, line):
            if line.startswith(b"RCPT TO:<added@"):
                return b"450 4.2.0 mailbox busy"
            return None
        cap = self.start_capture(hook=later)
        p = self.start_proxy(backend_port=cap.port, filters="milter",
                             filter_dir=FILTER_DIR,
                             extra=milter_section(self.m.spec))
        end = self.transaction("MAIL FROM:<addrcpt@%s>" % DOMAIN,
                               ["RCPT TO:<%s>" % BOB], make_message("later"), proxy=p)
        self.assertReply(end, 451, "4.3.0")
        rec = p.wait_transaction(action="tempfailed")[0]
        self.assertIn("at RCPT: 450 4.2.0 mailbox busy", rec["reason"])
        self.assertEqual(cap.messages(), [])


class TestQuarantine(MilterFilterTest):

    def test_quarantined_message_is_kept_byte_for_byte_and_not_delivered(self):
        m = self.start_milter()
        qdir = os.path.join(make_tempdir("portcullis-quarantine-"), "q")
        self.addCleanup(remove_tree, os.path.dirname(qdir))
        p = self.start_proxy(backend_port=self.cap.port, filters="milter",
                             filter_dir=FILTER_DIR, quarantine_dir=qdir,
                             extra=milter_section(m.spec))
        sender = "quarantine@" + DOMAIN
        msg = make_message("keep me", body=b"line\r\n.leading dot\r\n")
        c = self.session(p)
        r = self.send(c, sender, [BOB, CAROL], msg)
        self.assertReply(r["end"], 250, "2.0.0")
        rec = p.wait_transaction(action="quarantined")[0]
        name = "%s-1" % rec["session"]
        self.assertEqual(rec["changes"], {"quarantine": {
            "reason": "testmilter quarantine", "file": name}})
        self.assertEqual(rec["reason"], "quarantined by a filter: testmilter quarantine")
        self.assertEqual(os.stat(qdir).st_mode & 0o777, 0o700)
        with open(os.path.join(qdir, name), "rb") as f:
            kept = f.read()
        self.assertEqual(kept, (
            b"Quarantine-Reason: testmilter quarantine\r\n"
            b"Envelope-From: <%s>\r\nEnvelope-To: <%s>\r\nEnvelope-To: <%s>\r\n\r\n"
            % (sender.encode(), BOB.encode(), CAROL.encode())) + msg)
        self.assertEqual(sorted(os.listdir(qdir)), [name])
        self.assertEqual(self.cap.messages(), [])
        # the session goes on: the next message is delivered
        self.assertCode(self.send(c, ALICE, [BOB], make_message("next"))["end"], 250)
        self.assertEqual(len(self.cap.wait_messages(1)), 1)

    def test_relative_quarantine_dir_is_refused_with_file_line_and_key(self):
        p = harness.Portcullis(backend_port=self.cap.port)
        self.addCleanup(p.stop)
        text = ("[portcullis]\nlisten = 127.0.0.1:1\nhostname = mx.example.test\n"
                "quarantine_dir = quarantine\n")
        r = p.check_config(text)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(b"check.conf:4: [portcullis] quarantine_dir: must be an absolute path",
                      r.stderr)

    def test_quarantine_without_a_directory_fails_the_filter(self):
        m = self.start_milter()
        p = self.proxy(m.spec)
        c = self.session(p)
        r = self.send(c, "quarantine@" + DOMAIN, [BOB], make_message("nowhere"))
        self.assertReply(r["end"], 451, "4.3.0")
        rec = p.wait_transaction(action="tempfailed")[0]
        self.assertEqual(self.milter_results(rec)[-1]["results"]["error"],
                         "the quarantine was refused (no quarantine_dir?)")
        self.assertEqual(self.cap.messages(), [])


class TestConnectVerdict(MilterFilterTest):

    def test_connection_refused_by_the_milter(self):
        m = self.start_milter(connect_action="reject")
        p = self.proxy(m.spec)
        c = self.client(p.port, connect=False)
        c.connect(read_greeting=False)
        r = c.reply()
        self.assertCode(r, 5)


class TestFailures(MilterFilterTest):

    def test_milter_down_tempfails_by_default(self):
        d = make_tempdir("portcullis-nomilter-")
        self.addCleanup(remove_tree, d)
        p = self.proxy("unix:" + os.path.join(d, "absent.sock"))
        c = self.client(p.port, connect=False)
        c.connect(read_greeting=False)
        r = c.reply()
        self.assertReply(r, 421, "4.3.0")
        rec = p.wait_decisions(lambda d: d.get("type") == "connection")[0]
        e = self.milter_results(rec)[-1]
        self.assertEqual(e["error"], "the filter failed")
        self.assertEqual(e["results"]["error"], "cannot connect to the milter")

    def test_milter_down_with_on_error_accept_delivers(self):
        d = make_tempdir("portcullis-nomilter-")
        self.addCleanup(remove_tree, d)
        p = self.proxy("unix:" + os.path.join(d, "absent.sock"), on_error="accept")
        c = self.session(p)
        r = self.send(c, ALICE, [BOB], make_message("down"))
        self.assertCode(r["end"], 250)
        self.assertEqual(len(self.cap.wait_messages(1)), 1)
        rec = p.wait_transaction(action="accepted")[0]
        errors = [e["results"]["error"] for e in self.milter_results(rec)
                  if "results" in e and "error" in e["results"]]
        self.assertIn("cannot connect to the milter", errors)

    def test_slow_milter_gets_on_error_in_time(self):
        m = self.start_milter()
        p = self.proxy(m.spec, content_timeout="1s")
        c = self.session(p)
        t0 = time.monotonic()
        r = self.send(c, "sleep@" + DOMAIN, [BOB], make_message("slow"))
        self.assertReply(r["end"], 451, "4.3.0")
        self.assertLess(time.monotonic() - t0, 2.9)
        rec = p.wait_transaction()[0]
        errs = [e["results"]["error"] for e in self.milter_results(rec)
                if "error" in e.get("results", {})]
        self.assertIn("the milter did not answer in time", errs)
        self.assertEqual(self.cap.messages(), [])
        # a new session gets a new connection and goes through
        c2 = self.session(p)
        self.assertCode(self.send(c2, ALICE, [BOB], make_message("next"))["end"], 250)

    def fake(self, answer, **options):
        f = FakeMilter(answer)
        self.addCleanup(f.stop)
        return f, self.proxy(f.spec, **options)

    def check_refused_with(self, answer, why):
        f, p = self.fake(answer)
        c = self.client(p.port, connect=False)
        c.connect(read_greeting=False)
        self.assertReply(c.reply(), 421, "4.3.0")
        rec = p.wait_decisions(lambda d: d.get("type") == "connection")[0]
        self.assertEqual(self.milter_results(rec)[-1]["results"]["error"], why)
        # the worker is still there and serving
        self.assertTrue(p.running())
        self.assertEqual(f.connections, 1)

    def test_garbage_and_hostile_packets(self):
        cases = [
            (lambda s: s.sendall(struct.pack(">I", 1 << 30) + b"b"),
             "a packet longer than the most accepted"),
            (lambda s: s.sendall(struct.pack(">I", 0)),
             "a packet of length 0 (no command)"),
            (lambda s: s.sendall(packet(b"Z")),
             "an unknown reply"),
            (lambda s: s.sendall(packet(b"O", b"\0\0\0\6")),
             "a negotiation shorter than its 12 bytes"),
            (lambda s: s.sendall(packet(b"c")),
             "the milter answered the negotiation with something else"),
            (lambda s: s.sendall(packet(b"O", struct.pack(">III", 9, 0, 0))),
             "the milter speaks a protocol version other than 2 to 6"),
            (lambda s: s.sendall(b"\0\0"),
             "the milter closed the connection"),
            (lambda s: s.sendall(OPTNEG + packet(b"y", b"250 2.0.0 fine\0")),
             "a reply code that is not 4xx or 5xx"),
            (lambda s: s.sendall(OPTNEG + packet(b"h", b"X-Early\0v\0")),
             "a reply that does not belong here"),
        ]
        for answer, why in cases:
            with self.subTest(why=why):
                self.check_refused_with(answer, why)

    def body_replacing_milter(self, actions):
        """A fake milter that negotiates actions (and no reply before the
        end of the message, as rspamd does), then replaces the body."""
        def answer(s):
            s.sendall(packet(b"O", struct.pack(">III", 6, actions, NR_ALL)))
            while True:
                head = recv_exactly(s, 4)
                cmd = recv_exactly(s, struct.unpack(">I", head)[0])[:1]
                if cmd == b"E":
                    s.sendall(packet(b"b", b"new body\r\n") + packet(b"c"))
                    return
        return self.fake(answer)

    def test_milter_asking_for_more_actions_than_exist_gets_those_offered(self):
        # As rspamd: every bit asked for whatever was offered; not refused,
        # and its body replacement (offered) goes through
        f, p = self.body_replacing_milter(0xffffffff)
        c = self.session(p)
        r = self.send(c, ALICE, [BOB], make_message("replaced"))
        self.assertCode(r["end"], 250)
        got = self.cap.wait_messages(1)[0]
        self.assertTrue(got.endswith(b"\r\n\r\nnew body\r\n"), got)

    def test_a_change_the_milter_did_not_negotiate_fails_it(self):
        # headers only (SMFIF_ADDHDRS), then a body replacement
        f, p = self.body_replacing_milter(0x1)
        c = self.session(p)
        r = self.send(c, ALICE, [BOB], make_message("not negotiated"))
        self.assertReply(r["end"], 451, "4.3.0")
        self.assertEqual(self.cap.messages(), [])
        rec = p.wait_transaction()[0]
        errs = [e["results"]["error"] for e in self.milter_results(rec)
                if "error" in e.get("results", {})]
        self.assertEqual(errs, ["a change the milter did not negotiate"])

    def test_silent_milter_times_out(self):
        f, p = self.fake(lambda s: time.sleep(4), connect_timeout="1s")
        c = self.client(p.port, connect=False)
        t0 = time.monotonic()
        c.connect(read_greeting=False)
        self.assertReply(c.reply(), 421, "4.3.0")
        self.assertLess(time.monotonic() - t0, 3)
        rec = p.wait_decisions(lambda d: d.get("type") == "connection")[0]
        self.assertEqual(self.milter_results(rec)[-1]["results"]["error"],
                         "the milter did not answer in time")


class TestTCP(MilterFilterTest):

    def test_a_change_and_the_final_reply_apart_cost_no_delayed_ack(self):
        # libmilter writes each change and the final reply with writes of
        # their own: the reply waits for the change's ACK, which must not
        # be a delayed one (40 ms on Linux) for every message
        def answer(s):
            s.sendall(packet(b"O", struct.pack(">III", 6, 0x1, 0)))
            while True:
                head = recv_exactly(s, 4)
                cmd = recv_exactly(s, struct.unpack(">I", head)[0])[:1]
                if cmd in b"CHMRTLNB":
                    s.sendall(packet(b"c"))
                elif cmd == b"E":
                    s.sendall(packet(b"h", b"X-Signed\0yes\0"))
                    s.sendall(packet(b"c"))
                elif cmd == b"Q":
                    return
        f = FakeTCPMilter(answer)
        self.addCleanup(f.stop)
        p = self.proxy(f.spec)
        c = self.session(p)
        times = []
        for i in range(7):
            t0 = time.monotonic()
            r = self.send(c, ALICE, [BOB], make_message("fast %d" % i))
            times.append(time.monotonic() - t0)
            self.assertCode(r["end"], 250)
        got = self.cap.wait_messages(7)
        self.assertTrue(all(b"\r\nX-Signed: yes\r\n" in m for m in got))
        # the median message: a few ms of work here, 40 ms more with a
        # delayed ACK
        self.assertLess(sorted(times)[3], 0.035, times)


def openssl(*args, data=None):
    return subprocess.run(["openssl"] + list(args), input=data,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          check=True).stdout


def rsa_key():
    """(private key PEM, the TXT record of its public key)"""
    import base64
    pem = openssl("genrsa", "-traditional", "2048")
    der = openssl("rsa", "-pubout", "-outform", "DER", data=pem)
    return pem, "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()


class OpenDKIM:
    """Debian's opendkim as a milter on a UNIX socket: mode "s" signs mail
    from internal (127.0.0.1) for example.test with selector "sel"; mode
    "v" verifies, finding the key of sel._domainkey.example.test in its
    test DNS data (txt)."""

    def __init__(self, mode, pem, txt, internal="127.0.0.1"):
        # opendkim refuses a configuration under a directory others may
        # write to (/tmp): /run is root's alone
        if not os.access("/run", os.W_OK):
            raise unittest.SkipTest("opendkim's files need a safe directory: "
                                    "run as root (/run)")
        self.dir = tempfile.mkdtemp(prefix="portcullis-opendkim-", dir="/run")
        self.sock = os.path.join(self.dir, "opendkim.sock")
        key = os.path.join(self.dir, "sel.private")
        with open(key, "wb") as f:
            f.write(pem)
        os.chmod(key, 0o600)
        dns = os.path.join(self.dir, "dns")
        with open(dns, "w") as f:
            f.write("sel._domainkey.%s %s\n" % (DOMAIN, txt))
        conf = os.path.join(self.dir, "opendkim.conf")
        with open(conf, "w") as f:
            f.write("\n".join([
                "Syslog no", "Mode %s" % mode, "Socket local:%s" % self.sock,
                "PidFile %s" % os.path.join(self.dir, "opendkim.pid"),
                "Domain %s" % DOMAIN, "Selector sel", "KeyFile %s" % key,
                "InternalHosts %s" % internal, "Canonicalization relaxed/simple",
                "AuthservID mx.%s" % DOMAIN, "TestDNSData %s" % dns,
                "UMask 007", ""]))
        self.proc = subprocess.Popen(["opendkim", "-f", "-x", conf],
                                     stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        if not wait_for(lambda: os.path.exists(self.sock) or
                        self.proc.poll() is not None, 10) or \
                not os.path.exists(self.sock):
            err = self.stop()
            raise AssertionError("opendkim did not start: %r" % err)

    def stop(self):
        err = b""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            err, _ = self.proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            err, _ = self.proc.communicate()
        remove_tree(self.dir)
        return err


class TestOpenDKIM(MilterFilterTest):
    """The filter in front of the real OpenDKIM milter, and dkimpy as an
    independent DKIM implementation on the other side."""

    def setUp(self):
        super().setUp()
        harness.skip_unless_tool("opendkim")
        try:
            import dkim  # noqa: F401  (dkimpy)
        except ImportError:
            self.skipTest("dkimpy not installed (python3-dkim)")
        self.pem, self.txt = rsa_key()

    def start_opendkim(self, mode, **kw):
        o = OpenDKIM(mode, self.pem, self.txt, **kw)
        self.addCleanup(o.stop)
        return self.proxy("unix:" + o.sock)

    def dnsfunc(self, name, timeout=5):
        if name.rstrip(b".") == b"sel._domainkey." + DOMAIN.encode():
            return self.txt.encode()
        return b""

    def test_opendkim_signs_and_dkimpy_verifies(self):
        import dkim
        p = self.start_opendkim("s")
        c = self.session(p)
        msg = make_message("signed by opendkim", sender=ALICE)
        self.assertCode(self.send(c, ALICE, [BOB], msg)["end"], 250)
        got = self.cap.wait_messages(1)[0]
        sig = dict(header_fields(got)).get(b"dkim-signature", b"")
        self.assertIn(b"d=%s" % DOMAIN.encode(), sig)
        self.assertIn(b"s=sel", sig)
        self.assertTrue(dkim.verify(got, dnsfunc=self.dnsfunc),
                        "dkimpy does not verify what opendkim signed: %r" % got)
        rec = p.wait_transaction(action="accepted")[0]
        self.assertGreaterEqual(self.milter_results(rec)[-1]["results"]["changes"], 1)

    def verify(self, tamper):
        import dkim
        p = self.start_opendkim("v", internal="192.0.2.1")
        msg = make_message("signed by dkimpy", sender=ALICE)
        signed = dkim.sign(msg, b"sel", DOMAIN.encode(), self.pem,
                           include_headers=[b"from", b"to", b"subject", b"date"])
        signed = signed + msg
        if tamper:
            signed = signed.replace(b"signed by dkimpy", b"signed by someone")
        c = self.session(p)
        self.assertCode(self.send(c, ALICE, [BOB], signed)["end"], 250)
        got = self.cap.wait_messages(1)[0]
        ar = dict(header_fields(got)).get(b"authentication-results", b"")
        self.assertIn(b"mx.%s" % DOMAIN.encode(), ar)
        return ar

    def test_opendkim_verifies_what_dkimpy_signed(self):
        self.assertIn(b"dkim=pass", self.verify(tamper=False))

    def test_opendkim_fails_a_changed_message(self):
        self.assertIn(b"dkim=fail", self.verify(tamper=True))


class TestRspamd(MilterFilterTest):
    """The filter in front of Debian's rspamd, its proxy worker in milter
    mode scanning the message itself (tests/integration/rspamd_helper.py
    says what its configuration does): one rspamd for the class, a new
    Portcullis for each test."""

    rspamd = None

    @classmethod
    def setUpClass(cls):
        # starting rspamd takes seconds: once for the class
        cls.rspamd = rspamd_helper.Rspamd()

    @classmethod
    def tearDownClass(cls):
        if cls.rspamd:
            cls.rspamd.stop()

    def setUp(self):
        super().setUp()
        # rspamd's own timeouts are longer than the filter's defaults on
        # a busy machine: the filter waits for the scan, within the
        # section's deadline
        self.p = self.proxy(self.rspamd.spec, timeout="25",
                            content_timeout="20s")

    def send_one(self, subject, body=None):
        c = self.session(self.p)
        return self.send(c, ALICE, [BOB], make_message(subject, body=body))

    def rspamd_fields(self, got):
        """{name: value} of the delivered header (values unfolded)"""
        fields = {n: v.split(b":", 1)[1].strip()
                  for n, v in header_fields(got)}
        self.assertIn(b"x-spamd-result", fields,
                      "no X-Spamd-Result: %r\n%s" % (got, self.rspamd.tail()))
        return fields

    def test_gtube_refused_with_rspamds_reply(self):
        body = ("This is the GTUBE test string:\r\n%s\r\n"
                % rspamd_helper.GTUBE).encode()
        r = self.send_one("gtube", body)
        # rspamd's reject action at the end of the message: its reply
        # code, with the reason of the GTUBE pre-result as the text
        self.assertReply(r["end"], 554, "5.7.1")
        self.assertEqual(r["end"].lines, ["554 5.7.1 Gtube pattern"])
        self.assertEqual(self.cap.messages(), [])
        rec = self.p.wait_transaction(action="rejected")[0]
        res = self.milter_results(rec)[-1]
        self.assertEqual(res["results"]["milter"], "replycode")
        self.assertEqual(res["verdict"], "reject")

    def test_tagged_message_delivered_with_rspamds_headers(self):
        msg_body = b"Tag this one, please.\r\n"
        r = self.send_one("this one: " + rspamd_helper.TAG_SUBJECT, msg_body)
        self.assertCode(r["end"], 250)
        got = self.cap.wait_messages(1)[0]
        fields = self.rspamd_fields(got)
        # the add_header action: rspamd's spam_header, and milter_headers'
        self.assertEqual(fields.get(b"x-spam"), b"Yes", got)
        self.assertEqual(fields[b"x-spam-status"], b"Yes, score=8.00")
        self.assertRegex(fields[b"x-spamd-result"],
                         rb"^default: False \[8\.00 / 15\.00\];"
                         rb"\s+PORTCULLIS_TAG_ME\(8\.00\)\[\]$")
        self.assertTrue(got.endswith(b"\r\n\r\n" + msg_body), got)
        rec = self.p.wait_transaction(action="accepted")[0]
        res = self.milter_results(rec)[-1]["results"]
        self.assertEqual(res["milter"], "accept")
        self.assertEqual(res["changes"], 3)

    def test_clean_message_delivered_untagged(self):
        msg_body = b"Nothing to see here.\r\n"
        r = self.send_one("a clean message", msg_body)
        self.assertCode(r["end"], 250)
        got = self.cap.wait_messages(1)[0]
        fields = self.rspamd_fields(got)
        self.assertNotIn(b"x-spam", fields)
        self.assertEqual(fields[b"x-spam-status"], b"No, score=0.00")
        self.assertEqual(fields[b"x-spamd-result"],
                         b"default: False [0.00 / 15.00]")
        self.assertTrue(got.endswith(b"\r\n\r\n" + msg_body), got)
        rec = self.p.wait_transaction(action="accepted")[0]
        res = self.milter_results(rec)[-1]["results"]
        self.assertEqual(res["milter"], "accept")
        self.assertEqual(res["changes"], 2)

    def test_events_without_replies_are_not_held_by_nagle(self):
        # rspamd answers nothing before the end of the message: the
        # events go out back to back over TCP, and each would wait for
        # rspamd's delayed ACK (40 ms) with Nagle on the filter's socket
        c = self.session(self.p)
        times = []
        for i in range(7):
            t0 = time.monotonic()
            r = self.send(c, ALICE, [BOB], make_message("quick %d" % i))
            times.append(time.monotonic() - t0)
            self.assertCode(r["end"], 250)
        self.assertEqual(len(self.cap.wait_messages(7)), 7)
        self.assertLess(sorted(times)[3], 0.035, times)

class TestConfig(MilterFilterTest):


    def check(self, section, key, needle):
        p = harness.Portcullis(backend_port=self.cap.port)
        self.addCleanup(p.stop)
        text = harness.filter_config_text(p, "milter", section, FILTER_DIR)
        r = p.check_config(text)
        self.assertNotEqual(r.returncode, 0)
        err = r.stderr.decode()
        self.assertIn("[filter milter] %s:" % key, err)
        self.assertIn(needle, err)
        self.assertRegex(err, r"check\.conf:\d+:")

    def test_errors_name_the_key(self):
        self.check("\n[filter milter]\nmodule = milter\n", "socket", "required")
        self.check("\n[filter milter]\nmodule = milter\nsocket = tcp:1@x\n",
                   "socket", "expected inet:PORT@HOST")
        self.check("\n[filter milter]\nmodule = milter\nsocket = unix:relative\n",
                   "socket", "absolute path")
        self.check("\n[filter milter]\nmodule = milter\nsocket = unix:/x\n"
                   "command_timeout = soon\n", "command_timeout", "expected a duration")
        self.check("\n[filter milter]\nmodule = milter\nsocket = unix:/x\n"
                   "mail_macros = i {nonsense}\n", "mail_macros",
                   "a macro this filter cannot give: \"{nonsense}\"")


if __name__ == "__main__":
    unittest.main()
