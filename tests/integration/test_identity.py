"""
test_identity.py - who the client is: XCLIENT and XFORWARD from a trusted
peer ([listener NAME] trusted_xclient), and the client's name by a
forward-confirmed reverse lookup.

XCLIENT and XFORWARD: a listener with trusted_xclient = 127.0.0.0/8
offers both in its EHLO reply and takes them (Postfix's semantics:
XCLIENT starts a new session for the client it names and answers with a
new 220 greeting; XFORWARD names the client of the next transaction
only); the plain listener offers neither and answers them as Postfix
answers a host outside smtpd_authorized_xclient_hosts, 550 5.7.0, and
nothing changes. What a user sees is pinned: the replies, the decision
record's client (address, port, helo, name, via with the command), the
XCLIENT the capture backend gets, what a probe filter sees
(pc_client_addr(), pc_client_name(), pc_helo(), pc_auth_user()) and the
Received: header. Then deployment 3 of DESIGN.md: a real Postfix front
with smtpd_proxy_filter pointing at Portcullis, which relays to a second
Postfix; a client bound to 127.0.0.2 sends through the front, and both
the record and the delivering Postfix name 127.0.0.2; a relay attempt
from it is refused by Portcullis's relay filter (which trusts 127.0.0.1
only), and the front passes the 554 on.

The client's name: the loopback DNS server (tests/dns) serves PTR and A
records for clients bound to 127.0.0.2 to 127.0.0.6: a confirmed name,
a PTR whose name does not lead back (unconfirmed), no PTR, a PTR that
times out, a forward lookup that times out; and a server that never
answers. Each shows in the record, the backend's XCLIENT NAME= and
REVERSE_NAME=, what filters see, and the Received: header; the silent
server delays the session by no more than the [dns] timeout.

Everything is on loopback; every wait is bounded.
"""

import os
import re
import sys
import time
import unittest

from harness import (DOMAIN, PROJECT, Postfix, ProxyTestCase, free_port,
                     header_fields, make_message, wait_for, wait_listening)
import harness

sys.path.insert(0, os.path.join(PROJECT, "tests", "dns"))
from dnsserver import DNSServer  # noqa: E402

PLUGIN_DIR = os.environ.get("PORTCULLIS_TEST_PLUGIN_DIR") or os.path.join(
    PROJECT, "tests", "plugins", ".libs")
PROBE = os.path.join(PLUGIN_DIR, "probe.so")
FILTER_DIR = os.environ.get("PORTCULLIS_FILTER_DIR") or os.path.join(
    PROJECT, "filters", ".libs")

ALICE = "alice@" + DOMAIN
BOB = "bob@" + DOMAIN

# What the backend takes: Postfix's list, and REVERSE_NAME (Postfix 3.x).
BACKEND_KEYWORDS = ("PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES",
                    "XCLIENT NAME REVERSE_NAME ADDR PORT PROTO HELO LOGIN")
XCLIENT_OFFER = "XCLIENT NAME ADDR PORT PROTO HELO LOGIN DESTADDR DESTPORT"
XFORWARD_OFFER = "XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE"
REFUSED = "550 5.7.0 Error: insufficient authorization"


def trusted_listener(port, trusted="127.0.0.0/8", name="front"):
    return ("\n[listener %s]\naddress = 127.0.0.1:%d\ntrusted_xclient = %s\n"
            % (name, port, trusted))


def probe_section(stage):
    """A probe filter that reports who it sees as the client at stage."""
    return ("\n[filter who]\nmodule = %s\nstage = %s\nreport_client = yes\n"
            % (PROBE, stage))


def attrs(line):
    """XCLIENT NAME=x ADDR=y -> {"NAME": "x", "ADDR": "y"}"""
    return dict(w.split("=", 1) for w in line.split()[1:])


