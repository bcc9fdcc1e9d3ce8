"""
Portcullis in milter mode: a private Postfix with smtpd_milters pointing
at Portcullis's [milter] listen, so the filter chain judges Postfix's
clients without a proxy in line.

One Portcullis serves both front-ends from one configuration: the SMTP
listener (proxy mode, in front of a capture backend) and the milter
socket. The same message sent both ways must get the same refusal with
the same filter entries in the decision log; through Postfix the client
sees Portcullis's codes and texts, and accepted mail is delivered with
Portcullis's header fields.

Postfix's milter_default_action is accept here: a Postfix that gave up
on the milter (a timeout, a dropped connection) would let the message
through, so every refusal below proves the answer came from Portcullis.
"""

import os
import re
import smtplib
import sys
import time
import unittest

from harness import (DOMAIN, PROJECT, Postfix, ProxyTestCase, free_port,
                     make_message, wait_for)
import harness  # noqa: E402

sys.path.insert(0, os.path.join(PROJECT, "tests", "dns"))
try:
    from dnsserver import DNSServer
except ImportError:  # pragma: no cover - skipped below
    DNSServer = None

FILTER_DIR = os.environ.get("PORTCULLIS_FILTER_DIR") or os.path.join(
    PROJECT, "filters", ".libs")
PLUGIN_DIR = os.environ.get("PORTCULLIS_TEST_PLUGIN_DIR") or os.path.join(
    PROJECT, "tests", "plugins", ".libs")
PROBE = os.path.join(PLUGIN_DIR, "probe.so")

AUTHSERV = "proxy.portcullis.test"
ALICE = "alice@" + DOMAIN
BOB = "bob@" + DOMAIN
SIZE_LIMIT = 100 * 1024

ZONE = {
    "pass.test": [{"TXT": "v=spf1 ip4:127.0.0.1 ip6:::1 -all"}],
    "fail.test": [{"TXT": "v=spf1 ip4:192.0.2.0/24 -all"}],
}

DNS = None


def setUpModule():
    global DNS
    harness.require_filters()
    harness.skip_unless_tool("python3-dnslib", DNSServer is not None)
    for so in ("size.so", "relay.so", "spf.so"):
        if not os.path.exists(os.path.join(FILTER_DIR, so)):
            raise unittest.SkipTest("filter not built: %s/%s" % (FILTER_DIR, so))
    if not os.path.exists(PROBE):
        raise unittest.SkipTest("test plugin not built: %s" % PROBE)
    DNS = DNSServer(ZONE).start()


def tearDownModule():
    global DNS
    if DNS is not None:
        DNS.stop()
        DNS = None


CHAIN = "size, relay, spf, refuser, slow, headers, envelope, dropper"


def chain_sections(milter_port, slow_sleep="3",
                   refuser_text="refused by the custom filter (100% sure)"):
    """The [milter] section and the chain: size, relay (nothing on
    loopback trusted), spf, a custom filter that refuses one recipient,
    one that is late for one sender, and one that changes the header of
    another sender's messages."""
    return """
[milter]
listen = inet:%d@127.0.0.1

[dns]
servers = 127.0.0.1:%d
timeout = 1
retries = 0

[filter size]
module = size
timeout = 5
limit = %d

[filter relay]
module = relay
timeout = 5
on_error = tempfail
local_domains = %s
trusted_networks = 192.0.2.0/24

[filter spf]
module = spf
timeout = 10
on_error = tempfail
trusted_networks =

[filter refuser]
module = %s
stage = rcpt
match = blocked@
verdict = reject
code = 550
enh = 5.7.1
text = %s

[filter slow]
module = %s
stage = mail
match = slow@
sleep = %s
timeout = 0.5
on_error = tempfail

[filter headers]
module = %s
stage = data
match = headers@
add_header = X-Added: at the end
insert_header = X-Inserted: on top
change_header = Subject: changed by the chain
report_client = yes

[filter envelope]
module = %s
stage = data
match = envelope@
set_sender = changed@pass.test
add_rcpt = bob@%s
delete_rcpt = alice@%s
replace_body = the chain's new body

[filter dropper]
module = %s
stage = data
match = discard@
verdict = discard
""" % (milter_port, DNS.port, SIZE_LIMIT, DOMAIN, PROBE, refuser_text, PROBE,
       slow_sleep, PROBE, PROBE, DOMAIN, DOMAIN, PROBE)


