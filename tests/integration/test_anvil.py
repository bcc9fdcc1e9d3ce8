"""
test_anvil.py - per-client limits, counted by the anvil for every worker

Sessions per client address (client_connection_limit), per /24
(client_network_connection_limit; an IPv6 client's /64, through a
PROXY listener), new connections per minute
(client_connection_rate_limit), client_limit_exceptions; the anvil
process shared by two workers, a killed worker's counts released, a
killed anvil failing open and restarted, and -t on bad values.

The clients connect from 127.0.0.2 and up (the harness exempts 127.0.0.1
for the other suites); 127.0.0.0/8 is all loopback, so 127.0.0.x and
127.0.1.x are two /24 networks. smtp-sink is the backend; every wait is
bounded.
"""

import os
import signal
import time

from harness import (Portcullis, ProxyTestCase, children, free_port, wait_for,
                     wait_listening)

HOST = "proxy.portcullis.test"


def refusal(text):
    return ["421 4.7.0 %s Error: %s" % (HOST, text)]


class AnvilCase(ProxyTestCase):
    """A proxy with only the limits a test names (the others 0)."""

    def start(self, **kw):
        self.sink = self.start_sink()
        conf = dict(client_connection_limit=0,
                    client_network_connection_limit=0,
                    client_connection_rate_limit=0,
                    client_limit_exceptions="")
        conf.update(kw)
        self.proxy = self.start_proxy(backend_port=self.sink.port, **conf)
        return self.proxy

    def session(self, source):
        """A session from source that got its greeting (220)."""
        c = self.client(self.proxy.port, connect=False, source=source)
        r = c.connect()
        self.assertEqual(r.code, 220, "%s: %r" % (source, r))
        return c

    def refused(self, source, text):
        """A client from source refused before the greeting with text."""
        c = self.client(self.proxy.port, connect=False, source=source)
        r = c.connect()
        self.assertEqual(r.lines, refusal(text))
        self.assertTrue(c.wait_closed(5))
        return c

    def refusal_records(self, count=1):
        return self.proxy.wait_decisions(
            lambda d: d.get("type") == "connection" and
            d.get("action") == "refused", count)

    def end(self, c):
        """QUIT, and wait until the session's end reached the anvil (its
        record is written just before the notice is sent)."""
        port = c.local_port
        self.assertEqual(c.cmd("QUIT").code, 221)
        self.assertTrue(c.wait_closed(5))
        self.assertTrue(self.proxy.wait_decisions(
            lambda d: d.get("client", {}).get("port") == port))


class TestSessionsPerAddress(AnvilCase):

    def test_the_client_over_its_session_limit_gets_421_while_another_address_is_served(self):
        self.start(client_connection_limit=3)
        held = [self.session("127.0.0.2") for _ in range(3)]
        self.refused("127.0.0.2", "too many connections from 127.0.0.2")
        recs = self.refusal_records()
        self.assertEqual(len(recs), 1, recs)
        self.assertEqual(recs[0]["client"]["address"], "127.0.0.2")
        self.assertEqual(recs[0]["reason"],
                         "too many connections from 127.0.0.2 "
                         "(client_connection_limit)")
        # Another client, even in the same network, is not concerned.
        other = self.session("127.0.0.3")
        self.assertEqual(other.cmd("EHLO client.example.test").code, 250)
        for c in held:
            self.assertEqual(c.cmd("NOOP").code, 250)

    def test_closing_a_session_lets_the_next_one_in(self):
        self.start(client_connection_limit=2)
        a = self.session("127.0.0.2")
        self.session("127.0.0.2")
        self.refused("127.0.0.2", "too many connections from 127.0.0.2")
        self.end(a)
        self.session("127.0.0.2")
        self.refused("127.0.0.2", "too many connections from 127.0.0.2")
        self.assertEqual(len(self.refusal_records(2)), 2)


class TestRate(AnvilCase):

    def test_the_connection_over_the_rate_in_a_minute_gets_421(self):
        self.start(client_connection_rate_limit=3)
        for _ in range(3):
            self.end(self.session("127.0.0.2"))
        self.refused("127.0.0.2",
                     "too many connections per minute from 127.0.0.2")
        recs = self.refusal_records()
        self.assertEqual(recs[0]["reason"],
                         "too many connections per minute from 127.0.0.2 "
                         "(client_connection_rate_limit)")
        self.session("127.0.0.3")


