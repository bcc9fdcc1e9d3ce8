"""
The SMTP dialogue Portcullis itself speaks (smtp-sink as the backend
unless said otherwise): reply codes, EHLO capabilities, limits, timeouts,
signals and the -t configuration check.
"""

import os
import re
import signal
import socket
import time
import unittest

from harness import (DOMAIN, ProxyTestCase, Postfix, Portcullis, Sink,
                     make_message, dot_stuff, free_port, SMTPClient,
                     ConnectionClosed, wait_for, PORTCULLIS_BIN)

ALICE = "alice@" + DOMAIN
BOB = "bob@" + DOMAIN
CAROL = "carol@" + DOMAIN

# keywords Portcullis must never pass through from the backend
NEVER_ADVERTISED = ("XCLIENT", "XFORWARD", "AUTH", "CHUNKING", "STARTTLS")


class SinkProxyTest(ProxyTestCase):
    sink_options = ()
    proxy_options = {}

    def setUp(self):
        self.sink = self.start_sink(*self.sink_options)
        self.proxy = self.start_proxy(backend_port=self.sink.port,
                                      **self.proxy_options)

    def session(self, helo="client.example.test"):
        c = self.client(self.proxy.port)
        if helo:
            self.ehlo_reply = c.ehlo(helo)
            self.assertCode(self.ehlo_reply, 250)
        return c

    def transaction(self, c, rcpts=(BOB,)):
        self.assertCode(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        for r in rcpts:
            self.assertCode(c.cmd("RCPT TO:<%s>" % r), 250)


class TestBasicCommands(SinkProxyTest):

    def test_greeting_is_220_with_the_configured_hostname(self):
        c = self.client(self.proxy.port)
        self.assertCode(c.greeting, 220)
        self.assertIn("proxy.portcullis.test", c.greeting.text)

    def test_ehlo_reply_is_250_multiline_with_hostname(self):
        c = self.client(self.proxy.port)
        r = c.ehlo("me.example.test")
        self.assertCode(r, 250)
        self.assertIn("proxy.portcullis.test", r.lines[0])

    def test_helo_is_250(self):
        c = self.client(self.proxy.port)
        r = c.cmd("HELO me.example.test")
        self.assertCode(r, 250)
        self.assertEqual(len(r.lines), 1)

    def test_helo_session_can_send_mail(self):
        c = self.client(self.proxy.port)
        self.assertCode(c.cmd("HELO old.example.test"), 250)
        self.transaction(c)
        self.assertCode(c.cmd("DATA"), 354)
        c.send(dot_stuff(make_message("helo")))
        self.assertCode(c.reply(), 250)
        self.assertEqual(self.sink.wait_count(1), 1)

    def test_noop_is_250(self):
        self.assertReply(self.session().cmd("NOOP"), 250)

    def test_rset_is_250_and_clears_the_transaction(self):
        c = self.session()
        self.transaction(c)
        self.assertReply(c.cmd("RSET"), 250)
        self.assertReply(c.cmd("DATA"), 503, "5.5.1")
        self.assertCode(c.cmd("MAIL FROM:<%s>" % ALICE), 250)

    def test_help_is_214(self):
        self.assertCode(self.session().cmd("HELP"), 214)

    def test_vrfy_is_252(self):
        self.assertCode(self.session().cmd("VRFY bob"), 252)

    def test_quit_is_221_and_closes(self):
        c = self.session()
        self.assertCode(c.cmd("QUIT"), 221)
        self.assertTrue(c.wait_closed(5))

    def test_commands_are_case_insensitive(self):
        c = self.session()
        self.assertCode(c.cmd("mail from:<%s>" % ALICE), 250)
        self.assertCode(c.cmd("rcpt to:<%s>" % BOB), 250)
        self.assertCode(c.cmd("noop"), 250)

    def test_message_reaches_backend_with_envelope(self):
        c = self.session("env.example.test")
        self.transaction(c, (BOB, CAROL))
        self.assertCode(c.cmd("DATA"), 354)
        msg = make_message("envelope")
        c.send(dot_stuff(msg))
        self.assertCode(c.reply(), 250)
        self.assertEqual(self.sink.wait_count(1), 1)
        meta, got = Sink.parse(self.sink.messages()[0])
        self.assertEqual(meta["X-Mail-Args"], ["<%s>" % ALICE])
        self.assertEqual(meta["X-Rcpt-Args"], ["<%s>" % BOB, "<%s>" % CAROL])
        self.assertTrue(got.endswith(msg.replace(b"\r\n", b"\n")), got)


class TestErrors(SinkProxyTest):

    def test_unknown_command_is_500_5_5_1(self):
        self.assertReply(self.session().cmd("FROBNICATE now"), 500, "5.5.1")

    def test_rcpt_before_mail_is_503_5_5_1(self):
        self.assertReply(self.session().cmd("RCPT TO:<%s>" % BOB), 503,
                         "5.5.1")

    def test_data_before_rcpt_is_503_5_5_1(self):
        c = self.session()
        self.assertCode(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        self.assertReply(c.cmd("DATA"), 503, "5.5.1")

    def test_data_without_mail_is_503_5_5_1(self):
        self.assertReply(self.session().cmd("DATA"), 503, "5.5.1")

    def test_mail_twice_is_503_5_5_1(self):
        c = self.session()
        self.assertCode(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        self.assertReply(c.cmd("MAIL FROM:<%s>" % ALICE), 503, "5.5.1")

    def test_mail_without_address_is_501(self):
        self.assertReply(self.session().cmd("MAIL FROM:"), 501)

    def test_mail_with_bad_syntax_is_501_5_5_4(self):
        self.assertReply(self.session().cmd("MAIL FRUM:<%s>" % ALICE), 501,
                         "5.5.4")

    def test_ehlo_without_domain_is_501_5_5_4(self):
        c = self.client(self.proxy.port)
        self.assertReply(c.cmd("EHLO"), 501, "5.5.4")

    def test_bad_sender_address_is_501_5_1_7(self):
        c = self.session()
        for bad in ("<alice@@example.test>", "<alice@example..test>",
                    "<alice@>", "<alice@-example.test>"):
            self.assertReply(c.cmd("MAIL FROM:" + bad), 501, "5.1.7",
                             "MAIL FROM:" + bad)

    def test_bad_recipient_address_is_501_5_1_3(self):
        c = self.session()
        self.assertCode(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        for bad in ("<bob@@example.test>", "<bob@example..test>",
                    "<bob@>", "<bob@-example.test>"):
            self.assertReply(c.cmd("RCPT TO:" + bad), 501, "5.1.3",
                             "RCPT TO:" + bad)

    def test_unbalanced_angle_brackets_are_501(self):
        c = self.session()
        self.assertReply(c.cmd("MAIL FROM:<alice@example.test"), 501)
        self.assertCode(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        self.assertReply(c.cmd("RCPT TO:<bob@example.test"), 501)
        self.assertReply(c.cmd("RCPT TO:<>"), 501)

    def test_command_line_over_2048_bytes_is_500_5_5_2(self):
        c = self.session()
        r = c.cmd("NOOP " + "x" * 3000)
        self.assertReply(r, 500, "5.5.2")
        self.assertCode(c.cmd("NOOP"), 250, "the session goes on")

    def test_rcpt_line_over_2048_bytes_is_500_5_5_2(self):
        c = self.session()
        self.assertCode(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        r = c.cmd("RCPT TO:<%s@example.test>" % ("b" * 2100))
        self.assertReply(r, 500, "5.5.2")

    def test_command_with_bare_lf_is_500_5_5_2(self):
        c = self.session()
        c.send(b"NOOP\n")
        r = c.reply()
        self.assertReply(r, 500, "5.5.2")
        self.assertEqual(r.text, "5.5.2 Error: bare LF received", r)
        self.assertCode(c.cmd("NOOP"), 250, "the session goes on")

    def test_command_with_bare_cr_is_500_5_5_2(self):
        c = self.session()
        c.send(b"NOOP\rRSET\r\n")
        r = c.reply()
        self.assertReply(r, 500, "5.5.2")
        self.assertEqual(r.text, "5.5.2 Error: bare CR received", r)
        self.assertCode(c.cmd("NOOP"), 250, "the session goes on")

    def test_pipelined_commands_with_bare_lf_do_not_start_a_transaction(self):
        c = self.session()
        c.send(b"MAIL FROM:<" + ALICE.encode() + b">\n"
               b"RCPT TO:<" + BOB.encode() + b">\n"
               b"DATA\n")
        c.send(b"QUIT\r\n")
        replies = c.all_replies(timeout=3)
        # one refusal per line, then QUIT's
        self.assertEqual([(r.code, r.text) for r in replies],
                         [(500, "5.5.2 Error: bare LF received")] * 3 +
                         [(221, replies[-1].text)], replies)

    def test_unsupported_mail_parameter_is_555_5_5_4(self):
        c = self.session()
        self.assertReply(c.cmd("MAIL FROM:<%s> FOO=BAR" % ALICE), 555,
                         "5.5.4")

    def test_smtputf8_is_555_when_backend_lacks_it(self):
        c = self.session()
        self.assertNotIn("SMTPUTF8", self.ehlo_reply.keywords)
        self.assertReply(c.cmd("MAIL FROM:<%s> SMTPUTF8" % ALICE), 555,
                         "5.5.4")

    def test_mail_parameters_the_backend_supports_are_relayed(self):
        c = self.session()
        self.assertCode(c.cmd("MAIL FROM:<%s> BODY=8BITMIME RET=FULL "
                              "ENVID=abc123" % ALICE), 250)
        self.assertCode(c.cmd("RCPT TO:<%s> NOTIFY=SUCCESS,DELAY "
                              "ORCPT=rfc822;orig@%s" % (BOB, DOMAIN)), 250)
        self.assertCode(c.cmd("DATA"), 354)
        c.send(dot_stuff(make_message("params", eight_bit=True)))
        self.assertCode(c.reply(), 250)
        self.assertEqual(self.sink.wait_count(1), 1)
        meta, _ = Sink.parse(self.sink.messages()[0])
        mail = meta["X-Mail-Args"][0].split()
        self.assertEqual(mail[0], "<%s>" % ALICE)
        self.assertEqual(set(mail[1:]),
                         {"BODY=8BITMIME", "RET=FULL", "ENVID=abc123"})
        rcpt = meta["X-Rcpt-Args"][0].split()
        self.assertEqual(rcpt[0], "<%s>" % BOB)
        self.assertEqual(set(rcpt[1:]), {"NOTIFY=SUCCESS,DELAY",
                                         "ORCPT=rfc822;orig@" + DOMAIN})


class TestCommandRules(SinkProxyTest):
    """What the command table lets each verb do, and the exact replies
    (the table took these checks over from the handlers; clients and
    their logs see the same lines)."""

    def line(self, c, command):
        r = c.cmd(command)
        self.assertEqual(len(r.lines), 1, r)
        return r.lines[0]

    def test_before_helo_mail_needs_helo_and_rcpt_and_data_need_mail(self):
        c = self.client(self.proxy.port)
        self.assertEqual(self.line(c, "MAIL FROM:<%s>" % ALICE),
                         "503 5.5.1 Error: send HELO/EHLO first")
        self.assertEqual(self.line(c, "RCPT TO:<%s>" % BOB),
                         "503 5.5.1 Error: need MAIL command")
        self.assertEqual(self.line(c, "DATA"),
                         "503 5.5.1 Error: need MAIL command")
        # an argument to DATA is a syntax error before anything else
        self.assertEqual(self.line(c, "DATA now"), "501 5.5.4 Syntax: DATA")

    def test_arguments_are_checked_by_the_table(self):
        c = self.client(self.proxy.port)
        self.assertEqual(self.line(c, "HELO"),
                         "501 5.5.4 Syntax: HELO hostname")
        self.assertEqual(self.line(c, "EHLO one.example two.example"),
                         "501 5.5.4 Syntax: EHLO hostname")
        self.assertEqual(self.line(c, "VRFY"),
                         "501 5.5.4 Syntax: VRFY address")
        self.assertEqual(self.line(c, "VRFY bob"),
                         "252 2.5.2 Cannot VRFY user, but will accept "
                         "message and attempt delivery")

    def test_mail_inside_a_transaction_is_nested(self):
        c = self.session()
        self.assertCode(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        self.assertEqual(self.line(c, "MAIL FROM:<%s>" % ALICE),
                         "503 5.5.1 Error: nested MAIL command")
        self.assertEqual(self.line(c, "DATA x"), "501 5.5.4 Syntax: DATA")
        self.assertEqual(self.line(c, "DATA"),
                         "503 5.5.1 Error: need RCPT command")

    def test_verbs_not_offered_are_502_in_and_out_of_a_transaction(self):
        c = self.session()
        for verb in ("STARTTLS", "AUTH PLAIN", "EXPN list", "TURN"):
            self.assertEqual(self.line(c, verb),
                             "502 5.5.1 Error: command not implemented")
        self.assertCode(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        self.assertEqual(self.line(c, "STARTTLS"),
                         "502 5.5.1 Error: command not implemented")

    def test_commands_pipelined_after_last_ones_are_answered_in_order(self):
        # EHLO, NOOP, VRFY and DATA must end a pipelined group (RFC 2920);
        # a client that sends more behind them still gets every reply in
        # order, and a message sent without waiting for 354 is delivered.
        c = self.client(self.proxy.port)
        msg = make_message("pipelined")
        c.send(b"EHLO eager.example.test\r\nNOOP\r\nVRFY bob\r\n"
               b"MAIL FROM:<" + ALICE.encode() + b">\r\n"
               b"RCPT TO:<" + BOB.encode() + b">\r\nDATA\r\n" +
               dot_stuff(msg) + b"QUIT\r\n")
        replies = c.all_replies(timeout=5)
        self.assertEqual([r.code for r in replies],
                         [250, 250, 252, 250, 250, 354, 250, 221], replies)
        self.assertEqual(self.sink.wait_count(1), 1)

    def test_parameter_replies(self):
        # a backend that offers SIZE (10240000), 8BITMIME and DSN
        cap = self.start_capture()
        c = self.client(self.start_proxy(backend_port=cap.port).port)
        self.assertIn("SIZE", c.ehlo().keywords)
        for cmd, want in (
                ("MAIL FROM:<%s> FOO=BAR" % ALICE,
                 "555 5.5.4 Unsupported parameter"),
                ("MAIL FROM:<%s> SIZE=12k" % ALICE,
                 "501 5.5.4 Bad SIZE parameter"),
                ("MAIL FROM:<%s> SIZE=99999999999" % ALICE,
                 "552 5.3.4 Message size exceeds fixed maximum message size"),
                ("MAIL FROM:<%s> BODY=BINARYMIME" % ALICE,
                 "501 5.5.4 Unsupported BODY parameter"),
                ("MAIL FROM:<%s> RET=ALL" % ALICE,
                 "501 5.5.4 Bad RET parameter"),
                ("MAIL FROM:<%s> ENVID=a+2b" % ALICE,
                 "501 5.5.4 Bad ENVID parameter"),
                ("MAIL FROM:<j\u00f6rg@%s>" % DOMAIN,
                 "553 5.6.7 Error: UTF-8 address needs the SMTPUTF8 "
                 "parameter")):
            self.assertEqual(self.line(c, cmd), want, cmd)
        self.assertCode(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        for cmd, want in (
                ("RCPT TO:<%s> NOTIFY=SOMETIMES" % BOB,
                 "501 5.5.4 Bad NOTIFY parameter"),
                ("RCPT TO:<%s> ORCPT=rfc822" % BOB,
                 "501 5.5.4 Bad ORCPT parameter"),
                ("RCPT TO:<%s> SIZE=10" % BOB,
                 "555 5.5.4 Unsupported parameter")):
            self.assertEqual(self.line(c, cmd), want, cmd)

    def test_notify_with_an_empty_item_is_refused(self):
        # RFC 3461 4.1: a comma-separated list of SUCCESS, FAILURE, DELAY
        c = self.session()
        self.assertCode(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        for notify in (",SUCCESS", "SUCCESS,,DELAY", "DELAY,DELAY"):
            self.assertEqual(
                self.line(c, "RCPT TO:<%s> NOTIFY=%s" % (BOB, notify)),
                "501 5.5.4 Bad NOTIFY parameter", notify)
        self.assertCode(c.cmd("RCPT TO:<%s> NOTIFY=DELAY,SUCCESS" % BOB), 250)

    def test_parameters_after_helo_are_555(self):
        c = self.client(self.proxy.port)
        self.assertCode(c.cmd("HELO old.example.test"), 250)
        self.assertEqual(self.line(c, "MAIL FROM:<%s> BODY=7BIT" % ALICE),
                         "555 5.5.4 Parameters need EHLO, not HELO")


class TestRepliesInTheRecord(ProxyTestCase):
    """The reply a client got and the reply its decision record names are
    one string."""

    def test_backend_lost_before_data_is_recorded_as_sent(self):
        # a backend that hangs up after a second of silence, between the
        # client's RCPT and its DATA
        cap = self.start_capture(idle_timeout=1)
        proxy = self.start_proxy(backend_port=cap.port)
        c = self.client(proxy.port)
        c.ehlo()
        self.assertCode(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        self.assertCode(c.cmd("RCPT TO:<%s>" % BOB), 250)
        wait_for(lambda: cap.sessions and cap.sessions[0]["closed"], 5)
        time.sleep(0.5)  # for the proxy to see the connection go
        r = c.cmd("DATA")
        self.assertEqual(r.lines, ["451 4.4.2 Lost connection to the backend "
                                   "mail server, try again later"])
        rec = proxy.wait_transaction(action="tempfailed")
        self.assertTrue(rec, proxy.decisions())
        self.assertEqual(rec[0]["reply"], r.lines[0], rec)


class TestParametersToCaptureBackend(ProxyTestCase):

    def test_size_and_dsn_parameters_reach_the_backend_verbatim(self):
        cap = self.start_capture(keywords=(
            "PIPELINING", "SIZE 10240000", "8BITMIME", "DSN",
            "ENHANCEDSTATUSCODES"))
        proxy = self.start_proxy(backend_port=cap.port)
        c = self.client(proxy.port)
        kw = c.ehlo().keywords
        self.assertIn("SIZE", kw)
        msg = make_message("params")
        mail = "MAIL FROM:<%s> SIZE=%d BODY=8BITMIME RET=HDRS ENVID=QQ123" % (
            ALICE, len(msg))
        rcpt = "RCPT TO:<%s> NOTIFY=FAILURE ORCPT=rfc822;bob@%s" % (BOB,
                                                                    DOMAIN)
        self.assertCode(c.cmd(mail), 250)
        self.assertCode(c.cmd(rcpt), 250)
        self.assertCode(c.cmd("DATA"), 354)
        c.send(dot_stuff(msg))
        self.assertCode(c.reply(), 250)
        cap.wait_messages(1)
        cmds = [x.decode() for x in cap.commands()]
        mails = [x for x in cmds if x.upper().startswith("MAIL ")]
        rcpts = [x for x in cmds if x.upper().startswith("RCPT ")]
        self.assertEqual(len(mails), 1, cmds)
        self.assertEqual(set(mails[0].split()[2:]), set(mail.split()[2:]))
        self.assertEqual(mails[0].split()[1], "FROM:<%s>" % ALICE)
        self.assertEqual(rcpts, [rcpt])

    def test_message_reaches_backend_byte_for_byte(self):
        cap = self.start_capture()
        proxy = self.start_proxy(backend_port=cap.port)
        body = (b".leading dot\r\n..two\r\n\r\n\ttab\r\ntrailing \r\n" +
                bytes(range(0x80, 0x100)) + b"\r\n")
        msg = make_message("exact", body, eight_bit=True)
        c = self.client(proxy.port)
        c.ehlo()
        self.assertCode(c.cmd("MAIL FROM:<%s> BODY=8BITMIME" % ALICE), 250)
        self.assertCode(c.cmd("RCPT TO:<%s>" % BOB), 250)
        self.assertCode(c.cmd("DATA"), 354)
        c.send(dot_stuff(msg))
        self.assertCode(c.reply(), 250)
        got = cap.wait_messages(1)[0]
        # the capture server keeps the wire form: dot-stuffed
        self.assertEqual(got, dot_stuff(msg)[:-3])


class TestEhloCapabilities(ProxyTestCase):

    def ehlo_keywords(self, *sink_options):
        sink = self.start_sink(*sink_options)
        proxy = self.start_proxy(backend_port=sink.port)
        c = self.client(proxy.port)
        return c.ehlo().keywords

    def test_default_sink_capabilities_are_mirrored(self):
        kw = self.ehlo_keywords()
        for k in ("PIPELINING", "ENHANCEDSTATUSCODES", "8BITMIME", "DSN"):
            self.assertIn(k, kw)
        # smtp-sink announces neither SIZE nor SMTPUTF8
        self.assertNotIn("SIZE", kw)
        self.assertNotIn("SMTPUTF8", kw)
        for k in NEVER_ADVERTISED:
            self.assertNotIn(k, kw)

    def test_backend_without_8bitmime_and_dsn(self):
        kw = self.ehlo_keywords("-8", "-N")
        self.assertNotIn("8BITMIME", kw)
        self.assertNotIn("DSN", kw)
        self.assertIn("PIPELINING", kw)
        self.assertIn("ENHANCEDSTATUSCODES", kw)

    def test_pipelining_and_enhancedstatuscodes_always_advertised(self):
        kw = self.ehlo_keywords("-E", "-p")
        self.assertIn("PIPELINING", kw)
        self.assertIn("ENHANCEDSTATUSCODES", kw)

    def test_dsn_parameters_are_555_when_backend_lacks_dsn(self):
        sink = self.start_sink("-N")
        proxy = self.start_proxy(backend_port=sink.port)
        c = self.client(proxy.port)
        c.ehlo()
        self.assertReply(c.cmd("MAIL FROM:<%s> RET=HDRS" % ALICE), 555,
                         "5.5.4")

    def test_capture_backend_with_size_and_smtputf8(self):
        cap = self.start_capture(keywords=("PIPELINING", "SIZE 1234567",
                                           "SMTPUTF8", "8BITMIME"))
        proxy = self.start_proxy(backend_port=cap.port)
        c = self.client(proxy.port)
        kw = c.ehlo().keywords
        self.assertIn("SIZE", kw)
        self.assertIn("SMTPUTF8", kw)
        self.assertNotIn("DSN", kw)

    def test_first_session_right_after_start_sees_backend_capabilities(self):
        """A client connecting the moment the daemon listens must not get
        a downgraded EHLO (no 8BITMIME/DSN) before the probe is done."""
        sink = self.start_sink("-W", "EHLO:1")
        proxy = Portcullis(backend_port=sink.port)
        self.addCleanup(proxy.stop)
        proxy.start(wait_probe=False)
        c = self.client(proxy.port)
        kw = c.ehlo().keywords
        self.assertIn("8BITMIME", kw)
        self.assertIn("DSN", kw)

    def test_postfix_capabilities_are_mirrored(self):
        pf = self.start_postfix()
        proxy = self.start_proxy(backend_port=pf.port)
        c = self.client(proxy.port)
        kw = c.ehlo().keywords
        for k in ("PIPELINING", "ENHANCEDSTATUSCODES", "SIZE", "8BITMIME",
                  "SMTPUTF8", "DSN"):
            self.assertIn(k, kw)
        self.assertTrue(kw["SIZE"] == "" or int(kw["SIZE"]) <= 10240000,
                        kw["SIZE"])
        for k in NEVER_ADVERTISED:
            self.assertNotIn(k, kw)


class TestLimits(ProxyTestCase):

    def test_fourth_recipient_over_max_recipients_3_is_452_4_5_3(self):
        sink = self.start_sink()
        proxy = self.start_proxy(backend_port=sink.port, max_recipients=3)
        c = self.client(proxy.port)
        c.ehlo()
        self.assertCode(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        for i in range(3):
            self.assertCode(c.cmd("RCPT TO:<user%d@%s>" % (i, DOMAIN)), 250)
        self.assertReply(c.cmd("RCPT TO:<user3@%s>" % DOMAIN), 452, "4.5.3")
        self.assertCode(c.cmd("DATA"), 354)
        c.send(dot_stuff(make_message("three recipients")))
        self.assertCode(c.reply(), 250)
        self.assertEqual(sink.wait_count(1), 1)
        meta, _ = Sink.parse(sink.messages()[0])
        self.assertEqual(len(meta["X-Rcpt-Args"]), 3)

    def test_too_many_errors_gives_421_and_close(self):
        sink = self.start_sink()
        proxy = self.start_proxy(backend_port=sink.port, max_errors=3)
        c = self.client(proxy.port)
        c.ehlo()
        codes = []
        closed = False
        for i in range(6):
            try:
                r = c.cmd("BOGUS%d" % i, timeout=5)
            except ConnectionClosed:
                closed = True
                break
            codes.append(r.code)
            if r.code == 421:
                closed = c.wait_closed(5)
                break
        self.assertEqual(codes[:2], [500, 500], codes)
        self.assertIn(421, codes, "no 421 after max_errors errors: %r" % codes)
        self.assertLessEqual(len(codes), 4, codes)
        self.assertTrue(closed, "connection not closed after 421")

    def test_message_over_message_size_limit_is_552(self):
        sink = self.start_sink()
        proxy = self.start_proxy(backend_port=sink.port,
                                 message_size_limit=2000)
        c = self.client(proxy.port)
        c.ehlo()
        self.assertCode(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        self.assertCode(c.cmd("RCPT TO:<%s>" % BOB), 250)
        self.assertCode(c.cmd("DATA"), 354)
        c.send(dot_stuff(make_message("big", b"y" * 70 + b"\r\n") +
                         (b"z" * 70 + b"\r\n") * 100))
        self.assertReply(c.reply(), 552)
        self.assertCode(c.cmd("QUIT"), 221)
        self.assertEqual(sink.settled_count(), 0)

    def test_large_message_spooled_to_disk_arrives_intact(self):
        cap = self.start_capture()
        proxy = self.start_proxy(backend_port=cap.port,
                                 spool_memory_limit="4k")
        body = b"".join(b"line %06d %s\r\n" % (i, b"q" * 60)
                        for i in range(20000))
        msg = make_message("big spooled", body)
        c = self.client(proxy.port)
        r = c.mail_transaction(ALICE, [BOB], msg, helo="big.example.test")
        self.assertCode(r["end"], 250)
        got = cap.wait_messages(1)[0]
        self.assertEqual(len(got), len(msg))
        self.assertEqual(got, msg)

    def test_idle_client_gets_421_after_timeout_command(self):
        sink = self.start_sink()
        proxy = self.start_proxy(backend_port=sink.port, timeout_command=2)
        c = self.client(proxy.port)
        c.ehlo()
        start = time.monotonic()
        r = c.reply(timeout=10)
        self.assertCode(r, 421)
        self.assertTrue(c.wait_closed(5))
        self.assertLess(time.monotonic() - start, 8)

    def test_stalled_data_gets_421_after_timeout_data(self):
        sink = self.start_sink()
        proxy = self.start_proxy(backend_port=sink.port, timeout_data=2)
        c = self.client(proxy.port)
        c.ehlo()
        c.cmd("MAIL FROM:<%s>" % ALICE)
        c.cmd("RCPT TO:<%s>" % BOB)
        self.assertCode(c.cmd("DATA"), 354)
        c.send(b"Subject: stalled\r\n\r\npartial")
        self.assertCode(c.reply(timeout=10), 421)
        self.assertTrue(c.wait_closed(5))
        self.assertEqual(sink.settled_count(), 0)


class TestBareNewlineInData(ProxyTestCase):

    def send_bare_lf_message(self, proxy):
        c = self.client(proxy.port)
        c.ehlo()
        self.assertCode(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        self.assertCode(c.cmd("RCPT TO:<%s>" % BOB), 250)
        self.assertCode(c.cmd("DATA"), 354)
        c.send(b"Subject: bare\r\n\r\nline1\nline2\rline3\r\n.\r\n")
        return c.reply()

    def test_bare_lf_in_data_rejects_the_message_after_end_of_data(self):
        cap = self.start_capture()
        proxy = self.start_proxy(backend_port=cap.port)  # reject: default
        r = self.send_bare_lf_message(proxy)
        self.assertReply(r, 550, "5.6.0")
        self.assertEqual(r.text, "5.6.0 Error: message contains bare CR or "
                         "LF characters", r)
        # the decision is final when it is logged: nothing went on after
        rec = proxy.wait_transaction(action="rejected")
        self.assertTrue(rec, proxy.decisions())
        self.assertEqual(rec[0]["reply"], "550 5.6.0 Error: message "
                         "contains bare CR or LF characters", rec)
        self.assertEqual(cap.messages(), [])
        self.assertNotIn(b"DATA", [c.split(b" ", 1)[0].upper()
                                   for c in cap.commands()])

    def test_bare_lf_in_data_is_normalized_to_crlf(self):
        cap = self.start_capture()
        proxy = self.start_proxy(backend_port=cap.port,
                                 bare_newline="normalize")
        self.assertCode(self.send_bare_lf_message(proxy), 250)
        got = cap.wait_messages(1)[0]
        self.assertEqual(got, b"Subject: bare\r\n\r\nline1\r\nline2\r\n"
                         b"line3\r\n")


class TestSignals(ProxyTestCase):

    def test_sigterm_lets_a_transaction_finish_and_refuses_new_sessions(self):
        sink = self.start_sink()
        proxy = self.start_proxy(backend_port=sink.port, drain_timeout=20)
        c = self.client(proxy.port)
        c.ehlo()
        self.assertCode(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        self.assertCode(c.cmd("RCPT TO:<%s>" % BOB), 250)
        self.assertCode(c.cmd("DATA"), 354)
        c.send(b"Subject: drain\r\n\r\nfirst half\r\n")
        proxy.signal(signal.SIGTERM)
        # the worker has stopped listening when it says it drains
        self.assertTrue(proxy.wait_log(r"draining 1 sessions"), proxy.stderr())
        # new connections: refused, or greeted with 421
        n = SMTPClient(proxy.port, timeout=5)
        try:
            n.connect(read_greeting=False)
            g = n.reply()
            self.assertCode(g, 421)
        except (ConnectionRefusedError, ConnectionClosed):
            pass
        finally:
            n.close()
        c.send(b"second half\r\n.\r\n")
        self.assertCode(c.reply(), 250)
        self.assertEqual(sink.wait_count(1), 1)
        c.cmd("QUIT")
        rc = proxy.wait_exit(15)
        self.assertEqual(rc, 0, "daemon did not exit 0 after draining")
        rec = [d for d in proxy.decisions() if d.get("action") == "accepted"]
        self.assertEqual(len(rec), 1)

    def test_sigterm_cuts_sessions_after_drain_timeout(self):
        sink = self.start_sink()
        proxy = self.start_proxy(backend_port=sink.port, drain_timeout=2)
        c = self.client(proxy.port)
        c.ehlo()
        proxy.signal(signal.SIGTERM)
        rc = proxy.wait_exit(12)
        self.assertEqual(rc, 0)
        self.assertTrue(c.wait_closed(2))

    def test_sighup_reload_lets_an_open_transaction_finish(self):
        sink = self.start_sink()
        proxy = self.start_proxy(backend_port=sink.port)
        c = self.client(proxy.port)
        c.ehlo()
        self.assertCode(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        proxy.signal(signal.SIGHUP)
        # the old worker keeps this session; new ones go to the new worker
        self.assertTrue(proxy.wait_log(r"retiring after a reload: 1 sessions "
                                       r"left"), proxy.stderr())
        self.assertTrue(proxy.running())
        self.assertCode(c.cmd("RCPT TO:<%s>" % BOB), 250)
        self.assertCode(c.cmd("DATA"), 354)
        c.send(dot_stuff(make_message("across reload")))
        self.assertCode(c.reply(), 250)
        # the old configuration serves no further transaction
        self.assertReply(c.cmd("MAIL FROM:<%s>" % ALICE), 421, "4.3.2")
        # and new sessions work after the reload
        n = self.client(proxy.port)
        self.assertCode(n.ehlo(), 250)
        self.assertCode(n.cmd("MAIL FROM:<%s>" % ALICE), 250)
        self.assertCode(n.cmd("RCPT TO:<%s>" % BOB), 250)
        self.assertCode(n.cmd("DATA"), 354)
        n.send(dot_stuff(make_message("after reload")))
        self.assertCode(n.reply(), 250)
        self.assertEqual(sink.wait_count(2), 2)

    def test_sighup_applies_new_settings_to_new_sessions(self):
        sink = self.start_sink()
        proxy = self.start_proxy(backend_port=sink.port, max_recipients=5)
        proxy.kwargs["max_recipients"] = 1
        proxy.write_config()
        proxy.signal(signal.SIGHUP)
        # once the old worker retires, only the new one accepts
        self.assertTrue(proxy.wait_log(r"retiring after a reload"),
                        proxy.stderr())
        c = self.client(proxy.port)
        c.ehlo()
        self.assertCode(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        self.assertCode(c.cmd("RCPT TO:<%s>" % BOB), 250)
        self.assertReply(c.cmd("RCPT TO:<%s>" % CAROL), 452, "4.5.3")

    def test_sighup_with_a_broken_config_keeps_running(self):
        sink = self.start_sink()
        proxy = self.start_proxy(backend_port=sink.port)
        with open(proxy.conf_path, "a") as f:
            f.write("\n[portcullis]\nmax_recipients = lots\n")
        proxy.signal(signal.SIGHUP)
        self.assertTrue(proxy.wait_log(r"reload failed, keeping the running "
                                       r"configuration"), proxy.stderr())
        self.assertTrue(proxy.running(), "a bad reload must not kill it")
        c = self.client(proxy.port)
        self.assertCode(c.ehlo(), 250)

    def test_sigusr1_reopens_the_decision_log(self):
        sink = self.start_sink()
        proxy = self.start_proxy(backend_port=sink.port)
        c = self.client(proxy.port)
        r = c.mail_transaction(ALICE, [BOB], make_message("before rotate"),
                               helo="rotate.example.test")
        self.assertCode(r["end"], 250)
        self.assertTrue(proxy.wait_transaction(action="accepted"))
        rotated = proxy.decisions_path + ".1"
        os.rename(proxy.decisions_path, rotated)
        proxy.signal(signal.SIGUSR1)
        self.assertTrue(proxy.wait_log_reopened(10),
                        "the worker did not reopen the decision log")
        r = c.mail_transaction(ALICE, [BOB], make_message("after rotate"))
        self.assertCode(r["end"], 250)
        recs = proxy.wait_transaction(action="accepted")
        self.assertEqual(len(recs), 1, "new log should hold only the "
                         "second transaction: %r" % recs)
        self.assertEqual(recs[0]["transaction"], 2)
        with open(rotated) as f:
            self.assertEqual(len([l for l in f if l.strip()]), 1)


class TestIPv6(ProxyTestCase):

    def test_ipv6_client_is_served(self):
        if not socket.has_ipv6:
            self.skipTest("no IPv6")
        sink = self.start_sink()
        port6 = free_port()
        proxy = self.start_proxy(backend_port=sink.port, port6=port6)
        c = self.client(port6, host="::1")
        r = c.mail_transaction(ALICE, [BOB], make_message("v6"),
                               helo="v6.example.test")
        self.assertCode(r["end"], 250)
        rec = proxy.wait_transaction(action="accepted")
        self.assertEqual(rec[-1]["client"]["address"], "::1")


class TestConfigCheck(unittest.TestCase):

    def setUp(self):
        self.p = Portcullis(backend_port=10025)
        self.p.dir = None
        self.addCleanup(self._clean)

    def _clean(self):
        from harness import remove_tree
        remove_tree(self.p.dir)

    def check(self, text):
        r = self.p.check_config(text)
        return r, os.path.join(self.p.dir, "check.conf")

    def good_config(self):
        from harness import make_tempdir
        if self.p.dir is None:
            self.p.dir = make_tempdir("portcullis-proxy-")
        return self.p.config_text()

    def test_valid_config_passes(self):
        r, path = self.check(self.good_config())
        self.assertEqual(r.returncode, 0, r.stderr)

    def _bad_line(self, text, bad, key):
        lines = text.split("\n")
        idx = lines.index("[portcullis]") + 1
        lines.insert(idx, bad)
        r, path = self.check("\n".join(lines))
        self.assertNotEqual(r.returncode, 0)
        err = r.stderr.decode(errors="replace")
        # "FILE:LINE: key: message"; a "[section] " before the key is fine
        self.assertRegex(err, r"%s:%d: (\[\w+\] )?%s: \S" % (
            re.escape(path), idx + 1, re.escape(key)))

    def test_bad_value_is_reported_with_file_line_and_key(self):
        self._bad_line(self.good_config(), "max_recipients = many",
                       "max_recipients")

    def test_unknown_key_is_reported_with_file_line_and_key(self):
        self._bad_line(self.good_config(), "frobnication = 1",
                       "frobnication")

    def test_bad_bare_newline_value_is_reported(self):
        self._bad_line(self.good_config(), "bare_newline = sometimes",
                       "bare_newline")

    def test_missing_config_file_fails(self):
        from harness import make_tempdir
        import subprocess
        if not os.access(PORTCULLIS_BIN, os.X_OK):
            self.skipTest("daemon not built")
        r = subprocess.run([PORTCULLIS_BIN, "-t", "-c",
                            "/nonexistent/portcullis.conf"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=10)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(b"/nonexistent/portcullis.conf", r.stderr)

    def test_bad_key_in_backend_section_is_reported(self):
        text = self.good_config()
        lines = text.split("\n")
        idx = lines.index("[backend]") + 1
        lines.insert(idx, "client_identity = telepathy")
        r, path = self.check("\n".join(lines))
        self.assertNotEqual(r.returncode, 0)
        self.assertRegex(r.stderr.decode(errors="replace"),
                         r"%s:%d: (\[\w+\] )?client_identity: \S" % (
                             re.escape(path), idx + 1))

    def test_negative_worker_count_is_reported(self):
        self._bad_line(self.good_config(), "workers = -3", "workers")


if __name__ == "__main__":
    unittest.main()