def filter_verdicts(record):
    """[(filter, stage, verdict, action)] of a decision record."""
    return [(e.get("filter"), e.get("stage"), e.get("verdict"), e.get("action"))
            for e in record.get("filters") or []]


class MilterModeTest(ProxyTestCase):
    """Postfix -> smtpd_milters -> Portcullis in milter mode."""

    @classmethod
    def setUpClass(cls):
        cls.milter_port = free_port()
        cls.postfix = Postfix(extra_main={
            "smtpd_milters": "inet:127.0.0.1:%d" % cls.milter_port,
            "milter_default_action": "accept",
            "milter_protocol": "6",
        })
        cls.addClassCleanup(cls.postfix.stop)
        cls.postfix.start()

    def setUp(self):
        self.cap = self.start_sink()
        self.p = self.start_proxy(
            backend_port=self.cap.port,
            filters=CHAIN,
            filter_dir=FILTER_DIR, authserv_id=AUTHSERV,
            extra=chain_sections(self.milter_port))
        if not harness.wait_listening(self.milter_port, 15, self.p.proc):
            self.fail("the milter front-end did not listen on %d:\n%s" % (
                self.milter_port, self.p.stderr()[-3000:]))

    # helpers
    def send(self, port, sender, rcpts, msg, helo="client.example.test"):
        """One transaction by smtplib; (stage, code, text) of the first
        refusal, or ("accepted", 250, text)."""
        s = smtplib.SMTP("127.0.0.1", port, local_hostname=helo, timeout=60)
        try:
            s.ehlo()
            code, text = s.mail(sender)
            if code != 250:
                return "mail", code, text.decode()
            ok = []
            last = None
            for r in rcpts:
                code, text = s.rcpt(r)
                if code == 250:
                    ok.append(r)
                else:
                    last = ("rcpt", code, text.decode())
            if not ok:
                return last
            code, text = s.data(msg)
            if code != 250:
                return "data", code, text.decode()
            return "accepted", code, text.decode()
        finally:
            try:
                s.quit()
            except smtplib.SMTPException:
                pass

    def milter_record(self, sender, **match):
        recs = self.p.wait_decisions(
            lambda d: d.get("mode") == "milter" and d.get("type") == "transaction"
            and d.get("sender") == sender
            and all(d.get(k) == v for k, v in match.items()), 1, 15)
        self.assertTrue(recs, "no milter record for %s: %r\n%s" % (
            sender, self.p.decisions()[-4:], self.p.stderr()[-2000:]))
        return recs[-1]

    def proxy_record(self, sender, **match):
        recs = self.p.wait_decisions(
            lambda d: "mode" not in d and d.get("type") == "transaction"
            and d.get("sender") == sender
            and all(d.get(k) == v for k, v in match.items()), 1, 15)
        self.assertTrue(recs, "no proxy record for %s: %r" % (
            sender, self.p.decisions()[-4:]))
        return recs[-1]

    def both_ways(self, sender, rcpts, msg, expected):
        """Send through Postfix (milter mode) and through the proxy; both
        must end as expected (stage, code, text) with the same filter
        verdicts in their records. Returns the milter-mode record."""
        got = self.send(self.postfix.port, sender, rcpts, msg)
        self.assertEqual(got, expected, "through Postfix")
        got = self.send(self.p.port, sender, rcpts, msg)
        self.assertEqual(got, expected, "through the proxy")
        m = self.milter_record(sender)
        p = self.proxy_record(sender)
        self.assertEqual(filter_verdicts(m), filter_verdicts(p))
        self.assertEqual(m.get("action"), p.get("action"))
        self.assertEqual(m.get("reply"), p.get("reply"))
        self.assertEqual(m.get("size"), p.get("size"))
        return m

    # tests
    def test_relay_attempt_is_refused_with_the_relay_filters_reply(self):
        rcpt = "someone@elsewhere.example"
        m = self.both_ways("relay@pass.test", [rcpt], make_message(),
                           ("rcpt", 554, "5.7.1 <%s>: Relay access denied" % rcpt))
        self.assertEqual(m["recipients"][0]["address"], rcpt)
        self.assertEqual(m["recipients"][0]["reply"],
                         "554 5.7.1 <%s>: Relay access denied" % rcpt)

    def test_oversize_message_is_refused_with_552(self):
        body = ("x" * 70 + "\r\n") * (SIZE_LIMIT // 72 + 10)
        msg = make_message(subject="big", body=body)
        m = self.both_ways("big@pass.test", [ALICE], msg,
                           ("data", 552, "5.3.4 Message size exceeds fixed "
                            "maximum message size"))
        self.assertEqual(m["action"], "rejected")
        self.assertEqual(m["reason"], "message too big")

    def test_spf_fail_is_refused_with_the_spf_filters_reply(self):
        got = self.send(self.postfix.port, "forger@fail.test", [ALICE],
                        make_message())
        self.assertEqual(got[:2], ("mail", 550), got)
        self.assertTrue(got[2].startswith("5.7.23 "), got)
        proxy = self.send(self.p.port, "forger@fail.test", [ALICE],
                          make_message())
        self.assertEqual(proxy, got)
        m = self.milter_record("forger@fail.test")
        p = self.proxy_record("forger@fail.test")
        self.assertEqual(filter_verdicts(m), filter_verdicts(p))
        self.assertIn(("spf", "mail", "reject", None), filter_verdicts(m))

    def test_custom_filter_refuses_a_recipient(self):
        m = self.both_ways("custom@pass.test", ["bob+blocked@" + DOMAIN],
                           make_message(),
                           ("rcpt", 550, "5.7.1 refused by the custom filter (100% sure)"))
        self.assertIn(("refuser", "rcpt", "reject", None), filter_verdicts(m))

    def test_discard_is_accepted_by_postfix_and_never_delivered(self):
        msg = make_message(sender="discard@pass.test")
        got = self.send(self.postfix.port, "discard@pass.test", [ALICE], msg)
        self.assertEqual(got[:2], ("accepted", 250), got)
        self.assertTrue(self.postfix.wait_log(r"milter-discard: END-OF-MESSAGE", 10),
                        self.postfix.maillog()[-2000:])
        proxy = self.send(self.p.port, "discard@pass.test", [ALICE], msg)
        self.assertEqual(proxy[:2], ("accepted", 250), proxy)
        m = self.milter_record("discard@pass.test")
        p = self.proxy_record("discard@pass.test")
        self.assertEqual(m["action"], "discarded")
        self.assertEqual(filter_verdicts(m), filter_verdicts(p))
        self.assertIn(("dropper", "data", "discard", None), filter_verdicts(m))
        mid = re.search(rb"Message-ID: (<[^>]+>)", msg, re.I).group(1)
        self.assertFalse(self.postfix.find_message("alice", b"Message-ID: " + mid, 2))

    def test_accepted_mail_carries_portcullis_headers(self):
        msg = make_message(subject="accepted through the milter")
        got = self.send(self.postfix.port, "good@pass.test", [ALICE], msg)
        self.assertEqual(got[:2], ("accepted", 250), got)
        mid = re.search(rb"Message-ID: (<[^>]+>)", msg.encode()
                        if isinstance(msg, str) else msg, re.I).group(1)
        found = self.postfix.find_message("alice", b"Message-ID: " + mid, 20)
        self.assertTrue(found, "not delivered:\n" + self.postfix.maillog()[-2000:])
        head = found.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].decode()
        self.assertRegex(head, r"(?m)^Received-SPF: pass ")
        self.assertRegex(head, r"(?m)^Authentication-Results: %s;[\s\S]*spf=pass"
                         % re.escape(AUTHSERV))
        m = self.milter_record("good@pass.test", action="accepted")
        # The record names Postfix's queue id, as its log does.
        qid = m.get("queue_id")
        self.assertTrue(qid, m)
        self.assertTrue(self.postfix.wait_log(r"%s: milter|%s: from=<good@pass.test>"
                                              % (qid, qid), 10),
                        "queue id %s not in Postfix's log" % qid)
        self.assertEqual(m["client"]["address"], "127.0.0.1")
        self.assertEqual(m["client"]["helo"], "client.example.test")

    def test_a_message_over_tcp_waits_for_no_delayed_ack(self):
        # Postfix writes each milter event and waits for the answer; a
        # reply libmilter writes in pieces, its last held back by Nagle
        # until Postfix's delayed ACK of the first, cost 40 ms twice a
        # message (99 ms a message before TCP_NODELAY, 48 ms after: the
        # 40 ms left come from Postfix's own writes, which only a UNIX
        # socket avoids, as Postfix's MILTER_README advises)
        msg = make_message("timing")
        times = []
        for _ in range(7):
            t0 = time.monotonic()
            got = self.send(self.postfix.port, ALICE, [ALICE], msg)
            times.append(time.monotonic() - t0)
            self.assertEqual(got[0], "accepted", got)
        times.sort()
        self.assertLess(times[3], 0.075, "median %.1f ms: %r" % (
            times[3] * 1000, [round(t * 1000) for t in times]))

    def test_envelope_and_body_changes_reach_postfix(self):
        # the chain changes the sender, adds bob, deletes alice and
        # replaces the body: Postfix delivers what the chain made
        msg = make_message(subject="envelope change", sender="envelope@pass.test",
                           body="the client's body\r\n")
        got = self.send(self.postfix.port, "envelope@pass.test", [ALICE], msg)
        self.assertEqual(got[:2], ("accepted", 250), got)
        mid = re.search(rb"Message-ID: (<[^>]+>)", msg, re.I).group(1)
        found = self.postfix.find_message("bob", b"Message-ID: " + mid, 20)
        self.assertTrue(found, "bob got nothing:\n" + self.postfix.maillog()[-2000:])
        head, body = found.replace(b"\r\n", b"\n").split(b"\n\n", 1)
        self.assertEqual(body, b"the chain's new body\n")
        self.assertIn(b"Return-Path: <changed@pass.test>", head)
        self.assertEqual([m for m in self.postfix.messages("alice") if mid in m], [])
        rec = self.milter_record("envelope@pass.test")
        self.assertEqual(rec["action"], "accepted")
        self.assertEqual(rec["changes"]["sender"], "changed@pass.test")
        self.assertTrue(rec["changes"]["body"])

    def test_late_filter_gets_its_on_error_not_postfixs_default(self):
        t0 = time.monotonic()
        got = self.send(self.postfix.port, "slow@pass.test", [ALICE], make_message())
        took = time.monotonic() - t0
        self.assertEqual(got, ("mail", 451, "4.3.0 Error: message filter "
                               "unavailable, try again later"))
        self.assertLess(took, 3, "the answer waited for the late filter")
        m = self.milter_record("slow@pass.test")
        self.assertEqual(m["action"], "tempfailed")
        self.assertIn(("slow", "mail", "timeout", "tempfail"), filter_verdicts(m))

    def delivered_header(self, msg, user="alice"):
        """The header block (str, LF) of the delivered copy of msg."""
        mid = re.search(rb"Message-ID: (<[^>]+>)", msg, re.I).group(1)
        found = self.postfix.find_message(user, b"Message-ID: " + mid, 20)
        self.assertTrue(found, "not delivered:\n" + self.postfix.maillog()[-2000:])
        return found.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].decode()

    def test_header_changes_reach_the_delivered_message_in_chain_order(self):
        msg = make_message(subject="original subject", sender="headers@pass.test")
        got = self.send(self.postfix.port, "headers@pass.test", [ALICE], msg)
        self.assertEqual(got[:2], ("accepted", 250), got)
        head = self.delivered_header(msg)
        names = [l.split(":", 1)[0].lower() for l in head.split("\n")
                 if l and l[0] not in " \t"]
        self.assertIn("Subject: changed by the chain", head)
        self.assertNotIn("original subject", head)
        # insert_header puts its field on top of the client's header,
        # add_header after the client's last field
        self.assertLess(names.index("x-inserted"), names.index("from"), head)
        self.assertGreater(names.index("x-added"), names.index("message-id"), head)
        self.assertEqual(names.count("x-added"), 1, head)
        self.assertEqual(names.count("x-inserted"), 1, head)
        # the filters saw the client Postfix named: address, port, its
        # verified name, HELO, and no login
        m = self.milter_record("headers@pass.test", action="accepted")
        seen = [e["results"]["client"] for e in m["filters"]
                if e["filter"] == "headers" and e["stage"] == "data"]
        self.assertEqual(len(seen), 1, m)
        self.assertRegex(seen[0], r"^127\.0\.0\.1 \d+ localhost client\.example\.test -$")

    def test_forged_authentication_results_are_removed(self):
        forged = "Authentication-Results: %s; spf=pass smtp.mailfrom=forged" % AUTHSERV
        other = "Authentication-Results: other.example; spf=pass smtp.mailfrom=kept"
        msg = make_message(sender="forged@pass.test",
                           extra_headers=(forged, other))
        got = self.send(self.postfix.port, "forged@pass.test", [ALICE], msg)
        self.assertEqual(got[:2], ("accepted", 250), got)
        head = self.delivered_header(msg)
        self.assertNotIn("smtp.mailfrom=forged", head)
        self.assertIn("smtp.mailfrom=kept", head)
        # the chain's own verdict replaces the forged one
        self.assertRegex(head, r"(?m)^Authentication-Results: %s;[\s\S]*spf=pass"
                         % re.escape(AUTHSERV))

    def test_a_thousand_forged_authentication_results_go_in_one_pass(self):
        forged = tuple("Authentication-Results: %s; spf=pass smtp.mailfrom=forged%d"
                       % (AUTHSERV, i) for i in range(1000))
        msg = make_message(sender="forged@pass.test", extra_headers=forged)
        t0 = time.monotonic()
        got = self.send(self.postfix.port, "forged@pass.test", [ALICE], msg)
        self.assertEqual(got[:2], ("accepted", 250), got)
        self.assertLess(time.monotonic() - t0, 20)
        head = self.delivered_header(msg)
        self.assertNotIn("smtp.mailfrom=forged", head)
        self.assertEqual(len(re.findall(r"(?m)^Authentication-Results:", head)), 1, head[:2000])