class TestNetwork(AnvilCase):

    def test_the_slash_24_over_its_limit_is_refused_and_another_network_served(self):
        self.start(client_network_connection_limit=2)
        self.session("127.0.0.2")
        self.session("127.0.0.3")
        self.refused("127.0.0.4",
                     "too many connections from network 127.0.0.0/24")
        recs = self.refusal_records()
        self.assertEqual(recs[0]["reason"],
                         "too many connections from network 127.0.0.0/24 "
                         "(client_network_connection_limit)")
        self.session("127.0.1.2")
        self.session("127.0.1.3")


    def test_the_slash_64_of_an_ipv6_client_is_its_network(self):
        # Loopback has one IPv6 address: the clients come through a
        # listener that takes a PROXY header from 127.0.0.1, which makes
        # the address they name the client's everywhere, limits included.
        lb = free_port()
        self.start(client_network_connection_limit=2, extra=(
            "\n[listener balancer]\naddress = 127.0.0.1:%d\n"
            "proxy_protocol = v1\nproxy_from = 127.0.0.1\n" % lb))
        self.assertTrue(wait_listening(lb, 10, self.proxy.proc))

        def via(address, port):
            c = self.client(lb, connect=False)
            c.connect(read_greeting=False)
            c.send(b"PROXY TCP6 %s ::1 %d 25\r\n" % (address.encode(), port))
            return c, c.reply()

        held = []
        for address, port in (("2001:db8:1:2::a", 1001),
                              ("2001:db8:1:2:ffff:ffff:ffff:b", 1002)):
            c, r = via(address, port)
            self.assertEqual(r.code, 220, "%s: %r" % (address, r))
            held.append(c)
        c, r = via("2001:db8:1:2::c", 1003)
        self.assertEqual(r.lines, refusal(
            "too many connections from network 2001:db8:1:2::/64"))
        self.assertTrue(c.wait_closed(5))
        recs = self.refusal_records()
        self.assertEqual((recs[0]["client"]["address"], recs[0]["reason"]),
                         ("2001:db8:1:2::c",
                          "too many connections from network 2001:db8:1:2::/64 "
                          "(client_network_connection_limit)"))
        # The next /64 is another network.
        for address, port in (("2001:db8:1:3::a", 1004), ("2001:db8:1:3::b", 1005)):
            c, r = via(address, port)
            self.assertEqual(r.code, 220, "%s: %r" % (address, r))
            held.append(c)
        for c in held:
            self.assertEqual(c.cmd("NOOP").code, 250)


class TestExceptions(AnvilCase):

    def test_a_network_in_client_limit_exceptions_is_not_limited(self):
        self.start(client_connection_limit=1,
                   client_limit_exceptions="127.0.0.0/30, [::1]/128")
        for _ in range(4):
            self.session("127.0.0.2")
        self.session("127.0.0.5")
        self.refused("127.0.0.5", "too many connections from 127.0.0.5")


class TestWorkers(AnvilCase):

    def test_two_workers_share_the_counts(self):
        proxy = self.start(workers=2, client_connection_limit=3)
        self.assertTrue(wait_for(lambda: len(children(proxy.pid)) == 2, 10))
        a, b = children(proxy.pid)
        # A stopped worker accepts nothing: each session goes to the
        # worker that runs.
        os.kill(a, signal.SIGSTOP)
        try:
            self.session("127.0.0.2")
            self.session("127.0.0.2")
        finally:
            os.kill(a, signal.SIGCONT)
        os.kill(b, signal.SIGSTOP)
        try:
            self.session("127.0.0.2")
            self.refused("127.0.0.2", "too many connections from 127.0.0.2")
        finally:
            os.kill(b, signal.SIGCONT)
        recs = self.refusal_records()
        self.assertEqual(len(recs), 1, recs)

    def test_a_killed_worker_takes_its_counts_with_it(self):
        proxy = self.start(client_connection_limit=2)
        self.assertTrue(wait_for(lambda: len(children(proxy.pid)) == 1, 10))
        worker = children(proxy.pid)[0]
        held = [self.session("127.0.0.2") for _ in range(2)]
        self.refused("127.0.0.2", "too many connections from 127.0.0.2")
        os.kill(worker, signal.SIGKILL)
        for c in held:
            self.assertTrue(c.wait_closed(5))
        self.assertTrue(wait_for(
            lambda: len(children(proxy.pid)) == 1 and
            worker not in children(proxy.pid), 10))
        self.assertTrue(proxy.wait_log(r"worker accepting connections", 2))
        self.session("127.0.0.2")
        self.session("127.0.0.2")
        self.refused("127.0.0.2", "too many connections from 127.0.0.2")


