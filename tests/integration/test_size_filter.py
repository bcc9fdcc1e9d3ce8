"""
The built-in size filter (filters/size): a message size limit per
listener. A declared SIZE= over the limit is refused at MAIL, EHLO
advertises the lower limit, a message that grows past it is read to its
end and refused with 552 5.3.4, and listener_limits gives another limit
on another listen address. The capture server is the backend (it
announces SIZE 10240000 and records every byte it gets).
"""

import os
import re
import unittest

from harness import (DOMAIN, PROJECT, ProxyTestCase, Portcullis,
                     make_message, dot_stuff, free_port, make_tempdir,
                     remove_tree)
import harness  # noqa: E402


def setUpModule():
    # a daemon that refuses a filter chain fails every test here
    harness.require_filters()


ALICE = "alice@" + DOMAIN
BOB = "bob@" + DOMAIN

FILTER_DIR = os.environ.get("PORTCULLIS_FILTER_DIR") or os.path.join(
    PROJECT, "filters", ".libs")
LIMIT = 5120          # limit = 5k
BACKEND_SIZE = 10240000


def size_section(limit="5k", listener_limits=None):
    text = "\n[filter size]\nmodule = size\ntimeout = 5\nlimit = %s\n" % limit
    if listener_limits:
        text += "listener_limits = %s\n" % listener_limits
    return text


def message_of(size, subject="size"):
    """A message of at least size bytes (CRLF lines of 72)."""
    head = make_message(subject, b"")
    lines = (size - len(head)) // 72 + 1
    return head + b"".join(b"%070d\r\n" % i for i in range(lines))


class SizeFilterTest(ProxyTestCase):

    def setUp(self):
        if not os.path.exists(os.path.join(FILTER_DIR, "size.so")):
            self.skipTest("size filter not built: %s/size.so" % FILTER_DIR)
        self.cap = self.start_capture()

    def proxy(self, limit="5k", listener_limits=None, **kw):
        return self.start_proxy(backend_port=self.cap.port, filters="size",
                                filter_dir=FILTER_DIR,
                                extra=size_section(limit, listener_limits),
                                **kw)

    def session(self, port):
        c = self.client(port)
        r = c.ehlo()
        self.assertCode(r, 250)
        return c, r

    def assertNothingDelivered(self):
        self.assertEqual(self.cap.messages(), [],
                         "a message reached the backend")


class TestDeclaredSize(SizeFilterTest):

    def test_size_over_the_limit_at_mail_is_552_at_once(self):
        proxy = self.proxy()
        c, _ = self.session(proxy.port)
        r = c.cmd("MAIL FROM:<%s> SIZE=%d" % (ALICE, LIMIT + 1))
        self.assertReply(r, 552, "5.3.4")
        self.assertIn("exceeds fixed maximum message size", r.text)
        # the session goes on: a smaller transaction is accepted
        self.assertCode(c.cmd("MAIL FROM:<%s> SIZE=100" % ALICE), 250)
        self.assertCode(c.cmd("RSET"), 250)
        self.assertCode(c.cmd("QUIT"), 221)
        self.assertNothingDelivered()

    def test_size_equal_to_the_limit_is_accepted_at_mail(self):
        proxy = self.proxy()
        c, _ = self.session(proxy.port)
        self.assertCode(c.cmd("MAIL FROM:<%s> SIZE=%d" % (ALICE, LIMIT)), 250)

    def test_refusal_at_mail_is_in_the_decision_log(self):
        proxy = self.proxy()
        c, _ = self.session(proxy.port)
        self.assertReply(c.cmd("MAIL FROM:<%s> SIZE=999999" % ALICE), 552,
                         "5.3.4")
        self.assertCode(c.cmd("QUIT"), 221)
        recs = proxy.wait_decisions(
            lambda d: "5.3.4" in str(d) and "999999" in str(d))
        self.assertTrue(recs, "no decision record with the declared size "
                        "and 5.3.4: %r" % proxy.decisions())
        self.assertIn(str(LIMIT), str(recs[-1]), "limit not in the record")