class MilterSupervisionTest(ProxyTestCase):
    """The milter front-end is a process the master supervises."""

    @classmethod
    def setUpClass(cls):
        cls.milter_port = free_port()
        cls.postfix = Postfix(extra_main={
            "smtpd_milters": "inet:127.0.0.1:%d" % cls.milter_port,
            "milter_default_action": "accept",
        })
        cls.addClassCleanup(cls.postfix.stop)
        cls.postfix.start()

    def start(self, **kw):
        self.cap = self.start_sink()
        p = self.start_proxy(backend_port=self.cap.port, filters=CHAIN,
                             filter_dir=FILTER_DIR, authserv_id=AUTHSERV,
                             extra=chain_sections(self.milter_port, **kw))
        self.assertTrue(harness.wait_listening(self.milter_port, 15, p.proc),
                        p.stderr()[-3000:])
        return p

    def milter_pids(self, p, count=1):
        """The pids that logged "milter: listening", once count did."""
        found = p.wait_log(r"portcullis\[(\d+)\]: info: milter: listening on",
                           count, 20)
        self.assertTrue(found, p.stderr()[-3000:])
        return [int(x) for x in found]

    def refused(self, text="refused by the custom filter (100% sure)"):
        """A custom filter's refusal reaches Postfix's client."""
        s = smtplib.SMTP("127.0.0.1", self.postfix.port, timeout=60)
        try:
            s.ehlo("client.example.test")
            self.assertEqual(s.mail("sup@pass.test")[0], 250)
            code, reply = s.rcpt("bob+blocked@" + DOMAIN)
            self.assertEqual((code, reply.decode()), (550, "5.7.1 " + text))
        finally:
            s.quit()

    def test_a_crashed_milter_process_is_restarted(self):
        import signal
        p = self.start()
        first = self.milter_pids(p)[0]
        os.kill(first, signal.SIGKILL)
        self.assertTrue(p.wait_log(r"milter front-end %d killed by signal 9" % first),
                        p.stderr()[-3000:])
        second = self.milter_pids(p, 2)[1]
        self.assertNotEqual(first, second)
        self.assertTrue(harness.wait_listening(self.milter_port, 15), p.stderr()[-2000:])
        self.refused()

    def test_sighup_replaces_the_milter_process_with_the_new_configuration(self):
        import signal
        p = self.start()
        first = self.milter_pids(p)[0]
        self.refused()
        p.extra = chain_sections(self.milter_port, refuser_text="refused after the reload")
        p.write_config()
        p.signal(signal.SIGHUP)
        second = self.milter_pids(p, 2)[1]
        self.assertNotEqual(first, second)
        # the old generation finishes and exits
        self.assertTrue(wait_for(lambda: not os.path.exists("/proc/%d" % first)
                                 or open("/proc/%d/stat" % first).read().split()[2] == "Z",
                                 20), p.stderr()[-3000:])
        self.assertTrue(harness.wait_listening(self.milter_port, 15), p.stderr()[-2000:])
        self.refused("refused after the reload")


    def test_sigterm_lets_the_open_mta_connection_finish_then_exits_cleanly(self):
        import signal
        p = self.start()
        self.milter_pids(p)
        s = smtplib.SMTP("127.0.0.1", self.postfix.port, timeout=60)
        try:
            s.ehlo("client.example.test")
            self.assertEqual(s.mail("drain@pass.test")[0], 250)
            p.signal(signal.SIGTERM)
            # the milter stops accepting, but this session's stages still
            # get their answers from the chain
            self.assertTrue(p.wait_log(r"stopping: draining"), p.stderr()[-2000:])
            code, reply = s.rcpt("bob+blocked@" + DOMAIN)
            self.assertEqual((code, reply.decode()),
                             (550, "5.7.1 refused by the custom filter (100% sure)"),
                             p.stderr()[-3000:] + self.postfix.maillog()[-3000:])
        finally:
            s.quit()
        self.assertEqual(p.wait_exit(20), 0, p.stderr()[-3000:])
        rec = [d for d in p.decisions() if d.get("sender") == "drain@pass.test"]
        self.assertEqual(len(rec), 1, p.decisions()[-3:])
        self.assertEqual(rec[0]["mode"], "milter")
        self.assertEqual(rec[0]["action"], "aborted")
        self.assertEqual(rec[0]["recipients"][0]["reply"],
                         "550 5.7.1 refused by the custom filter (100% sure)")