class IdentityCase(ProxyTestCase):

    def start(self, trusted="127.0.0.0/8", extra="", **kw):
        self.capture = self.start_capture(keywords=BACKEND_KEYWORDS)
        self.front_port = free_port()
        self.proxy = self.start_proxy(
            backend_port=self.capture.port,
            extra=trusted_listener(self.front_port, trusted) + extra, **kw)
        self.assertTrue(wait_listening(self.front_port, 10, self.proxy.proc))
        return self.proxy

    def send_message(self, c, rcpt=ALICE, subject="t"):
        self.assertEqual(c.cmd("MAIL FROM:<%s>" % BOB).code, 250)
        self.assertEqual(c.cmd("RCPT TO:<%s>" % rcpt).code, 250)
        self.assertEqual(c.cmd("DATA").code, 354)
        c.send(b"Subject: " + subject.encode() + b"\r\n\r\nhello\r\n.\r\n")
        self.assertEqual(c.reply().code, 250)

    def records(self, count, **match):
        recs = self.proxy.wait_transaction(count=count, **match)
        self.assertEqual(len(recs), count, self.proxy.decisions())
        return recs

    def xclients(self):
        return [attrs(l.decode()) for l in self.capture.commands()
                if l.startswith(b"XCLIENT ")]

    def seen(self, record, stage):
        """What the probe filter reported at stage: ADDR PORT NAME HELO LOGIN."""
        e = [x for x in harness.filter_entries(record, "who")
             if x.get("stage") == stage]
        self.assertEqual(len(e), 1, record)
        return e[0]["results"]["client"]

    def need_probe(self):
        if not os.path.exists(PROBE):
            self.skipTest("probe filter not built (make check): " + PROBE)


