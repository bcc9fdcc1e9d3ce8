"""
test_limits.py - limits that protect a worker, and what clients see at them

Recipients over max_recipients, command lines over max_line_length, a
reload that retires old workers, a worker out of file descriptors, and
load shedding at max_sessions. smtp-sink is the
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
                     SMTPClient, children, dot_stuff, make_message, wait_for,
                     is_listening)
from harness import free_port as harness_free_port

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


class TestListenerSizeLimit(ProxyTestCase):

    def test_a_listener_has_its_own_message_size_limit(self):
        # the capture server announces SIZE 10240000: ours are lower
        sink = self.start_capture()
        sub = harness_free_port()
        proxy = self.start_proxy(
            backend_port=sink.port, message_size_limit="64k",
            extra="\n[listener small]\naddress = 127.0.0.1:%d\n"
                  "message_size_limit = 2k\n" % sub)
        self.assertTrue(wait_for(lambda: is_listening(sub), 10))
        # the main listener: the [portcullis] limit
        c = self.client(proxy.port)
        self.assertEqual(c.ehlo().keywords.get("SIZE"), "65536")
        # the small one: its own, at MAIL and at the end of DATA
        c = self.client(sub)
        self.assertEqual(c.ehlo().keywords.get("SIZE"), "2048")
        self.assertReply(c.cmd("MAIL FROM:<%s> SIZE=4000" % ALICE), 552, "5.3.4")
        self.assertCode(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        self.assertCode(c.cmd("RCPT TO:<%s>" % BOB), 250)
        self.assertCode(c.cmd("DATA"), 354)
        c.send(dot_stuff(make_message("big", body="x" * 70 + "\r\n" * 1)
                         + b"y" * 3000 + b"\r\n"))
        self.assertReply(c.reply(), 552, "5.3.4")
        # and a small message passes
        r = c.mail_transaction(ALICE, [BOB], make_message("small"))
        self.assertCode(r["end"], 250)
        self.assertEqual(len(sink.wait_messages(1)), 1)

    def test_the_key_is_checked(self):
        from harness import Portcullis
        p = Portcullis(backend_port=1)
        self.addCleanup(p.stop)
        p.write_config()
        text = p.config_text() + "\n[listener small]\naddress = 127.0.0.1:1\nmessage_size_limit = 12\n"
        r = p.check_config(text)
        self.assertNotEqual(r.returncode, 0)
        self.assertRegex(r.stderr.decode(),
                         r"check\.conf:\d+: \[listener small\] message_size_limit: value out of range")


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


def cpu_seconds(pid):
    """User plus system CPU time of a process so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of stat(5), 12 and 13 here.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


class TestOutOfDescriptors(ProxyTestCase):

    def test_a_worker_out_of_descriptors_pauses_instead_of_spinning(self):
        sink = self.start_sink()
        proxy = self.start_proxy(backend_port=sink.port, max_sessions=100)
        worker = children(proxy.pid)[0]
        # Room for a handful of sessions: the limit the start check saw
        # is lowered under the running worker, as a leak or a filter
        # holding descriptors would.
        import resource
        base = open_fds(worker)
        resource.prlimit(worker, resource.RLIMIT_NOFILE, (base + 6, base + 6))
        held = []
        for _ in range(30):
            s = socket.create_connection(("127.0.0.1", proxy.port), 5)
            held.append(s)
        self.addCleanup(lambda: [s.close() for s in held])
        pattern = "accept: Too many open files"
        self.assertTrue(wait_for(lambda: pattern in proxy.stderr(), 10),
                        "the worker never ran out: %s" % proxy.stderr()[-2000:])
        before = cpu_seconds(worker)
        time.sleep(3)
        used = cpu_seconds(worker) - before
        self.assertLess(used, 0.5, "the worker used %.2f s of CPU in 3 s "
                        "while out of descriptors" % used)
        lines = [l for l in proxy.stderr().splitlines()
                 if "Too many open files" in l]
        self.assertLessEqual(len(lines), 2, lines[:5])
        # Descriptors come back: the backlog is served, then a new client.
        for s in held:
            s.close()
        c = self.client(proxy.port, timeout=10)
        self.assertEqual(c.greeting.code, 220)
        r = c.mail_transaction(ALICE, [BOB], make_message("after EMFILE"),
                               helo="client.example.test")
        self.assertReply(r["end"], 250)
        self.assertEqual(sink.wait_count(1), 1)