class MilterUnixSocketTest(ProxyTestCase):
    """[milter] listen = unix:/path, Portcullis running as Postfix's
    user: the socket is group-writable, and a reload hands the path to
    the new process."""

    def test_unix_socket_serves_postfix_and_survives_a_reload(self):
        import pwd
        import signal
        import stat
        sockdir = harness.make_tempdir("portcullis-milter-sock-")
        self.addCleanup(harness.remove_tree, sockdir)
        pf = pwd.getpwnam("postfix")
        os.chown(sockdir, pf.pw_uid, pf.pw_gid)
        path = os.path.join(sockdir, "milter.sock")
        postfix = self.start_postfix(extra_main={
            "smtpd_milters": "unix:" + path,
            "milter_default_action": "accept",
        })
        cap = self.start_sink()
        p = self.start_proxy(backend_port=cap.port, filters=CHAIN, filter_dir=FILTER_DIR,
                             authserv_id=AUTHSERV, user="postfix",
                             extra=chain_sections(0).replace(
                                 "listen = inet:0@127.0.0.1", "listen = unix:" + path))
        self.assertTrue(wait_for(lambda: os.path.exists(path), 15), p.stderr()[-3000:])
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode) & 0o077, 0o070)

        def refused(text):
            s = smtplib.SMTP("127.0.0.1", postfix.port, timeout=60)
            try:
                s.ehlo("client.example.test")
                self.assertEqual(s.mail("unix@pass.test")[0], 250)
                code, reply = s.rcpt("bob+blocked@" + DOMAIN)
                self.assertEqual((code, reply.decode()), (550, "5.7.1 " + text),
                                 postfix.maillog()[-2000:] + p.stderr()[-2000:])
            finally:
                s.quit()
        refused("refused by the custom filter (100% sure)")
        p.extra = chain_sections(0, refuser_text="refused after the reload").replace(
            "listen = inet:0@127.0.0.1", "listen = unix:" + path)
        p.write_config()
        p.signal(signal.SIGHUP)
        self.assertTrue(p.wait_log(r"info: milter: listening on unix:", 2, 20),
                        p.stderr()[-3000:])
        refused("refused after the reload")


