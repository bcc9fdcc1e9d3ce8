"""
test_proxyproto.py - PROXY protocol listeners ([listener NAME] sections)

Raw v1 and v2 headers written by the test (TCP4, TCP6, UNKNOWN, LOCAL):
the decision record's client is the address the header named, with the
balancer (the socket's peer) as client.via, and the backend's XCLIENT
(the harness's capture server) names the same client; the per-client
limits count it. A table of malformed and hostile headers: each
connection is closed without a byte and recorded as dropped with the
decoder's reason, no worker dies, and the daemon serves afterwards. A
header written a byte at a time within proxy_timeout works, one past it
is dropped; a peer outside proxy_from is refused. Then a real HAProxy
(mode tcp, send-proxy-v2 and send-proxy) in front of two Portcullis
instances, with the client on 127.0.0.2: the records name 127.0.0.2.

Everything is on loopback; every wait is bounded.
"""

import os
import shutil
import signal
import socket
import struct
import subprocess
import time

from harness import (BUILD, ProxyTestCase, Portcullis, children, free_port,
                     make_tempdir, remove_tree, skip_unless_tool,
                     wait_listening, PORTCULLIS_BIN)

PLUGIN_DIR = os.environ.get("PORTCULLIS_TEST_PLUGIN_DIR") or os.path.join(
    BUILD, "tests", "plugins", ".libs")

SIG = b"\r\n\r\n\x00\r\nQUIT\n"
XCLIENT_KEYWORDS = ("PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES",
                    "XCLIENT NAME ADDR PORT PROTO HELO LOGIN")


def v2(ver_cmd, fam, body):
    return SIG + bytes([ver_cmd, fam]) + struct.pack("!H", len(body)) + body


def v2_tcp4(src, sport, dst="127.0.0.1", dport=25, tlvs=b""):
    return v2(0x21, 0x11, socket.inet_aton(src) + socket.inet_aton(dst) +
              struct.pack("!HH", sport, dport) + tlvs)


def v2_tcp6(src, sport, dst="::1", dport=25):
    return v2(0x21, 0x21, socket.inet_pton(socket.AF_INET6, src) +
              socket.inet_pton(socket.AF_INET6, dst) +
              struct.pack("!HH", sport, dport))


def listener_section(port, protocol="any", proxy_from="127.0.0.1",
                     timeout="2", name="balancer"):
    return ("\n[listener %s]\naddress = 127.0.0.1:%d\nproxy_protocol = %s\n"
            "proxy_from = %s\nproxy_timeout = %s\n"
            % (name, port, protocol, proxy_from, timeout))


