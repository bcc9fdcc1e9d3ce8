"""
test_spf_filter.py - the built-in spf filter end to end: the real daemon
loads filters/.libs/spf.so, asks a real DNS server on loopback
(tests/dns/dnsserver.py) through its [dns] section, and relays to a
capture backend that keeps the exact bytes (and, once, to a real
Postfix that delivers the message).

The test clients connect from 127.0.0.1 (and ::1), which trusted_networks
spares by default: so trusted_networks is empty here, except in the test
that shows a trusted client skipped. The zone publishes records that
name 127.0.0.1 (pass), refuse everyone (fail, with an exp= explanation),
soft-fail, break the grammar (permerror), and one name never answers
(temperror).

PORTCULLIS_FILTER_DIR overrides where spf.so is looked for (default
<project>/filters/.libs).
"""

import json
import os
import re
import sys
import unittest

from harness import (PROJECT, Portcullis, Postfix, ProxyTestCase, has_ipv6,
                     make_message, wait_for)
import harness  # noqa: E402

sys.path.insert(0, os.path.join(PROJECT, "tests", "dns"))
try:
    from dnsserver import DNSServer
except ImportError:  # pragma: no cover - skipped below
    DNSServer = None

FILTER_DIR = os.environ.get("PORTCULLIS_FILTER_DIR") or os.path.join(
    PROJECT, "filters", ".libs")

AUTHSERV = "proxy.portcullis.test"
RCPT = "bob@example.test"

ZONE = {
    "pass.test": [{"TXT": "v=spf1 ip4:127.0.0.1 ip6:::1 -all"}],
    "fail.test": [{"TXT": "v=spf1 ip4:192.0.2.0/24 -all exp=why.fail.test"}],
    "why.fail.test": [{"TXT": ["%{i} is not one of %{d}'s ",
                               "mail servers"]}],
    "noexp.test": [{"TXT": "v=spf1 -all"}],
    "soft.test": [{"TXT": "v=spf1 ~all"}],
    "neutral.test": [{"TXT": "v=spf1 ?all"}],
    "perm.test": [{"TXT": "v=spf1 ip4:127.0.0.1 moo -all"}],
    "slow.test": ["TIMEOUT"],
    "helo-pass.test": [{"TXT": "v=spf1 a -all"}, {"A": "127.0.0.1"}],
    "helo-fail.test": [{"TXT": "v=spf1 -all"}],
    # for the check on the event loop: every answer cacheable, or one not
    "cached.test": [{"TXT": "v=spf1 a:host.cached.test -all"}],
    "host.cached.test": [{"A": "127.0.0.1"}],
    "partial.test": [{"TXT": "v=spf1 a:host.partial.test -all"}],
    "host.partial.test": [{"A": "127.0.0.1", "ttl": 0}],
    # an internationalised domain, published under its A-labels
    # (bücher.test, idn-pass.bücher.test)
    "xn--bcher-kva.test": [{"TXT": "v=spf1 -all"}],
    "idn-pass.xn--bcher-kva.test": [{"TXT": "v=spf1 ip4:127.0.0.1 -all"}],
    # "nospf.test": no records at all (NXDOMAIN): none
}

DNS = None

CAPTURE_KEYWORDS = ("PIPELINING", "8BITMIME", "DSN", "ENHANCEDSTATUSCODES",
                    "SIZE 10240000", "XFORWARD NAME ADDR PROTO HELO",
                    "SMTPUTF8")


def setUpModule():
    global DNS
    harness.require_filters()
    # tests/dns/dnsserver.py needs dnslib
    harness.skip_unless_tool("python3-dnslib", DNSServer is not None)
    so = os.path.join(FILTER_DIR, "spf.so")
    if not os.path.exists(so):
        raise unittest.SkipTest("spf filter not built: %s" % so)
    DNS = DNSServer(ZONE).start()
    try:
        require_daemon_config()
    except BaseException:
        tearDownModule()
        raise