class TestAdvertisedSize(SizeFilterTest):

    def test_ehlo_advertises_the_filter_limit_below_the_backends(self):
        proxy = self.proxy()
        _, r = self.session(proxy.port)
        self.assertEqual(r.keywords.get("SIZE"), str(LIMIT), r)

    def test_ehlo_keeps_the_backend_limit_below_the_filters(self):
        proxy = self.proxy(limit="50m")
        _, r = self.session(proxy.port)
        self.assertEqual(r.keywords.get("SIZE"), str(BACKEND_SIZE), r)


class TestMessageOverTheLimit(SizeFilterTest):

    def test_message_over_the_limit_is_read_to_the_end_and_refused(self):
        proxy = self.proxy()
        c, _ = self.session(proxy.port)
        self.assertCode(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        self.assertCode(c.cmd("RCPT TO:<%s>" % BOB), 250)
        self.assertCode(c.cmd("DATA"), 354)
        msg = message_of(4 * LIMIT, "too big")
        # Lines that would be commands if the proxy stopped reading early.
        msg += b"RSET\r\nQUIT\r\n"
        c.send(dot_stuff(msg))
        self.assertReply(c.reply(), 552, "5.3.4")
        # exactly one reply: the rest of the data was read, not run
        self.assertCode(c.cmd("NOOP"), 250)
        self.assertCode(c.cmd("QUIT"), 221)
        self.assertNothingDelivered()

    def test_message_under_the_limit_passes_intact(self):
        proxy = self.proxy()
        msg = message_of(LIMIT - 1000, "small")
        self.assertLess(len(msg), LIMIT)
        c, _ = self.session(proxy.port)
        r = c.mail_transaction(ALICE, [BOB], msg)
        self.assertCode(r["end"], 250)
        got = self.cap.wait_messages(1)
        self.assertEqual(len(got), 1)
        self.assertTrue(got[0].endswith(msg), "message changed on the way")


class TestListenerLimits(SizeFilterTest):

    def setUp(self):
        super().setUp()
        self.p1, self.p2 = free_port(), free_port()
        self.px = self.proxy(
            limit="5k", listener_limits="127.0.0.1:%d=20k" % self.p2,
            port=self.p1,
            listen="127.0.0.1:%d, 127.0.0.1:%d" % (self.p1, self.p2))

    def test_each_listener_advertises_its_own_limit(self):
        _, r1 = self.session(self.p1)
        _, r2 = self.session(self.p2)
        self.assertEqual(r1.keywords.get("SIZE"), str(LIMIT), r1)
        self.assertEqual(r2.keywords.get("SIZE"), str(20 * 1024), r2)

    def test_declared_size_between_the_limits(self):
        c1, _ = self.session(self.p1)
        c2, _ = self.session(self.p2)
        mail = "MAIL FROM:<%s> SIZE=%d" % (ALICE, 10 * 1024)
        self.assertReply(c1.cmd(mail), 552, "5.3.4")
        self.assertCode(c2.cmd(mail), 250)

    def test_message_between_the_limits_passes_only_on_the_larger(self):
        msg = message_of(10 * 1024, "ten k")
        c1, _ = self.session(self.p1)
        r = c1.mail_transaction(ALICE, [BOB], msg)
        self.assertReply(r["end"], 552, "5.3.4")
        c2, _ = self.session(self.p2)
        r = c2.mail_transaction(ALICE, [BOB], msg)
        self.assertCode(r["end"], 250)
        self.assertEqual(len(self.cap.wait_messages(1)), 1)


class TestSizeWithPostfix(ProxyTestCase):
    """The same limits end to end in front of a real Postfix: what passes
    is delivered to the Maildir, what is refused never reaches it, and a
    Postfix limit below the filter's is the one announced and enforced."""

    @classmethod
    def setUpClass(cls):
        if not os.path.exists(os.path.join(FILTER_DIR, "size.so")):
            raise unittest.SkipTest("size filter not built: %s/size.so" % FILTER_DIR)
        # Postfix's own limit sits between the two filter limits used here.
        cls.postfix = harness.Postfix(extra_main={"message_size_limit": "20000"})
        cls.addClassCleanup(cls.postfix.stop)
        cls.postfix.start()

    def proxy(self, limit):
        return self.start_proxy(backend_port=self.postfix.port, filters="size",
                                filter_dir=FILTER_DIR, extra=size_section(limit))

    def send(self, port, subject, size):
        c = self.client(port)
        self.assertCode(c.ehlo(), 250)
        msg = message_of(size, subject)
        r = c.mail_transaction(ALICE, [BOB], msg)
        c.cmd("QUIT")
        return r

    def test_under_the_limit_is_delivered_and_over_it_never_reaches_postfix(self):
        p = self.proxy("5k")
        r = self.send(p.port, "small to postfix", LIMIT - 1000)
        self.assertCode(r["end"], 250)
        self.assertTrue(self.postfix.find_message("bob", b"Subject: small to postfix\n", 20),
                        "the small message was not delivered")
        r = self.send(p.port, "big to postfix", 3 * LIMIT)
        self.assertReply(r["end"], 552, "5.3.4")
        c = self.client(p.port)
        self.assertCode(c.ehlo(), 250)
        self.assertReply(c.cmd("MAIL FROM:<%s> SIZE=%d" % (ALICE, LIMIT + 1)), 552, "5.3.4")
        c.cmd("QUIT")
        # the small one's delivery is logged: the big one would be too
        harness.wait_for(lambda: "status=sent" in self.postfix.maillog(), 10)
        self.assertFalse(any(b"big to postfix" in m for m in self.postfix.messages("bob")),
                         "the refused message reached the Maildir")

    def test_the_lower_postfix_limit_is_announced_and_enforced(self):
        p = self.proxy("50k")
        c = self.client(p.port)
        r = c.ehlo()
        self.assertIn("250-SIZE 20000", r.lines, "EHLO: %r" % r.lines)
        self.assertReply(c.cmd("MAIL FROM:<%s> SIZE=30000" % ALICE), 552, "5.3.4")
        c.cmd("QUIT")
        # over Postfix's limit, under the filter's: refused all the same
        r = self.send(p.port, "between the limits", 30000)
        self.assertEqual(r["end"].code // 100, 5, "reply: %r" % r["end"])
        self.assertFalse(any(b"between the limits" in m for m in self.postfix.messages("bob")))


class TestSizeOptions(unittest.TestCase):
    """Bad option values stop `portcullis -t` naming the key."""

    def setUp(self):
        self.p = Portcullis(backend_port=10025, filters="size",
                            filter_dir=FILTER_DIR)
        self.p.dir = make_tempdir("portcullis-proxy-")
        self.addCleanup(lambda: remove_tree(self.p.dir))
        if not os.path.exists(os.path.join(FILTER_DIR, "size.so")):
            self.skipTest("size filter not built")

    def check(self, section):
        r = self.p.check_config(self.p.config_text() + section)
        return r.returncode, (r.stdout + r.stderr).decode(errors="replace")

    def test_valid_options_pass(self):
        rc, out = self.check(size_section(
            "10m", "127.0.0.1:2526=5m, [::]:587=20m"))
        self.assertEqual(rc, 0, out)

    def test_bad_limit_names_the_key(self):
        rc, out = self.check(size_section("ten megabytes"))
        self.assertEqual(rc, 1, out)
        self.assertRegex(out, r"\[filter size\] limit: ")

    def test_missing_limit_names_the_key(self):
        rc, out = self.check("\n[filter size]\nmodule = size\n")
        self.assertEqual(rc, 1, out)
        self.assertRegex(out, r"\[filter size\] limit: ")

    def test_bad_listener_limits_names_the_key(self):
        rc, out = self.check(size_section("5m", "127.0.0.1:2526"))
        self.assertEqual(rc, 1, out)
        self.assertRegex(out, r"\[filter size\] listener_limits: ")


if __name__ == "__main__":
    unittest.main()