class TestTrustedPeers(IdentityCase):

    def test_ehlo_offers_xclient_and_xforward_to_a_trusted_peer_only(self):
        self.start()
        c = self.client(self.front_port)
        kw = c.ehlo("front.example.test").keywords
        self.assertEqual("XCLIENT " + kw["XCLIENT"], XCLIENT_OFFER)
        self.assertEqual("XFORWARD " + kw["XFORWARD"], XFORWARD_OFFER)
        c = self.client(self.proxy.port)
        kw = c.ehlo("front.example.test").keywords
        self.assertFalse([k for k in kw if k.startswith(("XCLIENT", "XFORWARD"))], kw)

    def test_untrusted_xclient_and_xforward_are_refused_and_change_nothing(self):
        self.start()
        c = self.client(self.proxy.port)
        c.ehlo("honest.example.test")
        r = c.cmd("XCLIENT ADDR=192.0.2.66 NAME=spoofed.example HELO=spoofed")
        self.assertEqual(r.lines, [REFUSED])
        r = c.cmd("XFORWARD ADDR=192.0.2.67 HELO=spoofed2")
        self.assertEqual(r.lines, [REFUSED])
        self.send_message(c)
        c.cmd("QUIT")
        rec = self.records(1)[0]
        self.assertEqual(rec["client"]["address"], "127.0.0.1")
        self.assertEqual(rec["client"]["helo"], "honest.example.test")
        self.assertNotIn("via", rec["client"])
        x = self.xclients()
        self.assertEqual(len(x), 1, self.capture.commands())
        self.assertEqual(x[0]["ADDR"], "127.0.0.1")
        self.assertEqual(x[0]["HELO"], "honest.example.test")

    def test_a_listener_trusting_other_networks_refuses_loopback(self):
        self.start(trusted="192.0.2.0/24")
        c = self.client(self.front_port)
        kw = c.ehlo("x.example.test").keywords
        self.assertNotIn("XCLIENT", kw)
        self.assertEqual(c.cmd("XCLIENT ADDR=192.0.2.1").lines, [REFUSED])

    def test_xclient_starts_a_new_session_for_the_client_it_names(self):
        self.need_probe()
        self.start(filters="who", extra=probe_section("mail"))
        c = self.client(self.front_port)
        c.ehlo("front.example.test")
        r = c.cmd("XCLIENT NAME=mail.example.org ADDR=192.0.2.7 PORT=4711 "
                  "PROTO=ESMTP HELO=helo.example.org LOGIN=alice+40example.org")
        self.assertEqual(r.lines, ["220 proxy.portcullis.test ESMTP"])
        # The new client is not trusted: no XCLIENT for it, nor a second one.
        kw = c.ehlo("helo.example.org").keywords
        self.assertNotIn("XCLIENT", kw)
        self.assertEqual(c.cmd("XCLIENT ADDR=192.0.2.8").lines, [REFUSED])
        self.send_message(c)
        c.cmd("QUIT")
        rec = self.records(1)[0]
        self.assertEqual(rec["client"], {
            "address": "192.0.2.7", "port": 4711, "helo": "helo.example.org",
            "name": "mail.example.org", "reverse_name": "mail.example.org",
            "name_status": "confirmed",
            "via": {"address": "127.0.0.1", "port": c.local_port,
                    "command": "XCLIENT"}})
        self.assertEqual(self.seen(rec, "mail"),
                         "192.0.2.7 4711 mail.example.org helo.example.org "
                         "alice@example.org")
        # The backend's last XCLIENT (an earlier one may have named the
        # peer, prepared at its EHLO on a parked connection) names the client.
        x = self.xclients()[-1]
        self.assertEqual((x["ADDR"], x["PORT"], x["NAME"], x["REVERSE_NAME"], x["HELO"]),
                         ("192.0.2.7", "4711", "mail.example.org",
                          "mail.example.org", "helo.example.org"))

    def test_xclient_runs_the_connect_filters_again_for_the_new_client(self):
        self.need_probe()
        self.start(filters="who", extra=probe_section("connect"))
        c = self.client(self.front_port)
        c.ehlo("front.example.test")
        r = c.cmd("XCLIENT ADDR=IPV6:2001:db8::9 PORT=25 NAME=[TEMPUNAVAIL]")
        self.assertEqual(r.code, 220)
        c.ehlo("v6.example.test")
        self.send_message(c)
        c.cmd("QUIT")
        rec = self.records(1)[0]
        self.assertEqual(self.seen(rec, "connect"), "2001:db8::9 25 - - -")
        self.assertEqual(rec["client"]["name_status"], "tempunavail")
        x = self.xclients()[-1:]
        self.assertEqual((x[0]["ADDR"], x[0]["NAME"], x[0]["REVERSE_NAME"]),
                         ("IPV6:2001:db8::9", "[TEMPUNAVAIL]", "[TEMPUNAVAIL]"))

    def test_xclient_errors_leave_the_session_as_it_was(self):
        self.start()
        c = self.client(self.front_port)
        c.ehlo("front.example.test")
        for line, reply in (
                ("XCLIENT", "501 5.5.4 Syntax: XCLIENT attribute=value..."),
                ("XCLIENT ADDR", "501 5.5.4 Syntax: XCLIENT attribute=value..."),
                ("XCLIENT ADDR=192.0.2", "501 5.5.4 Bad ADDR syntax"),
                ("XCLIENT ADDR=192.0.2.1 PORT=70000", "501 5.5.4 Bad PORT syntax"),
                ("XCLIENT NAME=a+2", "501 5.5.4 Bad NAME syntax"),
                ("XCLIENT IDENT=x", "501 5.5.4 Bad XCLIENT attribute name"),
                ("XFORWARD LOGIN=x", "501 5.5.4 Bad XFORWARD attribute name")):
            self.assertEqual(c.cmd(line).lines, [reply], line)
        self.assertEqual(c.cmd("MAIL FROM:<%s>" % BOB).code, 250)
        for line in ("XCLIENT ADDR=192.0.2.1", "XFORWARD ADDR=192.0.2.1"):
            self.assertEqual(c.cmd(line).lines,
                             ["503 5.5.1 Error: MAIL transaction in progress"], line)
        self.assertEqual(c.cmd("RCPT TO:<%s>" % ALICE).code, 250)
        self.assertEqual(c.cmd("DATA").code, 354)
        c.send(b"Subject: t\r\n\r\nhello\r\n.\r\n")
        self.assertEqual(c.reply().code, 250)
        c.cmd("QUIT")
        rec = self.records(1)[0]
        self.assertEqual(rec["client"]["address"], "127.0.0.1")
        self.assertNotIn("via", rec["client"])

    def test_xforward_names_the_next_transaction_only(self):
        self.need_probe()
        self.start(filters="who", extra=probe_section("mail"))
        c = self.client(self.front_port)
        c.ehlo("front.example.test")
        # attributes add up over several commands
        self.assertEqual(c.cmd("XFORWARD ADDR=192.0.2.9 PORT=1234").lines,
                         ["250 2.0.0 Ok"])
        self.assertEqual(c.cmd("XFORWARD NAME=orig.example.net HELO=orig-helo.example.net "
                               "PROTO=ESMTP IDENT=4Lx2 SOURCE=REMOTE").lines,
                         ["250 2.0.0 Ok"])
        self.send_message(c, subject="first")
        self.send_message(c, subject="second")
        c.cmd("QUIT")
        first, second = self.records(2)
        self.assertEqual(first["client"], {
            "address": "192.0.2.9", "port": 1234, "helo": "orig-helo.example.net",
            "name": "orig.example.net", "reverse_name": "orig.example.net",
            "name_status": "confirmed",
            "via": {"address": "127.0.0.1", "port": c.local_port,
                    "command": "XFORWARD"}})
        self.assertEqual(self.seen(first, "mail"),
                         "192.0.2.9 1234 orig.example.net orig-helo.example.net -")
        self.assertEqual(second["client"], {
            "address": "127.0.0.1", "port": c.local_port,
            "helo": "front.example.test"})
        self.assertEqual(self.seen(second, "mail"),
                         "127.0.0.1 %d - front.example.test -" % c.local_port)
        # the backend was told each transaction's client, in order
        x = self.xclients()
        self.assertEqual([(a["ADDR"], a["NAME"], a["HELO"]) for a in x[-2:]],
                         [("192.0.2.9", "orig.example.net", "orig-helo.example.net"),
                          ("127.0.0.1", "[UNAVAILABLE]", "front.example.test")])

    def test_xforward_client_in_the_received_header(self):
        self.start(backend_client_identity="header")
        c = self.client(self.front_port)
        c.ehlo("front.example.test")
        c.cmd("XFORWARD ADDR=IPV6:2001:db8::5 NAME=v6.example.net HELO=[UNAVAILABLE]")
        self.send_message(c)
        c.cmd("QUIT")
        msgs = self.capture.wait_messages(1)
        self.assertTrue(msgs[0].startswith(
            b"Received: from v6.example.net (v6.example.net [IPv6:2001:db8::5])\r\n"),
            msgs[0][:200])
        rec = self.records(1)[0]
        self.assertNotIn("helo", rec["client"])