class MilterConnectRefusalTest(ProxyTestCase):
    """A filter that refuses the client at connect."""

    def test_a_client_refused_at_connect_is_refused_by_postfix(self):
        """libmilter passes no reply text at connect (smfi_setreply(3)):
        Postfix refuses the client with its own 554 greeting."""
        milter_port = free_port()
        postfix = self.start_postfix(extra_main={
            "smtpd_milters": "inet:127.0.0.1:%d" % milter_port,
            "milter_default_action": "accept",
        })
        cap = self.start_sink()
        p = self.start_proxy(
            backend_port=cap.port, filters="gate", filter_dir=FILTER_DIR,
            extra="\n[milter]\nlisten = inet:%d@127.0.0.1\n\n[filter gate]\n"
                  "module = %s\nstage = connect\nverdict = reject\ncode = 554\n"
                  "enh = 5.7.1\ntext = no clients today\n" % (milter_port, PROBE))
        self.assertTrue(harness.wait_listening(milter_port, 15, p.proc), p.stderr()[-2000:])
        with self.assertRaises(smtplib.SMTPConnectError) as refused:
            smtplib.SMTP("127.0.0.1", postfix.port, timeout=60)
        self.assertEqual(refused.exception.smtp_code, 554)
        recs = p.wait_decisions(lambda d: d.get("mode") == "milter"
                                and d.get("type") == "connection", 1, 15)
        self.assertTrue(recs, p.decisions())
        self.assertEqual(recs[0]["action"], "refused")
        self.assertEqual(recs[0]["reason"], "refused by a filter")
        self.assertEqual([(e["filter"], e["stage"], e["verdict"]) for e in recs[0]["filters"]],
                         [("gate", "connect", "reject")])