def tearDownModule():
    global DNS
    if DNS is not None:
        DNS.stop()
        DNS = None


def spf_section(trusted="", timeout=20, **options):
    """[dns] (the test server) and [filter spf]; trusted None: the
    default trusted_networks."""
    return harness.dns_filter_section("spf", DNS, trusted, timeout, **options)


def config_for(p, section):
    """A complete configuration text for Portcullis p with the spf filter."""
    return harness.filter_config_text(p, "spf", section, FILTER_DIR, AUTHSERV)


def require_daemon_config():
    """portcullis -t must take the spf filter with a [dns] section: a
    refusal fails every test of the module."""
    p = Portcullis(backend_port=9)
    try:
        harness.require_config(p, config_for(p, spf_section()),
                               "the spf filter with [dns]")
    finally:
        p.stop()


def spf_results(record):
    """The spf filter's results in a decision record, merged."""
    merged = {}
    for entry in harness.filter_entries(record, "spf"):
        merged.update(entry.get("results") or {})
    return merged


def header_lines(raw):
    """The header fields of a message (bytes), unfolded, in order:
    [(lower-case name, value)]."""
    head = raw.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].decode()
    fields = []
    for line in head.split("\n"):
        if line[:1] in (" ", "\t") and fields:
            fields[-1] = (fields[-1][0], fields[-1][1] + " " + line.strip())
        elif ":" in line:
            name, value = line.split(":", 1)
            fields.append((name.strip().lower(), value.strip()))
    return fields