def require_postfix():
    if os.geteuid() != 0 or not os.path.exists("/usr/sbin/postfix"):
        raise unittest.SkipTest("a private Postfix needs root and postfix")


class TestPostfixFront(IdentityCase):
    """Deployment 3: client -> Postfix (smtpd_proxy_filter) -> Portcullis
    -> Postfix. The front connects at MAIL and sends EHLO, XFORWARD, MAIL,
    RCPT, DATA; Portcullis's relay filter trusts 127.0.0.1 (the front)
    only, so it must judge the client the front names, 127.0.0.2."""

    @classmethod
    def setUpClass(cls):
        require_postfix()
        cls.backend = Postfix()
        cls.addClassCleanup(cls.backend.stop)
        cls.backend.start()
        cls.proxy_port = free_port()
        cls.front = Postfix(hostname="front.portcullis.test", extra_main={
            "smtpd_proxy_filter": "127.0.0.1:%d" % cls.proxy_port,
            "smtpd_proxy_timeout": "100s"})
        cls.addClassCleanup(cls.front.stop)
        cls.front.start()

    def setUp(self):
        super().setUp()
        relay = os.path.join(FILTER_DIR, "relay.so")
        if not os.path.exists(relay):
            self.skipTest("relay filter not built: " + relay)
        self.proxy = self.start_proxy(
            backend_port=self.backend.port, filters="relay", filter_dir=FILTER_DIR,
            extra=trusted_listener(self.proxy_port) +
            "\n[filter relay]\nmodule = relay\nlocal_domains = %s\n"
            "trusted_networks = 127.0.0.1/32\n" % DOMAIN)
        self.assertTrue(wait_listening(self.proxy_port, 10, self.proxy.proc))

    def test_the_client_behind_the_front_reaches_the_record_and_the_backend(self):
        msg = make_message("through the front", to=ALICE)
        c = self.client(self.front.port, source="127.0.0.2")
        r = c.mail_transaction(BOB, [ALICE], msg, helo="behind.example.test")
        self.assertCode(r["end"], 250)
        rec = self.proxy.wait_transaction(action="accepted")[0]
        self.assertEqual(rec["client"]["address"], "127.0.0.2")
        self.assertEqual(rec["client"]["port"], c.local_port)
        self.assertEqual(rec["client"]["helo"], "behind.example.test")
        self.assertEqual(rec["client"]["via"]["address"], "127.0.0.1")
        self.assertEqual(rec["client"]["via"]["command"], "XFORWARD")
        got = self.backend.find_message("alice", b"through the front")
        self.assertTrue(got, self.backend.maillog()[-2000:])
        recv = [v.decode() for n, v in header_fields(got) if n == b"received"]
        # The delivering Postfix took the client from Portcullis's XCLIENT.
        self.assertRegex(recv[0], r"^Received: from behind\.example\.test "
                                  r"\(\S+ \[127\.0\.0\.2\]\)")
        qid = self.backend.queue_id_of(harness_message_id(msg))
        self.assertRegex(self.backend.maillog(),
                         r"%s: client=\S*\[127\.0\.0\.2\]:%d\b" % (qid, c.local_port))

    def test_a_relay_attempt_is_refused_by_portcullis_and_the_front_says_so(self):
        c = self.client(self.front.port, source="127.0.0.2")
        c.ehlo("behind.example.test")
        self.assertEqual(c.cmd("MAIL FROM:<%s>" % BOB).code, 250)
        r = c.cmd("RCPT TO:<someone@elsewhere.example>")
        self.assertEqual(r.code, 554, r)
        self.assertEqual(r.enh, "5.7.1", r)
        self.assertIn("Relay access denied", r.lines[-1])
        c.cmd("QUIT")
        rec = self.proxy.wait_decisions(
            lambda d: d.get("client", {}).get("address") == "127.0.0.2")
        self.assertTrue(rec, self.proxy.decisions())
        self.assertTrue(harness.filter_entries(rec[0], "relay"), rec[0])
        self.assertEqual(rec[0]["client"]["via"]["command"], "XFORWARD")
        self.assertIn("554 5.7.1", rec[0]["recipients"][0]["reply"])