def read_to_eof(sock, timeout):
    """All the bytes the server sends until it closes (or timeout)."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(4096)
        except socket.timeout:
            return data, False
        except ConnectionResetError:
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


class ProxyProtoCase(ProxyTestCase):

    def start(self, protocol="any", proxy_from="127.0.0.1", timeout="2",
              extra_filter="", **kw):
        self.capture = self.start_capture(keywords=XCLIENT_KEYWORDS)
        self.lb_port = free_port()
        self.proxy = self.start_proxy(
            backend_port=self.capture.port,
            extra=listener_section(self.lb_port, protocol, proxy_from,
                                   timeout) + extra_filter, **kw)
        self.assertTrue(wait_listening(self.lb_port, 10, self.proxy.proc))
        return self.proxy

    def via_balancer(self, header, source=None):
        """A client on the PROXY listener that sent header and got 220."""
        c = self.client(self.lb_port, connect=False, source=source)
        c.connect(read_greeting=False)
        c.send(header)
        r = c.reply()
        self.assertEqual(r.code, 220, r)
        return c

    def deliver(self, c):
        """One message through c; the port the balancer connected from."""
        self.assertEqual(c.ehlo().code, 250)
        self.assertEqual(c.cmd("MAIL FROM:<a@example.test>").code, 250)
        self.assertEqual(c.cmd("RCPT TO:<b@example.test>").code, 250)
        self.assertEqual(c.cmd("DATA").code, 354)
        c.send(b"Subject: t\r\n\r\nhello\r\n.\r\n")
        self.assertEqual(c.reply().code, 250)
        self.assertEqual(c.cmd("QUIT").code, 221)
        return c.local_port

    def transaction_record(self, via_port):
        recs = self.proxy.wait_decisions(
            lambda d: d.get("type") == "transaction" and
            d["client"].get("via", {}).get("port") == via_port)
        self.assertEqual(len(recs), 1, self.proxy.decisions())
        return recs[0]

    def connection_record(self, port):
        recs = self.proxy.wait_decisions(
            lambda d: d.get("type") == "connection" and
            d["client"].get("port") == port, timeout=10)
        self.assertEqual(len(recs), 1, self.proxy.decisions())
        return recs[0]

    def xclient_lines(self):
        return [l.decode() for l in self.capture.commands()
                if l.startswith(b"XCLIENT")]


class TestProxiedClients(ProxyProtoCase):

    def test_v1_tcp4_the_record_and_xclient_name_the_client_and_keep_the_balancer(self):
        self.start(protocol="v1")
        c = self.via_balancer(b"PROXY TCP4 192.0.2.7 127.0.0.1 53428 25\r\n")
        port = self.deliver(c)
        rec = self.transaction_record(port)
        self.assertEqual(rec["client"]["address"], "192.0.2.7")
        self.assertEqual(rec["client"]["port"], 53428)
        self.assertEqual(rec["client"]["via"],
                         {"address": "127.0.0.1", "port": port})
        self.assertEqual(rec["action"], "accepted")
        x = self.xclient_lines()
        self.assertEqual(len(x), 1, self.capture.commands())
        self.assertIn("ADDR=192.0.2.7", x[0].split())
        self.assertIn("PORT=53428", x[0].split())

    def test_v1_tcp6_client(self):
        self.start(protocol="v1")
        c = self.via_balancer(b"PROXY TCP6 2001:db8::7 ::1 4000 25\r\n")
        port = self.deliver(c)
        rec = self.transaction_record(port)
        self.assertEqual(rec["client"]["address"], "2001:db8::7")
        self.assertEqual(rec["client"]["port"], 4000)
        x = self.xclient_lines()
        self.assertEqual(len(x), 1)
        self.assertIn("ADDR=IPV6:2001:db8::7", x[0].split())

    def test_v2_tcp4_with_tlvs_and_smtp_in_the_same_write(self):
        self.start(protocol="v2")
        # A NOOP TLV, then the client's EHLO in the same segment: the
        # bytes after the header are the session's.
        header = v2_tcp4("198.51.100.9", 61000, tlvs=b"\x04\x00\x03abc")
        c = self.client(self.lb_port, connect=False)
        c.connect(read_greeting=False)
        c.send(header + b"EHLO client.example.test\r\n")
        self.assertEqual(c.reply().code, 220)
        self.assertEqual(c.reply().code, 250)
        self.assertEqual(c.cmd("MAIL FROM:<a@example.test>").code, 250)
        self.assertEqual(c.cmd("RCPT TO:<b@example.test>").code, 250)
        self.assertEqual(c.cmd("DATA").code, 354)
        c.send(b"Subject: t\r\n\r\nhello\r\n.\r\n")
        self.assertEqual(c.reply().code, 250)
        self.assertEqual(c.cmd("QUIT").code, 221)
        rec = self.transaction_record(c.local_port)
        self.assertEqual(rec["client"]["address"], "198.51.100.9")
        self.assertEqual(rec["client"]["helo"], "client.example.test")
        self.assertIn("ADDR=198.51.100.9", self.xclient_lines()[0].split())
        # The message reached the backend whole: no header byte in it.
        self.assertEqual(self.capture.messages(),
                         [b"Subject: t\r\n\r\nhello\r\n"])

    def test_v2_tcp6_client(self):
        self.start(protocol="any")
        c = self.via_balancer(v2_tcp6("2001:db8::25", 1025))
        port = self.deliver(c)
        rec = self.transaction_record(port)
        self.assertEqual(rec["client"]["address"], "2001:db8::25")
        self.assertEqual(rec["client"]["port"], 1025)

    def test_v1_unknown_and_v2_local_leave_the_balancer_as_client(self):
        self.start(protocol="any")
        for header in (b"PROXY UNKNOWN\r\n", v2(0x20, 0x00, b"")):
            c = self.via_balancer(header)
            port = self.deliver(c)
            rec = self.transaction_record(port)
            self.assertEqual(rec["client"]["address"], "127.0.0.1")
            self.assertEqual(rec["client"]["port"], port)
            self.assertEqual(rec["client"]["via"],
                             {"address": "127.0.0.1", "port": port})

    def test_a_header_written_a_byte_at_a_time_within_the_deadline_works(self):
        self.start(protocol="v1", timeout="3")
        header = b"PROXY TCP4 192.0.2.44 127.0.0.1 1234 25\r\n"
        c = self.client(self.lb_port, connect=False)
        c.connect(read_greeting=False)
        for b in header:
            c.send(bytes([b]))
            time.sleep(0.02)
        self.assertEqual(c.reply().code, 220)
        port = self.deliver(c)
        self.assertEqual(self.transaction_record(port)["client"]["address"],
                         "192.0.2.44")

    def test_the_received_header_names_the_proxied_client(self):
        self.start(protocol="v1", backend_client_identity="header")
        c = self.via_balancer(b"PROXY TCP4 192.0.2.61 127.0.0.1 7 25\r\n")
        self.deliver(c)
        msgs = self.capture.wait_messages(1)
        self.assertEqual(len(msgs), 1)
        self.assertTrue(msgs[0].startswith(
            b"Received: from client.example.test (unknown [192.0.2.61])\r\n"), msgs[0])
        self.assertEqual(self.xclient_lines(), [])

    def test_filters_see_the_proxied_client(self):
        probe = os.path.join(PLUGIN_DIR, "probe.so")
        if not os.path.exists(probe):
            self.skipTest("probe filter not built (make check): " + probe)
        self.start(protocol="v1", filters="p", extra_filter=(
            "\n[filter p]\nmodule = %s\nstage = connect\nverdict = reject\n"
            "code = 554\nenh = 5.7.1\nmatch = 192.0.2.66\n" % probe))
        c = self.client(self.lb_port, connect=False)
        c.connect(read_greeting=False)
        c.send(b"PROXY TCP4 192.0.2.66 127.0.0.1 8 25\r\n")
        self.assertEqual(c.reply().lines, ["554 5.7.1 probe reply"])
        rec = self.connection_record(8)
        self.assertEqual(rec["action"], "refused")
        self.assertEqual(rec["client"]["via"]["port"], c.local_port)
        # Another client behind the same balancer is not the one matched.
        other = self.via_balancer(b"PROXY TCP4 192.0.2.67 127.0.0.1 9 25\r\n")
        self.assertEqual(other.cmd("QUIT").code, 221)

    def test_a_proxied_client_refused_before_the_greeting_keeps_the_balancer_in_its_record(self):
        # max_sessions 1: the second client behind the balancer gets 421
        self.start(protocol="v1", max_sessions=1)
        first = self.via_balancer(b"PROXY TCP4 192.0.2.70 127.0.0.1 70 25\r\n")
        c = self.client(self.lb_port, connect=False)
        c.connect(read_greeting=False)
        c.send(b"PROXY TCP4 192.0.2.71 127.0.0.1 71 25\r\n")
        self.assertReply(c.reply(), 421, "4.3.2")
        rec = self.connection_record(71)
        self.assertEqual(rec["action"], "refused")
        self.assertEqual(rec["client"]["address"], "192.0.2.71")
        self.assertEqual(rec["client"]["via"], {"address": "127.0.0.1",
                                                "port": c.local_port})
        self.assertEqual(first.cmd("QUIT").code, 221)

    def test_the_plain_listener_beside_it_takes_no_header(self):
        self.start(protocol="any")
        c = self.client(self.proxy.port)
        port = self.deliver(c)
        recs = self.proxy.wait_decisions(
            lambda d: d.get("type") == "transaction" and
            d["client"]["port"] == port)
        self.assertEqual(recs[0]["client"]["address"], "127.0.0.1")
        self.assertNotIn("via", recs[0]["client"])

    def test_per_client_limits_count_the_proxied_address(self):
        self.start(protocol="v1", client_connection_limit=1,
                   client_limit_exceptions="")
        held = self.via_balancer(b"PROXY TCP4 192.0.2.50 127.0.0.1 1 25\r\n")
        c = self.client(self.lb_port, connect=False)
        c.connect(read_greeting=False)
        c.send(b"PROXY TCP4 192.0.2.50 127.0.0.1 2 25\r\n")
        r = c.reply()
        self.assertEqual(r.lines, ["421 4.7.0 proxy.portcullis.test Error: "
                                   "too many connections from 192.0.2.50"])
        # Another client behind the same balancer is served.
        other = self.via_balancer(b"PROXY TCP4 192.0.2.51 127.0.0.1 3 25\r\n")
        self.assertEqual(other.cmd("QUIT").code, 221)
        self.assertEqual(held.cmd("QUIT").code, 221)


# Malformed and hostile headers: (name, bytes, reason in the record).
M = "malformed PROXY header: "
BAD_HEADERS = [
    ("garbage", b"EHLO client.example.test\r\n", M + "not a PROXY protocol header"),
    ("tls hello", b"\x16\x03\x01\x00\xa5\x01\x00", M + "not a PROXY protocol header"),
    ("lower case", b"proxy TCP4 192.0.2.7 127.0.0.1 1 25\r\n", M + "not a PROXY protocol header"),
    ("v1 bad protocol", b"PROXY TCP5 192.0.2.7 127.0.0.1 1 25\r\n",
     M + "v1 protocol is not TCP4, TCP6 or UNKNOWN"),
    ("v1 family mismatch", b"PROXY TCP4 2001:db8::1 127.0.0.1 1 25\r\n",
     M + "v1 source is not an IPv4 address"),
    ("v1 tcp6 with ipv4", b"PROXY TCP6 192.0.2.7 ::1 1 25\r\n",
     M + "v1 source is not an IPv6 address"),
    ("v1 bad address", b"PROXY TCP4 192.0.2.999 127.0.0.1 1 25\r\n",
     M + "v1 source is not an IPv4 address"),
    ("v1 port out of range", b"PROXY TCP4 192.0.2.7 127.0.0.1 65536 25\r\n",
     M + "v1 port is not a number from 0 to 65535"),
    ("v1 leading zero port", b"PROXY TCP4 192.0.2.7 127.0.0.1 1 025\r\n",
     M + "v1 port is not a number from 0 to 65535"),
    ("v1 missing field", b"PROXY TCP4 192.0.2.7 127.0.0.1 1\r\n",
     M + "v1 line does not have four addresses and ports"),
    ("v1 double space", b"PROXY TCP4  192.0.2.7 127.0.0.1 1 25\r\n",
     M + "v1 fields not separated by single spaces"),
    ("v1 bare lf", b"PROXY TCP4 192.0.2.7 127.0.0.1 1 25\n",
     M + "v1 line ends in LF without CR"),
    ("v1 nul byte", b"PROXY TCP4 192.0.2.7\x00127.0.0.1 1 25\r\n",
     M + "v1 header holds a control or 8-bit byte"),
    ("v1 over 107 bytes", b"PROXY UNKNOWN " + b"A" * 120 + b"\r\n",
     M + "v1 header longer than 107 bytes"),
    ("v2 bad signature", b"\r\n\r\n\x00\r\nQUIX\n\x21\x11\x00\x0c" + b"\0" * 12,
     M + "v2 signature wrong"),
    ("v2 version 1", SIG + b"\x11\x11\x00\x0c" + b"\0" * 12, M + "v2 version is not 2"),
    ("v2 bad command", SIG + b"\x25\x11\x00\x0c" + b"\0" * 12,
     M + "v2 command is neither LOCAL nor PROXY"),
    ("v2 bad family", SIG + b"\x21\x51\x00\x0c" + b"\0" * 12, M + "v2 address family unknown"),
    ("v2 udp", SIG + b"\x21\x12\x00\x0c" + b"\0" * 12, M + "v2 transport is not a stream (TCP)"),
    ("v2 short for ipv6", SIG + b"\x21\x21\x00\x0c" + b"\0" * 12,
     M + "v2 length too short for its addresses"),
    ("v2 oversize length", SIG + b"\x21\x11\xff\xff", M + "v2 header longer than 2048 bytes"),
    ("v2 tlv past the end", v2_tcp4("192.0.2.7", 1, tlvs=b"\x01\x00\x09ab"),
     M + "v2 TLV runs past the header"),
    ("truncated then closed", v2_tcp4("192.0.2.7", 1)[:20],
     "connection closed before the PROXY header"),
    ("nothing then closed", b"", "connection closed before the PROXY header"),
]


class TestBadHeaders(ProxyProtoCase):

    def test_each_bad_header_is_closed_silently_and_recorded_and_the_daemon_serves_on(self):
        self.start(protocol="any")
        workers = children(self.proxy.pid)
        for name, data, reason in BAD_HEADERS:
            with self.subTest(name):
                s = socket.create_connection(("127.0.0.1", self.lb_port), 5)
                self.addCleanup(s.close)
                port = s.getsockname()[1]
                if data:
                    s.sendall(data)
                if name.endswith("then closed"):
                    s.shutdown(socket.SHUT_WR)
                got, closed = read_to_eof(s, 5)
                self.assertTrue(closed, "%s: not closed" % name)
                self.assertEqual(got, b"", name)
                rec = self.connection_record(port)
                self.assertEqual(rec["action"], "dropped", rec)
                self.assertEqual(rec["reason"], reason)
                self.assertEqual(rec["client"]["address"], "127.0.0.1")
                s.close()
        self.assertGreaterEqual(len(BAD_HEADERS), 20)
        # No worker died, and the listener still serves.
        self.assertEqual(children(self.proxy.pid), workers)
        c = self.via_balancer(b"PROXY TCP4 192.0.2.8 127.0.0.1 9 25\r\n")
        port = self.deliver(c)
        self.assertEqual(self.transaction_record(port)["client"]["address"],
                         "192.0.2.8")

    def test_a_v2_header_on_a_v1_listener_is_dropped(self):
        self.start(protocol="v1")
        s = socket.create_connection(("127.0.0.1", self.lb_port), 5)
        self.addCleanup(s.close)
        s.sendall(v2_tcp4("192.0.2.7", 1))
        got, closed = read_to_eof(s, 5)
        self.assertTrue(closed)
        rec = self.connection_record(s.getsockname()[1])
        self.assertEqual(rec["reason"],
                         M + "v2 header where only v1 is taken")

    def test_a_header_not_whole_within_the_deadline_is_dropped(self):
        self.start(protocol="any", timeout="1.5")
        for partial in (b"", b"PROXY TCP4 192.0.2.7 "):
            s = socket.create_connection(("127.0.0.1", self.lb_port), 5)
            self.addCleanup(s.close)
            start = time.monotonic()
            if partial:
                s.sendall(partial)
            got, closed = read_to_eof(s, 10)
            took = time.monotonic() - start
            self.assertTrue(closed)
            self.assertEqual(got, b"")
            self.assertGreaterEqual(took, 1.3)
            self.assertLess(took, 6)
            rec = self.connection_record(s.getsockname()[1])
            self.assertEqual(rec["action"], "dropped")
            self.assertEqual(rec["reason"],
                             "no whole PROXY header within proxy_timeout")

    def test_sigterm_drops_a_connection_still_waiting_for_its_header(self):
        self.start(protocol="any", timeout="30")
        s = socket.create_connection(("127.0.0.1", self.lb_port), 5)
        self.addCleanup(s.close)
        s.sendall(b"PROXY TCP4 ")
        time.sleep(0.3)
        start = time.monotonic()
        self.proxy.signal(signal.SIGTERM)
        got, closed = read_to_eof(s, 10)
        self.assertTrue(closed)
        self.assertEqual(got, b"")
        self.assertEqual(self.proxy.wait_exit(10), 0)
        self.assertLess(time.monotonic() - start, 8)
        rec = self.connection_record(s.getsockname()[1])
        self.assertEqual(rec["action"], "dropped")
        self.assertEqual(rec["reason"], "service shutting down")

    def test_a_peer_outside_proxy_from_is_refused_at_once(self):
        self.start(protocol="any", proxy_from="127.0.0.1/32, 10.0.0.0/8")
        s = socket.socket()
        self.addCleanup(s.close)
        s.bind(("127.0.0.2", 0))
        s.settimeout(5)
        s.connect(("127.0.0.1", self.lb_port))
        s.sendall(b"PROXY TCP4 192.0.2.7 127.0.0.1 1 25\r\n")
        got, closed = read_to_eof(s, 5)
        self.assertTrue(closed)
        self.assertEqual(got, b"")
        rec = self.connection_record(s.getsockname()[1])
        self.assertEqual(rec["action"], "refused")
        self.assertEqual(rec["reason"], "PROXY header from an untrusted address")
        self.assertEqual(rec["client"]["address"], "127.0.0.2")


class TestConfiguration(ProxyProtoCase):

    def check(self, extra):
        p = Portcullis(backend_port=25, extra=extra)
        p.dir = make_tempdir("portcullis-pp-conf-")
        self.addCleanup(remove_tree, p.dir)
        p.write_config()
        r = subprocess.run([PORTCULLIS_BIN, "-t", "-c", p.conf_path],
                           capture_output=True, text=True, timeout=30)
        return r.returncode, r.stderr + r.stdout, p.conf_path

    def test_errors_name_file_line_and_key(self):
        rc, out, path = self.check(
            "\n[listener lb]\naddress = 127.0.0.1:2525\n"
            "proxy_protocol = v3\nproxy_timeout = 0\n")
        self.assertEqual(rc, 1, out)
        lines = open(path).read().split("\n")
        n = lines.index("proxy_protocol = v3") + 1
        self.assertIn('%s:%d: [listener lb] proxy_protocol: not one of the '
                      'allowed values: "v3"' % (path, n), out)
        self.assertIn('%s:%d: [listener lb] proxy_timeout: value out of '
                      'range: "0"' % (path, n + 1), out)

    def test_a_proxy_listener_needs_proxy_from(self):
        rc, out, path = self.check(
            "\n[listener lb]\naddress = 127.0.0.1:2525\nproxy_protocol = v2\n")
        self.assertEqual(rc, 1, out)
        self.assertIn("[listener lb] proxy_from: required with "
                      "proxy_protocol: the networks of the load balancers", out)

    def test_a_good_listener_section_passes(self):
        rc, out, _ = self.check(listener_section(2525, "v2", "10.0.0.0/8, ::1"))
        self.assertEqual(rc, 0, out)


HAPROXY_CONF = """
global
    maxconn 200
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend v2in
    bind 127.0.0.1:%(fe2)d
    default_backend v2out
