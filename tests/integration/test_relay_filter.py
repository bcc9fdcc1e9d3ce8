"""
test_relay_filter.py - the built-in relay filter (the open-relay guard)
end to end: the real daemon loads filters/.libs/relay.so and talks to a
real Postfix.

The proxy's clients come from 127.0.0.1. With trusted_networks =
10.0.0.0/8 they are strangers, and may send only to example.test: every
relay trick (percent hack, bang path, source route, quoted '@', look-alike
domains, address literals, IDN) is refused, and Postfix never sees the
RCPT. Postfix itself would relay for 127.0.0.1 (it is in its mynetworks),
so a trick that slipped through would be accepted, not refused, by the
backend: the tests would see it. With 127.0.0.0/8 trusted, the proxy
passes a remote recipient on and Postfix decides.

Telling our refusal from Postfix's: both say "554 5.7.1 <addr>: Relay
access denied" (the filter uses Postfix's wording on purpose). What tells
them apart is the decision log (the relay filter's entry says "denied"
or "trusted") and Postfix's maillog (a "NOQUEUE: reject: RCPT" line, and
with debug_peer_list every command Postfix received).

PORTCULLIS_FILTER_DIR overrides where relay.so is looked for (default
<project>/filters/.libs).
"""

import json
import os
import re
import unittest

from harness import (DOMAIN, PROJECT, Portcullis, Postfix, ProxyTestCase,
                     dot_stuff, has_ipv6, make_message, wait_for)
import harness  # noqa: E402


def setUpModule():
    # a daemon that refuses a filter chain fails every test here
    harness.require_filters()


FILTER_DIR = os.environ.get("PORTCULLIS_FILTER_DIR") or os.path.join(
    PROJECT, "filters", ".libs")

ALICE = "alice@" + DOMAIN
BOB = "bob@" + DOMAIN
CAROL = "carol@" + DOMAIN
ELSEWHERE = "elsewhere.example"

RELAY_SECTION = """
[filter relay]
module = relay
timeout = 5
on_error = tempfail
local_domains = {domains}
trusted_networks = {trusted}
"""

# What a refused trick gets: RELAY is the filter's 554 5.7.1; SYNTAX is
# 501 5.1.3, from the host's address parser (which refuses some tricks
# before any filter runs, e.g. two '@') or from the filter.
RELAY = "relay"
SYNTAX = "syntax"
EITHER = "either"

# (recipient as between the angle brackets, expected refusal)
TRICKS = [
    # the percent hack: Postfix would rewrite it to user@elsewhere
    ("user%elsewhere.example@example.test", RELAY),
    ("bob%elsewhere.example@example.test", RELAY),
    ("bob%example.test@example.test", RELAY),
    ("user%elsewhere.example%example.test@example.test", RELAY),
    # quoted local parts hiding a route
    ('"user@elsewhere.example"@example.test', RELAY),
    ('"user%elsewhere.example"@example.test', RELAY),
    ('"elsewhere.example!user"@example.test', RELAY),
    ('"bob@example.test"@example.test', RELAY),
    ('"user\\@elsewhere.example"@example.test', RELAY),
    # UUCP bang paths
    ("elsewhere.example!user@example.test", RELAY),
    ("user!elsewhere.example@example.test", RELAY),
    # source routes (the host strips the route; what is left is remote)
    ("@example.test:user@elsewhere.example", RELAY),
    ("@example.test,@example.test:user@elsewhere.example", RELAY),
    # plainly remote, in every dress
    ("user@elsewhere.example", RELAY),
    ("USER@ELSEWHERE.EXAMPLE", RELAY),
    ("postmaster@elsewhere.example", RELAY),
    ("user@localhost", RELAY),
    # look-alike and sub-domains
    ("user@example.test.elsewhere.example", RELAY),
    ("user@evil-example.test", RELAY),
    ("user@example.testevil.example", RELAY),
    ("user@xexample.test", RELAY),
    ("user@sub.example.test", RELAY),
    ("user@example", RELAY),
    ("user@test", RELAY),
    # address literals that are not local
    ("user@[192.0.2.1]", RELAY),
    ("user@[127.0.0.1]", RELAY),
    ("user@[IPv6:2001:db8::1]", RELAY),
    ("user@[IPv6:::1]", RELAY),
    # IDN: the A-label of a remote domain
    ("user@xn--bcher-kva.example", RELAY),
    # an A-label IDNA refuses is no domain at all
    ("user@xn--zz.example", EITHER),
    ("user@xn--garbage-zzz.example", EITHER),
    # several @: syntax errors, whoever sees them first
    ("user@elsewhere.example@example.test", EITHER),
    ("user@example.test@elsewhere.example", EITHER),
    ('"user"@elsewhere.example@example.test', EITHER),
    # broken domains
    ("user@example.test..", EITHER),
    ("user@.example.test", EITHER),
    ("user@example..test", EITHER),
    ("user@[192.0.2.1].", EITHER),
    ("user@[192.0.2.300]", EITHER),
    ("user@elsewhere.example%example.test", EITHER),
    # empty local parts
    ("@example.test", EITHER),
    ('""@example.test', EITHER),
]