class SPFFilterTest(ProxyTestCase):
    """The daemon with the spf filter in front of a capture backend."""

    def proxy(self, section=None, **kw):
        # SMTPUTF8, so that the proxy offers it: the IDN tests need it
        backend = self.start_capture(keywords=CAPTURE_KEYWORDS)
        kw.setdefault("filters", "spf")
        kw.setdefault("filter_dir", FILTER_DIR)
        kw.setdefault("authserv_id", AUTHSERV)
        kw.setdefault("max_errors", "100")
        p = self.start_proxy(backend_port=backend.port,
                             extra=section or spf_section(), **kw)
        p.backend = backend
        return p

    def mail(self, p, sender, helo="client.example.test", host="127.0.0.1"):
        """EHLO and MAIL FROM:<sender>; (client, MAIL reply)."""
        c = self.client(p.port, host=host)
        c.ehlo(helo)
        # RFC 6531: a UTF-8 address needs the SMTPUTF8 parameter
        utf8 = "" if sender.isascii() else " SMTPUTF8"
        return c, c.cmd("MAIL FROM:<%s>%s" % (sender, utf8))

    def deliver(self, p, sender, helo="client.example.test",
                host="127.0.0.1"):
        """A whole transaction that must be accepted; the bytes the
        backend got."""
        c, r = self.mail(p, sender, helo, host)
        self.assertReply(r, 250, msg="MAIL FROM:<%s>" % sender)
        self.assertReply(c.cmd("RCPT TO:<%s>" % RCPT), 250)
        self.assertReply(c.cmd("DATA"), 354)
        c.send(harness.dot_stuff(make_message(subject="spf " + sender)))
        self.assertReply(c.reply(), 250, msg="end of data")
        c.cmd("QUIT")
        got = p.backend.wait_messages(1, 10)
        self.assertTrue(got, "the backend got nothing")
        return got[-1]

    def record(self, p, **match):
        recs = p.wait_transaction(count=1, timeout=10, **match)
        self.assertTrue(recs, "no transaction record: %r" % p.decisions())
        return recs[-1]

    # -- results and what they do ------------------------------------

    def test_pass_is_delivered_with_received_spf_and_auth_results_on_top(self):
        p = self.proxy()
        raw = self.deliver(p, "alice@pass.test")
        fields = header_lines(raw)
        self.assertEqual([n for n, _ in fields[:2]],
                         ["received-spf", "authentication-results"], fields)
        rspf = fields[0][1]
        self.assertRegex(rspf, r"^pass \(")
        for kv in ("client-ip=127.0.0.1", 'envelope-from="alice@pass.test"',
                   "helo=client.example.test", "receiver=" + AUTHSERV,
                   "identity=mailfrom"):
            self.assertIn(kv, rspf)
        self.assertEqual(fields[1][1], "%s; spf=pass smtp.mailfrom=pass.test"
                         % AUTHSERV)
        res = spf_results(self.record(p, action="accepted"))
        self.assertEqual(res.get("spf"), "pass", res)
        self.assertEqual(res.get("identity"), "mailfrom")
        self.assertEqual(res.get("domain"), "pass.test")
        self.assertEqual(res.get("mechanism"), "ip4:127.0.0.1")
        self.assertIn('mechanism="ip4:127.0.0.1"', rspf)

    def test_fail_is_refused_at_mail_with_the_domains_explanation(self):
        p = self.proxy()
        c, r = self.mail(p, "mallory@fail.test")
        self.assertReply(r, 550, "5.7.23")
        self.assertIn("127.0.0.1 is not one of fail.test's mail servers",
                      r.text)
        c.cmd("QUIT")
        self.assertFalse(p.backend.messages())
        res = spf_results(self.record(p))
        self.assertEqual(res.get("spf"), "fail", res)
        self.assertEqual(res.get("explanation"),
                         "127.0.0.1 is not one of fail.test's mail servers")
        self.assertEqual(res.get("explanation_source"), "domain")
        self.assertEqual(res.get("mechanism"), "-all")

    def test_fail_without_explanation_says_why_in_our_words(self):
        p = self.proxy()
        c, r = self.mail(p, "mallory@noexp.test")
        self.assertReply(r, 550, "5.7.23")
        self.assertIn("noexp.test", r.text)
        self.assertIn("127.0.0.1", r.text)
        c.cmd("QUIT")
        res = spf_results(self.record(p))
        self.assertEqual(res.get("explanation_source"), "local", res)

    def test_fail_may_be_set_to_tempfail_or_accept(self):
        p = self.proxy(spf_section(fail="tempfail"))
        c, r = self.mail(p, "mallory@fail.test")
        self.assertReply(r, 451, "4.7.23")
        c.cmd("QUIT")
        p = self.proxy(spf_section(fail="accept"))
        raw = self.deliver(p, "mallory@fail.test")
        self.assertRegex(header_lines(raw)[0][1], r"^fail \(")

    def test_temperror_is_451_4_7_24(self):
        p = self.proxy()
        c, r = self.mail(p, "alice@slow.test")
        self.assertReply(r, 451, "4.7.24")
        c.cmd("QUIT")
        res = spf_results(self.record(p))
        self.assertEqual(res.get("spf"), "temperror", res)
        self.assertIn("error", res)

    def test_softfail_is_accepted_and_recorded(self):
        p = self.proxy()
        raw = self.deliver(p, "alice@soft.test")
        fields = dict(header_lines(raw))
        self.assertRegex(fields["received-spf"], r"^softfail ")
        self.assertIn("spf=softfail", fields["authentication-results"])
        res = spf_results(self.record(p, action="accepted"))
        self.assertEqual(res.get("spf"), "softfail", res)

    def test_neutral_and_none_are_accepted(self):
        p = self.proxy()
        for sender, result in (("alice@neutral.test", "neutral"),
                               ("alice@nospf.test", "none")):
            raw = self.deliver(p, sender)
            self.assertRegex(dict(header_lines(raw))["received-spf"],
                             r"^%s " % result)

    def test_permerror_is_accepted_by_default(self):
        p = self.proxy()
        raw = self.deliver(p, "alice@perm.test")
        self.assertRegex(dict(header_lines(raw))["received-spf"],
                         r"^permerror ")
        res = spf_results(self.record(p, action="accepted"))
        self.assertEqual(res.get("spf"), "permerror", res)
        self.assertIn("moo", res.get("error", ""))

    def test_permerror_is_refused_when_configured(self):
        p = self.proxy(spf_section(permerror="reject"))
        c, r = self.mail(p, "alice@perm.test")
        self.assertReply(r, 550, "5.7.24")
        c.cmd("QUIT")

    def test_softfail_refused_when_configured(self):
        p = self.proxy(spf_section(softfail="reject"))
        c, r = self.mail(p, "alice@soft.test")
        self.assertReply(r, 550, "5.7.23")
        c.cmd("QUIT")

    # -- identities ----------------------------------------------------

    def test_null_sender_checks_the_helo(self):
        p = self.proxy()
        raw = self.deliver(p, "", helo="helo-pass.test")
        fields = header_lines(raw)
        self.assertRegex(fields[0][1], r"^pass ")
        self.assertIn("identity=helo", fields[0][1])
        self.assertNotIn("envelope-from", fields[0][1])
        self.assertEqual(fields[1][1], "%s; spf=pass smtp.helo=helo-pass.test"
                         % AUTHSERV)
        res = spf_results(self.record(p, action="accepted"))
        self.assertEqual((res.get("identity"), res.get("domain")),
                         ("helo", "helo-pass.test"), res)

    def test_null_sender_from_a_helo_that_fails_is_refused(self):
        p = self.proxy()
        c, r = self.mail(p, "", helo="helo-fail.test")
        self.assertReply(r, 550, "5.7.23")
        c.cmd("QUIT")

    # -- internationalised domains (RFC 8616) -------------------------

    def test_every_spelling_of_an_idn_sender_domain_gets_its_fail(self):
        # The record is published under the A-labels; upper case, NFD,
        # fullwidth letters and full stops are the same domain.
        p = self.proxy()
        spellings = ["bücher.test", "BÜCHER.TEST", "bu\u0308cher.test",
                     "xn--bcher-kva.test", "XN--BCHER-KVA.test",
                     "bücher\u3002test", "bücher\uff0etest",
                     "ｂüｃｈｅｒ.test"]
        for n, domain in enumerate(spellings):
            with self.subTest(domain=domain):
                c, r = self.mail(p, "user@" + domain)
                self.assertReply(r, 550, "5.7.23")
                c.cmd("QUIT")
                recs = p.wait_transaction(count=n + 1, timeout=10)
                res = spf_results(recs[n]) if len(recs) > n else {}
                self.assertEqual((res.get("spf"), res.get("domain")),
                                 ("fail", "xn--bcher-kva.test"), res)

    def test_an_idn_sender_that_is_allowed_passes(self):
        p = self.proxy()
        raw = self.deliver(p, "user@IDN-PASS.Bu\u0308cher.test")
        fields = header_lines(raw)
        self.assertRegex(fields[0][1], r"^pass ")
        res = spf_results(self.record(p, action="accepted"))
        self.assertEqual((res.get("spf"), res.get("domain")),
                         ("pass", "idn-pass.xn--bcher-kva.test"), res)

    def test_a_helo_in_fullwidth_letters_is_its_ascii_domain(self):
        p = self.proxy()
        c, r = self.mail(p, "", helo="ＨＥＬＯ-fail．test")
        self.assertReply(r, 550, "5.7.23")
        c.cmd("QUIT")
        res = spf_results(p.wait_transaction(count=1, timeout=10)[-1])
        self.assertEqual((res.get("identity"), res.get("domain")),
                         ("helo", "helo-fail.test"), res)

    @unittest.skipUnless(has_ipv6(), "no IPv6 loopback")
    def test_ipv6_client_is_checked(self):
        from harness import free_port
        port6 = free_port()
        backend = self.start_capture()
        p = self.start_proxy(backend_port=backend.port, port6=port6,
                             filters="spf", filter_dir=FILTER_DIR,
                             authserv_id=AUTHSERV, extra=spf_section())
        p.backend = backend
        c = self.client(port6, host="::1")
        c.ehlo("client.example.test")
        self.assertReply(c.cmd("MAIL FROM:<alice@pass.test>"), 250)
        c.cmd("RSET")
        self.assertReply(c.cmd("MAIL FROM:<mallory@fail.test>"), 550,
                         "5.7.23")
        c.cmd("QUIT")

    # -- the check on the event loop ----------------------------------

    def test_a_check_the_dns_cache_answers_stays_on_the_event_loop(self):
        p = self.proxy(log_level="debug")
        moved = "filter spf: session %s: would block at mail on the event loop"
        for domain, asked_again in (("cached.test", False), ("partial.test", True)):
            with self.subTest(domain=domain):
                sessions = []
                for n in range(2):
                    before = DNS.count("host." + domain, "A")
                    raw = self.deliver(p, "alice%d@%s" % (n, domain))
                    self.assertRegex(header_lines(raw)[0][1], r"^pass \(")
                    rec = self.record(p, sender="alice%d@%s" % (n, domain))
                    res = spf_results(rec)
                    self.assertEqual((res.get("spf"), res.get("mechanism")),
                                     ("pass", "a:host." + domain), res)
                    sessions.append((rec["session"],
                                     DNS.count("host." + domain, "A") - before))
                log = p.stderr()
                # the first check asks DNS, on a thread, after its try on
                # the loop found the cache empty
                sid, asked = sessions[0]
                self.assertIn(moved % sid, log)
                self.assertGreater(asked, 0)
                # the second finds every answer in the cache and decides
                # on the loop; with one answer of TTL 0 it cannot
                sid, asked = sessions[1]
                self.assertEqual(moved % sid in log, asked_again, log[-2000:])
                self.assertEqual(asked > 0, asked_again, asked)

    def test_a_check_that_backs_out_into_a_full_pool_gets_on_error(self):
        # one worker with one filter thread and room for one call in its
        # queue: two checks waiting for a silent DNS server fill both,
        # and a third that backs out of the loop finds no room
        section = spf_section().replace("timeout = 1\nretries", "timeout = 3\nretries")
        self.assertIn("timeout = 3", section)
        section += "\n[filter size]\nmodule = size\nlimit = 10m\n"
        p = self.proxy(section, filters="size, spf", workers="1",
                       filter_threads="1", filter_queue="1")
        waiting = []
        asked = DNS.count("slow.test", "TXT")
        # the third client is in before the pool fills: a client that
        # connects while it is full is turned away at accept (421 4.3.2)
        third = self.client(p.port)
        third.ehlo("client.example.test")
        for n in range(2):
            c = self.client(p.port)
            c.ehlo("client.example.test")
            c.send(b"MAIL FROM:<alice%d@slow.test>\r\n" % n)
            waiting.append(c)
            if n == 0:
                # the first is on the thread, asking
                self.assertTrue(wait_for(
                    lambda: DNS.count("slow.test", "TXT") > asked, 5),
                    "the first check did not ask DNS")
            else:
                # the second backed out of the loop: it is handed to the
                # pool's queue right after saying so, in the same turn
                self.assertTrue(p.wait_log(
                    r"filter spf: session \w+: would block at mail on the "
                    r"event loop", count=2), p.stderr()[-2000:])
        c, r = third, third.cmd("MAIL FROM:<carol@pass.test>")
        self.assertReply(r, 451, "4.3.0")
        self.assertIn("unavailable", r.text)
        c.cmd("QUIT")
        rec = self.record(p, sender="carol@pass.test")
        entries = [(e.get("filter"), e.get("stage"), e.get("verdict"))
                   for e in rec.get("filters", [])]
        # what size did on the loop before spf backed out is in the record
        self.assertEqual(entries, [("size", "connect", "continue"),
                                   ("size", "mail", "continue"),
                                   ("spf", "mail", "unavailable")], rec)
        self.assertEqual(harness.filter_entries(rec, "size")[1]["results"]["limit"],
                         10 * 1024 * 1024, rec)
        # the two waiting checks end as DNS temperrors, not lost
        for c in waiting:
            self.assertReply(c.reply(timeout=15), 451, "4.7.24")

    # -- trusted clients -----------------------------------------------

    def test_trusted_client_is_not_checked(self):
        p = self.proxy(spf_section(trusted=None))   # 127.0.0.0/8, ::1/128
        asked = DNS.count("fail.test", "TXT")
        raw = self.deliver(p, "mallory@fail.test")
        names = [n for n, _ in header_lines(raw)]
        self.assertNotIn("received-spf", names)
        res = spf_results(self.record(p, action="accepted"))
        self.assertEqual((res.get("spf"), res.get("reason")),
                         ("skipped", "trusted"), res)
        self.assertEqual(DNS.count("fail.test", "TXT"), asked,
                         "a trusted client's domain was looked up")

    # -- a real backend ------------------------------------------------

    def test_postfix_delivers_the_stamped_message(self):
        postfix = Postfix()
        self.addCleanup(postfix.stop)
        postfix.start()
        p = self.start_proxy(backend_port=postfix.port, filters="spf",
                             filter_dir=FILTER_DIR, authserv_id=AUTHSERV,
                             extra=spf_section())
        c = self.client(p.port)
        r = c.mail_transaction("alice@pass.test", [RCPT],
                               make_message(subject="spf to postfix"),
                               helo="client.example.test")
        self.assertReply(r["end"], 250)
        c.cmd("QUIT")
        msg = postfix.find_message("bob", b"Subject: spf to postfix\n", 20)
        self.assertTrue(msg, "bob got nothing")
        names = [n for n, _ in header_lines(msg)]
        # Postfix adds its own trace fields above ours
        self.assertIn("received-spf", names)
        self.assertLess(names.index("received-spf"),
                        names.index("authentication-results"))
        self.assertLess(names.index("authentication-results"),
                        names.index("from"))


