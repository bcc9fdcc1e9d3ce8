"""
test_deadlines.py - deadlines and command limits a slow or chatty client meets

The idle timeouts restart on every byte; these do not:

* command_deadline: a command line must be whole within this many
  seconds of its first byte, or the session ends with 421 4.4.2
  ("command deadline" in the record);
* min_data_rate: the DATA phase may take timeout_data plus one second per
  min_data_rate bytes read, or it ends with 421 4.4.2 ("data rate too
  low"); a fast client, or a slow one above the rate, is not affected;
* max_commands: command lines per session, 421 4.7.0 past it ("too many
  commands");
* junk_command_limit: NOOP, RSET, VRFY, ETRN and HELP since the last
  delivered message, 421 4.7.0 past it ("too many junk commands").

The trickling clients send a few bytes at a time with pauses shorter than
the idle timeout, so only the deadline can cut them. Every wait is bounded
by the test's own limit; the backend is smtp-sink or the capture server
(byte-exact delivery).
"""

import time
import unittest

from harness import (DOMAIN, ConnectionClosed, Portcullis, ProxyTestCase,
                     ReplyTimeout, dot_stuff, make_message, remove_tree)

ALICE = "alice@" + DOMAIN
BOB = "bob@" + DOMAIN
HOST = "proxy.portcullis.test"


