"""
SMTP smuggling: a client ends message 1 with a malformed end-of-data
sequence followed by a complete second transaction and a proper
<CRLF>.<CRLF>. Only <CRLF>.<CRLF> ends DATA at Portcullis, so:

  - the client gets exactly one reply for its data (never two 250s),
  - no backend ever holds a second message (the "smuggled" one).

Backends: smtp-sink (strict: only CRLF.CRLF ends its DATA), a lenient
Postfix (smtpd_forbid_bare_newline = no: a bare LF dot ends DATA there,
the classic smuggling target, so whatever Portcullis forwards must not
contain a malformed terminator either), and a byte-exact capture server
that checks the forwarded bytes for bare CR / LF.

Each payload is one message whatever its terminator: the data decoder
(proxy/smtp.c) ends data only at <CRLF>.<CRLF>, and the smuggled second
transaction is text of the first. At the real end of data
(session_data_end() in proxy/session.c), with bare_newline = reject (the
default) a message holding a bare CR or LF gets exactly "550 5.6.0 Error:
message contains bare CR or LF characters" and nothing reaches the
backend; a message without one, and with bare_newline = normalize every
message (each bare CR or LF written as CRLF), goes to the backend and
gets its 250.
"""

import re
import unittest

from harness import (DOMAIN, ProxyTestCase, Postfix, make_message, dot_stuff)

ALICE = "alice@" + DOMAIN
BOB = "bob@" + DOMAIN
CAROL = "carol@" + DOMAIN

# name -> malformed terminator placed right after "first message body"
# (which has no line end of its own).
TERMINATORS = {
    "lf_dot_lf": b"\n.\n",
    "lf_dot_crlf": b"\n.\r\n",
    "cr_dot_cr": b"\r.\r",
    "cr_dot_crlf": b"\r.\r\n",
    "crlf_dot_cr": b"\r\n.\r",
    "crlf_dot_lf": b"\r\n.\n",
    "crlf_nul_dot_crlf": b"\r\n\x00.\r\n",
    "crlf_dot_nul_crlf": b"\r\n.\x00\r\n",
    "lf_dot_cr": b"\n.\r",
    "crlf_dot_cr_crlf": b"\r\n.\r\r\n",
    "cr_crlf_dot_cr_crlf": b"\r\r\n.\r\r\n",
    "crlf_space_dot_crlf": b"\r\n .\r\n",
    "crlf_dot_space_crlf": b"\r\n. \r\n",
    "lf_lf_dot_lf_lf": b"\n\n.\n\n",
    "crlf_crlf_dot_lf": b"\r\n\r\n.\n",
    "lf_dot_dot_lf_crlf": b"\n.\n\r\n",
}

# terminators containing no bare CR and no bare LF (pure content)
NO_BARE_NEWLINE = {"crlf_nul_dot_crlf", "crlf_dot_nul_crlf",
                   "crlf_space_dot_crlf", "crlf_dot_space_crlf"}


def has_bare_newline(data):
    return bool(re.search(rb"(?<!\r)\n|\r(?!\n)", data))


def smuggling_payload(term):
    first = (b"From: <" + ALICE.encode() + b">\r\n"
             b"To: <" + BOB.encode() + b">\r\n"
             b"Subject: first\r\n"
             b"\r\n"
             b"first message body")
    second = (b"MAIL FROM:<" + ALICE.encode() + b">\r\n"
              b"RCPT TO:<" + CAROL.encode() + b">\r\n"
              b"DATA\r\n"
              b"From: <" + ALICE.encode() + b">\r\n"
              b"To: <" + CAROL.encode() + b">\r\n"
              b"Subject: smuggled\r\n"
              b"\r\n"
              b"smuggled message body")
    return first + term + second + b"\r\n.\r\n"