class SPFConfigTest(ProxyTestCase):
    """portcullis -t refuses bad spf options, naming file, line and key."""

    def setUp(self):
        if DNS is None:
            self.skipTest("no DNS server")
        self.p = Portcullis(backend_port=1)
        self.addCleanup(self.p.stop)

    def check(self, **options):
        text = config_for(self.p, spf_section(**options))
        return self.p.check_config(text), text

    def assertNamed(self, key, **options):
        r, text = self.check(**options)
        err = (r.stderr + r.stdout).decode(errors="replace")
        self.assertNotEqual(r.returncode, 0, "accepted:\n" + text)
        lines = text.split("\n")
        idx = [i for i, l in enumerate(lines)
               if l.split("=")[0].strip() == key]
        self.assertTrue(idx, "test bug: no line for %s" % key)
        path = os.path.join(self.p.dir, "check.conf")
        self.assertRegex(err, r"%s:%d: (\[filter spf\] )?%s: \S" % (
            re.escape(path), idx[-1] + 1, re.escape(key)))
        return err

    def test_good_config_passes(self):
        r, text = self.check(fail="tempfail", softfail="reject",
                             neutral="accept", none="accept",
                             permerror="reject", temperror="accept",
                             receiver="mx.example.org",
                             trusted="10.0.0.0/8, 2001:db8::/32")
        self.assertEqual(r.returncode, 0,
                         (r.stderr + r.stdout).decode(errors="replace"))

    def test_bad_action_is_reported(self):
        err = self.assertNamed("fail", fail="bounce")
        self.assertIn("bounce", err)

    def test_temperror_cannot_be_rejected(self):
        self.assertNamed("temperror", temperror="reject")

    def test_bad_trusted_network_is_reported(self):
        err = self.assertNamed("trusted_networks", trusted="10.0.0.0/33")
        self.assertIn("10.0.0.0/33", err)

    def test_bad_receiver_is_reported(self):
        self.assertNamed("receiver", receiver="not a host")

    def test_misspelt_option_is_refused(self):
        self.assertNamed("softfial", softfial="reject")


if __name__ == "__main__":
    unittest.main()