class TestAnvilProcess(AnvilCase):

    def anvil(self):
        self.assertTrue(wait_for(lambda: children(self.proxy.pid, anvil=True), 10))
        return children(self.proxy.pid, anvil=True)[0]

    def wait_limited(self, source):
        """Until a client from source is refused (a worker that gave up on
        the anvil asks again at most once a second); bounded."""
        def limited():
            c = self.client(self.proxy.port, connect=False, source=source)
            r = c.connect()
            if r.code == 421:
                self.assertEqual(r.lines, refusal(
                    "too many connections from %s" % source))
                return True
            time.sleep(0.3)
            return False
        self.assertTrue(wait_for(limited, 15, 0))

    def test_a_killed_anvil_is_restarted_and_its_counts_start_from_zero(self):
        self.start(client_connection_limit=1)
        anvil = self.anvil()
        self.session("127.0.0.2")
        self.refused("127.0.0.2", "too many connections from 127.0.0.2")
        os.kill(anvil, signal.SIGKILL)
        self.assertTrue(self.proxy.wait_log(r"anvil %d killed by signal 9" % anvil))
        self.assertTrue(self.proxy.wait_log(r"restarting the anvil"))
        self.assertNotEqual(self.anvil(), anvil)
        # The held session was counted by the dead anvil only.
        c = self.session("127.0.0.2")
        self.assertEqual(c.cmd("EHLO client.example.test").code, 250)
        self.wait_limited("127.0.0.2")

    def test_a_hung_anvil_costs_each_client_at_most_the_deadline(self):
        self.start(client_connection_limit=1)
        anvil = self.anvil()
        self.session("127.0.0.2")
        os.kill(anvil, signal.SIGSTOP)
        try:
            started = time.monotonic()
            for _ in range(3):
                c = self.session("127.0.0.2")
                self.assertEqual(c.cmd("EHLO client.example.test").code, 250)
            # 100 ms for the first; then it is not asked for a second.
            self.assertLess(time.monotonic() - started, 2.0)
            self.assertTrue(self.proxy.wait_log(
                r"anvil did not answer in time: 1 clients served without "
                r"per-client limits"))
        finally:
            os.kill(anvil, signal.SIGCONT)
        # Its late answers are taken back; the held session still counts.
        self.wait_limited("127.0.0.2")
        self.assertEqual(self.anvil(), anvil)


class TestConfiguration(AnvilCase):

    def check(self, line):
        proxy = Portcullis(backend_port=9)
        self.addCleanup(proxy.stop)
        text = ("[portcullis]\nlisten = 127.0.0.1:2525\n%s\n\n"
                "[backend]\nservers = 127.0.0.1:10025\n" % line)
        return proxy, proxy.check_config(text)

    def test_bad_values_are_named_with_file_and_line(self):
        for line, message in (
                ("client_connection_limit = many",
                 '[portcullis] client_connection_limit: expected a number: "many"'),
                ("client_connection_rate_limit = -1",
                 '[portcullis] client_connection_rate_limit: expected a number'),
                ("client_limit_exceptions = 127.0.0.0/8, 10.1.2.3/8",
                 '[portcullis] client_limit_exceptions: host bits set past '
                 'the prefix length: "10.1.2.3/8"'),
                ("client_limit_exceptions = 192.0.2.0/33",
                 '[portcullis] client_limit_exceptions: bad prefix length'),
                ("client_limit_exceptions = mail.example.org",
                 '[portcullis] client_limit_exceptions: expected a network')):
            with self.subTest(line=line):
                proxy, r = self.check(line)
                err = r.stderr.decode()
                self.assertNotEqual(r.returncode, 0)
                self.assertIn("%s:3: %s" % (os.path.join(proxy.dir, "check.conf"),
                                            message), err)

    def test_good_values_pass(self):
        proxy, r = self.check("client_connection_limit = 10\n"
                              "client_network_connection_limit = 0\n"
                              "client_limit_exceptions = 192.0.2.0/24 "
                              "[2001:db8::]/32, 10.0.0.1")
        self.assertEqual(r.returncode, 0, r.stderr)
