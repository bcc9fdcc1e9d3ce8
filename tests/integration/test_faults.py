"""
Backend faults (smtp-sink as the backend): what the client is told, what
the backend ends up holding and what the decision log records.

smtp-sink facts used here: -f CMD rejects CMD with the -B reply (5xx),
-r CMD with the -b reply (4xx), -q CMD disconnects without replying,
-Q CMD sends 421 and disconnects, -W CMD:SECS delays the reply. A
transaction aborted before "." leaves no dump file; one answered at "."
(even by -f/-r/-q) leaves one.
"""

import re
import signal
import socket
import threading
import time
import unittest

from harness import (DOMAIN, ProxyTestCase, Sink, make_message, dot_stuff,
                     free_port, wait_for)

ALICE = "alice@" + DOMAIN
BOB = "bob@" + DOMAIN
CAROL = "carol@" + DOMAIN


class FaultTest(ProxyTestCase):

    def setup(self, *sink_options, **proxy_kw):
        self.sink = self.start_sink(*sink_options)
        self.proxy = self.start_proxy(backend_port=self.sink.port, **proxy_kw)
        return self.sink, self.proxy

    def begin(self, helo="client.example.test"):
        c = self.client(self.proxy.port)
        self.assertCode(c.ehlo(helo), 250)
        return c

    def send_message(self, c, msg, rcpts=(BOB,)):
        """MAIL/RCPT/DATA up to the reply after '.'; returns that reply."""
        self.assertCode(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        for r in rcpts:
            self.assertCode(c.cmd("RCPT TO:<%s>" % r), 250)
        self.assertCode(c.cmd("DATA"), 354)
        c.send(dot_stuff(msg))
        return c.reply(timeout=30)

    def last_transaction(self, timeout=10, **match):
        recs = self.proxy.wait_transaction(timeout=timeout, **match)
        self.assertTrue(recs, "no transaction record matching %r in %r" % (
            match, self.proxy.decisions()))
        return recs[-1]


class TestBackendDown(FaultTest):

    def test_backend_unreachable_gives_451_4_4_1_at_mail(self):
        dead = free_port()  # nothing listens there
        proxy = self.start_proxy(backend_port=dead)
        c = self.client(proxy.port)
        self.assertCode(c.ehlo(), 250)
        self.assertReply(c.cmd("MAIL FROM:<%s>" % ALICE), 451, "4.4.1")
        # the session stays usable
        self.assertCode(c.cmd("NOOP"), 250)
        self.assertCode(c.cmd("QUIT"), 221)
        recs = proxy.wait_decisions(count=1)
        self.assertFalse([d for d in recs if d.get("action") == "accepted"])

    def test_backend_coming_back_is_used_by_the_next_transaction(self):
        port = free_port()
        proxy = self.start_proxy(backend_port=port)
        c = self.client(proxy.port)
        c.ehlo()
        self.assertReply(c.cmd("MAIL FROM:<%s>" % ALICE), 451, "4.4.1")
        sink = self.start_sink(port=port)
        self.proxy = proxy
        self.assertCode(self.send_message(c, make_message("back again")), 250)
        self.assertEqual(sink.wait_count(1), 1)


class TestBackendFailover(FaultTest):

    def test_second_backend_server_is_used_when_the_first_is_down(self):
        dead = free_port()
        sink = self.start_sink()
        proxy = self.start_proxy(
            backend_servers="127.0.0.1:%d, 127.0.0.1:%d" % (dead, sink.port))
        self.proxy = proxy
        c = self.client(proxy.port)
        c.ehlo()
        self.assertCode(self.send_message(c, make_message("failover")), 250)
        self.assertEqual(sink.wait_count(1), 1)
        rec = self.last_transaction(action="accepted")
        self.assertEqual(rec["backend"]["server"], "127.0.0.1:%d" % sink.port)


class TestBackendRejects(FaultTest):

    def test_backend_temporary_reject_at_mail_reaches_client(self):
        self.setup("-r", "MAIL", "-b", "451 4.7.1 Try again later (sink)")
        c = self.begin()
        r = c.cmd("MAIL FROM:<%s>" % ALICE)
        self.assertReply(r, 451, "4.7.1")
        self.assertIn("Try again later (sink)", r.text)

    def test_backend_permanent_reject_at_mail_reaches_client(self):
        self.setup("-f", "MAIL", "-B", "550 5.7.1 Sender blocked (sink)")
        c = self.begin()
        r = c.cmd("MAIL FROM:<%s>" % ALICE)
        self.assertReply(r, 550, "5.7.1")
        self.assertIn("Sender blocked (sink)", r.text)
        # a rejected MAIL leaves no transaction open
        self.assertReply(c.cmd("RCPT TO:<%s>" % BOB), 503, "5.5.1")

    def test_backend_reject_at_rcpt_reaches_client_and_is_logged(self):
        self.setup("-f", "RCPT", "-B", "550 5.1.1 No such user (sink)")
        c = self.begin()
        self.assertCode(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        r = c.cmd("RCPT TO:<%s>" % BOB)
        self.assertReply(r, 550, "5.1.1")
        self.assertIn("No such user (sink)", r.text)
        d = c.cmd("DATA")
        self.assertReply(d, 5)  # no valid recipients: 554 or 503
        c.cmd("QUIT")
        self.assertEqual(self.sink.settled_count(), 0)
        rec = self.last_transaction()
        self.assertNotEqual(rec["action"], "accepted")
        self.assertTrue(rec["recipients"][0]["reply"].startswith("550"))

    def test_backend_temporary_reject_at_rcpt_reaches_client(self):
        self.setup("-r", "RCPT", "-b", "450 4.2.0 Mailbox busy (sink)")
        c = self.begin()
        self.assertCode(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        self.assertReply(c.cmd("RCPT TO:<%s>" % BOB), 450, "4.2.0")

    def test_backend_reject_at_data_is_the_final_reply_and_nothing_is_held(self):
        self.setup("-f", "DATA", "-B", "554 5.3.0 No data today (sink)")
        c = self.begin()
        r = self.send_message(c, make_message("data rejected"))
        self.assertReply(r, 554, "5.3.0")
        self.assertIn("No data today (sink)", r.text)
        self.assertCode(c.cmd("QUIT"), 221)
        self.assertEqual(self.sink.settled_count(), 0)
        rec = self.last_transaction()
        self.assertEqual(rec["action"], "rejected")
        self.assertTrue(rec["reply"].startswith("554"), rec)

    def test_backend_permanent_reject_at_end_of_data_reaches_client(self):
        self.setup("-f", ".", "-B", "550 5.7.1 Content rejected (sink)")
        c = self.begin()
        r = self.send_message(c, make_message("content rejected"))
        self.assertReply(r, 550, "5.7.1")
        self.assertIn("Content rejected (sink)", r.text)
        rec = self.last_transaction()
        self.assertEqual(rec["action"], "rejected")
        self.assertTrue(rec["backend"]["reply"].startswith("550"), rec)

    def test_backend_temporary_reject_at_end_of_data_reaches_client(self):
        self.setup("-r", ".", "-b", "452 4.3.1 Queue full (sink)")
        c = self.begin()
        r = self.send_message(c, make_message("tempfail"))
        self.assertReply(r, 452, "4.3.1")
        rec = self.last_transaction()
        self.assertEqual(rec["action"], "tempfailed")

    def test_client_can_send_again_after_a_backend_reject(self):
        self.setup("-f", "RCPT", "-B", "550 5.1.1 No such user (sink)")
        c = self.begin()
        self.assertCode(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        self.assertCode(c.cmd("RCPT TO:<%s>" % BOB), 550)
        self.assertCode(c.cmd("RSET"), 250)
        self.assertCode(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        self.assertCode(c.cmd("RCPT TO:<%s>" % CAROL), 550)
        self.assertCode(c.cmd("QUIT"), 221)


class TestBackendDrops(FaultTest):

    def test_backend_disconnect_after_data_command_gives_451_and_nothing_held(self):
        self.setup("-q", "DATA")
        c = self.begin()
        r = self.send_message(c, make_message("dropped at DATA"))
        self.assertReply(r, 451, "4.4.2")
        rec = self.last_transaction()
        self.assertEqual(rec["action"], "tempfailed")
        # the client session survives the backend's failure
        self.assertCode(c.cmd("NOOP"), 250)
        self.assertCode(c.cmd("QUIT"), 221)
        self.assertEqual(self.sink.settled_count(), 0)

    def test_backend_disconnect_at_end_of_data_gives_4xx_not_250(self):
        self.setup("-q", ".")
        c = self.begin()
        r = self.send_message(c, make_message("dropped at dot"))
        self.assertReply(r, 451, "4.4.2")
        rec = self.last_transaction()
        self.assertEqual(rec["action"], "tempfailed")

    def test_backend_421_at_end_of_data_gives_4xx(self):
        self.setup("-Q", ".")
        c = self.begin()
        r = self.send_message(c, make_message("421 at dot"))
        self.assertReply(r, 4)
        rec = self.last_transaction()
        self.assertEqual(rec["action"], "tempfailed")

    def test_backend_disconnect_at_rcpt_gives_451_4_4_2(self):
        self.setup("-q", "RCPT")
        c = self.begin()
        self.assertCode(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        self.assertReply(c.cmd("RCPT TO:<%s>" % BOB), 451, "4.4.2")

    def test_backend_timeout_at_end_of_data_gives_451_4_4_2(self):
        self.setup("-W", ".:20", backend_timeout_data_end=2)
        c = self.begin()
        start = time.monotonic()
        r = self.send_message(c, make_message("slow backend"))
        self.assertReply(r, 451, "4.4.2")
        self.assertLess(time.monotonic() - start, 15)
        rec = self.last_transaction()
        self.assertEqual(rec["action"], "tempfailed")

    def test_backend_timeout_at_data_command_gives_451_4_4_2(self):
        self.setup("-w", "20", backend_timeout_data_init=2)
        c = self.begin()
        start = time.monotonic()
        r = self.send_message(c, make_message("slow DATA"))
        self.assertReply(r, 451, "4.4.2")
        self.assertLess(time.monotonic() - start, 15)
        self.assertCode(c.cmd("QUIT"), 221)
        self.assertEqual(self.sink.settled_count(), 0)

    def test_backend_timeout_at_rcpt_gives_451_4_4_2(self):
        self.setup("-W", "RCPT:20", backend_timeout_command=2)
        c = self.begin()
        self.assertCode(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        start = time.monotonic()
        self.assertReply(c.cmd("RCPT TO:<%s>" % BOB, timeout=15), 451, "4.4.2")
        self.assertLess(time.monotonic() - start, 15)


class TestClientDrops(FaultTest):

    def test_rset_releases_the_backend_transaction(self):
        self.setup()
        c = self.begin()
        self.assertCode(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        self.assertCode(c.cmd("RCPT TO:<%s>" % BOB), 250)
        self.assertCode(c.cmd("RSET"), 250)
        self.assertCode(c.cmd("MAIL FROM:<%s>" % CAROL), 250)
        self.assertCode(c.cmd("RCPT TO:<%s>" % ALICE), 250)
        self.assertCode(c.cmd("DATA"), 354)
        c.send(dot_stuff(make_message("after rset")))
        self.assertCode(c.reply(), 250)
        self.assertCode(c.cmd("QUIT"), 221)
        self.assertEqual(self.sink.settled_count(), 1)
        meta, _ = Sink.parse(self.sink.messages()[0])
        self.assertEqual(meta["X-Mail-Args"], ["<%s>" % CAROL])
        self.assertEqual(meta["X-Rcpt-Args"], ["<%s>" % ALICE])

    def test_client_disconnect_mid_data_leaves_nothing_at_backend_and_logs_aborted(self):
        self.setup()
        c = self.begin()
        self.assertCode(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        self.assertCode(c.cmd("RCPT TO:<%s>" % BOB), 250)
        self.assertCode(c.cmd("DATA"), 354)
        c.send(b"Subject: half a message\r\n\r\nsome text but no end")
        time.sleep(0.3)
        c.close()
        rec = self.last_transaction()
        self.assertEqual(rec["action"], "aborted")
        self.assertEqual(self.sink.settled_count(), 0)

    def test_client_disconnect_after_rcpt_leaves_nothing_at_backend(self):
        self.setup()
        c = self.begin()
        self.assertCode(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        self.assertCode(c.cmd("RCPT TO:<%s>" % BOB), 250)
        c.close()
        rec = self.last_transaction()
        self.assertEqual(rec["action"], "aborted")
        self.assertEqual(self.sink.settled_count(), 0)


class TestClientIdentityHeader(FaultTest):

    def test_backend_without_xclient_and_xforward_gets_a_received_header(self):
        self.setup("-C", "-F")
        c = self.begin(helo="exchange-client.example.test")
        msg = make_message("received header")
        self.assertCode(self.send_message(c, msg), 250)
        self.assertEqual(self.sink.wait_count(1), 1)
        meta, got = Sink.parse(self.sink.messages()[0])
        first = got.split(b"\n", 1)[0].decode()
        self.assertTrue(first.startswith("Received: from "), got[:300])
        received = got.split(b"\nSubject:", 1)[0].decode()
        self.assertIn("exchange-client.example.test", received)
        self.assertIn("127.0.0.1", received)
        self.assertIn("proxy.portcullis.test", received)
        self.assertTrue(got.endswith(msg.replace(b"\r\n", b"\n")), got)

    def test_backend_with_xclient_helo_sees_the_client_helo(self):
        self.setup("-F")
        c = self.begin(helo="xclient-client.example.test")
        msg = make_message("xclient sink")
        self.assertCode(self.send_message(c, msg), 250)
        self.assertEqual(self.sink.wait_count(1), 1)
        meta, got = Sink.parse(self.sink.messages()[0])
        self.assertEqual(meta.get("X-Helo-Args"),
                         ["xclient-client.example.test"])
        self.assertFalse(got.startswith(b"Received:"),
                         "no Received header when XCLIENT is offered")

    def test_backend_with_xforward_only_gets_no_received_header(self):
        self.setup("-C")
        c = self.begin(helo="xforward-client.example.test")
        msg = make_message("xforward sink")
        self.assertCode(self.send_message(c, msg), 250)
        self.assertEqual(self.sink.wait_count(1), 1)
        meta, got = Sink.parse(self.sink.messages()[0])
        self.assertFalse(got.startswith(b"Received:"), got[:200])

    def test_forced_header_mode_adds_received_header_even_with_xclient(self):
        self.setup(backend_client_identity="header")
        c = self.begin(helo="forced-header.example.test")
        msg = make_message("forced header")
        self.assertCode(self.send_message(c, msg), 250)
        self.assertEqual(self.sink.wait_count(1), 1)
        meta, got = Sink.parse(self.sink.messages()[0])
        self.assertTrue(got.startswith(b"Received: from "), got[:200])
        self.assertIn(b"forced-header.example.test", got.split(b"\nSubject:")[0])


XCLIENT_KEYWORDS = ("PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES",
                    "SIZE 10240000", "XCLIENT NAME ADDR PORT PROTO HELO")
PLAIN_KEYWORDS = ("PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES",
                  "SIZE 10240000")


def once_hook(verb, reply):
    """A capture hook: the first `verb` command the server gets, on any
    connection, is answered with reply."""
    done = []

    def hook(sess, line):
        if done or line.split(b" ", 1)[0].upper() != verb:
            return None
        done.append(line)
        return reply
    return hook


def nth_verb_hook(verb, n, reply):
    """A capture hook: the n-th `verb` command of a connection gets reply
    (b"DROP": the connection is cut without one)."""
    def hook(sess, line):
        seen = [c for c in sess["commands"]
                if c.split(b" ", 1)[0].upper() == verb]
        return reply if len(seen) == n else None
    return hook


class TestBackendReuse(FaultTest):
    """A backend connection left idle by one session serves the next (RSET
    if a transaction was left open, then XCLIENT and EHLO for the new
    client); a reused connection that fails before its first reply is
    replaced by a new one without the client noticing."""

    def setup_capture(self, keywords=XCLIENT_KEYWORDS, **kw):
        proxy_kw = {k: v for k, v in kw.items() if k.startswith("backend_")}
        cap_kw = {k: v for k, v in kw.items() if not k.startswith("backend_")}
        self.capture = self.start_capture(keywords=keywords, **cap_kw)
        self.proxy = self.start_proxy(backend_port=self.capture.port, **proxy_kw)
        return self.capture

    def deliver(self, helo, rcpt=BOB, subject="reuse"):
        """One whole session; returns the client's port."""
        c = self.client(self.proxy.port)
        self.assertCode(c.ehlo(helo), 250)
        port = c.local_port
        self.assertCode(self.send_message(c, make_message(subject), (rcpt,)), 250)
        self.assertCode(c.cmd("QUIT"), 221)
        c.close()
        return port

    def after(self, commands, prefix, start=0):
        """The index of the first command from start on that begins with prefix."""
        for i in range(start, len(commands)):
            if commands[i].startswith(prefix):
                return i
        self.fail("no %r after command %d in %r" % (prefix, start, commands))

    def test_sequential_sessions_share_one_connection_each_with_its_own_identity(self):
        cap = self.setup_capture()
        p1 = self.deliver("first.example.test", subject="one")
        p2 = self.deliver("second.example.test", subject="two")
        cap.wait_messages(2)
        self.assertEqual(len(cap.sessions), 1, [s["commands"] for s in cap.sessions])
        cmds = cap.sessions[0]["commands"]
        x1 = self.after(cmds, b"XCLIENT ")
        x2 = self.after(cmds, b"XCLIENT ", x1 + 1)
        for x, helo, port in ((x1, b"first.example.test", p1),
                              (x2, b"second.example.test", p2)):
            self.assertIn(b"ADDR=127.0.0.1", cmds[x])
            self.assertIn(b"PORT=%d" % port, cmds[x])
            self.assertIn(b"HELO=" + helo, cmds[x])
            # XCLIENT starts a new SMTP session: EHLO as the client, then MAIL
            self.assertEqual(cmds[x + 1], b"EHLO " + helo)
            self.assertTrue(cmds[x + 2].startswith(b"MAIL FROM:"), cmds)
        # the first transaction ended with its message (DATA is the last
        # command the capture records of it): nothing open to reset
        self.assertEqual(cmds[x2 - 1], b"DATA", cmds)
        self.assertNotIn(b"QUIT", cmds[:x2])
        first, second = self.proxy.wait_transaction(count=2, action="accepted")[:2]
        self.assertFalse(first["backend"]["reused"])
        self.assertTrue(second["backend"]["reused"])
        self.assertIn(b"Subject: one", cap.messages()[0])
        self.assertIn(b"Subject: two", cap.messages()[1])

    def test_a_transaction_left_open_is_reset_before_the_next_client(self):
        cap = self.setup_capture()
        c = self.client(self.proxy.port)
        self.assertCode(c.ehlo("leaves.example.test"), 250)
        self.assertCode(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        self.assertCode(c.cmd("RCPT TO:<%s>" % BOB), 250)
        self.assertCode(c.cmd("QUIT"), 221)
        c.close()
        self.deliver("next.example.test", rcpt=CAROL)
        cap.wait_messages(1)
        self.assertEqual(len(cap.sessions), 1)
        cmds = cap.sessions[0]["commands"]
        rcpt_bob = self.after(cmds, b"RCPT TO:<%s>" % BOB.encode())
        self.assertEqual(cmds[rcpt_bob + 1], b"RSET", cmds)
        self.assertTrue(cmds[rcpt_bob + 2].startswith(b"XCLIENT "), cmds)
        last_mail = max(i for i, c in enumerate(cmds) if c.startswith(b"MAIL "))
        rcpts = [c for c in cmds[last_mail:] if c.startswith(b"RCPT ")]
        self.assertEqual(rcpts, [b"RCPT TO:<%s>" % CAROL.encode()])

    def test_a_connection_the_backend_closed_while_parked_is_not_used(self):
        cap = self.setup_capture(idle_timeout=1)
        self.deliver("before.example.test")
        wait_for(lambda: all(s["closed"] for s in cap.sessions), 5)
        self.deliver("after.example.test")
        cap.wait_messages(2)
        self.assertEqual(len(cap.sessions), 2)
        rec = self.proxy.wait_transaction(count=2, action="accepted")[1]
        self.assertFalse(rec["backend"]["reused"])

    def test_a_reused_connection_cut_at_xclient_is_replaced_without_the_client_noticing(self):
        cap = self.setup_capture(hook=nth_verb_hook(b"XCLIENT", 2, b"DROP"))
        self.deliver("one.example.test")
        p2 = self.deliver("two.example.test", rcpt=CAROL)
        msgs = cap.wait_messages(2)
        self.assertEqual(len(msgs), 2)
        self.assertEqual(len(cap.sessions), 2)
        # the new connection speaks for the second client
        cmds = cap.sessions[1]["commands"]
        x = self.after(cmds, b"XCLIENT ")
        self.assertIn(b"PORT=%d" % p2, cmds[x])
        self.assertIn(b"HELO=two.example.test", cmds[x])
        self.assertIn(b"RCPT TO:<%s>" % CAROL.encode(), cmds)
        # the cut connection never got anything of the second transaction
        self.assertNotIn(b"RCPT TO:<%s>" % CAROL.encode(), cap.sessions[0]["commands"])

    def test_a_reused_connection_answering_421_to_mail_is_replaced(self):
        # no XCLIENT: on reuse, MAIL is the first command
        cap = self.setup_capture(keywords=PLAIN_KEYWORDS,
                                 hook=nth_verb_hook(b"MAIL", 2,
                                                    b"421 4.3.2 Shutting down"))
        self.deliver("one.example.test")
        self.deliver("two.example.test", rcpt=CAROL)
        cap.wait_messages(2)
        self.assertEqual(len(cap.sessions), 2)
        self.assertEqual(len(cap.messages()), 2)
        self.assertIn(b"RCPT TO:<%s>" % CAROL.encode(), cap.sessions[1]["commands"])

    def test_a_refused_xclient_on_reuse_never_speaks_for_the_earlier_client(self):
        cap = self.setup_capture(hook=nth_verb_hook(
            b"XCLIENT", 2, b"550 5.7.0 Error: insufficient authorization"))
        self.deliver("one.example.test")
        p2 = self.deliver("two.example.test", rcpt=CAROL)
        cap.wait_messages(2)
        old = cap.sessions[0]["commands"]
        refused = [i for i, c in enumerate(old) if c.startswith(b"XCLIENT ")][1]
        # the connection still speaking for client one carried nothing more
        self.assertEqual(old[refused + 1:], [], old)
        self.assertEqual(len(cap.sessions), 2)
        x = self.after(cap.sessions[1]["commands"], b"XCLIENT ")
        self.assertIn(b"PORT=%d" % p2, cap.sessions[1]["commands"][x])

    def test_a_backend_that_stops_offering_xclient_gets_a_new_connection_per_client(self):
        # Postfix does this when the address XCLIENT gave is not allowed to
        # send XCLIENT itself: the connection cannot speak for another client
        def hook(sess, line):
            if line.upper().startswith(b"EHLO ") and any(
                    c.startswith(b"XCLIENT ") for c in sess["commands"]):
                return b"250-capture.portcullis.test\r\n250 PIPELINING"
            return None
        cap = self.setup_capture(hook=hook)
        self.deliver("one.example.test")
        p2 = self.deliver("two.example.test", rcpt=CAROL)
        cap.wait_messages(2)
        wait_for(lambda: cap.sessions[0]["closed"], 5)
        first = cap.sessions[0]["commands"]
        self.assertEqual(len([c for c in first if c.startswith(b"XCLIENT ")]), 1, first)
        self.assertNotIn(b"RCPT TO:<%s>" % CAROL.encode(), first)
        self.assertEqual(first[-1], b"QUIT")
        self.assertEqual(len(cap.sessions), 2)
        x = self.after(cap.sessions[1]["commands"], b"XCLIENT ")
        self.assertIn(b"PORT=%d" % p2, cap.sessions[1]["commands"][x])

    def test_reuse_0_gives_every_session_its_own_connection(self):
        cap = self.setup_capture(backend_reuse=0)
        self.deliver("one.example.test")
        self.deliver("two.example.test")
        cap.wait_messages(2)
        wait_for(lambda: all(s["closed"] for s in cap.sessions), 5)
        with_mail = [s for s in cap.sessions
                     if any(c.startswith(b"MAIL ") for c in s["commands"])]
        self.assertEqual(len(with_mail), 2)
        for s in cap.sessions:
            self.assertEqual(s["commands"][-1], b"QUIT")

    def test_a_parked_connection_says_quit_after_reuse_idle_time(self):
        cap = self.setup_capture(backend_reuse_idle_time=1)
        self.deliver("one.example.test")
        cap.wait_messages(1)
        self.assertFalse(cap.sessions[0]["closed"])
        self.assertTrue(wait_for(lambda: cap.sessions[0]["closed"], 5))
        self.assertEqual(cap.sessions[0]["commands"][-1], b"QUIT")

    def test_stopping_the_daemon_says_quit_to_parked_connections(self):
        cap = self.setup_capture()
        self.deliver("one.example.test")
        cap.wait_messages(1)
        self.proxy.stop()
        self.assertTrue(wait_for(lambda: cap.sessions[0]["closed"], 5))
        self.assertEqual(cap.sessions[0]["commands"][-1], b"QUIT")

    def test_the_identity_reaches_a_reused_connection_before_mail(self):
        cap = self.setup_capture()
        self.deliver("one.example.test")
        c = self.client(self.proxy.port)
        self.assertCode(c.ehlo("two.example.test"), 250)
        port = c.local_port
        # no MAIL yet: the parked connection already speaks for client two
        self.assertTrue(wait_for(lambda: cap.sessions[0]["commands"][-1] ==
                                 b"EHLO two.example.test", 5),
                        cap.sessions[0]["commands"])
        cmds = list(cap.sessions[0]["commands"])
        self.assertIn(b"PORT=%d" % port, cmds[-2])
        self.assertIn(b"HELO=two.example.test", cmds[-2])
        self.assertCode(self.send_message(c, make_message("two"), (CAROL,)), 250)
        self.assertCode(c.cmd("QUIT"), 221)
        cap.wait_messages(2)
        self.assertEqual(len(cap.sessions), 1)
        self.assertTrue(cap.sessions[0]["commands"][len(cmds)].startswith(
            b"MAIL FROM:"), cap.sessions[0]["commands"])
        rec = self.proxy.wait_transaction(count=2, action="accepted")[1]
        self.assertTrue(rec["backend"]["reused"])

    def test_mail_during_the_early_handshake_waits_for_it(self):
        # the backend is slow to answer the EHLO that follows XCLIENT: the
        # client's MAIL comes meanwhile and goes out after that EHLO
        def hook(sess, line):
            if line.upper().startswith(b"EHLO two"):
                time.sleep(0.5)
            return None
        cap = self.setup_capture(hook=hook)
        self.deliver("one.example.test")
        self.deliver("two.example.test", rcpt=CAROL)
        cap.wait_messages(2)
        self.assertEqual(len(cap.sessions), 1)
        cmds = cap.sessions[0]["commands"]
        e = self.after(cmds, b"EHLO two.example.test")
        self.assertTrue(cmds[e - 1].startswith(b"XCLIENT "), cmds)
        self.assertTrue(cmds[e + 1].startswith(b"MAIL FROM:"), cmds)
        self.assertEqual(cmds[e + 2], b"RCPT TO:<%s>" % CAROL.encode())

    def test_a_session_that_ends_after_ehlo_leaves_the_connection_parked(self):
        cap = self.setup_capture()
        self.deliver("one.example.test")
        c = self.client(self.proxy.port)
        self.assertCode(c.ehlo("brief.example.test"), 250)
        self.assertCode(c.cmd("QUIT"), 221)
        c.close()
        self.assertTrue(wait_for(lambda: cap.sessions[0]["commands"][-1] ==
                                 b"EHLO brief.example.test", 5))
        p3 = self.deliver("three.example.test", rcpt=CAROL)
        cap.wait_messages(2)
        self.assertEqual(len(cap.sessions), 1)
        cmds = cap.sessions[0]["commands"]
        x = self.after(cmds, b"XCLIENT ", self.after(cmds, b"EHLO brief"))
        self.assertIn(b"PORT=%d" % p3, cmds[x])
        self.assertEqual(cmds[x + 1], b"EHLO three.example.test")
        self.assertTrue(cmds[x + 2].startswith(b"MAIL FROM:"), cmds)

    def test_a_reused_connection_cut_before_mail_is_replaced_at_mail(self):
        cap = self.setup_capture(hook=nth_verb_hook(b"XCLIENT", 2, b"DROP"))
        self.deliver("one.example.test")
        c = self.client(self.proxy.port)
        self.assertCode(c.ehlo("two.example.test"), 250)
        self.assertTrue(wait_for(lambda: cap.sessions[0]["closed"], 5))
        self.assertCode(self.send_message(c, make_message("two"), (CAROL,)), 250)
        self.assertCode(c.cmd("QUIT"), 221)
        msgs = cap.wait_messages(2)
        self.assertEqual(len(msgs), 2)
        self.assertEqual(len(cap.sessions), 2)
        cmds = cap.sessions[1]["commands"]
        x = self.after(cmds, b"XCLIENT ")
        self.assertIn(b"HELO=two.example.test", cmds[x])
        self.assertIn(b"RCPT TO:<%s>" % CAROL.encode(), cmds)
        rec = self.proxy.wait_transaction(count=2, action="accepted")[1]
        self.assertFalse(rec["backend"]["reused"])

    def test_a_message_cut_by_its_client_is_never_completed_on_a_reused_connection(self):
        cap = self.setup_capture()
        c = self.client(self.proxy.port)
        self.assertCode(c.ehlo("cut.example.test"), 250)
        self.assertCode(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        self.assertCode(c.cmd("RCPT TO:<%s>" % BOB), 250)
        self.assertCode(c.cmd("DATA"), 354)
        c.send(b"Subject: half\r\n\r\nno end to this")
        time.sleep(0.3)
        c.close()
        self.last_transaction(action="aborted")
        self.deliver("whole.example.test", subject="whole")
        msgs = cap.wait_messages(1)
        time.sleep(0.3)
        self.assertEqual(len(cap.messages()), 1)
        self.assertIn(b"Subject: whole", msgs[0])
        self.assertNotIn(b"no end to this", msgs[0])
        # the message is spooled before DATA goes to the backend, so the cut
        # one left only MAIL and RCPT there: reset before the next client
        cmds = cap.sessions[0]["commands"]
        rcpt = self.after(cmds, b"RCPT TO:<%s>" % BOB.encode())
        self.assertEqual(cmds[rcpt + 1], b"RSET", cmds)


class TestDecisionLog(FaultTest):

    def test_accepted_transaction_record(self):
        self.setup()
        c = self.begin(helo="decider.example.test")
        msg = make_message("decision")
        self.assertCode(self.send_message(c, msg, rcpts=(BOB, CAROL)), 250)
        c.cmd("QUIT")
        rec = self.last_transaction(action="accepted")
        self.assertEqual(rec["type"], "transaction")
        self.assertEqual(rec["transaction"], 1)
        self.assertEqual(rec["sender"], ALICE)
        self.assertEqual([r["address"] for r in rec["recipients"]],
                         [BOB, CAROL])
        for r in rec["recipients"]:
            self.assertTrue(r["reply"].startswith("250"), r)
        self.assertEqual(rec["size"], len(msg))
        self.assertEqual(rec["client"], {"address": "127.0.0.1",
                                         "port": c.local_port,
                                         "helo": "decider.example.test"})
        self.assertTrue(rec["reply"].startswith("250"))
        self.assertEqual(rec["backend"]["server"],
                         "127.0.0.1:%d" % self.sink.port)
        self.assertTrue(rec["backend"]["reply"].startswith("250"))
        self.assertNotIn("queue_id", rec["backend"],
                         "smtp-sink's 250 has no 'queued as'")

    def test_second_transaction_in_a_session_is_numbered_2(self):
        self.setup()
        c = self.begin()
        self.assertCode(self.send_message(c, make_message("one")), 250)
        self.assertCode(self.send_message(c, make_message("two")), 250)
        c.cmd("QUIT")
        recs = self.proxy.wait_transaction(count=2, action="accepted")
        self.assertEqual([r["transaction"] for r in recs], [1, 2])
        self.assertEqual(recs[0]["session"], recs[1]["session"])

    def test_session_without_transaction_is_logged_closed(self):
        self.setup()
        c = self.begin()
        self.assertCode(c.cmd("QUIT"), 221)
        recs = self.proxy.wait_decisions(lambda d: d.get("type") ==
                                         "connection")
        self.assertTrue(recs, self.proxy.decisions())
        self.assertEqual(recs[-1]["action"], "closed")
        self.assertEqual(recs[-1]["client"]["address"], "127.0.0.1")
        self.assertEqual(recs[-1]["client"]["port"], c.local_port)

    def test_session_the_client_just_disconnects_is_logged_closed(self):
        self.setup()
        c = self.begin()
        c.close()
        recs = self.proxy.wait_decisions(lambda d: d.get("type") ==
                                         "connection")
        self.assertTrue(recs, self.proxy.decisions())
        self.assertEqual(recs[-1]["action"], "closed")

    def test_session_over_max_sessions_gets_421_and_is_logged_refused(self):
        self.setup(max_sessions=1, workers=1)
        first = self.begin()
        second = self.client(self.proxy.port, connect=False)
        second.connect(read_greeting=False)
        g = second.reply(timeout=10)
        self.assertReply(g, 421, "4.3.2")
        self.assertTrue(second.wait_closed(5))
        recs = self.proxy.wait_decisions(
            lambda d: d.get("type") == "connection" and
            d.get("action") == "refused")
        self.assertTrue(recs, self.proxy.decisions())
        self.assertEqual(recs[-1]["client"]["port"], second.local_port)
        self.assertCode(first.cmd("NOOP"), 250)

    def test_session_cut_by_the_proxy_is_logged_dropped(self):
        self.setup(timeout_command=1)
        c = self.begin()
        self.assertCode(c.reply(timeout=10), 421)
        recs = self.proxy.wait_decisions(lambda d: d.get("type") ==
                                         "connection")
        self.assertTrue(recs, self.proxy.decisions())
        self.assertEqual(recs[-1]["action"], "dropped")
        self.assertTrue(recs[-1].get("reason"))

    def test_each_session_has_its_own_id(self):
        self.setup()
        for _ in range(3):
            c = self.begin()
            self.assertCode(self.send_message(c, make_message("ids")), 250)
            c.cmd("QUIT")
            c.close()
        recs = self.proxy.wait_transaction(count=3, action="accepted")
        self.assertEqual(len({r["session"] for r in recs}), 3)


class TestBackendOutOfStep(FaultTest):
    """Each backend reply answers the command it was sent for: a reply that
    answers nothing, or cannot answer what was asked, is a protocol error
    (451 4.4.2, the connection closed), never the client's 250 for a
    message the backend did not take."""

    def setup_capture(self, keywords=PLAIN_KEYWORDS, **kw):
        self.capture = self.start_capture(keywords=keywords, **kw)
        self.proxy = self.start_proxy(backend_port=self.capture.port)
        return self.capture

    def test_a_250_to_data_is_not_the_message_accepted(self):
        cap = self.setup_capture(
            hook=once_hook(b"DATA", b"250 2.0.0 Ok: queued as FAKE1"))
        c = self.begin()
        r = self.send_message(c, make_message("never sent"))
        self.assertReply(r, 451, "4.4.2")
        self.assertIn("Protocol error", r.lines[0])
        rec = self.last_transaction()
        self.assertEqual(rec["action"], "tempfailed")
        self.assertEqual(cap.messages(), [])
        # the session goes on, on a new backend connection
        self.assertCode(c.cmd("NOOP"), 250)
        self.assertCode(self.send_message(c, make_message("second")), 250)
        self.assertEqual(len(cap.wait_messages(1)), 1)
        self.assertEqual(len(cap.sessions), 2)
        self.assertTrue(cap.sessions[0]["closed"])

    def test_two_replies_to_mail_are_a_protocol_error(self):
        cap = self.setup_capture(
            hook=once_hook(b"MAIL", b"250 2.1.0 Ok\r\n250 2.1.5 Ok"))
        c = self.begin()
        self.assertReply(c.cmd("MAIL FROM:<%s>" % ALICE), 451, "4.4.2")
        rec = self.last_transaction()
        self.assertEqual(rec["action"], "tempfailed")
        wait_for(lambda: cap.sessions and cap.sessions[0]["closed"], 5)
        self.assertTrue(cap.sessions[0]["closed"],
                        "the out-of-step connection was kept")
        # the next transaction gets a connection of its own
        self.assertCode(self.send_message(c, make_message("fresh")), 250)
        self.assertEqual(len(cap.wait_messages(1)), 1)
        self.assertEqual(len(cap.sessions), 2)

    def test_an_out_of_step_connection_is_never_parked_for_the_next_client(self):
        cap = self.setup_capture(
            keywords=XCLIENT_KEYWORDS,
            hook=once_hook(b"RCPT", b"250 2.1.5 Ok\r\n550 5.1.1 No such user"))
        c = self.begin()
        self.assertCode(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        self.assertReply(c.cmd("RCPT TO:<%s>" % BOB), 451, "4.4.2")
        self.assertCode(c.cmd("QUIT"), 221)
        c.close()
        c2 = self.begin("next.example.test")
        self.assertCode(self.send_message(c2, make_message("next")), 250)
        cap.wait_messages(1)
        self.assertEqual(len(cap.sessions), 2)
        # nothing after the out-of-step reply reached the first connection
        self.assertTrue(cap.sessions[0]["closed"])
        self.assertTrue(cap.sessions[0]["commands"][-1].startswith(b"RCPT "),
                        cap.sessions[0]["commands"])

    def test_a_refusal_while_the_message_streams_reaches_the_client(self):
        cap = self.setup_capture(
            body_reply=b"552 5.3.4 Message too big for this backend",
            body_hold=20)
        c = self.begin()
        self.assertCode(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        self.assertCode(c.cmd("RCPT TO:<%s>" % BOB), 250)
        self.assertCode(c.cmd("DATA"), 354)
        body = (b"y" * 998 + b"\r\n") * 8000
        c.send(dot_stuff(make_message("streams", body=body)))
        start = time.monotonic()
        r = c.reply(timeout=15)
        self.assertReply(r, 552, "5.3.4")
        self.assertIn("too big for this backend", r.lines[0])
        self.assertLess(time.monotonic() - start, 10)
        rec = self.last_transaction()
        self.assertEqual(rec["action"], "rejected")
        self.assertTrue(rec["backend"]["reply"].startswith("552 5.3.4"), rec)
        # the session goes on
        self.assertCode(c.cmd("NOOP"), 250)
        self.assertCode(self.send_message(c, make_message("after")), 250)
        self.assertEqual(len(cap.wait_messages(1)), 1)


class TestBackendOffer(FaultTest):
    """What Portcullis offers its clients follows what the backend offers
    to Portcullis's own EHLO, not to an EHLO sent in a client's name."""

    def test_an_ehlo_after_xclient_does_not_change_the_next_clients_offer(self):
        def hook(sess, line):
            if not line.upper().startswith(b"EHLO "):
                return None
            if not any(c.startswith(b"XCLIENT ") for c in sess["commands"]):
                return None
            # as the client: no SIZE, no 8BITMIME
            return (b"250-capture.portcullis.test\r\n250-PIPELINING\r\n"
                    b"250-ENHANCEDSTATUSCODES\r\n"
                    b"250 XCLIENT NAME ADDR PORT PROTO HELO")
        cap = self.start_capture(keywords=XCLIENT_KEYWORDS, hook=hook)
        self.proxy = self.start_proxy(backend_port=cap.port)
        for n in range(3):
            c = self.client(self.proxy.port)
            kw = c.ehlo("client%d.example.test" % n).keywords
            self.assertIn("SIZE", kw, "session %d" % n)
            self.assertIn("8BITMIME", kw, "session %d" % n)
            self.assertCode(self.send_message(c, make_message("offer")), 250)
            self.assertCode(c.cmd("QUIT"), 221)
            c.close()
        self.assertEqual(len(cap.wait_messages(3)), 3)
        # the backend did answer as the client without them
        self.assertGreaterEqual(sum(1 for c in cap.commands()
                                    if c.startswith(b"XCLIENT ")), 3)

    def test_a_long_utf8_helo_reaches_xclient_whole(self):
        # each byte of a UTF-8 name is +XX in xtext: 251 bytes become 700+
        label = "\u00fc" * 31
        helo = ".".join([label] * 4)
        cap = self.start_capture(keywords=XCLIENT_KEYWORDS + ("SMTPUTF8",))
        self.proxy = self.start_proxy(backend_port=cap.port)
        c = self.client(self.proxy.port)
        self.assertCode(c.cmd("EHLO " + helo), 250)
        self.assertCode(c.cmd("MAIL FROM:<%s> SMTPUTF8" % ALICE), 250)
        x = [l for l in cap.commands() if l.startswith(b"XCLIENT ")][-1]
        attrs = dict(a.split(b"=", 1) for a in x.split()[1:])
        decoded = re.sub(rb"\+([0-9A-F]{2})",
                         lambda m: bytes([int(m.group(1), 16)]), attrs[b"HELO"])
        self.assertEqual(decoded, helo.encode("utf-8"))


class TestDrainDeadline(FaultTest):
    """The drain deadline cuts sessions whatever they wait for; one whose
    message is on its way to the backend is cut there too, and is
    recorded once. The stuck client fills the buffers with thousands of
    HELPs: the command limits are raised so they do not end it first."""

    LIMITS = dict(max_commands=10000000, junk_command_limit=10000000)

    @staticmethod
    def send_queue(local_port, remote_port):
        """Bytes the socket 127.0.0.1:local_port -> remote_port has not had
        acknowledged (/proc/net/tcp tx_queue), or None."""
        want = ":%04X" % local_port, ":%04X" % remote_port
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[1].endswith(want[0]) and fields[2].endswith(want[1]):
                    return int(fields[4].split(":")[0], 16)
        return None

    def stuck_client(self, port):
        """A client that reads nothing, connected and greeted, whose
        socket buffers (and the proxy's) are full of replies it did not
        read, so the next reply it is sent waits in the proxy."""
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(s.close)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
        s.connect(("127.0.0.1", port))
        mine = s.getsockname()[1]
        s.sendall(b"EHLO stuck.example.test\r\n")
        last, still = -1, 0
        for _ in range(400):
            s.sendall(b"HELP\r\n" * 100)
            time.sleep(0.02)
            q = self.send_queue(port, mine)
            if q is not None and q == last:
                still += 1
                if still >= 3:
                    break
            else:
                still = 0
            last = q
        self.assertGreaterEqual(still, 3, "the proxy's send queue never filled")
        # a little more for the proxy's own buffer, well under its limit
        s.sendall(b"HELP\r\n" * 200)
        return s

    def stop_at_the_deadline(self, proxy):
        """SIGTERM: the daemon exits cleanly at the drain deadline, without
        a sanitizer report, having written the stuck session's transaction
        record once, as aborted; that record."""
        proxy.signal(signal.SIGTERM)
        rc = proxy.wait_exit(15)
        self.assertIsNone(proxy.sanitizer_report(), proxy.sanitizer_report())
        self.assertEqual(rc, 0, proxy.stderr()[-3000:])
        recs = [d for d in proxy.decisions() if d.get("type") == "transaction"]
        self.assertEqual(len(recs), 1, recs)
        self.assertEqual(recs[0]["action"], "aborted", proxy.stderr()[-5000:])
        return recs[0]

    def test_deadline_while_the_backend_holds_the_final_reply(self):
        cap = self.start_capture(keywords=PLAIN_KEYWORDS, data_delay=1.5)
        proxy = self.start_proxy(backend_port=cap.port, drain_timeout=1,
                                 **self.LIMITS)
        self.proxy = proxy
        s = self.stuck_client(proxy.port)
        s.sendall(b"MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n" % (
            ALICE.encode(), BOB.encode()) + dot_stuff(make_message("deadline")))
        self.assertTrue(cap.data_received.wait(15), "no message at the backend")
        rec = self.stop_at_the_deadline(proxy)
        self.assertEqual(rec["reason"], "drain deadline")

    def test_deadline_while_the_message_streams_to_a_slow_backend(self):
        cap = self.start_capture(keywords=PLAIN_KEYWORDS,
                                 body_reply=b"", body_hold=1.5)
        proxy = self.start_proxy(backend_port=cap.port, drain_timeout=1,
                                 **self.LIMITS)
        self.proxy = proxy
        s = self.stuck_client(proxy.port)
        body = (b"z" * 998 + b"\r\n") * 6000
        s.sendall(b"MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n" % (
            ALICE.encode(), BOB.encode()) +
            dot_stuff(make_message("slow backend", body=body)))
        self.assertTrue(wait_for(lambda: any(len(x["raw"]) > 65536
                                             for x in cap.sessions), 15))
        self.stop_at_the_deadline(proxy)
        self.assertEqual(cap.messages(), [])


if __name__ == "__main__":
    unittest.main()
