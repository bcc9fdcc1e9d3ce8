"""
test_daemon.py - the daemon as an administrator runs it

Privilege drop, log rotation, a full spool disk, a slow client with a
backend that times out, a crashed worker, and memory that stays bounded
whatever the message size.
"""

import os
import pwd
import resource
import signal
import time
import unittest

from harness import (DOMAIN, ProxyTestCase, children, dot_stuff,
                     make_message, wait_for)


def status_field(pid, name):
    """A field of /proc/PID/status, e.g. Uid or VmHWM."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(name + ":"):
                return line.split(":", 1)[1].split()
    return None


class TestPrivileges(ProxyTestCase):
    def test_workers_run_as_the_configured_user_and_mail_flows(self):
        sink = self.start_sink()
        nobody = pwd.getpwnam("nobody")
        proxy = self.make_world_readable_proxy(sink.port, user="nobody")
        workers = children(proxy.pid, anvil=True)
        self.assertTrue(workers, "no worker processes")
        # every child (the workers, the anvil) runs as the user
        for pid in workers:
            self.assertEqual(int(status_field(pid, "Uid")[1]), nobody.pw_uid)
        # the master, which talks to no client, stays root to read
        # root-only keys again at a reload
        self.assertEqual(int(status_field(proxy.pid, "Uid")[1]), 0)
        spool = os.stat(os.path.join(proxy.dir, "spool"))
        self.assertEqual(spool.st_uid, nobody.pw_uid)
        self.assertEqual(spool.st_mode & 0o777, 0o700)
        c = self.client(proxy.port)
        c.ehlo("client.example.net")
        r = c.mail_transaction("a@example.net", ["b@" + DOMAIN], make_message())
        self.assertCode(r["end"], 250)
        self.assertEqual(sink.wait_count(1), 1)

    def make_world_readable_proxy(self, backend_port, **kw):
        from harness import Portcullis
        proxy = Portcullis(backend_port=backend_port, **kw)
        proxy.write_config()
        # The unprivileged workers must reach their spool and log.
        os.chmod(proxy.dir, 0o755)
        self.addCleanup(proxy.stop)
        proxy.start()
        self.proxy_output_on_failure(proxy)
        return proxy


class TestDecisionLogRotation(ProxyTestCase):
    def test_sigusr1_reopens_the_decision_log_after_it_was_moved(self):
        sink = self.start_sink()
        proxy = self.start_proxy(sink.port, workers=2)
        self.send_one(proxy, "first")
        wait_for(lambda: len(proxy.decisions()) == 1, 5)
        os.rename(proxy.decisions_path, proxy.decisions_path + ".1")
        proxy.signal(signal.SIGUSR1)
        self.assertTrue(proxy.wait_log_reopened(10),
                        "the workers did not reopen the decision log")
        self.send_one(proxy, "second")
        self.assertTrue(wait_for(lambda: os.path.exists(proxy.decisions_path)
                                 and len(proxy.decisions()) == 1, 5),
                        "no record in the reopened log")
        with open(proxy.decisions_path + ".1") as f:
            self.assertEqual(len(f.read().splitlines()), 1)
        self.assertEqual(proxy.decisions()[0]["action"], "accepted")

    def send_one(self, proxy, subject):
        c = self.client(proxy.port)
        c.ehlo("client.example.net")
        r = c.mail_transaction("a@example.net", ["b@" + DOMAIN],
                               make_message(subject=subject))
        self.assertCode(r["end"], 250)
        c.cmd("QUIT")


class TestFullDisk(ProxyTestCase):
    def test_spool_write_failure_gives_452_4_3_1_and_nothing_reaches_the_backend(self):
        sink = self.start_sink()
        # A file size limit fails spool writes the way a full disk does.
        old = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, old[1]))
        try:
            proxy = self.start_proxy(sink.port, spool_memory_limit="16k")
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, old)
        c = self.client(proxy.port)
        c.ehlo("client.example.net")
        big = make_message(body=b"x" * 998 + b"\r\n" * 1 + (b"y" * 78 + b"\r\n") * 8000)
        r = c.mail_transaction("a@example.net", ["b@" + DOMAIN], big)
        self.assertReply(r["end"], 452, "4.3.1")
        # The session goes on: a small message still passes.
        r = c.mail_transaction("a@example.net", ["b@" + DOMAIN], make_message())
        self.assertCode(r["end"], 250)
        self.assertEqual(sink.settled_count(), 1)
        actions = [d["action"] for d in proxy.transactions()]
        self.assertEqual(actions, ["tempfailed", "accepted"])


class TestSlowClient(ProxyTestCase):
    def test_backend_transaction_survives_a_client_slower_than_the_backend_timeout(self):
        postfix = self.start_postfix(extra_main={"smtpd_timeout": "3s"})
        proxy = self.start_proxy(postfix.port, backend_keepalive=1,
                                 timeout_data=30)
        c = self.client(proxy.port)
        c.ehlo("client.example.net")
        self.assertCode(c.cmd("MAIL FROM:<a@example.net>"), 250)
        self.assertCode(c.cmd("RCPT TO:<alice@%s>" % DOMAIN), 250)
        self.assertCode(c.cmd("DATA"), 354)
        message = dot_stuff(make_message(subject="slow"))
        # Seven seconds of trickle: twice Postfix's smtpd_timeout.
        pieces = [message[i:i + 40] for i in range(0, len(message), 40)]
        for piece in pieces:
            c.send(piece)
            time.sleep(7.0 / len(pieces))
        self.assertCode(c.reply(timeout=20), 250)
        self.assertEqual(len(postfix.wait_messages("alice", 1)), 1)


class TestWorkerCrash(ProxyTestCase):
    def test_a_killed_worker_is_replaced_and_mail_keeps_flowing(self):
        sink = self.start_sink()
        proxy = self.start_proxy(sink.port, workers=2)
        workers = children(proxy.pid)
        self.assertEqual(len(workers), 2)
        # SIGKILL: a crash ASan cannot intercept, like a plugin's abort.
        os.kill(workers[0], signal.SIGKILL)
        self.assertTrue(wait_for(lambda: len(children(proxy.pid)) == 2 and
                                 workers[0] not in children(proxy.pid), 10),
                        "the worker was not replaced")
        for i in range(6):
            c = self.client(proxy.port)
            c.ehlo("client.example.net")
            r = c.mail_transaction("a@example.net", ["b@" + DOMAIN],
                                   make_message(subject="after %d" % i))
            self.assertCode(r["end"], 250)
            c.close()
        self.assertEqual(sink.wait_count(6), 6)
        self.assertIn("killed by signal 9", proxy.stderr())


class TestBoundedMemory(ProxyTestCase):
    def test_a_64_mib_message_passes_intact_in_bounded_memory(self):
        sink = self.start_sink()
        saved = os.environ.get("ASAN_OPTIONS")
        # ASan keeps freed memory in quarantine; keep it small here so the
        # resident size shows what the daemon holds, not what ASan does.
        os.environ["ASAN_OPTIONS"] = (saved + ":" if saved else "") + "quarantine_size_mb=4"
        try:
            proxy = self.start_proxy(sink.port, workers=1,
                                     spool_memory_limit="256k",
                                     message_size_limit="100m")
        finally:
            if saved is None:
                del os.environ["ASAN_OPTIONS"]
            else:
                os.environ["ASAN_OPTIONS"] = saved
        worker = children(proxy.pid)[0]
        base = int(status_field(worker, "VmRSS")[0])
        line = b"0123456789" * 7 + b"abcdef\r\n"
        body = line * (64 * 1024 * 1024 // len(line))
        c = self.client(proxy.port, timeout=120)
        c.ehlo("client.example.net")
        r = c.mail_transaction("a@example.net", ["b@" + DOMAIN],
                               make_message(subject="big", body=body))
        self.assertCode(r["end"], 250)
        self.assertEqual(sink.wait_count(1, timeout=60), 1)
        peak = int(status_field(worker, "VmHWM")[0])
        # 64 MiB went through; the worker grew by far less.
        self.assertLess(peak - base, 24 * 1024,
                        "worker grew by %d KiB for a 64 MiB message" % (peak - base))
        got = sink.messages()[0]
        # Every line arrived (the sink's dump has LF line ends).
        self.assertEqual(got.count(b"0123456789" * 7 + b"abcdef\n"),
                         body.count(line))


if __name__ == "__main__":
    unittest.main()