class MilterConfigTest(ProxyTestCase):
    """[milter] listen in portcullis -t."""

    def check(self, text):
        p = harness.Portcullis()
        self.addCleanup(p.stop)
        r = p.check_config(text)
        return r, r.stdout.decode() + r.stderr.decode(), os.path.join(p.dir, "check.conf")

    def test_a_milter_only_configuration_needs_no_listener_or_backend(self):
        r, out, _ = self.check("[portcullis]\nspool_dir = /tmp/pc-milter-spool\n"
                               "[milter]\nlisten = unix:/run/portcullis/milter.sock\n")
        self.assertEqual(r.returncode, 0, out)

    def test_a_bad_listen_is_named_with_file_line_and_key(self):
        for bad in ("milter.sock", "unix:relative/path", "inet:0@127.0.0.1",
                    "inet:99999", "tcp:25@127.0.0.1", "inet:25@"):
            r, out, path = self.check("[portcullis]\nspool_dir = /tmp/x\n\n"
                                      "[milter]\nlisten = %s\n" % bad)
            self.assertNotEqual(r.returncode, 0, bad)
            self.assertRegex(out, r"%s:5: \[milter\] listen: " % re.escape(path), bad)

    def test_smtp_listeners_still_need_a_backend(self):
        r, out, path = self.check("[portcullis]\nlisten = 127.0.0.1:2525\n"
                                  "spool_dir = /tmp/x\n[milter]\n"
                                  "listen = inet:8891@127.0.0.1\n")
        self.assertNotEqual(r.returncode, 0)
        self.assertRegex(out, r"\[backend\] servers: required key missing")