class DeadlineTest(ProxyTestCase):

    def trickle(self, c, data, chunk, interval, limit):
        """Send data, chunk bytes every interval seconds, until all is
        sent, the proxy answers or limit seconds passed. Returns (the
        reply or None, seconds from the first byte to it)."""
        t0 = time.monotonic()
        for i in range(0, len(data), chunk):
            if time.monotonic() - t0 > limit:
                break
            try:
                c.send(data[i:i + chunk])
            except OSError:
                break
            try:
                return c.reply(timeout=interval), time.monotonic() - t0
            except ReplyTimeout:
                pass
            except ConnectionClosed:
                return None, time.monotonic() - t0
        try:
            return c.reply(timeout=2), time.monotonic() - t0
        except (ReplyTimeout, ConnectionClosed):
            return None, time.monotonic() - t0

    def open_data(self, c):
        """EHLO, MAIL, RCPT, DATA: the client may send the message."""
        self.assertReply(c.ehlo(), 250)
        self.assertReply(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        self.assertReply(c.cmd("RCPT TO:<%s>" % BOB), 250)
        self.assertReply(c.cmd("DATA"), 354)

    def dropped(self, proxy, port, reason, type_="connection"):
        """The record of the session of the client on port, with reason."""
        recs = proxy.wait_decisions(
            lambda d: d.get("client", {}).get("port") == port and
            d.get("reason") == reason)
        self.assertEqual(len(recs), 1, proxy.decisions())
        self.assertEqual(recs[0]["type"], type_, recs[0])
        return recs[0]


class TestCommandDeadline(DeadlineTest):
    """command_deadline = 3 under timeout_command = 10."""

    def test_a_command_line_trickled_a_byte_a_second_is_cut_at_the_deadline(self):
        sink = self.start_sink()
        proxy = self.start_proxy(backend_port=sink.port, timeout_command=10,
                                 command_deadline=3)
        c = self.client(proxy.port)
        self.assertReply(c.ehlo(), 250)
        line = ("MAIL FROM:<%s>\r\n" % ALICE).encode()
        r, took = self.trickle(c, line, 1, 1.0, 12)
        self.assertIsNotNone(r, "the line was never cut: %r" % c.transcript)
        self.assertEqual(r.lines, ["421 4.4.2 %s Error: command deadline "
                                   "exceeded" % HOST])
        self.assertGreater(took, 2.5)
        self.assertLess(took, 6)
        self.assertTrue(c.wait_closed(5))
        rec = self.dropped(proxy, c.local_port, "command deadline")
        self.assertEqual(rec["action"], "dropped", rec)

    def test_the_deadline_runs_per_line_not_per_session(self):
        # A line sent in three pieces within the deadline is served, and a
        # pause between whole lines longer than the deadline (but within
        # timeout_command) is no offence.
        sink = self.start_sink()
        proxy = self.start_proxy(backend_port=sink.port, timeout_command=10,
                                 command_deadline=3)
        c = self.client(proxy.port)
        r, _ = self.trickle(c, b"EHLO client.example.test\r\n", 9, 0.8, 5)
        self.assertReply(r, 250)
        time.sleep(4)
        self.assertReply(c.cmd("NOOP"), 250, "2.0.0")
        r, _ = self.trickle(c, b"NOOP\r\n", 2, 0.8, 5)
        self.assertReply(r, 250, "2.0.0")

    def test_command_deadline_0_turns_it_off(self):
        sink = self.start_sink()
        proxy = self.start_proxy(backend_port=sink.port, timeout_command=10,
                                 command_deadline=0)
        c = self.client(proxy.port)
        r, took = self.trickle(c, b"NOOP\r\n", 1, 1.0, 10)
        self.assertReply(r, 250, "2.0.0")
        self.assertGreater(took, 4.5)


class TestDataRate(DeadlineTest):

    def test_data_trickled_below_the_rate_is_cut(self):
        # 50 bytes every 0.5 s is 100 bytes/s against a minimum of 1000:
        # the deadline is 3 s + 0.05 s per 50 bytes, about 3.4 s.
        sink = self.start_sink()
        proxy = self.start_proxy(backend_port=sink.port, timeout_data=3,
                                 min_data_rate=1000)
        c = self.client(proxy.port)
        self.open_data(c)
        body = b"".join(b"line %04d of a slow message ........................\r\n" % i
                        for i in range(200))
        r, took = self.trickle(c, make_message("slow", body), 50, 0.5, 12)
        self.assertIsNotNone(r, "DATA was never cut")
        self.assertEqual(r.lines, ["421 4.4.2 %s Error: data rate too low"
                                   % HOST])
        self.assertGreater(took, 2.5)
        self.assertLess(took, 6)
        self.assertTrue(c.wait_closed(5))
        rec = self.dropped(proxy, c.local_port, "data rate too low",
                           "transaction")
        self.assertEqual(rec["action"], "aborted", rec)
        self.assertEqual(sink.settled_count(), 0)

    def test_data_above_the_rate_may_take_longer_than_timeout_data(self):
        # 1000 bytes every 0.5 s is twice the minimum rate: sending it
        # takes about 4 s, twice timeout_data, and it is delivered whole.
        cap = self.start_capture()
        proxy = self.start_proxy(backend_port=cap.port, timeout_data=2,
                                 min_data_rate=1000)
        c = self.client(proxy.port)
        self.open_data(c)
        body = b"".join(b"line %04d of a steady message ......................\r\n" % i
                        for i in range(150))
        msg = make_message("steady", body)
        r, took = self.trickle(c, dot_stuff(msg), 1000, 0.5, 15)
        self.assertReply(r, 250)
        self.assertGreater(took, 3)
        self.assertEqual(cap.wait_messages(1), [msg])

    def test_a_big_message_sent_fast_is_unaffected(self):
        # The default rate (500 bytes/s) with a short timeout_data: 8 MB
        # at loopback speed is far inside timeout_data + size/rate.
        cap = self.start_capture()
        proxy = self.start_proxy(backend_port=cap.port, timeout_data=2)
        c = self.client(proxy.port, timeout=60)
        self.open_data(c)
        line = b"x" * 78 + b"\r\n"
        msg = make_message("big and fast", line * (8 * 1024 * 1024 // 80))
        c.send(dot_stuff(msg))
        self.assertReply(c.reply(timeout=60), 250)
        got = cap.wait_messages(1, 30)
        self.assertEqual(len(got), 1)
        self.assertEqual(len(got[0]), len(msg))

    def test_min_data_rate_0_turns_it_off(self):
        sink = self.start_sink()
        proxy = self.start_proxy(backend_port=sink.port, timeout_data=2,
                                 min_data_rate=0)
        c = self.client(proxy.port)
        self.open_data(c)
        # 80 bytes/s: the default rate (500) would cut it after 2.2 s
        msg = make_message("slow but unlimited", b"a slow line\r\n" * 20)
        r, took = self.trickle(c, dot_stuff(msg), 40, 0.5, 20)
        self.assertReply(r, 250)
        self.assertGreater(took, 4)
        self.assertEqual(sink.settled_count(), 1)


class TestCommandLimits(DeadlineTest):

    def test_commands_past_max_commands_get_421_4_7_0(self):
        sink = self.start_sink()
        proxy = self.start_proxy(backend_port=sink.port, max_commands=6)
        c = self.client(proxy.port)
        # Pipelined: six are answered, the seventh gets the 421 and the
        # eighth nothing.
        c.send("EHLO client.example.test\r\nNOOP\r\nHELO client.example.test"
               "\r\nRSET\r\nVRFY bob\r\nBOGUS\r\nNOOP\r\nNOOP\r\n")
        replies = c.all_replies(timeout=5)
        self.assertEqual([r.code for r in replies],
                         [250, 250, 250, 250, 252, 500, 421], replies)
        self.assertEqual(replies[-1].lines,
                         ["421 4.7.0 %s Error: too many commands" % HOST])
        self.assertTrue(c.eof, "the connection stays open")
        rec = self.dropped(proxy, c.local_port, "too many commands")
        self.assertEqual(rec["action"], "dropped", rec)

    def test_max_commands_in_a_transaction_aborts_it(self):
        sink = self.start_sink()
        proxy = self.start_proxy(backend_port=sink.port, max_commands=3)
        c = self.client(proxy.port)
        self.assertReply(c.ehlo(), 250)
        self.assertReply(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        self.assertReply(c.cmd("RCPT TO:<%s>" % BOB), 250)
        r = c.cmd("DATA")
        self.assertEqual(r.lines, ["421 4.7.0 %s Error: too many commands"
                                   % HOST])
        self.assertTrue(c.wait_closed(5))
        rec = self.dropped(proxy, c.local_port, "too many commands",
                           "transaction")
        self.assertEqual(rec["action"], "aborted", rec)
        self.assertEqual(sink.settled_count(), 0)

    def test_junk_commands_past_the_limit_get_421_4_7_0(self):
        sink = self.start_sink()
        proxy = self.start_proxy(backend_port=sink.port, junk_command_limit=4)
        c = self.client(proxy.port)
        self.assertReply(c.ehlo(), 250)
        self.assertReply(c.cmd("NOOP"), 250, "2.0.0")
        self.assertReply(c.cmd("RSET"), 250, "2.0.0")
        # MAIL and RCPT are no junk
        self.assertReply(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        self.assertReply(c.cmd("RCPT TO:<%s>" % BOB), 250)
        self.assertReply(c.cmd("VRFY bob"), 252)
        self.assertReply(c.cmd("HELP"), 214)
        r = c.cmd("NOOP")
        self.assertEqual(r.lines, ["421 4.7.0 %s Error: too many junk "
                                   "commands" % HOST])
        self.assertTrue(c.wait_closed(5))
        rec = self.dropped(proxy, c.local_port, "too many junk commands",
                           "transaction")
        self.assertEqual(rec["action"], "aborted", rec)

    def test_a_delivered_message_forgives_the_junk_before_it(self):
        sink = self.start_sink()
        proxy = self.start_proxy(backend_port=sink.port, junk_command_limit=3)
        c = self.client(proxy.port)
        self.assertReply(c.ehlo(), 250)
        for _ in range(3):
            self.assertReply(c.cmd("NOOP"), 250)
        r = c.mail_transaction(ALICE, [BOB], make_message("forgiven"))
        self.assertReply(r["end"], 250)
        for _ in range(3):
            self.assertReply(c.cmd("RSET"), 250)
        self.assertReply(c.cmd("NOOP"), 421, "4.7.0")
        self.assertTrue(c.wait_closed(5))
        self.assertEqual(sink.settled_count(), 1)


class TestConfig(unittest.TestCase):
    """Each new key's bad value is named with FILE:LINE and the key."""

    def check(self, key, value):
        p = Portcullis(backend_port=10025)
        p.dir = None
        r = p.check_config("[portcullis]\nlisten = 127.0.0.1:2525\n"
                           "%s = %s\n[backend]\nservers = 127.0.0.1:10025\n"
                           % (key, value))
        self.addCleanup(remove_tree, p.dir)
        return r.returncode, r.stderr.decode(errors="replace"), \
            "%s/check.conf" % p.dir

    def test_bad_values_are_named_with_file_line_and_key(self):
        for key, value, why in (
                ("command_deadline", "soon", "expected a number"),
                ("min_data_rate", "500k", "expected a number"),
                ("max_commands", "0", "value out of range"),
                ("junk_command_limit", "-1", "expected a number")):
            with self.subTest(key=key):
                rc, err, path = self.check(key, value)
                self.assertEqual(rc, 1, err)
                self.assertIn('%s:3: [portcullis] %s: %s: "%s"'
                              % (path, key, why, value), err)

    def test_zero_turns_the_deadlines_off_and_passes(self):
        for key in ("command_deadline", "min_data_rate"):
            with self.subTest(key=key):
                rc, err, _ = self.check(key, "0")
                self.assertNotIn(key, err)


if __name__ == "__main__":
    unittest.main()
