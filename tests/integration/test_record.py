"""
The decision record and the header limits: records of several workers
arrive whole whatever their size, to a file or to a pipe; bytes that are
not UTF-8 (in a backend's reply) are kept in the record as \\xNN instead
of dropping the field, and a HELO with such bytes is refused; a message
whose header is too big or has too many hops is refused with its reply
and recorded, and stripping tens of thousands of forged
Authentication-Results fields does not hold the other sessions of the
worker.
"""

import errno
import json
import os
import socket
import threading
import time
import unittest

from harness import (DOMAIN, PROJECT, ProxyTestCase, make_message, dot_stuff,
                     make_tempdir, remove_tree, wait_for)
import harness  # noqa: E402

ALICE = "alice@" + DOMAIN
BOB = "bob@" + DOMAIN
FILTER_DIR = os.environ.get("PORTCULLIS_FILTER_DIR") or os.path.join(
    PROJECT, "filters", ".libs")
SIZE_FILTER = "\n[filter size]\nmodule = size\ntimeout = 5\nlimit = 10m\n"


def long_rcpt(i):
    """A recipient address of about 260 bytes: few RCPTs make a big record."""
    return "%s%04d@%s.%s.%s.example.test" % ("r" * 60, i, "a" * 63, "b" * 63,
                                            "c" * 40)


