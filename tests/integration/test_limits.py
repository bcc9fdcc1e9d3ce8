"""
test_limits.py - limits that protect a worker, and what clients see at them

Recipients over max_recipients, command lines over max_line_length, a
reload that retires old workers, a worker out of file descriptors, and
load shedding at max_sessions and a full filter pool. smtp-sink is the
backend unless said otherwise; every wait is bounded.
"""

import os
import re
import signal
import socket
import subprocess
import time
import unittest

from harness import (BUILD, DOMAIN, ConnectionClosed, ProxyTestCase, Sink,
                     SMTPClient, dot_stuff, make_message, wait_for)

ALICE = "alice@" + DOMAIN
BOB = "bob@" + DOMAIN


class TestRecipientOvershoot(ProxyTestCase):

    def test_pipelined_recipients_over_the_limit_get_452_and_the_rest_is_delivered(self):
        sink = self.start_sink()
        # max_errors below the excess: the excess must not count as errors.
        proxy = self.start_proxy(backend_port=sink.port, max_recipients=5,
                                 max_errors=10)
        c = self.client(proxy.port)
        c.ehlo()
        rcpts = ["user%02d@%s" % (i, DOMAIN) for i in range(20)]
        c.send("MAIL FROM:<%s>\r\n" % ALICE +
               "".join("RCPT TO:<%s>\r\n" % r for r in rcpts) + "DATA\r\n")
        self.assertReply(c.reply(), 250, "2.1.0")
        replies = c.replies(20)
        self.assertEqual([r.code for r in replies], [250] * 5 + [452] * 15,
                         replies)
        for r in replies[5:]:
            self.assertEqual(r.lines, ["452 4.5.3 Error: too many recipients"])
        self.assertCode(c.reply(), 354)
        c.send(dot_stuff(make_message("five of twenty")))
        self.assertReply(c.reply(), 250)
        self.assertEqual(sink.wait_count(1), 1)
        meta, _ = Sink.parse(sink.messages()[0])
        self.assertEqual([a.strip("<> ") for a in meta["X-Rcpt-Args"]],
                         rcpts[:5])
        # The session goes on: the client sends the rest next.
        self.assertReply(c.cmd("NOOP"), 250, "2.0.0")
        self.assertCode(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        self.assertCode(c.cmd("RCPT TO:<%s>" % rcpts[5]), 250)
        rec = proxy.wait_transaction(action="accepted")
        self.assertTrue(rec, proxy.decisions())

    def test_recipients_far_past_the_overshoot_limit_count_as_errors(self):
        sink = self.start_sink()
        proxy = self.start_proxy(backend_port=sink.port, max_recipients=1,
                                 recipient_overshoot_limit=2, max_errors=3)
        c = self.client(proxy.port)
        c.ehlo()
        self.assertCode(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        self.assertCode(c.cmd("RCPT TO:<%s>" % BOB), 250)
        # Two excess recipients are free, the next three are errors.
        codes = [c.cmd("RCPT TO:<x%d@%s>" % (i, DOMAIN)).code for i in range(4)]
        self.assertEqual(codes, [452] * 4)
        r = c.cmd("RCPT TO:<last@%s>" % DOMAIN)
        self.assertReply(r, 452, "4.5.3")
        r = c.reply()
        self.assertEqual(r.lines, ["421 4.7.0 proxy.portcullis.test "
                                   "Error: too many errors"])
        self.assertTrue(c.wait_closed(5))


class TestLongLines(ProxyTestCase):
    """max_line_length = 1000: a longer command line gets 500 5.5.2 as
    soon as the limit is passed; one that runs on 64 KiB further ends the
    session with 421 4.7.0."""

    LIMIT = 1000

    def setUp(self):
        self.sink = self.start_sink()
        self.proxy = self.start_proxy(backend_port=self.sink.port,
                                      max_line_length=self.LIMIT)
        self.c = self.client(self.proxy.port)
        self.c.ehlo()

    def test_a_line_over_the_limit_gets_500_before_its_line_end(self):
        self.c.send(b"NOOP " + b"x" * (self.LIMIT + 10))
        r = self.c.reply(timeout=5)
        self.assertEqual(r.lines, ["500 5.5.2 Error: line too long"])
        # Its end, when it comes, is no second command and no second reply.
        self.c.send(b"y" * 5000 + b"\r\n")
        self.assertReply(self.c.cmd("NOOP"), 250, "2.0.0")
        self.assertReply(self.c.cmd("MAIL FROM:<%s>" % ALICE), 250)

    def test_a_line_without_end_is_cut_off_with_421_after_64_kib_more(self):
        total = self.LIMIT + 64 * 1024 + 1
        self.c.send(b"MAIL FROM:<" + b"a" * (self.LIMIT + 100))
        self.assertReply(self.c.reply(timeout=5), 500, "5.5.2")
        # Exactly up to the bound, so the proxy reads all we sent.
        self.c.send(b"a" * (total - self.LIMIT - 100 - len(b"MAIL FROM:<")))
        r = self.c.reply(timeout=10)
        self.assertEqual(r.lines, ["421 4.7.0 proxy.portcullis.test Error: "
                                   "line too long, closing connection"])
        self.assertTrue(self.c.wait_closed(5))
        recs = self.proxy.wait_decisions(
            lambda d: d.get("type") == "connection")
        self.assertEqual([(d["action"], d["reason"]) for d in recs],
                         [("dropped", "line too long")])

    def test_a_long_line_in_data_is_read_to_the_end_and_refused_by_size(self):
        # DATA has no line limit of its own (lines are streamed to the
        # spool): message_size_limit bounds it, 552 after the end.
        proxy = self.start_proxy(backend_port=self.sink.port,
                                 message_size_limit="64k")
        c = self.client(proxy.port)
        c.ehlo()
        self.assertCode(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        self.assertCode(c.cmd("RCPT TO:<%s>" % BOB), 250)
        self.assertCode(c.cmd("DATA"), 354)
        c.send(b"Subject: one long line\r\n\r\n")
        for _ in range(32):
            c.send(b"z" * 32768)
        c.send(b"\r\n.\r\n")
        r = c.reply(timeout=20)
        self.assertEqual(r.lines, ["552 5.3.4 Message size exceeds fixed "
                                   "maximum message size"])
        self.assertReply(c.cmd("NOOP"), 250)
        self.assertEqual(self.sink.settled_count(), 0)


if __name__ == "__main__":
    unittest.main()