backend v2out
    server p2 127.0.0.1:%(lb2)d send-proxy-v2
frontend v1in
    bind 127.0.0.1:%(fe1)d
    default_backend v1out
backend v1out
    server p1 127.0.0.1:%(lb1)d send-proxy
"""


class TestHAProxy(ProxyTestCase):

    def test_haproxy_in_front_of_two_instances_the_records_name_the_real_client(self):
        skip_unless_tool("haproxy")
        capture = self.start_capture(keywords=XCLIENT_KEYWORDS)
        lb1, lb2 = free_port(), free_port()
        p1 = self.start_proxy(backend_port=capture.port,
                              extra=listener_section(lb1, "v1"))
        p2 = self.start_proxy(backend_port=capture.port,
                              extra=listener_section(lb2, "v2"))
        fe1, fe2 = free_port(), free_port()
        d = make_tempdir("portcullis-haproxy-")
        self.addCleanup(remove_tree, d)
        cfg = os.path.join(d, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(HAPROXY_CONF % dict(fe1=fe1, fe2=fe2, lb1=lb1, lb2=lb2))
        log = open(os.path.join(d, "haproxy.log"), "wb")
        self.addCleanup(log.close)
        hp = subprocess.Popen([shutil.which("haproxy"), "-db", "-f", cfg],
                              stdout=log, stderr=subprocess.STDOUT)

        def stop():
            hp.terminate()
            try:
                hp.wait(10)
            except subprocess.TimeoutExpired:
                hp.kill()
                hp.wait(5)
        self.addCleanup(stop)
        for port in (fe1, fe2, lb1, lb2):
            self.assertTrue(wait_listening(port, 10, hp),
                            open(os.path.join(d, "haproxy.log")).read())
        for fe, proxy in ((fe1, p1), (fe2, p2)):
            c = self.client(fe, connect=False, source="127.0.0.2")
            self.assertEqual(c.connect().code, 220)
            sport = c.local_port
            self.assertEqual(c.ehlo().code, 250)
            self.assertEqual(c.cmd("MAIL FROM:<a@example.test>").code, 250)
            self.assertEqual(c.cmd("RCPT TO:<b@example.test>").code, 250)
            self.assertEqual(c.cmd("DATA").code, 354)
            c.send(b"Subject: via haproxy\r\n\r\nhello\r\n.\r\n")
            self.assertEqual(c.reply().code, 250)
            self.assertEqual(c.cmd("QUIT").code, 221)
            recs = proxy.wait_decisions(
                lambda r: r.get("type") == "transaction")
            self.assertEqual(len(recs), 1, proxy.decisions())
            self.assertEqual(recs[0]["client"]["address"], "127.0.0.2")
            self.assertEqual(recs[0]["client"]["port"], sport)
            self.assertEqual(recs[0]["client"]["via"]["address"], "127.0.0.1")
            self.assertNotEqual(recs[0]["client"]["via"]["port"], sport)
        xc = [l for l in capture.commands() if l.startswith(b"XCLIENT")]
        self.assertEqual(len(xc), 2)
        for line in xc:
            self.assertIn(b"ADDR=127.0.0.2", line.split())