class TestRecordsArriveWhole(ProxyTestCase):
    """Two workers, records of over 64 KiB each (the pipe's buffer, far
    over PIPE_BUF), written at the same time by both."""

    SESSIONS = 6
    TRANSACTIONS = 3
    RCPTS = 260

    def run_load(self, proxy):
        rcpts = [long_rcpt(i) for i in range(self.RCPTS)]
        msg = make_message("big record")
        errors = []

        def one_session():
            try:
                c = harness.SMTPClient(proxy.port, timeout=60)
                c.connect()
                c.ehlo()
                for _ in range(self.TRANSACTIONS):
                    # All of it pipelined: the RCPTs keep the worker busy.
                    c.send("MAIL FROM:<%s>\r\n" % ALICE)
                    c.send("".join("RCPT TO:<%s>\r\n" % r for r in rcpts))
                    c.send("DATA\r\n")
                    rs = c.replies(2 + self.RCPTS, timeout=60)
                    if rs[-1].code != 354:
                        errors.append("DATA: %r" % sorted(
                            {r.lines[-1] for r in rs}))
                        return
                    c.send(dot_stuff(msg))
                    if c.reply(timeout=60).code != 250:
                        errors.append("end of data refused")
                c.cmd("QUIT")
                c.close()
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))

        threads = [threading.Thread(target=one_session)
                   for _ in range(self.SESSIONS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        self.assertEqual(errors, [])

    def check_lines(self, data):
        """Every line is one whole transaction record; none is lost."""
        lines = data.split(b"\n")
        self.assertEqual(lines[-1], b"", "the last record is not ended")
        records = []
        for n, line in enumerate(lines[:-1]):
            try:
                records.append(json.loads(line))
            except ValueError:
                self.fail("line %d of %d is not JSON (%d bytes): %r ... %r"
                          % (n, len(lines) - 1, len(line), line[:120],
                             line[-120:]))
        tx = [r for r in records if r["type"] == "transaction"]
        self.assertEqual(len(tx), self.SESSIONS * self.TRANSACTIONS)
        for r in tx:
            self.assertEqual(r["action"], "accepted")
            self.assertEqual(len(r["recipients"]), self.RCPTS)
            self.assertEqual(r["recipients"][-1]["address"],
                             long_rcpt(self.RCPTS - 1))
        self.assertGreater(min(len(l) for l in lines[:-1]
                               if b'"transaction"' in l), 65536)
        # Both workers wrote (a session id starts with its worker's prefix).
        self.assertGreater(len({r["session"][:6] for r in tx}), 1,
                           "one worker took every session: nothing shared")

    def test_records_to_a_pipe_are_whole_lines(self):
        sink = self.start_sink(dump=False)
        tmp = make_tempdir("portcullis-record-")
        self.addCleanup(remove_tree, tmp)
        fifo = os.path.join(tmp, "decisions.pipe")
        os.mkfifo(fifo)
        # Opened first, so the daemon's open for writing does not block.
        rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        chunks = []
        stop = threading.Event()

        def reader():
            # A slow reader: the pipe fills and the writers block in it.
            while not stop.is_set():
                try:
                    b = os.read(rfd, 16384)
                    if b:
                        chunks.append(b)
                except OSError as e:
                    if e.errno != errno.EAGAIN:
                        raise
                time.sleep(0.003)
        t = threading.Thread(target=reader)
        t.start()
        try:
            proxy = self.start_proxy(backend_port=sink.port, workers=2,
                                     max_recipients=1000,
                                     log_decisions=fifo)
            self.run_load(proxy)
            proxy.stop()
            # The connection records of the closed sessions came last.
            time.sleep(0.5)
        finally:
            stop.set()
            t.join(10)
        while True:
            try:
                b = os.read(rfd, 65536)
            except OSError:
                break
            if not b:
                break
            chunks.append(b)
        os.close(rfd)
        self.check_lines(b"".join(chunks))

    def test_records_to_a_file_are_whole_lines(self):
        sink = self.start_sink(dump=False)
        proxy = self.start_proxy(backend_port=sink.port, workers=2,
                                 max_recipients=1000)
        self.run_load(proxy)
        proxy.wait_transaction(self.SESSIONS * self.TRANSACTIONS, timeout=20)
        with open(proxy.decisions_path, "rb") as f:
            self.check_lines(f.read())


class TestInvalidUtf8(ProxyTestCase):

    def test_helo_with_bytes_0x80_to_0xff_is_501_5_5_2(self):
        cap = self.start_capture()
        proxy = self.start_proxy(backend_port=cap.port)
        c = self.client(proxy.port)
        r = c.cmd(b"EHLO caf\xe9-\xff\x80.example.test")
        self.assertReply(r, 501, "5.5.2")
        self.assertEqual(r.lines, ["501 5.5.2 Error: invalid HELO/EHLO hostname"])
        r = c.cmd(b"HELO caf\xc3\xa9.example.test")
        self.assertReply(r, 501, "5.5.2")
        # The session goes on: a proper name is taken.
        self.assertCode(c.cmd("EHLO client.example.test"), 250)
        c.cmd("QUIT")
        rec = proxy.wait_decisions(lambda d: d["type"] == "connection")[0]
        self.assertEqual(rec["client"]["helo"], "client.example.test")

    def test_helo_names_real_mtas_send_are_taken(self):
        cap = self.start_capture()
        proxy = self.start_proxy(backend_port=cap.port)
        c = self.client(proxy.port)
        for name in ("mail_host.example.test", "WIN-PC_01", "[192.0.2.1]",
                     "[IPv6:2001:db8::1]", "mx.example.test."):
            self.assertCode(c.cmd("EHLO " + name), 250, name)
        for name in ("a..example", "-bad.example", "[300.1.1.1]",
                     "semi;colon.example", "[IPv6:zz]"):
            self.assertReply(c.cmd("EHLO " + name), 501, "5.5.2", name)

    def test_backend_reply_with_invalid_utf8_stays_in_the_record(self):
        cap = self.start_capture(
            data_reply=b"250 2.0.0 Ok: queued as Q\xe9\xff1 caf\xc3\xa9")
        proxy = self.start_proxy(backend_port=cap.port)
        c = self.client(proxy.port)
        r = c.mail_transaction(ALICE, [BOB], make_message("latin-1 reply"),
                               helo="client.example.test")
        self.assertCode(r["end"], 250)
        rec = proxy.wait_transaction(action="accepted")[0]
        self.assertEqual(rec["backend"]["reply"],
                         "250 2.0.0 Ok: queued as Q\\xe9\\xff1 caf\u00e9")
        self.assertEqual(rec["backend"]["queue_id"], "Q\\xe9\\xff1")
        self.assertEqual(rec["reply"],
                         "250 2.0.0 Ok: queued as Q\\xe9\\xff1 caf\u00e9")


class TestHeaderLimits(ProxyTestCase):
    """With a filter at the data stage (size, whose data hook runs on the
    event loop) the header block is parsed, capped and checked."""

    def setUp(self):
        if not os.path.exists(os.path.join(FILTER_DIR, "size.so")):
            self.skipTest("size filter not built")
        self.cap = self.start_capture()

    def proxy(self, **kw):
        return self.start_proxy(backend_port=self.cap.port, filters="size",
                                filter_dir=FILTER_DIR, extra=SIZE_FILTER,
                                workers=1, **kw)

    def send_message(self, proxy, msg):
        c = self.client(proxy.port, timeout=60)
        c.ehlo()
        r = c.mail_transaction(ALICE, [BOB], msg)
        return c, r

    def test_forged_authentication_results_do_not_hold_other_sessions(self):
        # The NOOPs probe latency for a second: thousands of them, past
        # the command limits, which are raised here.
        proxy = self.proxy(authserv_id="a.t", header_size_limit="1m",
                           max_commands=10000000, junk_command_limit=10000000)
        head = b"Authentication-Results: a.t; none\r\n" * 20000
        msg = head + make_message("forged")
        other = self.client(proxy.port)
        other.ehlo()
        c = self.client(proxy.port, timeout=60)
        c.ehlo()
        self.assertCode(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        self.assertCode(c.cmd("RCPT TO:<%s>" % BOB), 250)
        self.assertCode(c.cmd("DATA"), 354)
        c.send(dot_stuff(msg))
        # While the end of data is handled, the other session's NOOPs.
        worst = 0.0
        t_end = time.monotonic() + 1.0
        while time.monotonic() < t_end:
            t0 = time.monotonic()
            self.assertCode(other.cmd("NOOP"), 250)
            worst = max(worst, time.monotonic() - t0)
        r = c.reply(timeout=30)
        self.assertCode(r, 250)
        self.assertLess(worst, 0.2, "another session waited %.3f s" % worst)
        got = self.cap.wait_messages(1)[0]
        self.assertNotIn(b"Authentication-Results: a.t", got)

    def test_header_over_header_size_limit_is_552_5_3_4(self):
        proxy = self.proxy(header_size_limit="20k")
        msg = b"".join(b"X-Filler-%05d: %s\r\n" % (i, b"x" * 60)
                       for i in range(400)) + make_message("big header")
        c, r = self.send_message(proxy, msg)
        self.assertReply(r["end"], 552, "5.3.4")
        self.assertEqual(r["end"].lines,
                         ["552 5.3.4 Error: message header size exceeds limit"])
        rec = proxy.wait_transaction(action="rejected")[0]
        self.assertEqual(rec["reply"],
                         "552 5.3.4 Error: message header size exceeds limit")
        self.assertEqual(rec["reason"], "message header too big")
        self.assertEqual(self.cap.messages(), [])

    def test_header_under_the_limit_passes(self):
        proxy = self.proxy(header_size_limit="20k", hopcount_limit=3)
        msg = (b"Received: from a\r\n" * 3 +
               b"".join(b"X-Filler-%05d: %s\r\n" % (i, b"x" * 60)
                        for i in range(200)) + make_message("fits"))
        c, r = self.send_message(proxy, msg)
        self.assertCode(r["end"], 250)

    def test_more_hops_than_hopcount_limit_is_554_5_4_0(self):
        proxy = self.proxy()
        msg = b"".join(b"Received: from hop%d.example.test\r\n" % i
                       for i in range(51)) + make_message("looping")
        c, r = self.send_message(proxy, msg)
        self.assertReply(r["end"], 554, "5.4.0")
        self.assertEqual(r["end"].lines, ["554 5.4.0 Error: too many hops"])
        rec = proxy.wait_transaction(action="rejected")[0]
        self.assertEqual(rec["reply"], "554 5.4.0 Error: too many hops")
        self.assertEqual(rec["reason"], "too many hops")
        self.assertEqual(self.cap.messages(), [])


class TestHeaderLimitsWithoutFilters(TestHeaderLimits):
    """With no filter at all nothing else reads the header: the session
    checks the same limits itself, with the same replies and records."""

    # The stripping of forged fields is the filter chain's (nothing to
    # strip for without one).
    test_forged_authentication_results_do_not_hold_other_sessions = None

    def setUp(self):
        self.cap = self.start_capture()

    def proxy(self, **kw):
        return self.start_proxy(backend_port=self.cap.port, workers=1, **kw)


if __name__ == "__main__":
    unittest.main()