class SmugglingBase(ProxyTestCase):
    bare_newline = "reject"

    def run_payload(self, proxy, term):
        """Send the smuggling payload; return (end-of-data reply, all later
        replies up to and including QUIT's)."""
        c = self.client(proxy.port)
        self.assertCode(c.ehlo("smuggler.example.test"), 250)
        self.assertCode(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        self.assertCode(c.cmd("RCPT TO:<%s>" % BOB), 250)
        self.assertCode(c.cmd("DATA"), 354)
        c.send(smuggling_payload(term))
        end = c.reply(timeout=30)
        c.send(b"QUIT\r\n")
        rest = c.all_replies(timeout=3)
        self.assertEqual([r.code for r in rest], [221],
                         "after the end-of-data reply %r the client got "
                         "more replies than QUIT's: %r (a second "
                         "transaction was smuggled)" % (end, rest))
        return end

    def refused(self, term):
        """Whether the one message of the payload is refused (550 5.6.0)
        rather than relayed (250)."""
        return self.bare_newline == "reject" and has_bare_newline(term)

    def check_end_reply(self, name, term, end):
        """The one reply to the data is the one the terminator calls for."""
        if self.refused(term):
            self.assertReply(end, 550, "5.6.0")
            self.assertEqual(end.text, "5.6.0 Error: message contains bare "
                             "CR or LF characters", end)
        else:
            self.assertCode(end, 250, "%s with bare_newline = %s must be "
                            "relayed as one message" % (name,
                                                        self.bare_newline))


class SinkSmugglingBase(SmugglingBase):

    @staticmethod
    def sink_parse(m):
        from harness import Sink
        return Sink.parse(m)

    def check(self, name):
        term = TERMINATORS[name]
        sink = self.start_sink()
        proxy = self.start_proxy(backend_port=sink.port,
                                 bare_newline=self.bare_newline)
        end = self.run_payload(proxy, term)
        self.check_end_reply(name, term, end)
        sink.settled_count()
        msgs = sink.messages()
        self.assertLessEqual(len(msgs), 1, "the sink holds %d messages: %r"
                             % (len(msgs), msgs))
        for m in msgs:
            meta, _ = self.sink_parse(m)
            self.assertNotIn("<%s>" % CAROL, meta.get("X-Rcpt-Args", []),
                             "a smuggled transaction for carol: %r" % m)
        # settled_count() waited for the sink's open transactions
        self.assertEqual(len(msgs), 0 if self.refused(term) else 1, msgs)


class SinkSmuggling(SinkSmugglingBase):
    bare_newline = "reject"


class SinkSmugglingNormalize(SinkSmugglingBase):
    bare_newline = "normalize"


class LenientPostfixSmugglingBase(SmugglingBase):
    """Postfix with smtpd_forbid_bare_newline = no ends DATA at <LF>.<LF>."""

    @classmethod
    def setUpClass(cls):
        cls.postfix = Postfix(forbid_bare_newline="no")
        cls.addClassCleanup(cls.postfix.stop)
        cls.postfix.start()

    def check(self, name):
        term = TERMINATORS[name]
        before_carol = len(self.postfix.message_files("carol"))
        proxy = self.start_proxy(backend_port=self.postfix.port,
                                 bare_newline=self.bare_newline)
        end = self.run_payload(proxy, term)
        self.check_end_reply(name, term, end)
        if not self.refused(term):
            qid = re.search(r"queued as (\w+)", end.text)
            self.assertTrue(qid, end)
            self.assertTrue(self.postfix.wait_log(
                r"%s: to=<%s>.*status=sent" % (qid.group(1), re.escape(BOB))),
                self.postfix.maillog()[-2000:])
        # a smuggled second transaction would go to carol
        self.assertFalse(self.postfix.wait_log(
            r"to=<%s>" % re.escape(CAROL), timeout=1.5),
            "Postfix accepted a smuggled message for carol:\n" +
            self.postfix.maillog()[-2000:])
        self.assertEqual(len(self.postfix.message_files("carol")),
                         before_carol)


class LenientPostfixSmuggling(LenientPostfixSmugglingBase):
    bare_newline = "reject"


class LenientPostfixSmugglingNormalize(LenientPostfixSmugglingBase):
    bare_newline = "normalize"


class CaptureSmuggling(SmugglingBase):
    """What Portcullis forwards, byte for byte: one message, CRLF only."""

    bare_newline = "normalize"

    def check(self, name):
        term = TERMINATORS[name]
        cap = self.start_capture()
        proxy = self.start_proxy(backend_port=cap.port,
                                 bare_newline=self.bare_newline)
        end = self.run_payload(proxy, term)
        self.check_end_reply(name, term, end)
        # normalize: every payload is one message, relayed
        msgs = cap.wait_messages(1, timeout=10)
        self.assertEqual(len(msgs), 1, msgs)
        data = msgs[0]
        self.assertFalse(has_bare_newline(data),
                         "forwarded data holds a bare CR or LF: %r" % data)
        # the smuggled commands are just (dot-stuffed) message text
        self.assertIn(b"MAIL FROM:<" + ALICE.encode() + b">\r\n", data)
        self.assertIn(b"smuggled message body\r\n", data)
        # no line of the forwarded data is a lone "." (it would end DATA
        # early)
        self.assertNotIn(b"\r\n.\r\n", b"\r\n" + data)
        cmds = [c.split(b" ", 1)[0].upper() for c in cap.commands()]
        self.assertEqual(cmds.count(b"DATA"), 1, cmds)
        self.assertEqual(cmds.count(b"MAIL"), 1, cmds)


def _add_tests(cls, prefix):
    for name in TERMINATORS:
        def test(self, name=name):
            self.check(name)
        test.__name__ = "test_%s_%s" % (prefix, name)
        test.__doc__ = None
        setattr(cls, test.__name__, test)


_add_tests(SinkSmuggling, "no_second_message_at_sink_via")
_add_tests(SinkSmugglingNormalize, "no_second_message_at_sink_normalized_via")
_add_tests(LenientPostfixSmuggling, "no_second_message_at_lenient_postfix_via")
_add_tests(LenientPostfixSmugglingNormalize,
           "no_second_message_at_lenient_postfix_normalized_via")
_add_tests(CaptureSmuggling, "forwarded_bytes_are_one_clean_message_via")


class TestDataEndVariants(ProxyTestCase):
    """Legitimate data ends and dot-stuffing, against the capture server."""

    def test_dot_stuffed_lines_reach_backend_stuffed_once(self):
        cap = self.start_capture()
        proxy = self.start_proxy(backend_port=cap.port)
        msg = make_message("dots", b".\r\n..\r\n.x\r\nend\r\n")
        c = self.client(proxy.port)
        r = c.mail_transaction(ALICE, [BOB], msg, helo="dots.example.test")
        self.assertCode(r["end"], 250)
        data = cap.wait_messages(1)[0]
        self.assertTrue(data.endswith(b"\r\n..\r\n...\r\n..x\r\nend\r\n"),
                        data)

    def test_message_ending_without_crlf_before_dot_is_not_possible(self):
        """'text.\\r\\n' is content, not the end of data."""
        cap = self.start_capture()
        proxy = self.start_proxy(backend_port=cap.port)
        c = self.client(proxy.port)
        c.ehlo()
        c.cmd("MAIL FROM:<%s>" % ALICE)
        c.cmd("RCPT TO:<%s>" % BOB)
        self.assertCode(c.cmd("DATA"), 354)
        c.send(b"Subject: x\r\n\r\nabc.\r\nmore\r\n.\r\n")
        self.assertCode(c.reply(), 250)
        data = cap.wait_messages(1)[0]
        self.assertTrue(data.endswith(b"abc.\r\nmore\r\n"), data)

    def test_empty_message_is_relayed(self):
        cap = self.start_capture()
        proxy = self.start_proxy(backend_port=cap.port)
        c = self.client(proxy.port)
        c.ehlo()
        c.cmd("MAIL FROM:<%s>" % ALICE)
        c.cmd("RCPT TO:<%s>" % BOB)
        self.assertCode(c.cmd("DATA"), 354)
        c.send(b".\r\n")
        self.assertCode(c.reply(), 250)
        self.assertEqual(cap.wait_messages(1), [b""])
        c.send(b"QUIT\r\n")
        self.assertEqual([x.code for x in c.all_replies()], [221])

    def test_end_of_data_split_across_writes_is_recognised(self):
        cap = self.start_capture()
        proxy = self.start_proxy(backend_port=cap.port)
        c = self.client(proxy.port)
        c.ehlo()
        c.cmd("MAIL FROM:<%s>" % ALICE)
        c.cmd("RCPT TO:<%s>" % BOB)
        self.assertCode(c.cmd("DATA"), 354)
        for piece in (b"Subject: split\r\n\r\nbody\r", b"\n", b".", b"\r",
                      b"\n"):
            c.send(piece)
            # the proxy reads each piece on its own (its socket's receive
            # queue is empty again) before the next is sent
            self.assertTrue(c.wait_read(proxy.port), piece)
        self.assertCode(c.reply(), 250)
        self.assertTrue(cap.wait_messages(1)[0].endswith(b"body\r\n"))


if __name__ == "__main__":
    unittest.main()