# UTF-8 tricks need MAIL FROM ... SMTPUTF8.
UTF8_TRICKS = [
    ("user@bücher.example", RELAY),
    ("jürgen@elsewhere.example", RELAY),
    ("user%bücher.example@example.test", RELAY),
    ("user@example.test。elsewhere.example", EITHER),
    # what UTS #46 maps: a remote domain in any dress stays remote
    ("user@example.test\uff0eelsewhere.example", RELAY),
    ("user@ｅｘａｍｐｌｅ.test．elsewhere.example", RELAY),
    ("user@ＥＬＳＥＷＨＥＲＥ.example", RELAY),
    ("user@BU\u0308CHER.example", RELAY),
    ("user%ｅｌｓｅｗｈｅｒｅ.example@example.test", RELAY),
]

# Spellings of the local bücher.example, configured by its A-label: the
# filter lets each through to Postfix.
IDN_LOCALS = ["user@bücher.example", "user@BÜCHER.EXAMPLE",
              "user@bu\u0308cher.example", "user@ｂüｃｈｅｒ。example",
              "user@XN--BCHER-KVA.example"]

# Recipients the filter must let through to Postfix.
LOCALS = [BOB, "CAROL@EXAMPLE.TEST", "Alice@Example.Test"]


def require_relay_filter():
    """The relay filter must be built (a skip, failed in CI) and the daemon
    must take it (portcullis -t): a refusal fails the tests."""
    relay_so = os.path.join(FILTER_DIR, "relay.so")
    if not os.path.exists(relay_so):
        raise unittest.SkipTest("relay filter not built: %s" % relay_so)
    p = Portcullis(backend_port=9)
    try:
        harness.require_config(p, minimal_config(p, "example.test",
                                                 "10.0.0.0/8"),
                               "the relay filter")
    finally:
        p.stop()


def minimal_config(p, domains, trusted):
    """A complete config text for Portcullis p with the relay filter."""
    return harness.filter_config_text(
        p, "relay", RELAY_SECTION.format(domains=domains, trusted=trusted), FILTER_DIR)


def relay_entries(record):
    """The relay filter's entries of a decision record, found loosely: any
    dict under the record that names the filter "relay"."""
    return harness.filter_entries(record, "relay")