class TestDescriptorLimitAtStart(ProxyTestCase):
    """max_sessions against RLIMIT_NOFILE: under a hard limit of 1024, 1000
    sessions (2 descriptors each plus the filters' and a margin) cannot
    be served."""

    def run_daemon(self, args, **kw):
        import resource
        from harness import Portcullis
        proxy = Portcullis(backend_port=1, **kw)
        proxy.write_config()
        self.addCleanup(lambda: proxy.stop())

        def limit():
            resource.setrlimit(resource.RLIMIT_NOFILE, (256, 1024))
        r = subprocess.run([proxy.binary] + args + ["-c", proxy.conf_path],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           preexec_fn=limit, timeout=20,
                           universal_newlines=True)
        with open(proxy.conf_path) as f:
            line = [i + 1 for i, l in enumerate(f)
                    if l.startswith("max_sessions")]
        return proxy, r, line

    def expected(self, proxy, line):
        return ("%s:%d: [portcullis] max_sessions: 1000 sessions need 2165 "
                "file descriptors per worker, but the hard limit is 1024"
                % (proxy.conf_path, line[0]))

    def test_check_refuses_max_sessions_the_hard_limit_cannot_serve(self):
        proxy, r, line = self.run_daemon(["-t"], max_sessions=1000)
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn(self.expected(proxy, line), r.stdout)

    def test_start_refuses_max_sessions_the_hard_limit_cannot_serve(self):
        proxy, r, line = self.run_daemon(["-f"], max_sessions=1000)
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn(self.expected(proxy, line), r.stdout)
        self.assertNotIn("listening on", r.stdout)

    def test_a_max_sessions_that_fits_passes_the_check(self):
        proxy, r, line = self.run_daemon(["-t"], max_sessions=400)
        self.assertEqual(r.returncode, 0, r.stdout)
        self.assertIn("configuration ok", r.stdout)


class TestReloadRetiresSessions(ProxyTestCase):
    """After SIGHUP the old worker's sessions finish their transaction and
    get 421 4.3.2 at their next command; drain_timeout closes the rest."""

    RETIRED = ("421 4.3.2 proxy.portcullis.test Service reloaded, "
               "try again")

    def setUp(self):
        self.sink = self.start_sink()
        self.proxy = self.start_proxy(backend_port=self.sink.port,
                                      drain_timeout=3)

    def reload(self):
        self.proxy.signal(signal.SIGHUP)
        self.assertTrue(wait_for(lambda: "retiring after a reload" in
                                 self.proxy.stderr(), 10),
                        self.proxy.stderr()[-2000:])

    def test_an_idle_session_gets_421_at_its_next_command(self):
        c = self.client(self.proxy.port)
        self.assertCode(c.ehlo(), 250)
        self.reload()
        r = c.cmd("NOOP")
        self.assertEqual(r.lines, [self.RETIRED])
        self.assertTrue(c.wait_closed(5))
        # The new worker serves the next client.
        n = self.client(self.proxy.port)
        r = n.mail_transaction(ALICE, [BOB], make_message("after reload"),
                               helo="client.example.test")
        self.assertReply(r["end"], 250)
        self.assertEqual(self.sink.wait_count(1), 1)

    def test_a_transaction_in_flight_finishes_then_the_next_command_gets_421(self):
        c = self.client(self.proxy.port)
        c.ehlo()
        self.assertCode(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        self.assertCode(c.cmd("RCPT TO:<%s>" % BOB), 250)
        self.reload()
        self.assertCode(c.cmd("RCPT TO:<carol@%s>" % DOMAIN), 250)
        self.assertCode(c.cmd("DATA"), 354)
        c.send(dot_stuff(make_message("across the reload")))
        self.assertReply(c.reply(), 250)
        self.assertEqual(self.sink.wait_count(1), 1)
        meta, _ = Sink.parse(self.sink.messages()[0])
        self.assertEqual(len(meta["X-Rcpt-Args"]), 2)
        r = c.cmd("MAIL FROM:<%s>" % ALICE)
        self.assertEqual(r.lines, [self.RETIRED])
        self.assertTrue(c.wait_closed(5))
        self.assertEqual(self.sink.settled_count(), 1)

    def test_a_silent_session_is_closed_at_drain_timeout(self):
        c = self.client(self.proxy.port)
        c.ehlo()
        workers = children(self.proxy.pid)
        start = time.monotonic()
        self.reload()
        r = c.reply(timeout=10)
        waited = time.monotonic() - start
        self.assertEqual(r.lines, ["421 4.3.2 proxy.portcullis.test Service "
                                   "shutting down, try again later"])
        self.assertTrue(c.wait_closed(5))
        self.assertGreater(waited, 2)
        # The old worker is gone; its replacement stays.
        self.assertTrue(wait_for(lambda: not set(workers) &
                                 set(children(self.proxy.pid)), 5))
        self.assertEqual(len(children(self.proxy.pid)), 1)


class TestLoadShedding(ProxyTestCase):

    def test_a_client_over_max_sessions_gets_421_4_3_2_at_once(self):
        sink = self.start_sink()
        proxy = self.start_proxy(backend_port=sink.port, max_sessions=2)
        first = self.client(proxy.port)
        second = self.client(proxy.port)
        self.assertCode(second.ehlo(), 250)
        third = self.client(proxy.port, connect=False)
        start = time.monotonic()
        third.connect(read_greeting=False)
        g = third.reply(timeout=10)
        self.assertEqual(g.lines, ["421 4.3.2 proxy.portcullis.test Too many "
                                   "connections, try again later"])
        self.assertLess(time.monotonic() - start, 2)
        self.assertTrue(third.wait_closed(5))
        recs = proxy.wait_decisions(lambda d: d.get("action") == "refused")
        self.assertEqual([(d["client"]["port"], d["reason"]) for d in recs],
                         [(third.local_port, "Too many connections")])
        # A session that ends makes room again.
        self.assertCode(first.cmd("QUIT"), 221)
        self.assertTrue(first.wait_closed(5))
        fourth = self.client(proxy.port)
        self.assertEqual(fourth.greeting.code, 220)
        self.assertReply(second.cmd("NOOP"), 250)


if __name__ == "__main__":
    unittest.main()
