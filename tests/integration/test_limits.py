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


if __name__ == "__main__":
    unittest.main()