class RelayFilterTest(ProxyTestCase):
    """A shared Postfix that logs every command it receives, and that
    would itself relay for 127.0.0.1."""

    postfix_options = {"extra_main": {"debug_peer_list": "127.0.0.1",
                                      "debug_peer_level": "2"}}

    @classmethod
    def setUpClass(cls):
        require_relay_filter()
        cls.postfix = Postfix(**cls.postfix_options)
        cls.addClassCleanup(cls.postfix.stop)
        cls.postfix.start()

    def setUp(self):
        super().setUp()
        # the Postfix is shared: each test reads only its own log lines
        self.maillog_start = len(self.postfix.maillog())

    def proxy(self, trusted="10.0.0.0/8", domains="example.test", **kw):
        kw.setdefault("filters", "relay")
        kw.setdefault("filter_dir", FILTER_DIR)
        # every refused RCPT may count as an error of the session
        kw.setdefault("max_errors", "1000")
        return self.start_proxy(
            backend_port=self.postfix.port,
            extra=RELAY_SECTION.format(domains=domains, trusted=trusted),
            **kw)

    def postfix_rcpts(self):
        """The RCPT TO commands Postfix received (verbose smtpd log)."""
        return re.findall(r"postfix/smtpd\[\d+\]: < .*?: (RCPT TO:.*)",
                          self.postfix.maillog()[self.maillog_start:], re.I)

    def send(self, c, rcpts, sender=ALICE, smtputf8=False, subject="relay"):
        """One transaction: MAIL, each RCPT (replies returned), and DATA
        when at least one was accepted; returns (replies, message)."""
        c.ehlo()
        mail = "MAIL FROM:<%s>" % sender + (" SMTPUTF8" if smtputf8 else "")
        r = c.cmd(mail)
        self.assertReply(r, 250, msg=mail)
        replies = [c.cmd("RCPT TO:<%s>" % a) for a in rcpts]
        msg = None
        if any(r.code == 250 for r in replies):
            msg = make_message(subject=subject)
            self.assertReply(c.cmd("DATA"), 354)
            c.send(dot_stuff(msg))
            self.assertReply(c.reply(), 250, msg="end of data")
        return replies, msg

    def assertRefused(self, rcpt, expected, reply):
        what = "RCPT TO:<%s>" % rcpt
        if expected == RELAY:
            self.assertReply(reply, 554, "5.7.1", msg=what)
            self.assertIn("Relay access denied", reply.text, what)
        elif expected == SYNTAX:
            self.assertReply(reply, 501, "5.1.3", msg=what)
        else:
            self.assertIn((reply.code, reply.enh),
                          [(554, "5.7.1"), (501, "5.1.3")],
                          "%s: %r" % (what, reply))

    def assertNeverReachedPostfix(self, rcpts):
        seen = self.postfix_rcpts()
        # the verbose log really lists the commands: bob's RCPT is there
        self.assertTrue(any(BOB in s.lower() for s in seen),
                        "Postfix's log lists no RCPT at all; maillog "
                        "tail:\n" + self.postfix.maillog()[-2000:])
        for rcpt in rcpts:
            for s in seen:
                self.assertNotIn("<%s>" % rcpt.lower(), s.lower(),
                                 "RCPT reached Postfix: " + s)
        log = self.postfix.maillog()[self.maillog_start:]
        self.assertNotRegex(log, r"to=<[^>]*elsewhere\.example[^>]*>",
                            "a relay trick was delivered or queued")

    def run_tricks(self, tricks, smtputf8=False):
        p = self.proxy()
        refused = []
        # a few sessions, so no error limit of either side comes near
        for start in range(0, len(tricks), 10):
            chunk = tricks[start:start + 10]
            c = self.client(p.port)
            replies, msg = self.send(
                c, [t for t, _ in chunk] + [BOB], smtputf8=smtputf8,
                subject="tricks %d" % start)
            for (rcpt, expected), reply in zip(chunk, replies):
                self.assertRefused(rcpt, expected, reply)
                refused.append(rcpt)
            self.assertReply(replies[-1], 250, msg="the local recipient")
            c.cmd("QUIT")
            self.assertTrue(self.postfix.find_message(
                "bob", b"Subject: tricks %d\n" % start, 20),
                "bob's message did not arrive")
        # bob's deliveries are logged: any queued trick would be too
        wait_for(lambda: len(re.findall(
            r"status=sent", self.postfix.maillog()[self.maillog_start:]))
                 >= len(range(0, len(tricks), 10)), 10)
        self.assertNeverReachedPostfix(refused)
        # the decision log names the filter and its verdict
        n_relay = sum(1 for _, e in tricks if e == RELAY)
        recs = p.wait_decisions(
            lambda d: any("denied" in json.dumps(e) for e in relay_entries(d)),
            1, 10)
        self.assertTrue(recs, "no decision record with the relay filter's "
                        "\"denied\": %r" % p.decisions()[-3:])
        text = json.dumps(p.decisions())
        self.assertIn('"relay"', text)
        self.assertGreaterEqual(text.count('"denied"'), 1)
        return n_relay

    # -- strangers ---------------------------------------------------

    def test_local_recipients_are_delivered(self):
        p = self.proxy()
        c = self.client(p.port)
        replies, msg = self.send(c, LOCALS, subject="locals")
        for a, r in zip(LOCALS, replies):
            self.assertReply(r, 250, msg="RCPT TO:<%s>" % a)
        for user in ("bob", "carol", "alice"):
            self.assertTrue(self.postfix.find_message(
                user, b"Subject: locals\n", 20),
                "%s got nothing; maillog:\n%s" % (
                    user, self.postfix.maillog()[-2000:]))
        recs = p.wait_transaction(count=1)
        self.assertTrue(recs, "no transaction record")
        entries = relay_entries(recs[-1])
        self.assertTrue(entries, "no relay filter entry in %r" % recs[-1])
        self.assertNotIn("denied", json.dumps(entries))
        self.assertIn("local", json.dumps(entries))

    def test_relay_tricks_are_refused_and_never_reach_postfix(self):
        self.assertGreaterEqual(len(TRICKS), 30)
        self.run_tricks(TRICKS)

    def test_utf8_relay_tricks_are_refused(self):
        self.run_tricks(UTF8_TRICKS, smtputf8=True)

    def test_every_spelling_of_a_local_idn_domain_reaches_postfix(self):
        p = self.proxy(domains="example.test, xn--bcher-kva.example")
        c = self.client(p.port)
        c.ehlo()
        self.assertReply(c.cmd("MAIL FROM:<%s> SMTPUTF8" % ALICE), 250)
        for rcpt in IDN_LOCALS:
            with self.subTest(rcpt=rcpt):
                r = c.cmd("RCPT TO:<%s>" % rcpt)
                self.assertNotIn("Relay access denied", r.text, rcpt)
                self.assertTrue(wait_for(lambda: any(
                    rcpt in s for s in self.postfix_rcpts()), 5),
                    "<%s> did not reach Postfix: %r" % (rcpt, r))
        c.cmd("RSET")
        c.cmd("QUIT")

    def test_postmaster_without_domain_is_not_refused(self):
        # RFC 5321 4.5.1: <Postmaster> must always be accepted; whatever
        # Postfix then says, the relay filter let it through.
        p = self.proxy()
        c = self.client(p.port)
        c.ehlo()
        self.assertReply(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        r = c.cmd("RCPT TO:<Postmaster>")
        self.assertTrue(wait_for(lambda: any(
            "<postmaster>" in s.lower() for s in self.postfix_rcpts()), 5),
            "<Postmaster> did not reach Postfix: %r" % r)
        c.cmd("RSET")
        c.cmd("QUIT")

    def test_refusal_names_the_recipient(self):
        p = self.proxy()
        c = self.client(p.port)
        c.ehlo()
        self.assertReply(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        r = c.cmd("RCPT TO:<user%elsewhere.example@example.test>")
        self.assertReply(r, 554, "5.7.1")
        self.assertIn("<user%elsewhere.example@example.test>: "
                      "Relay access denied", r.text)
        # the session goes on: a local recipient still works
        self.assertReply(c.cmd("RCPT TO:<%s>" % BOB), 250)
        c.cmd("RSET")
        c.cmd("QUIT")

    def test_local_domains_entries_for_sub_domains_and_literals(self):
        # ".example.test" covers sub-domains only; a listed literal is
        # local. Postfix knows neither, so it refuses them itself (550
        # or 554): what matters is that the RCPT reached it.
        p = self.proxy(domains="example.test, .example.test, [192.0.2.9]")
        c = self.client(p.port)
        c.ehlo()
        self.assertReply(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        for rcpt in ("user@sub.example.test", "user@[192.0.2.9]"):
            c.cmd("RCPT TO:<%s>" % rcpt)
            self.assertTrue(wait_for(lambda: any(
                "<%s>" % rcpt in s for s in self.postfix_rcpts()), 5),
                "%s did not reach Postfix" % rcpt)
        r = c.cmd("RCPT TO:<user@[192.0.2.10]>")
        self.assertReply(r, 554, "5.7.1")
        c.cmd("RSET")
        c.cmd("QUIT")

    # -- trusted clients ---------------------------------------------

    def test_trusted_client_relays_through_to_postfix(self):
        # Postfix relays for 127.0.0.1 (its mynetworks): the 250 can only
        # be Postfix's, our filter would have said 554.
        p = self.proxy(trusted="127.0.0.0/8, ::1/128")
        c = self.client(p.port)
        c.ehlo()
        self.assertReply(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        rcpt = "trusted-relay@" + ELSEWHERE
        r = c.cmd("RCPT TO:<%s>" % rcpt)
        self.assertReply(r, 250, msg="trusted RCPT")
        self.assertTrue(wait_for(lambda: any(
            "<%s>" % rcpt in s for s in self.postfix_rcpts()), 5),
            "the trusted RCPT did not reach Postfix")
        self.assertReply(c.cmd("RCPT TO:<%s>" % BOB), 250)
        c.cmd("RSET")
        c.cmd("QUIT")
        recs = p.wait_decisions(
            lambda d: any("trusted" in json.dumps(e)
                          for e in relay_entries(d)), 1, 10)
        self.assertTrue(recs, "no decision record with the relay filter's "
                        "\"trusted\": %r" % p.decisions()[-3:])
        self.assertNotIn("denied", json.dumps(
            [relay_entries(d) for d in p.decisions()]))

    @unittest.skipUnless(has_ipv6(), "no IPv6 loopback")
    def test_ipv6_loopback_is_trusted_by_default(self):
        from harness import free_port
        port6 = free_port()
        p = self.start_proxy(
            backend_port=self.postfix.port, port6=port6,
            filters="relay", filter_dir=FILTER_DIR,
            extra="\n[filter relay]\nmodule = relay\n"
                  "local_domains = example.test\n")
        c = self.client(port6, host="::1")
        c.ehlo()
        self.assertReply(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        r = c.cmd("RCPT TO:<v6-trusted@%s>" % ELSEWHERE)
        # Postfix decides: 250 (mynetworks has [::1]/128); never our 554
        self.assertTrue(wait_for(lambda: any(
            "v6-trusted@" in s for s in self.postfix_rcpts()), 5),
            "the RCPT from ::1 did not reach Postfix: %r" % r)
        c.cmd("RSET")
        c.cmd("QUIT")
        self.assertTrue(p.wait_decisions(
            lambda d: any("trusted" in json.dumps(e)
                          for e in relay_entries(d)), 1, 10))


class RelayBehindStrictPostfixTest(ProxyTestCase):
    """Postfix that relays for no one: for a trusted client, the refusal
    comes from Postfix, and its log shows the RCPT arrived."""

    @classmethod
    def setUpClass(cls):
        require_relay_filter()
        cls.postfix = Postfix(extra_main={"mynetworks": "192.0.2.0/24"})
        cls.addClassCleanup(cls.postfix.stop)
        cls.postfix.start()

    def test_trusted_remote_recipient_is_judged_by_postfix(self):
        p = self.start_proxy(
            backend_port=self.postfix.port, filters="relay",
            filter_dir=FILTER_DIR, max_errors="100",
            extra=RELAY_SECTION.format(domains="example.test",
                                       trusted="127.0.0.0/8"))
        c = self.client(p.port)
        c.ehlo()
        self.assertReply(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        rcpt = "judged@" + ELSEWHERE
        r = c.cmd("RCPT TO:<%s>" % rcpt)
        self.assertCode(r, 5)
        # Postfix's own refusal is in its log: the RCPT reached it
        m = self.postfix.wait_log(r"NOQUEUE: reject: RCPT from .*<%s>: "
                                  r"Relay access denied" % re.escape(rcpt),
                                  10)
        self.assertTrue(m, "no Postfix reject in the maillog:\n"
                        + self.postfix.maillog()[-2000:])
        c.cmd("QUIT")
        recs = p.wait_decisions(
            lambda d: any("trusted" in json.dumps(e)
                          for e in relay_entries(d)), 1, 10)
        self.assertTrue(recs, "the relay filter did not record \"trusted\": "
                        "%r" % p.decisions()[-3:])


class RelayConfigTest(ProxyTestCase):
    """portcullis -t refuses bad relay options, naming file, line, key."""

    def setUp(self):
        require_relay_filter()
        self.p = Portcullis(backend_port=1)
        self.addCleanup(self.p.stop)

    def check(self, section):
        from harness import make_tempdir
        if self.p.dir is None:
            self.p.dir = make_tempdir("portcullis-proxy-")
        self.p.kwargs.update(filters="relay", filter_dir=FILTER_DIR)
        self.p.extra = section
        text = self.p.config_text()
        r = self.p.check_config(text)
        return r, text, os.path.join(self.p.dir, "check.conf")

    def assertNamed(self, section, key, line_of=None):
        r, text, path = self.check(section)
        err = r.stderr.decode(errors="replace") + r.stdout.decode(
            errors="replace")
        self.assertNotEqual(r.returncode, 0, "accepted:\n" + text)
        lines = text.split("\n")
        needle = line_of or key
        idx = [i for i, l in enumerate(lines)
               if l.split("=")[0].strip() == needle]
        self.assertTrue(idx, "test bug: no line for %s" % needle)
        self.assertRegex(err, r"%s:%d: (\[filter relay\] )?%s: \S" % (
            re.escape(path), idx[0] + 1, re.escape(key)))
        return err

    def test_good_relay_config_passes(self):
        r, text, _ = self.check(RELAY_SECTION.format(
            domains="example.test, .example.test, bücher.example, "
                    "[192.0.2.1]",
            trusted="10.0.0.0/8, 2001:db8::/32, [::1]/128"))
        self.assertEqual(r.returncode, 0, r.stderr.decode(errors="replace"))

    def test_bad_cidr_is_reported_with_file_line_and_key(self):
        err = self.assertNamed(RELAY_SECTION.format(
            domains="example.test", trusted="10.0.0.0/8, 10.0.0.0/33"),
            "trusted_networks")
        self.assertIn("10.0.0.0/33", err)

    def test_host_bits_in_a_network_are_refused(self):
        self.assertNamed(RELAY_SECTION.format(
            domains="example.test", trusted="10.1.2.3/8"),
            "trusted_networks")

    def test_bad_domain_is_reported(self):
        err = self.assertNamed(RELAY_SECTION.format(
            domains="example.test, exa..mple.test", trusted="10.0.0.0/8"),
            "local_domains")
        self.assertIn("exa..mple.test", err)

    def test_bad_percent_hack_value_is_reported(self):
        self.assertNamed(RELAY_SECTION.format(
            domains="example.test", trusted="10.0.0.0/8")
            + "allow_percent_hack = sometimes\n", "allow_percent_hack")

    def test_bad_local_address_is_reported(self):
        self.assertNamed(RELAY_SECTION.format(
            domains="example.test", trusted="10.0.0.0/8")
            + "local_addresses = 192.0.2.300\n", "local_addresses")

    def test_missing_domains_file_is_reported(self):
        self.assertNamed("\n[filter relay]\nmodule = relay\n"
                         "local_domains_file = /nonexistent/domains\n",
                         "local_domains_file")

    def test_local_domains_are_required(self):
        r, text, path = self.check("\n[filter relay]\nmodule = relay\n"
                                   "trusted_networks = 10.0.0.0/8\n")
        self.assertNotEqual(r.returncode, 0, "accepted:\n" + text)
        self.assertIn("local_domains", r.stderr.decode(errors="replace"))

    def test_misspelt_option_is_refused(self):
        self.assertNamed(RELAY_SECTION.format(
            domains="example.test", trusted="10.0.0.0/8")
            + "local_domain = example.test\n", "local_domain")


if __name__ == "__main__":
    unittest.main()