def harness_message_id(msg):
    m = re.search(rb"^Message-ID: (<[^>]+>)", msg, re.M | re.I)
    return m.group(1).decode()


ZONES = {
    # 127.0.0.2: a confirmed name
    "2.0.0.127.in-addr.arpa": [{"PTR": "mail.good.test"}],
    "mail.good.test": [{"A": ["192.0.2.1", "127.0.0.2"]}],
    # 127.0.0.3: the PTR name does not lead back
    "3.0.0.127.in-addr.arpa": [{"PTR": "liar.test"}],
    "liar.test": [{"A": "192.0.2.3"}],
    # 127.0.0.4: no PTR at all (NXDOMAIN)
    # 127.0.0.5: the PTR query times out
    "5.0.0.127.in-addr.arpa": ["TIMEOUT"],
    # 127.0.0.6: the PTR answers, its name's A query times out
    "6.0.0.127.in-addr.arpa": [{"PTR": "slow.test"}],
    "slow.test": ["TIMEOUT"],
    # 127.0.0.7: two PTR names, the second leads back
    "7.0.0.127.in-addr.arpa": [{"PTR": "nowhere.test"}, {"PTR": "mail7.good.test"}],
    "mail7.good.test": [{"A": "127.0.0.7"}],
}


class TestClientName(IdentityCase):

    # The resolver's timeout: long enough that a DNS server that answers is
    # never taken for a silent one on a busy machine, except in the tests
    # of a server that does not answer, which pass their own.
    DNS_TIMEOUT = 2.0

    def start_named(self, dns, dns_timeout=DNS_TIMEOUT, **kw):
        self.capture = self.start_capture(keywords=BACKEND_KEYWORDS)
        extra = ("\n[dns]\nservers = 127.0.0.1:%d\ntimeout = %s\nretries = 0\n"
                 % (dns.port, dns_timeout)) + kw.pop("extra", "")
        self.proxy = self.start_proxy(backend_port=self.capture.port,
                                      client_name_lookup="yes", extra=extra, **kw)
        return self.proxy

    def dns(self, **kw):
        d = DNSServer(ZONES, **kw).start()
        self.addCleanup(d.stop)
        return d

    def from_address(self, source, helo="client.example.test"):
        c = self.client(self.proxy.port, source=source)
        c.ehlo(helo)
        self.send_message(c)
        c.cmd("QUIT")
        recs = self.proxy.wait_decisions(
            lambda d: d.get("type") == "transaction" and
            d["client"]["address"] == source)
        self.assertEqual(len(recs), 1, self.proxy.decisions())
        x = [a for a in self.xclients() if a["ADDR"] == source]
        self.assertEqual(len(x), 1, self.capture.commands())
        return recs[0], x[0]

    def test_a_confirmed_name(self):
        self.need_probe()
        self.start_named(self.dns(), filters="who", extra=probe_section("connect"))
        rec, x = self.from_address("127.0.0.2")
        self.assertEqual((rec["client"]["name"], rec["client"]["reverse_name"],
                          rec["client"]["name_status"]),
                         ("mail.good.test", "mail.good.test", "confirmed"))
        self.assertEqual((x["NAME"], x["REVERSE_NAME"]),
                         ("mail.good.test", "mail.good.test"))
        # the connect filters waited for it
        self.assertEqual(self.seen(rec, "connect").split()[2], "mail.good.test")

    def test_every_session_of_a_client_gets_its_name(self):
        # The lookup runs on a thread: the first from the DNS server, the
        # others from the worker's cache, answered at once, so a lookup
        # handed to its thread before it had the client's address came out
        # "unavailable" now and then.
        self.start_named(self.dns())
        statuses = []
        for i in range(40):
            c = self.client(self.proxy.port, source="127.0.0.2")
            c.ehlo("client.example.test")
            self.send_message(c)
            c.cmd("QUIT")
        recs = self.proxy.wait_decisions(
            lambda d: d.get("type") == "transaction", 40)
        statuses = [(r["client"].get("name"), r["client"].get("name_status"))
                    for r in recs]
        self.assertEqual(statuses, [("mail.good.test", "confirmed")] * 40)

    def test_the_second_ptr_name_may_confirm(self):
        self.start_named(self.dns())
        rec, x = self.from_address("127.0.0.7")
        self.assertEqual((rec["client"]["name"], rec["client"]["name_status"]),
                         ("mail7.good.test", "confirmed"))
        self.assertEqual(x["NAME"], "mail7.good.test")

    def test_a_ptr_name_that_does_not_lead_back_is_unconfirmed(self):
        self.need_probe()
        self.start_named(self.dns(), filters="who", extra=probe_section("mail"))
        rec, x = self.from_address("127.0.0.3")
        self.assertNotIn("name", rec["client"])
        self.assertEqual((rec["client"]["reverse_name"], rec["client"]["name_status"]),
                         ("liar.test", "unconfirmed"))
        self.assertEqual((x["NAME"], x["REVERSE_NAME"]), ("[UNAVAILABLE]", "liar.test"))
        self.assertEqual(self.seen(rec, "mail").split()[2], "-")

    def test_no_ptr_record(self):
        self.start_named(self.dns())
        rec, x = self.from_address("127.0.0.4")
        self.assertEqual(rec["client"]["name_status"], "unavailable")
        self.assertNotIn("reverse_name", rec["client"])
        self.assertEqual((x["NAME"], x["REVERSE_NAME"]), ("[UNAVAILABLE]", "[UNAVAILABLE]"))

    def test_a_ptr_query_that_times_out(self):
        self.start_named(self.dns(), dns_timeout=0.5)
        rec, x = self.from_address("127.0.0.5")
        self.assertEqual(rec["client"]["name_status"], "tempunavail")
        self.assertEqual((x["NAME"], x["REVERSE_NAME"]), ("[TEMPUNAVAIL]", "[TEMPUNAVAIL]"))

    def test_a_forward_query_that_times_out(self):
        self.start_named(self.dns(), dns_timeout=1.0)
        rec, x = self.from_address("127.0.0.6")
        self.assertEqual((rec["client"]["reverse_name"], rec["client"]["name_status"]),
                         ("slow.test", "tempunavail"))
        self.assertEqual((x["NAME"], x["REVERSE_NAME"]), ("[TEMPUNAVAIL]", "slow.test"))

    def test_the_received_header_names_the_confirmed_client(self):
        self.start_named(self.dns(), backend_client_identity="header")
        for source, name in (("127.0.0.2", "mail.good.test"), ("127.0.0.3", "unknown")):
            c = self.client(self.proxy.port, source=source)
            c.ehlo("helo.example.test")
            self.send_message(c)
            c.cmd("QUIT")
            msgs = self.capture.wait_messages(1 if source == "127.0.0.2" else 2)
            self.assertTrue(msgs[-1].startswith(
                ("Received: from helo.example.test (%s [%s])\r\n"
                 % (name, source)).encode()), msgs[-1][:200])

    def test_a_dns_server_that_never_answers_costs_at_most_its_timeout(self):
        self.start_named(self.dns(silent=True))
        t0 = time.monotonic()
        c = self.client(self.proxy.port, source="127.0.0.2")
        greeted = time.monotonic() - t0
        c.ehlo("patient.example.test")
        waited = time.monotonic() - t0
        self.send_message(c)
        c.cmd("QUIT")
        # Without connect filters the greeting does not wait; EHLO waits
        # for the lookup, at most timeout x tries x servers (2 s), and a
        # busy machine's margin.
        self.assertLess(greeted, 1.0)
        self.assertGreater(waited, 1.5)
        self.assertLess(waited, 5.0)
        rec = self.proxy.wait_transaction()[0]
        self.assertEqual(rec["client"]["name_status"], "tempunavail")
        self.assertEqual(self.xclients()[-1]["NAME"], "[TEMPUNAVAIL]")

    def test_connect_filters_wait_for_the_name_within_the_dns_timeout(self):
        self.need_probe()
        self.start_named(self.dns(silent=True), filters="who",
                         extra=probe_section("connect"))
        t0 = time.monotonic()
        c = self.client(self.proxy.port, source="127.0.0.2")
        greeted = time.monotonic() - t0
        self.assertEqual(c.ehlo("x.example.test").code, 250)
        self.send_message(c)
        c.cmd("QUIT")
        self.assertGreater(greeted, 1.5)
        self.assertLess(greeted, 5.0)
        rec = self.proxy.wait_transaction()[0]
        self.assertEqual(self.seen(rec, "connect").split()[:3], ["127.0.0.2", str(c.local_port), "-"])


if __name__ == "__main__":
    unittest.main()
