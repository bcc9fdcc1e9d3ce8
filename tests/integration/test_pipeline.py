"""
test_pipeline.py - the filter pipeline of the daemon, end to end

The daemon loads tests/plugins/.libs/probe.so (tests/plugins/probe.c,
built by "make check"): a filter that says any verdict at any stage, with
or without its own reply, sleeps, hangs, crashes, changes the header,
adds results, lowers the size limit, and writes one line per hook call
("STAGE SESSION-ID") to a count file. Several instances of it make a
chain. The capture server is the backend: it records the exact bytes of
every message, so "delivered" and "nothing delivered" are exact (the
50-session tests use smtp-sink, a process of its own).
PORTCULLIS_TEST_PLUGIN_DIR overrides where probe.so and notafilter.so
(a shared object without a descriptor) are looked for.

What is pinned (the contract of the pipeline):

* each verdict at each stage: the client's reply code and enhanced code,
  what the backend got, the decision record's action and its "filters"
  entries ({"filter", "stage", "verdict", "usec", "results",
  "recipient", "error", "action"});
* the first REJECT, TEMPFAIL or DISCARD decides (later filters are not
  called); ACCEPT skips the later calls of the transaction (of the
  session at connect and helo); a verdict at RCPT is about one
  recipient; DISCARD answers 250 and delivers nothing;
* header changes of several filters apply in chain order, the body
  arrives byte for byte;
* a filter that passes its timeout, or returns an invalid verdict, gets
  its on_error (tempfail, reject, accept), and with accept the changes
  of the filters before it survive;
* a reply whose class does not match the verdict is refused;
* one module loaded twice under two names with different options;
* configuration errors in `portcullis -t` name FILE:LINE, the section
  and the key;
* the reset and close hooks run for every session;
* a filter that hangs, or one that crashes its worker, under 50
  concurrent sessions: the other sessions are served, the daemon goes
  on serving; a full filter pool gets on_error at once ("unavailable")
  in a session already open, and a new client 421 4.3.2 at accept.
"""

import os
import re
import threading
import time
import unittest

from harness import (DOMAIN, PROJECT, ConnectionClosed, Portcullis,
                     ProxyTestCase, ReplyTimeout, SMTPClient, dot_stuff,
                     header_fields, make_message, make_tempdir, remove_tree,
                     wait_for)
import harness  # noqa: E402


def setUpModule():
    # a daemon that refuses a filter chain fails every test here
    harness.require_filters()


PLUGIN_DIR = os.environ.get("PORTCULLIS_TEST_PLUGIN_DIR") or os.path.join(
    PROJECT, "tests", "plugins", ".libs")
PROBE = os.path.join(PLUGIN_DIR, "probe.so")
# the same filter with every hook marked nonblocking (run on the loop), and
# marked so too but with a descriptor from before that field (the marks
# must read as 0)
PROBE_NB = os.path.join(PLUGIN_DIR, "probe_nb.so")
PROBE_OLD = os.path.join(PLUGIN_DIR, "probe_old.so")
NOTAFILTER = os.path.join(PLUGIN_DIR, "notafilter.so")

ALICE = "alice@" + DOMAIN
BOB = "bob@" + DOMAIN
CAROL = "carol@" + DOMAIN
DAVE = "dave@" + DOMAIN
HELO = "client.example.test"

STAGES = ("connect", "helo", "mail", "rcpt", "data")
# The stages where DISCARD is a verdict (at connect and helo it is invalid).
DISCARD_STAGES = ("mail", "rcpt", "data")

# The replies of a failed filter call (timeout, invalid verdict).
UNAVAILABLE_TEXT = "Error: message filter unavailable, try again later"
REFUSED_TEXT = "Error: refused by a message filter"


def reject_default(stage):
    """(code, enhanced code) of a REJECT without a reply of its own."""
    return (554 if stage == "connect" else 550), "5.7.1"


def tempfail_default(stage):
    """(code, enhanced code) of a TEMPFAIL without a reply of its own."""
    return (421 if stage == "connect" else 451), "4.7.1"


def on_error_reply(stage, on_error):
    """(code, enhanced code, text) of a failed call with this on_error."""
    if on_error == "reject":
        return (554 if stage == "connect" else 550), "5.7.1", REFUSED_TEXT
    return (421 if stage == "connect" else 451), "4.3.0", UNAVAILABLE_TEXT


def filter_section(name, module=PROBE, **options):
    """A [filter NAME] section; options with the value None are left out."""
    lines = ["", "[filter %s]" % name, "module = %s" % module]
    for key, value in options.items():
        if value is not None:
            lines.append("%s = %s" % (key, value))
    return "\n".join(lines) + "\n"


def unstuff(data):
    """DATA bytes as the capture server recorded them (dot-stuffed, up to
    the final '.') back to the message."""
    lines = data.split(b"\r\n")
    return b"\r\n".join(l[1:] if l.startswith(b".") else l for l in lines)


def split_message(message):
    """(header block with its final CRLF, body) of a CRLF message."""
    i = message.index(b"\r\n\r\n")
    return message[:i + 2], message[i + 4:]


def record_type(stage):
    """The record that holds the entries of a session refused at stage: a
    refusal at connect or helo leaves no transaction."""
    return "connection" if stage in ("connect", "helo") else "transaction"


def line_of(text, line):
    """The 1-based number of the first line of text equal to line."""
    lines = text.split("\n")
    return lines.index(line) + 1


class PipelineTest(ProxyTestCase):
    """Probes in a chain in front of a capture server."""

    # the probe's build the chain is made of (unless a filter says module=)
    module = PROBE

    def setUp(self):
        if not os.path.exists(self.module):
            self.skipTest("probe filter not built (make check): " + self.module)
        self.tmp = make_tempdir("portcullis-pipeline-")
        self.addCleanup(remove_tree, self.tmp)

    # -- set-up

    def count_file(self, name):
        return os.path.join(self.tmp, "%s.count" % name)

    def proxy(self, *filters, cap=None, **kw):
        """Start a capture server (unless given) and the daemon with the
        chain filters: (name, {option: value}) in order. Returns
        (proxy, capture)."""
        cap = cap or self.start_capture()
        names = [name for name, _ in filters]
        extra = "".join(filter_section(name, **dict({"module": self.module}, **opts))
                        for name, opts in filters)
        px = self.start_proxy(backend_port=cap.port, filters=", ".join(names),
                              extra=extra, **kw)
        return px, cap

    # -- the client side

    def converse(self, port, sender=ALICE, rcpts=(BOB,), message=None,
                 helo=HELO, quit=True):
        """One session with one transaction, every command sent whatever
        the reply to the one before (so that the follow-up replies of a
        refusal are seen): greeting, EHLO, MAIL, RCPT..., DATA, the
        message if DATA got 354, QUIT. Returns a dict of replies:
        greeting, ehlo, mail, rcpt (list), data, end, quit; closed is True
        when the proxy hung up; port is the client's port (to find the
        session's decision record); elapsed the seconds it took."""
        out = {"closed": False, "rcpt": []}
        c = self.client(port, connect=False)
        t0 = time.monotonic()
        try:
            c.connect(read_greeting=False)
            out["port"] = c.local_port
            out["greeting"] = c.reply()
            if out["greeting"].code != 220:
                out["closed"] = c.wait_closed(5)
                return out
            out["ehlo"] = c.ehlo(helo)
            out["mail"] = c.cmd("MAIL FROM:<%s>" % sender)
            out["rcpt"] = [c.cmd("RCPT TO:<%s>" % r) for r in rcpts]
            out["data"] = c.cmd("DATA")
            if out["data"].code == 354:
                c.send(dot_stuff(message or make_message("pipeline",
                                                         sender=sender)))
                out["end"] = c.reply()
            if quit:
                out["quit"] = c.cmd("QUIT")
        except ConnectionClosed:
            out["closed"] = True
        finally:
            out["elapsed"] = time.monotonic() - t0
            out["client"] = c
        return out

    def refusal(self, out, stage):
        """The reply that answered the command of stage."""
        key = {"connect": "greeting", "helo": "ehlo", "mail": "mail",
               "data": "end"}.get(stage)
        reply = out["rcpt"][0] if stage == "rcpt" and out["rcpt"] else \
            out.get(key)
        self.assertIsNotNone(reply, "no reply at %s: %r" % (stage, out))
        return reply

    def assertRefusedAt(self, out, stage, code, enh, text=None):
        """The command of stage got code/enh (and text), and what follows
        it is refused as the protocol says."""
        reply = self.refusal(out, stage)
        self.assertReply(reply, code, enh, "at %s" % stage)
        if text is not None:
            self.assertIn(text, reply.text, "at %s" % stage)
        if stage == "connect":
            self.assertTrue(out["closed"],
                            "the connection stays open after %r" % reply)
        elif stage == "helo":
            # no HELO was accepted: the client must say HELO again
            self.assertReply(out["mail"], 503, msg="MAIL after a refused EHLO")
        elif stage == "mail":
            self.assertReply(out["rcpt"][0], 503,
                             msg="RCPT after a refused MAIL")
        elif stage == "rcpt":
            self.assertCode(out["data"], 5, "DATA without a recipient")
        else:
            self.assertIn("end", out, "the message was not sent: %r" % out)

    def assertAllAccepted(self, out, rcpts=1):
        self.assertCode(out["greeting"], 220)
        self.assertCode(out["ehlo"], 250)
        self.assertCode(out["mail"], 250)
        self.assertEqual([r.code for r in out["rcpt"]], [250] * rcpts,
                         out["rcpt"])
        self.assertCode(out["data"], 354)
        self.assertReply(out["end"], 250, msg="end of data")

    def assertNothingDelivered(self, cap):
        # a message is relayed before the client gets its 250, and the
        # session is over: there is nothing to wait for
        self.assertEqual(cap.messages(), [], "a message reached the backend")

    def assertDelivered(self, cap, count=1):
        got = cap.wait_messages(count, 10)
        self.assertEqual(len(got), count, "messages at the backend")
        return got

    # -- the decision log

    def record(self, px, port, timeout=10, **match):
        """The (last) decision record of the session of the client that
        used port, once written."""
        def pred(d):
            return (d.get("client", {}).get("port") == port and
                    all(d.get(k) == v for k, v in match.items()))
        recs = px.wait_decisions(pred, 1, timeout)
        self.assertTrue(recs, "no record of client port %r (%r) in %r" % (
            port, match, px.decisions()))
        return recs[-1]

    def entries(self, rec, name=None, stage=None):
        """The filter entries of a record (of filter name, at stage)."""
        out = []
        for e in rec.get("filters", []):
            if name is not None and e.get("filter") != name:
                continue
            if stage is not None and e.get("stage") != stage:
                continue
            out.append(e)
        return out

    def assertEntries(self, rec, name, expected):
        """The entries of filter name are [(stage, verdict)] in order, each
        well-formed."""
        got = self.entries(rec, name)
        self.assertEqual([(e.get("stage"), e.get("verdict")) for e in got],
                         expected, "filters entries of %s in %r" % (name, rec))
        for e in got:
            self.assertIsInstance(e.get("usec"), int, e)
            self.assertGreaterEqual(e["usec"], 0, e)
            if e["stage"] == "rcpt":
                self.assertIn("recipient", e, e)

    # -- the count files

    def calls(self, name):
        """The hook calls a probe wrote: [(stage, session id, ...)]."""
        try:
            with open(self.count_file(name)) as f:
                return [tuple(l.split()) for l in f if l.strip()]
        except FileNotFoundError:
            return []

    def session_calls(self, name, sid):
        return [c[0] for c in self.calls(name) if c[1] == sid]

    def wait_closes(self, name, sessions, timeout=10):
        """Wait until the probe's close hook ran for this many sessions."""
        wait_for(lambda: len([c for c in self.calls(name)
                              if c[0] == "close"]) >= sessions, timeout)
        return self.calls(name)


# ---------------------------------------------------------------------------
# each verdict at each stage

class TestVerdictAtEachStage(PipelineTest):
    """One probe "p" acting at one stage; a fresh daemon per stage."""

    def run_stage(self, stage, verdict, **opts):
        px, cap = self.proxy(("p", dict(stage=stage, verdict=verdict,
                                        result="at=" + stage,
                                        result_int="n=7", **opts)))
        out = self.converse(px.port)
        return px, cap, out

    def before(self, stage):
        return [(s, "continue") for s in STAGES[:STAGES.index(stage)]]

    def assertActingEntry(self, rec, stage, verdict):
        e = self.entries(rec, "p", stage)[-1]
        self.assertEqual(e["verdict"], verdict, e)
        self.assertEqual(e.get("results"), {"at": stage, "n": 7}, e)
        return e

    def test_continue_at_each_stage_delivers_and_logs_every_call(self):
        for stage in STAGES:
            with self.subTest(stage=stage):
                px, cap, out = self.run_stage(stage, "continue")
                self.assertAllAccepted(out)
                self.assertDelivered(cap)
                rec = self.record(px, out["port"], type="transaction")
                self.assertEqual(rec["action"], "accepted")
                self.assertEntries(rec, "p", [(s, "continue") for s in STAGES])
                self.assertActingEntry(rec, stage, "continue")
                self.assertEqual(self.entries(rec, "p", "rcpt")[0]
                                 ["recipient"], BOB)

    def test_accept_at_each_stage_delivers_without_the_later_calls(self):
        for stage in STAGES:
            with self.subTest(stage=stage):
                px, cap, out = self.run_stage(stage, "accept")
                self.assertAllAccepted(out)
                self.assertDelivered(cap)
                rec = self.record(px, out["port"], type="transaction")
                self.assertEqual(rec["action"], "accepted")
                self.assertEntries(rec, "p",
                                   self.before(stage) + [(stage, "accept")])
                self.assertActingEntry(rec, stage, "accept")

    def check_refusal(self, verdict, want_code, want_enh, want_text=None,
                      **opts):
        """want_code is a code, or a function of the stage that gives
        (code, enhanced code)."""
        for stage in STAGES:
            with self.subTest(stage=stage):
                px, cap, out = self.run_stage(stage, verdict, **opts)
                if callable(want_code):
                    code, enh = want_code(stage)
                else:
                    code, enh = want_code, want_enh
                self.assertRefusedAt(out, stage, code, enh, want_text)
                self.assertNothingDelivered(cap)
                rec = self.record(px, out["port"], type=record_type(stage))
                self.assertEntries(rec, "p",
                                   self.before(stage) + [(stage, verdict)])
                self.assertActingEntry(rec, stage, verdict)
                if stage in ("mail", "data"):
                    self.assertEqual(rec["action"], verdict == "reject" and
                                     "rejected" or "tempfailed", rec)

    def test_reject_at_each_stage_gets_the_default_5xx(self):
        self.check_refusal("reject", reject_default, None, "rejected")

    def test_reject_at_each_stage_gets_the_filters_reply(self):
        self.check_refusal("reject", 553, "5.7.26", "Probe says no",
                           code=553, enh="5.7.26", text="Probe says no")

    def test_tempfail_at_each_stage_gets_the_default_4xx(self):
        self.check_refusal("tempfail", tempfail_default, None)

    def test_tempfail_at_each_stage_gets_the_filters_reply(self):
        self.check_refusal("tempfail", 450, "4.7.26", "Probe says later",
                           code=450, enh="4.7.26", text="Probe says later")

    def test_reject_without_enhanced_code_gets_a_default_one(self):
        px, cap, out = self.run_stage("mail", "reject", code=553,
                                      text="No enhanced code")
        self.assertRefusedAt(out, "mail", 553, "5.7.1", "No enhanced code")

    def test_discard_answers_250_and_delivers_nothing(self):
        for stage in DISCARD_STAGES:
            with self.subTest(stage=stage):
                px, cap, out = self.run_stage(stage, "discard")
                self.assertAllAccepted(out)
                self.assertCode(out["quit"], 221)
                self.assertNothingDelivered(cap)
                rec = self.record(px, out["port"], type="transaction")
                self.assertEqual(rec["action"], "discarded", rec)
                got = self.entries(rec, "p")
                want = self.before(stage) + [(stage, "discard")]
                self.assertEqual([(e["stage"], e["verdict"])
                                  for e in got][:len(want)], want, rec)
                self.assertActingEntry(rec, stage, "discard")

    def test_discard_at_connect_or_helo_is_an_invalid_verdict(self):
        for stage in ("connect", "helo"):
            with self.subTest(stage=stage):
                px, cap, out = self.run_stage(stage, "discard")
                code, enh, text = on_error_reply(stage, "tempfail")
                self.assertRefusedAt(out, stage, code, enh, text)
                self.assertNothingDelivered(cap)
                rec = self.record(px, out["port"])
                e = self.entries(rec, "p", stage)[-1]
                self.assertIn("error", e, e)
                self.assertEqual(e.get("action"), "tempfail", e)


class TestInvalidVerdict(PipelineTest):
    """A verdict outside enum pc_status is a failure: on_error decides."""

    def run_invalid(self, stage, on_error=None):
        px, cap = self.proxy(
            ("p", dict(stage=stage, verdict="invalid", on_error=on_error)),
            ("after", dict(count_file=self.count_file("after-%s-%s" % (
                stage, on_error)))))
        return px, cap, self.converse(px.port)

    def test_invalid_verdict_is_tempfail_by_default(self):
        for stage in STAGES:
            with self.subTest(stage=stage):
                px, cap, out = self.run_invalid(stage)
                code, enh, text = on_error_reply(stage, "tempfail")
                self.assertRefusedAt(out, stage, code, enh, text)
                self.assertNothingDelivered(cap)
                rec = self.record(px, out["port"])
                e = self.entries(rec, "p", stage)[-1]
                self.assertIn("error", e, e)
                self.assertEqual(e.get("action"), "tempfail", e)
                self.assertEqual(self.entries(rec, "after", stage), [], rec)

    def test_invalid_verdict_with_on_error_reject(self):
        for stage in STAGES:
            with self.subTest(stage=stage):
                px, cap, out = self.run_invalid(stage, "reject")
                code, enh, text = on_error_reply(stage, "reject")
                self.assertRefusedAt(out, stage, code, enh, text)
                self.assertNothingDelivered(cap)
                e = self.entries(self.record(px, out["port"]), "p", stage)[-1]
                self.assertEqual(e.get("action"), "reject", e)

    def test_invalid_verdict_with_on_error_accept_goes_on(self):
        for stage in STAGES:
            with self.subTest(stage=stage):
                px, cap, out = self.run_invalid(stage, "accept")
                self.assertAllAccepted(out)
                self.assertDelivered(cap)
                rec = self.record(px, out["port"], type="transaction")
                e = self.entries(rec, "p", stage)[-1]
                self.assertIn("error", e, e)
                self.assertEqual(e.get("action"), "accept", e)
                # the chain went on with the next filter
                self.assertEqual([x["verdict"] for x in
                                  self.entries(rec, "after", stage)],
                                 ["continue"], rec)


class TestReplyClassMismatch(PipelineTest):
    """pc_set_reply() with a class that does not go with the verdict."""

    def run_reply(self, stage, verdict, code, enh):
        px, cap = self.proxy(("p", dict(stage=stage, verdict=verdict,
                                        code=code, enh=enh,
                                        text="Mismatched reply")))
        return px, cap, self.converse(px.port)

    def test_reject_with_a_4xx_reply_gets_the_default_5xx(self):
        for stage in ("mail", "data", "connect"):
            with self.subTest(stage=stage):
                px, cap, out = self.run_reply(stage, "reject", 451, "4.7.1")
                code, enh = reject_default(stage)
                self.assertRefusedAt(out, stage, code, enh)
                self.assertNotIn("Mismatched reply",
                                 self.refusal(out, stage).text)
                self.assertNothingDelivered(cap)
                e = self.entries(self.record(px, out["port"]), "p", stage)[-1]
                self.assertEqual(e["verdict"], "reject", e)
                self.assertIn("error", e, e)

    def test_tempfail_with_a_5xx_reply_gets_the_default_4xx(self):
        for stage in ("rcpt", "helo"):
            with self.subTest(stage=stage):
                px, cap, out = self.run_reply(stage, "tempfail", 550, "5.7.1")
                code, enh = tempfail_default(stage)
                self.assertRefusedAt(out, stage, code, enh)
                self.assertNotIn("Mismatched reply",
                                 self.refusal(out, stage).text)
                e = self.entries(self.record(px, out["port"]), "p", stage)[-1]
                self.assertEqual(e["verdict"], "tempfail", e)
                self.assertIn("error", e, e)

    def test_enhanced_code_of_another_class_is_refused(self):
        # pc_set_reply() itself refuses 550 with 4.7.1: the default reply
        px, cap, out = self.run_reply("mail", "reject", 550, "4.7.1")
        self.assertRefusedAt(out, "mail", 550, "5.7.1")
        self.assertNotIn("Mismatched reply", out["mail"].text)


# ---------------------------------------------------------------------------
# the chain

class TestChainOrder(PipelineTest):

    def test_first_reject_decides_and_the_next_filter_is_not_called(self):
        px, cap = self.proxy(
            ("first", dict(stage="mail", verdict="continue",
                           count_file=self.count_file("first"))),
            ("second", dict(stage="mail", verdict="reject", code=550,
                            enh="5.7.1", text="Second says no",
                            count_file=self.count_file("second"))),
            ("third", dict(stage="mail", verdict="tempfail",
                           count_file=self.count_file("third"))))
        out = self.converse(px.port)
        self.assertRefusedAt(out, "mail", 550, "5.7.1", "Second says no")
        self.assertNothingDelivered(cap)
        rec = self.record(px, out["port"], type="transaction")
        self.assertEqual(rec["action"], "rejected")
        self.assertEqual([(e["filter"], e["verdict"]) for e in
                          self.entries(rec, stage="mail")],
                         [("first", "continue"), ("second", "reject")])
        self.wait_closes("third", 1)
        sid = rec["session"]
        self.assertIn("mail", self.session_calls("first", sid))
        self.assertIn("mail", self.session_calls("second", sid))
        self.assertNotIn("mail", self.session_calls("third", sid),
                         "a filter after the REJECT was called")
        # the connect and helo calls of the third are the session's
        self.assertEqual(self.session_calls("third", sid)[:2],
                         ["connect", "helo"])

    def test_tempfail_before_a_reject_decides(self):
        px, cap = self.proxy(
            ("first", dict(stage="rcpt", verdict="tempfail")),
            ("second", dict(stage="rcpt", verdict="reject",
                            count_file=self.count_file("second"))))
        out = self.converse(px.port)
        self.assertRefusedAt(out, "rcpt", 451, "4.7.1")
        rec = self.record(px, out["port"])
        self.assertEqual(self.entries(rec, "second", "rcpt"), [], rec)
        self.wait_closes("second", 1)
        self.assertNotIn("rcpt", self.session_calls("second", rec["session"]))

    def test_discard_before_a_reject_decides(self):
        px, cap = self.proxy(
            ("first", dict(stage="data", verdict="discard")),
            ("second", dict(stage="data", verdict="reject")))
        out = self.converse(px.port)
        self.assertAllAccepted(out)
        self.assertNothingDelivered(cap)
        rec = self.record(px, out["port"], type="transaction")
        self.assertEqual(rec["action"], "discarded")
        self.assertEqual(self.entries(rec, "second", "data"), [], rec)

    def test_accept_skips_the_later_filters_for_the_transaction_only(self):
        # "gate" accepts at MAIL: "guard" (which refuses every message at
        # DATA) is skipped for this transaction, not for the next one
        px, cap = self.proxy(
            ("gate", dict(stage="mail", verdict="accept", match="alice@")),
            ("guard", dict(stage="data", verdict="reject", code=550,
                           enh="5.7.1", text="Guard says no",
                           count_file=self.count_file("guard"))))
        c = self.client(px.port)
        self.assertCode(c.ehlo(HELO), 250)
        r = c.mail_transaction(ALICE, [BOB], make_message("accepted"))
        self.assertReply(r["end"], 250)
        r = c.mail_transaction(CAROL, [BOB], make_message("guarded",
                                                          sender=CAROL))
        self.assertReply(r["end"], 550, "5.7.1")
        self.assertIn("Guard says no", r["end"].text)
        port = c.local_port
        self.assertCode(c.cmd("QUIT"), 221)
        got = self.assertDelivered(cap, 1)
        self.assertIn(b"Subject: accepted\r\n", got[0])
        recs = px.wait_decisions(lambda d: d.get("client", {}).get("port")
                                 == port and d.get("type") == "transaction", 2)
        self.assertEqual([r["action"] for r in recs], ["accepted", "rejected"])
        self.assertEqual([(e["filter"], e["stage"], e["verdict"]) for e in
                          recs[0]["filters"] if e["stage"] not in
                          ("connect", "helo")],
                         [("gate", "mail", "accept")], recs[0])
        self.assertEqual(self.entries(recs[1], "guard", "data")[0]["verdict"],
                         "reject", recs[1])
        self.wait_closes("guard", 1)
        calls = self.session_calls("guard", recs[0]["session"])
        self.assertEqual(calls.count("data"), 1, calls)
        self.assertEqual(calls.count("mail"), 1, calls)

    def test_accept_at_connect_skips_the_later_filters_for_the_session(self):
        px, cap = self.proxy(
            ("gate", dict(stage="connect", verdict="accept")),
            ("guard", dict(stage="mail", verdict="reject",
                           count_file=self.count_file("guard"))))
        c = self.client(px.port)
        self.assertCode(c.ehlo(HELO), 250)
        for n in range(2):
            r = c.mail_transaction(ALICE, [BOB], make_message("n%d" % n))
            self.assertReply(r["end"], 250)
        self.assertCode(c.cmd("QUIT"), 221)
        self.assertDelivered(cap, 2)
        self.wait_closes("guard", 1, timeout=3)
        for stage in ("connect", "helo", "mail", "rcpt", "data"):
            self.assertNotIn(stage, [x[0] for x in self.calls("guard")],
                             "guard was called after an ACCEPT at connect")

    def test_reject_at_rcpt_refuses_that_recipient_only(self):
        px, cap = self.proxy(
            ("p", dict(stage="rcpt", verdict="reject", match="carol@",
                       code=550, enh="5.7.1", text="Not carol")))
        msg = make_message("three recipients")
        out = self.converse(px.port, rcpts=(BOB, CAROL, DAVE), message=msg)
        self.assertEqual([r.code for r in out["rcpt"]], [250, 550, 250],
                         out["rcpt"])
        self.assertEnh(out["rcpt"][1], "5.7.1")
        self.assertIn("Not carol", out["rcpt"][1].text)
        self.assertReply(out["end"], 250)
        got = self.assertDelivered(cap)
        self.assertTrue(unstuff(got[0]).endswith(msg))
        rcpts = [c for c in cap.commands() if c.upper().startswith(b"RCPT")]
        self.assertEqual(len(rcpts), 2, rcpts)
        self.assertTrue(any(BOB.encode() in r for r in rcpts), rcpts)
        self.assertTrue(any(DAVE.encode() in r for r in rcpts), rcpts)
        self.assertFalse(any(CAROL.encode() in r for r in rcpts), rcpts)
        rec = self.record(px, out["port"], type="transaction")
        self.assertEqual(rec["action"], "accepted")
        self.assertEqual([(e["recipient"], e["verdict"]) for e in
                          self.entries(rec, "p", "rcpt")],
                         [(BOB, "continue"), (CAROL, "reject"),
                          (DAVE, "continue")])

    def test_tempfail_at_rcpt_refuses_that_recipient_only(self):
        px, cap = self.proxy(
            ("p", dict(stage="rcpt", verdict="tempfail", match="bob@")))
        out = self.converse(px.port, rcpts=(BOB, CAROL))
        self.assertReply(out["rcpt"][0], 451, "4.7.1")
        self.assertCode(out["rcpt"][1], 250)
        self.assertReply(out["end"], 250)
        self.assertDelivered(cap)

    def test_connect_and_helo_entries_are_in_every_transaction_record(self):
        px, cap = self.proxy(("p", dict(stage="connect", verdict="continue",
                                        result="who=connect")))
        c = self.client(px.port)
        self.assertCode(c.ehlo(HELO), 250)
        for n in range(2):
            r = c.mail_transaction(ALICE, [BOB], make_message("n%d" % n))
            self.assertReply(r["end"], 250)
        port = c.local_port
        self.assertCode(c.cmd("QUIT"), 221)
        recs = px.wait_decisions(lambda d: d.get("client", {}).get("port")
                                 == port and d.get("type") == "transaction", 2)
        self.assertEqual(len(recs), 2, recs)
        for rec in recs:
            self.assertEntries(rec, "p", [(s, "continue") for s in STAGES])
            self.assertEqual(self.entries(rec, "p", "connect")[0]
                             .get("results"), {"who": "connect"}, rec)

    def test_connect_and_helo_entries_are_in_the_connection_record(self):
        px, cap = self.proxy(("p", dict(stage="helo", result="who=helo")))
        c = self.client(px.port)
        self.assertCode(c.ehlo(HELO), 250)
        port = c.local_port
        self.assertCode(c.cmd("QUIT"), 221)
        rec = self.record(px, port, type="connection")
        self.assertEntries(rec, "p", [("connect", "continue"),
                                      ("helo", "continue")])
        self.assertEqual(self.entries(rec, "p", "helo")[0].get("results"),
                         {"who": "helo"})

    def test_helo_refused_then_helo_again(self):
        px, cap = self.proxy(("p", dict(stage="helo", verdict="reject",
                                        match="bad.")))
        c = self.client(px.port)
        self.assertReply(c.ehlo("bad.example.test"), 550, "5.7.1")
        self.assertReply(c.cmd("MAIL FROM:<%s>" % ALICE), 503)
        self.assertCode(c.ehlo("good.example.test"), 250)
        r = c.mail_transaction(ALICE, [BOB], make_message("helo again"))
        self.assertReply(r["end"], 250)
        port = c.local_port
        self.assertCode(c.cmd("QUIT"), 221)
        self.assertDelivered(cap)
        rec = self.record(px, port, type="transaction")
        self.assertEqual(rec["client"]["helo"], "good.example.test")
        helos = [e["verdict"] for e in self.entries(rec, "p", "helo")]
        self.assertEqual(helos[-1], "continue", rec)


class TestSizeLimit(PipelineTest):
    """pc_set_size_limit() at connect and helo: EHLO's SIZE and 552."""

    def test_size_limit_at_connect_and_helo(self):
        for stage in ("connect", "helo"):
            with self.subTest(stage=stage):
                px, cap = self.proxy(("p", dict(stage=stage,
                                                size_limit=4096)))
                c = self.client(px.port)
                r = c.ehlo(HELO)
                self.assertEqual(r.keywords.get("SIZE"), "4096", r)
                big = make_message("big", b"".join(
                    b"%070d\r\n" % i for i in range(100)))
                r = c.mail_transaction(ALICE, [BOB], big)
                self.assertReply(r["end"], 552, "5.3.4")
                self.assertCode(c.cmd("NOOP"), 250)
                small = make_message("small")
                r = c.mail_transaction(ALICE, [BOB], small)
                self.assertReply(r["end"], 250)
                got = self.assertDelivered(cap)
                self.assertIn(b"Subject: small\r\n", got[0])


# ---------------------------------------------------------------------------
# header changes

class TestHeaderChanges(PipelineTest):

    BODY = (b"First line\r\n"
            b".a line with a leading dot\r\n"
            b"..two dots\r\n"
            b"trailing blanks  \t\r\n"
            b"\r\n"
            b"Subject: not a header, in the body\r\n"
            b"caf\xc3\xa9 8bit\r\n" +
            b"y" * 990 + b"\r\n"
            b"no final line end")

    def test_changes_of_two_filters_apply_in_chain_order(self):
        px, cap = self.proxy(
            ("a", dict(insert_header="X-Top-A: a",
                       add_header="X-Probe-A: one",
                       change_header="Subject: changed by a")),
            ("b", dict(insert_header="X-Top-B: b",
                       add_header="X-Probe-B: two",
                       # b sees the header as a left it
                       change_header="X-Probe-A: changed by b")),
            ("c", dict(change_header="X-Remove-Me:")))
        msg = make_message("original subject", self.BODY, extra_headers=(
            "X-Folded: first\r\n\tsecond", "X-Remove-Me: yes"))
        out = self.converse(px.port, message=msg)
        self.assertAllAccepted(out)
        got = unstuff(self.assertDelivered(cap)[0])
        head, body = split_message(got)
        orig_head, orig_body = split_message(msg)
        self.assertEqual(body, orig_body + b"\r\n",
                         "the body changed on the way")
        names = [n for n, _ in header_fields(got) if n != b"received"]
        self.assertEqual(names, [b"x-top-b", b"x-top-a", b"from", b"to",
                                 b"subject", b"date", b"message-id",
                                 b"x-folded", b"x-probe-a", b"x-probe-b"],
                         head)
        self.assertIn(b"\r\nSubject: changed by a\r\n", head)
        self.assertIn(b"\r\nX-Probe-A: changed by b\r\n", head)
        self.assertIn(b"\r\nX-Probe-B: two\r\n", head)
        self.assertNotIn(b"original subject", head)
        # fields no filter touched arrive byte for byte
        self.assertIn(b"\r\nX-Folded: first\r\n\tsecond\r\n", head)
        for line in orig_head.split(b"\r\n"):
            if line.startswith((b"From:", b"To:", b"Date:", b"Message-ID:")):
                self.assertIn(line + b"\r\n", head)

    def test_without_changes_the_message_arrives_byte_for_byte(self):
        px, cap = self.proxy(("a", dict(stage="data", result="seen=yes")))
        msg = make_message("untouched", self.BODY)
        out = self.converse(px.port, message=msg)
        self.assertAllAccepted(out)
        got = unstuff(self.assertDelivered(cap)[0])
        self.assertTrue(got.endswith(msg + b"\r\n"), got[-200:])

    def test_changes_of_a_rejected_message_go_nowhere(self):
        px, cap = self.proxy(
            ("a", dict(add_header="X-Probe-A: one")),
            ("b", dict(stage="data", verdict="reject")))
        out = self.converse(px.port)
        self.assertRefusedAt(out, "data", 550, "5.7.1")
        self.assertNothingDelivered(cap)


class TestEnvelopeChanges(PipelineTest):
    """pc_set_sender(), pc_rcpt_add(), pc_rcpt_delete(), pc_body_replace()
    and pc_quarantine(): the filters after one see its changes, the
    backend gets them, and nothing applies to a refused message."""

    def envelope_seen(self, px, out, name):
        rec = self.record(px, out["port"], type="transaction")
        return self.entries(rec, name, "data")[-1]["results"]["envelope"]

    def backend_commands(self, cap):
        return [c.decode() for c in cap.commands()
                if c.split(b" ")[0] in (b"MAIL", b"RCPT", b"RSET", b"DATA")]

    def test_later_filters_see_the_changes_and_the_backend_gets_them(self):
        px, cap = self.proxy(
            ("a", dict(set_sender="new@%s BODY=8BITMIME" % DOMAIN,
                       add_rcpt="dave@%s NOTIFY=NEVER" % DOMAIN,
                       delete_rcpt=BOB.upper(), replace_body="new body")),
            ("b", dict(stage="data", report_envelope="yes")))
        out = self.converse(px.port, rcpts=(BOB, CAROL))
        self.assertAllAccepted(out, rcpts=2)
        self.assertEqual(self.envelope_seen(px, out, "b"),
                         "new@%s BODY=8BITMIME|%s,%s|new body\r\n"
                         % (DOMAIN, CAROL, DAVE))
        got = self.assertDelivered(cap)[0]
        self.assertTrue(got.endswith(b"\r\n\r\nnew body\r\n"), got[-100:])
        self.assertEqual(self.backend_commands(cap), [
            "MAIL FROM:<%s>" % ALICE, "RCPT TO:<%s>" % BOB,
            "RCPT TO:<%s>" % CAROL, "RSET",
            "MAIL FROM:<new@%s> BODY=8BITMIME" % DOMAIN,
            "RCPT TO:<%s>" % CAROL, "RCPT TO:<%s> NOTIFY=NEVER" % DAVE, "DATA"])
        rec = self.record(px, out["port"], type="transaction")
        self.assertEqual(rec["changes"], {
            "sender": "new@" + DOMAIN, "sender_parameters": "BODY=8BITMIME",
            "recipients_added": [DAVE], "recipients_deleted": [BOB],
            "recipients": [CAROL, DAVE], "body": "replaced", "body_size": 10})

    def test_a_filter_that_changed_nothing_sees_the_client_envelope(self):
        px, cap = self.proxy(("b", dict(stage="data", report_envelope="yes")))
        out = self.converse(px.port, rcpts=(BOB, CAROL),
                            message=make_message("as sent", body=b"body\r\n"))
        self.assertAllAccepted(out, rcpts=2)
        self.assertEqual(self.envelope_seen(px, out, "b"),
                         "%s BODY=-|%s,%s|body\r\n" % (ALICE, BOB, CAROL))
        self.assertNotIn("RSET", self.backend_commands(cap))
        self.assertNotIn("changes", self.record(px, out["port"], type="transaction"))

    def test_invalid_addresses_are_refused(self):
        px, cap = self.proxy(
            ("a", dict(set_sender="bad\\r\\naddress", add_rcpt="no-at-sign",
                       delete_rcpt="nobody@" + DOMAIN)),
            ("b", dict(stage="data", report_envelope="yes")))
        out = self.converse(px.port)
        self.assertAllAccepted(out)
        self.assertEqual(self.envelope_seen(px, out, "b").split("|")[:2],
                         ["%s BODY=-" % ALICE, BOB])
        self.assertDelivered(cap)
        self.assertNotIn("RSET", self.backend_commands(cap))

    def test_changes_of_a_rejected_message_go_nowhere(self):
        px, cap = self.proxy(
            ("a", dict(set_sender="new@" + DOMAIN, replace_body="gone")),
            ("b", dict(stage="data", verdict="reject")))
        out = self.converse(px.port)
        self.assertRefusedAt(out, "data", 550, "5.7.1")
        self.assertNothingDelivered(cap)
        # no new envelope (an RSET may follow: the relay parks the connection)
        self.assertEqual([c for c in self.backend_commands(cap) if c != "RSET"],
                         ["MAIL FROM:<%s>" % ALICE, "RCPT TO:<%s>" % BOB])
        self.assertNotIn("changes", self.record(px, out["port"], type="transaction"))

    def test_changes_before_the_last_filter_late_survive_on_error_accept(self):
        qdir = os.path.join(self.tmp, "quarantine")
        px, cap = self.proxy(
            ("before", dict(add_rcpt="dave@" + DOMAIN, replace_body="kept",
                            quarantine="held")),
            # one hook that may block: the stage runs on the pool, with deadlines
            ("late", dict(sleep=5, timeout=0.5, on_error="accept", module=PROBE)),
            quarantine_dir=qdir)
        out = self.converse(px.port)
        self.assertAllAccepted(out)
        self.assertLess(out["elapsed"], 4, "waited for the sleep")
        rec = self.record(px, out["port"], type="transaction")
        self.assertEqual(rec["action"], "quarantined")
        name = rec["changes"]["quarantine"]["file"]
        with open(os.path.join(qdir, name), "rb") as f:
            kept = f.read()
        self.assertTrue(kept.startswith(
            b"Quarantine-Reason: held\r\nEnvelope-From: <%s>\r\n"
            b"Envelope-To: <%s>\r\nEnvelope-To: <%s>\r\n\r\n"
            % (ALICE.encode(), BOB.encode(), DAVE.encode())), kept)
        self.assertTrue(kept.endswith(b"\r\n\r\nkept\r\n"), kept)
        self.assertNothingDelivered(cap)

    def test_new_envelope_waits_for_a_keepalive_noop_in_flight(self):
        # keepalive NOOPs every second while the filter sleeps, each
        # answered 0.8 s late: the new MAIL comes while one is in flight
        def slow_noop(sess, line):
            if line == b"NOOP":
                time.sleep(0.8)
            return None
        px, cap = self.proxy(
            ("a", dict(set_sender="new@" + DOMAIN, sleep=1.5, module=PROBE)),
            cap=self.start_capture(hook=slow_noop), backend_keepalive=1)
        out = self.converse(px.port)
        self.assertAllAccepted(out)
        self.assertDelivered(cap)
        cmds = self.backend_commands(cap)
        self.assertEqual(cmds[-3:], ["MAIL FROM:<new@%s>" % DOMAIN,
                                     "RCPT TO:<%s>" % BOB, "DATA"], cmds)
        self.assertIn(b"NOOP", cap.commands())

    def test_quarantine_without_a_directory_is_refused(self):
        px, cap = self.proxy(("a", dict(quarantine="held")))
        out = self.converse(px.port)
        # the probe goes on without it (the milter filter fails instead)
        self.assertAllAccepted(out)
        self.assertDelivered(cap)


# ---------------------------------------------------------------------------
# nonblocking hooks: the same contract when a stage runs on the event loop

class TestEnvelopeChangesNonblocking(TestEnvelopeChanges):
    module = PROBE_NB


class TestVerdictAtEachStageNonblocking(TestVerdictAtEachStage):
    """Every verdict at every stage, the probe's hooks run on the loop."""
    module = PROBE_NB


class TestChainOrderNonblocking(TestChainOrder):
    module = PROBE_NB


class TestHeaderChangesNonblocking(TestHeaderChanges):
    module = PROBE_NB


class TestNonblockingHooks(PipelineTest):

    def loop_thread(self, px, out, name, stage):
        rec = self.record(px, out["port"], type="transaction")
        e = self.entries(rec, name, stage)
        self.assertEqual(len(e), 1, rec)
        return e[0]["results"]["loop_thread"]

    def test_a_stage_of_nonblocking_hooks_runs_on_the_event_loop(self):
        for stage in STAGES:
            with self.subTest(stage=stage):
                px, cap = self.proxy(("p", dict(stage=stage, report_thread="yes",
                                                module=PROBE_NB)))
                out = self.converse(px.port)
                self.assertAllAccepted(out)
                self.assertEqual(self.loop_thread(px, out, "p", stage), 1)

    def test_hooks_that_may_block_run_on_the_pool(self):
        px, cap = self.proxy(("p", dict(stage="rcpt", report_thread="yes",
                                        module=PROBE)))
        out = self.converse(px.port)
        self.assertAllAccepted(out)
        self.assertEqual(self.loop_thread(px, out, "p", "rcpt"), 0)

    def test_one_hook_that_may_block_sends_the_whole_stage_to_the_pool(self):
        px, cap = self.proxy(
            ("nb", dict(stage="rcpt", report_thread="yes", module=PROBE_NB)),
            ("slow", dict(stage="rcpt", module=PROBE)))
        out = self.converse(px.port)
        self.assertAllAccepted(out)
        self.assertEqual(self.loop_thread(px, out, "nb", "rcpt"), 0)

    def test_a_descriptor_from_before_the_field_reads_it_as_0(self):
        px, cap = self.proxy(("p", dict(stage="mail", report_thread="yes",
                                        module=PROBE_OLD)))
        out = self.converse(px.port)
        self.assertAllAccepted(out)
        self.assertEqual(self.loop_thread(px, out, "p", "mail"), 0)

    def test_reset_and_close_balance_with_every_hook_on_the_loop(self):
        count = self.count_file("p")
        px, cap = self.proxy(("p", dict(count_file=count, module=PROBE_NB)),
                             ("gate", dict(stage="mail", verdict="reject",
                                           match="refused@", module=PROBE_NB)))
        sids = []
        for n in range(3):
            c = self.client(px.port)
            port = c.local_port
            c.ehlo(HELO)
            self.assertReply(c.cmd("MAIL FROM:<refused@%s>" % DOMAIN), 550)
            self.assertReply(c.mail_transaction(ALICE, [BOB], make_message(
                "nb %d" % n))["end"], 250)
            self.assertCode(c.cmd("QUIT"), 221)
            c.close()
            sids.append(self.record(px, port)["session"])
        calls = self.wait_closes("p", 3)
        for sid in sids:
            seq = self.session_calls("p", sid)
            self.assertEqual(seq, ["connect", "helo", "mail", "reset", "mail",
                                   "rcpt", "data", "reset", "close"], seq)
        self.assertDelivered(cap, 3)


class TestWouldBlock(PipelineTest):
    """A nonblocking hook that returns PC_WOULDBLOCK on the event loop is
    called again on a thread, and the stage goes on there."""

    module = PROBE_NB

    def one_entry(self, rec, name, stage):
        e = self.entries(rec, name, stage)
        self.assertEqual(len(e), 1, "entries of %s at %s in %r" % (name, stage, rec))
        return e[0]

    def test_the_stage_goes_on_on_a_thread_from_that_hook(self):
        for stage in STAGES:
            with self.subTest(stage=stage):
                px, cap = self.proxy(
                    ("a", dict(stage=stage, report_thread="yes",
                               result="seen=a", count_file=self.count_file("a" + stage))),
                    ("b", dict(stage=stage, report_thread="yes", loop_wouldblock="yes",
                               count_file=self.count_file("b" + stage))),
                    ("c", dict(stage=stage, report_thread="yes")))
                out = self.converse(px.port)
                self.assertAllAccepted(out)
                self.assertDelivered(cap)
                rec = self.record(px, out["port"], type="transaction")
                # a decided on the loop, once; b's call there left nothing
                a = self.one_entry(rec, "a", stage)
                self.assertEqual(a["results"], {"seen": "a", "loop_thread": 1}, a)
                b = self.one_entry(rec, "b", stage)
                self.assertEqual((b["verdict"], b["results"]["loop_thread"]),
                                 ("continue", 0), b)
                c = self.one_entry(rec, "c", stage)
                self.assertEqual(c["results"]["loop_thread"], 0, c)
                sid = rec["session"]
                self.wait_closes("b" + stage, 1)
                self.assertEqual(self.session_calls("a" + stage, sid).count(stage), 1)
                self.assertEqual(self.session_calls("b" + stage, sid).count(stage), 2)

    def test_the_verdict_comes_from_the_call_on_the_thread(self):
        px, cap = self.proxy(
            ("b", dict(stage="mail", loop_wouldblock="yes", report_thread="yes",
                       verdict="reject", code="550", enh="5.7.1", text="not you")))
        out = self.converse(px.port)
        self.assertRefusedAt(out, "mail", 550, "5.7.1", "not you")
        rec = self.record(px, out["port"], type="transaction")
        b = self.one_entry(rec, "b", "mail")
        self.assertEqual((b["verdict"], b["results"]["loop_thread"]), ("reject", 0), b)
        self.assertNothingDelivered(cap)

    def test_header_changes_made_on_the_loop_before_it_are_kept_once(self):
        px, cap = self.proxy(
            ("a", dict(add_header="X-Probe-A: on the loop")),
            ("b", dict(stage="data", loop_wouldblock="yes")),
            ("c", dict(add_header="X-Probe-C: on a thread")))
        out = self.converse(px.port)
        self.assertAllAccepted(out)
        got = unstuff(self.assertDelivered(cap)[0])
        names = [n for n, _ in header_fields(got) if n != b"received"]
        self.assertEqual(names.count(b"x-probe-a"), 1, names)
        self.assertEqual(names[-2:], [b"x-probe-a", b"x-probe-c"], names)

    def test_wouldblock_on_a_thread_is_an_invalid_verdict(self):
        for module in (PROBE_NB, PROBE):
            with self.subTest(module=os.path.basename(module)):
                px, cap = self.proxy(("b", dict(stage="mail", verdict="wouldblock",
                                                module=module)))
                out = self.converse(px.port)
                self.assertRefusedAt(out, "mail", 451, "4.3.0")
                rec = self.record(px, out["port"], type="transaction")
                b = self.one_entry(rec, "b", "mail")
                self.assertEqual((b["verdict"], b.get("error")),
                                 ("wouldblock", "invalid verdict"), b)
                self.assertNothingDelivered(cap)


# ---------------------------------------------------------------------------
# timeouts and on_error

class TestTimeout(PipelineTest):
    """A filter that sleeps 5 s with timeout = 0.5 (and a filter after it
    that records its calls)."""

    def run_late(self, stage, on_error, before=None, after=None):
        px, cap = self.proxy(
            ("before", dict(before or {})),
            ("late", dict(stage=stage, sleep=5, timeout=0.5,
                          on_error=on_error)),
            ("after", dict(after or {})))
        return px, cap, self.converse(px.port)

    def assertLateEntry(self, rec, stage, on_error):
        e = self.entries(rec, "late", stage)[-1]
        self.assertEqual(e["verdict"], "timeout", e)
        self.assertEqual(e.get("action"), on_error, e)
        self.assertGreaterEqual(e["usec"], 450000, e)
        self.assertLess(e["usec"], 4000000, e)

    def test_timeout_with_on_error_tempfail(self):
        for stage in STAGES:
            with self.subTest(stage=stage):
                px, cap, out = self.run_late(stage, "tempfail")
                code, enh, text = on_error_reply(stage, "tempfail")
                self.assertRefusedAt(out, stage, code, enh, text)
                self.assertLess(out["elapsed"], 4, "waited for the sleep")
                self.assertNothingDelivered(cap)
                rec = self.record(px, out["port"])
                self.assertLateEntry(rec, stage, "tempfail")
                self.assertEqual(self.entries(rec, "after", stage), [], rec)

    def test_timeout_with_on_error_reject(self):
        for stage in STAGES:
            with self.subTest(stage=stage):
                px, cap, out = self.run_late(stage, "reject")
                code, enh, text = on_error_reply(stage, "reject")
                self.assertRefusedAt(out, stage, code, enh, text)
                self.assertLess(out["elapsed"], 4, "waited for the sleep")
                self.assertNothingDelivered(cap)
                self.assertLateEntry(self.record(px, out["port"]), stage,
                                     "reject")

    def test_timeout_with_on_error_accept_goes_on_with_the_next_filter(self):
        for stage in STAGES:
            with self.subTest(stage=stage):
                px, cap, out = self.run_late(stage, "accept")
                self.assertAllAccepted(out)
                self.assertLess(out["elapsed"], 4, "waited for the sleep")
                self.assertDelivered(cap)
                rec = self.record(px, out["port"], type="transaction")
                self.assertEqual(rec["action"], "accepted")
                self.assertLateEntry(rec, stage, "accept")
                self.assertEqual([e["verdict"] for e in
                                  self.entries(rec, "after", stage)],
                                 ["continue"], rec)

    def test_changes_before_a_late_filter_survive_on_error_accept(self):
        px, cap, out = self.run_late(
            "data", "accept",
            before=dict(add_header="X-Before: kept",
                        insert_header="X-Top: kept"),
            after=dict(add_header="X-After: added"))
        self.assertAllAccepted(out)
        self.assertLess(out["elapsed"], 4, "waited for the sleep")
        self.assertLateEntry(self.record(px, out["port"], type="transaction"),
                             "data", "accept")
        got = unstuff(self.assertDelivered(cap)[0])
        head, _ = split_message(got)
        names = [n for n, _ in header_fields(got) if n != b"received"]
        self.assertEqual(names[0], b"x-top", head)
        self.assertEqual(names[-2:], [b"x-before", b"x-after"], head)
        self.assertIn(b"\r\nX-Before: kept\r\n", head)
        self.assertIn(b"\r\nX-After: added\r\n", head)

    def test_changes_before_the_last_filter_late_survive_on_error_accept(self):
        px, cap = self.proxy(
            ("before", dict(add_header="X-Before: kept")),
            ("late", dict(sleep=5, timeout=0.5, on_error="accept")))
        out = self.converse(px.port)
        self.assertAllAccepted(out)
        self.assertLess(out["elapsed"], 4, "waited for the sleep")
        self.assertLateEntry(self.record(px, out["port"], type="transaction"),
                             "data", "accept")
        got = unstuff(self.assertDelivered(cap)[0])
        self.assertIn(b"\r\nX-Before: kept\r\n", split_message(got)[0])

    def test_session_goes_on_after_a_timeout(self):
        px, cap = self.proxy(("late", dict(stage="mail", match="slow@",
                                           sleep=5, timeout=0.5)))
        c = self.client(px.port)
        self.assertCode(c.ehlo(HELO), 250)
        self.assertReply(c.cmd("MAIL FROM:<slow@%s>" % DOMAIN), 451, "4.3.0")
        r = c.mail_transaction(ALICE, [BOB], make_message("after a timeout"))
        self.assertReply(r["end"], 250)
        self.assertCode(c.cmd("QUIT"), 221)
        self.assertDelivered(cap)


# ---------------------------------------------------------------------------
# one module, two instances

class TestTwoInstances(PipelineTest):

    def test_same_module_twice_with_different_options(self):
        px, cap = self.proxy(
            ("strict", dict(stage="rcpt", verdict="reject", match="carol@",
                            code=550, enh="5.7.1", text="Strict says no",
                            result="name=strict")),
            ("lenient", dict(stage="rcpt", verdict="reject", match="dave@",
                             code=551, enh="5.7.2", text="Lenient says no",
                             result="name=lenient")))
        out = self.converse(px.port, rcpts=(CAROL, DAVE, BOB))
        self.assertReply(out["rcpt"][0], 550, "5.7.1")
        self.assertIn("Strict says no", out["rcpt"][0].text)
        self.assertReply(out["rcpt"][1], 551, "5.7.2")
        self.assertIn("Lenient says no", out["rcpt"][1].text)
        self.assertCode(out["rcpt"][2], 250)
        self.assertReply(out["end"], 250)
        self.assertDelivered(cap)
        rec = self.record(px, out["port"], type="transaction")
        carol = [e for e in self.entries(rec, stage="rcpt")
                 if e["recipient"] == CAROL]
        self.assertEqual([(e["filter"], e["verdict"], e.get("results"))
                          for e in carol],
                         [("strict", "reject", {"name": "strict"})])
        dave = [e for e in self.entries(rec, stage="rcpt")
                if e["recipient"] == DAVE]
        self.assertEqual([(e["filter"], e["verdict"], e.get("results"))
                          for e in dave],
                         [("strict", "continue", None),
                          ("lenient", "reject", {"name": "lenient"})])


# ---------------------------------------------------------------------------
# reset and close

class TestResetAndClose(PipelineTest):

    def assertBalanced(self, calls, sid):
        """Every transaction a mail hook saw is reset before the next one
        and before close; close is the last call, once."""
        self.assertEqual(calls[-1:], ["close"], calls)
        self.assertEqual(calls.count("close"), 1, calls)
        open_tx = False
        for stage in calls:
            if stage == "mail":
                self.assertFalse(open_tx, "mail without reset before: %r"
                                 % calls)
                open_tx = True
            elif stage == "reset":
                open_tx = False
            elif stage == "close":
                self.assertFalse(open_tx, "close without reset: %r" % calls)

    def test_reset_and_close_run_for_every_session(self):
        count = self.count_file("p")
        px, cap = self.proxy(
            ("p", dict(count_file=count)),
            ("gate", dict(stage="mail", verdict="reject", match="refused@")),
            ("guard", dict(stage="data", verdict="tempfail",
                           match="later@")))
        ports = []
        # 1: one transaction, QUIT
        c = self.client(px.port)
        ports.append(c.local_port)
        c.ehlo(HELO)
        self.assertReply(c.mail_transaction(ALICE, [BOB],
                                            make_message("1"))["end"], 250)
        self.assertCode(c.cmd("QUIT"), 221)
        # 2: two transactions and an RSET between, QUIT
        c = self.client(px.port)
        ports.append(c.local_port)
        c.ehlo(HELO)
        self.assertReply(c.mail_transaction(ALICE, [BOB],
                                            make_message("2a"))["end"], 250)
        self.assertCode(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        self.assertCode(c.cmd("RSET"), 250)
        self.assertReply(c.mail_transaction(ALICE, [BOB],
                                            make_message("2b"))["end"], 250)
        self.assertCode(c.cmd("QUIT"), 221)
        # 3: a MAIL refused by a later filter, then a message refused at
        # DATA, then a disconnect in the middle of a transaction
        c = self.client(px.port)
        ports.append(c.local_port)
        c.ehlo(HELO)
        self.assertReply(c.cmd("MAIL FROM:<refused@%s>" % DOMAIN), 550)
        r = c.mail_transaction("later@" + DOMAIN, [BOB], make_message("3"))
        self.assertReply(r["end"], 451)
        self.assertCode(c.cmd("MAIL FROM:<%s>" % ALICE), 250)
        self.assertCode(c.cmd("RCPT TO:<%s>" % BOB), 250)
        c.close()
        # 4: connect and QUIT
        c = self.client(px.port)
        ports.append(c.local_port)
        self.assertCode(c.cmd("QUIT"), 221)
        # 5: connect and drop
        c = self.client(px.port)
        ports.append(c.local_port)
        c.close()

        sids = [self.record(px, p)["session"] for p in ports]
        self.assertEqual(len(set(sids)), 5, sids)
        calls = self.wait_closes("p", 5)
        odd = [c for c in calls if len(c) != 2]
        self.assertEqual(odd, [], "session data of another session, or "
                         "transaction data left at close")
        self.assertEqual(sorted(set(c[1] for c in calls)), sorted(sids))
        for sid in sids:
            with self.subTest(session=sid):
                seq = self.session_calls("p", sid)
                self.assertEqual(seq[0], "connect", seq)
                self.assertBalanced(seq, sid)
        # the mail hooks of each session, as the client gave MAIL
        self.assertEqual([self.session_calls("p", s).count("mail")
                          for s in sids], [1, 3, 3, 0, 0])

    def test_close_runs_after_a_refusal_at_connect(self):
        px, cap = self.proxy(
            ("p", dict(count_file=self.count_file("p"))),
            ("door", dict(stage="connect", verdict="reject")))
        out = self.converse(px.port)
        self.assertRefusedAt(out, "connect", 554, "5.7.1")
        calls = self.wait_closes("p", 1)
        # (a reset without a transaction would be harmless)
        self.assertEqual([c[0] for c in calls if c[0] != "reset"],
                         ["connect", "close"])


# ---------------------------------------------------------------------------
# configuration errors

class TestConfigErrors(unittest.TestCase):
    """`portcullis -t` loads the chain and names FILE:LINE, section, key."""

    def setUp(self):
        if not os.path.exists(PROBE):
            self.skipTest("probe filter not built (make check): " + PROBE)
        self.p = Portcullis(backend_port=10025)
        self.p.dir = make_tempdir("portcullis-proxy-")
        self.addCleanup(lambda: remove_tree(self.p.dir))

    def check(self, filters, extra, **kw):
        self.p.kwargs = dict(filters=filters, **kw)
        text = self.p.config_text() + extra
        r = self.p.check_config(text)
        return r.returncode, r.stderr.decode(errors="replace"), text

    def where(self, text, line):
        path = os.path.join(self.p.dir, "check.conf")
        return re.escape("%s:%d:" % (path, line_of(text, line)))

    def test_a_good_chain_passes(self):
        rc, err, _ = self.check("a, b", filter_section(
            "a", stage="mail", verdict="reject", code=550, enh="5.7.1",
            text="no", timeout=0.5, on_error="accept") +
            filter_section("b", module="probe", sleep=1, on_error="reject",
                           timeout=2), filter_dir=PLUGIN_DIR)
        self.assertEqual(rc, 0, err)

    def test_unknown_key_names_file_line_section_and_key(self):
        rc, err, text = self.check("a", filter_section(
            "a", stage="mail", bogus_key="1"))
        self.assertNotEqual(rc, 0, err)
        self.assertRegex(err, self.where(text, "bogus_key = 1") +
                         r" \[filter a\] bogus_key: .*unknown key")

    def test_every_unknown_key_is_reported(self):
        rc, err, text = self.check("a, b", filter_section(
            "a", first_bad="1") + filter_section("b", second_bad="2"))
        self.assertNotEqual(rc, 0, err)
        self.assertRegex(err, self.where(text, "first_bad = 1") +
                         r" \[filter a\] first_bad: ")
        self.assertRegex(err, self.where(text, "second_bad = 2") +
                         r" \[filter b\] second_bad: ")

    def test_missing_module_file(self):
        rc, err, text = self.check("a", filter_section(
            "a", module="/nonexistent/portcullis/x.so"))
        self.assertNotEqual(rc, 0, err)
        self.assertRegex(err, self.where(
            text, "module = /nonexistent/portcullis/x.so") +
            r" \[filter a\] module: .*/nonexistent/portcullis/x\.so")

    def test_missing_module_name_in_filter_dir(self):
        rc, err, text = self.check("a", filter_section(
            "a", module="nosuchfilter"), filter_dir=PLUGIN_DIR)
        self.assertNotEqual(rc, 0, err)
        self.assertRegex(err, self.where(text, "module = nosuchfilter") +
                         r" \[filter a\] module: .*nosuchfilter\.so")

    def test_no_module_key(self):
        text_extra = "\n[filter a]\nstage = mail\n"
        rc, err, text = self.check("a", text_extra)
        self.assertNotEqual(rc, 0, err)
        self.assertRegex(err, r"check\.conf:\d+: \[filter a\] module: ")

    def test_a_shared_object_that_is_not_a_filter(self):
        if not os.path.exists(NOTAFILTER):
            self.skipTest("not built: " + NOTAFILTER)
        rc, err, text = self.check("a", filter_section(
            "a", module=NOTAFILTER))
        self.assertNotEqual(rc, 0, err)
        self.assertRegex(err, self.where(text, "module = " + NOTAFILTER) +
                         r" \[filter a\] module: .*portcullis_filter")

    def test_unused_filter_section(self):
        rc, err, text = self.check("a", filter_section("a") +
                                   filter_section("unused", stage="mail"))
        self.assertNotEqual(rc, 0, err)
        # "FILE:LINE: [filter NAME] ...", as every error of a filter
        # section; the line of the section or of its first key both lead
        # there
        head = line_of(text, "[filter unused]")
        path = os.path.join(self.p.dir, "check.conf")
        where = "|".join(re.escape("%s:%d:" % (path, n))
                         for n in (head, head + 1))
        self.assertRegex(err, r"(%s) \[filter unused\] .*not listed" % where)

    def test_listed_filter_without_section(self):
        rc, err, text = self.check("a, ghost", filter_section("a"))
        self.assertNotEqual(rc, 0, err)
        self.assertRegex(err, self.where(text, "filters = a, ghost") +
                         r" \[portcullis\] filters: .*ghost")

    def test_bad_timeout_and_on_error(self):
        rc, err, text = self.check("a", filter_section(
            "a", timeout="soon", on_error="maybe"))
        self.assertNotEqual(rc, 0, err)
        self.assertRegex(err, self.where(text, "timeout = soon") +
                         r" \[filter a\] timeout: ")
        self.assertRegex(err, self.where(text, "on_error = maybe") +
                         r" \[filter a\] on_error: ")

    def test_a_filters_own_error_names_its_key(self):
        rc, err, text = self.check("a", filter_section(
            "a", verdict="perhaps"))
        self.assertNotEqual(rc, 0, err)
        self.assertRegex(err, self.where(text, "verdict = perhaps") +
                         r" \[filter a\] verdict: .*perhaps")

    def test_the_daemon_does_not_start_with_a_bad_chain(self):
        self.p.kwargs = dict(filters="a")
        self.p.extra = filter_section("a", bogus_key="1")
        # (it may listen before it loads the chain: wait for its exit)
        self.p.start(wait=False)
        self.addCleanup(self.p.kill)
        rc = self.p.wait_exit(15)
        self.p.stderr_file.close()
        out = self.p.stderr()
        self.assertIsNotNone(rc, "still running with a bad chain")
        self.assertNotEqual(rc, 0, out)
        self.assertIn("[filter a] bogus_key:", out)
        self.assertIsNone(self.p.sanitizer_report())


# ---------------------------------------------------------------------------
# robustness: a filter that hangs, a filter that crashes

SESSIONS = 50


class TestRobustness(PipelineTest):
    """50 concurrent sessions over 2 workers; one session in ten meets a
    filter that hangs (or crashes its worker). The backend is smtp-sink, a
    process of its own: the capture server, a thread of this busy test
    process, can fall behind on accept() under such a burst, and the
    proxy then rightly times out on its greeting."""

    def one_session(self, port, n, sender, rcpt, results, deadline,
                    retry):
        """One transaction; results[n] = ("250"|"refused"|"dropped",
        detail). With retry, a dropped connection is tried again (as a
        real client would) until deadline."""
        msg = make_message("robust-%d" % n, sender=sender)
        while True:
            c = SMTPClient(port, timeout=15)
            try:
                greeting = c.connect()
                if greeting.code != 220:
                    results[n] = ("refused", greeting)
                    return
                c.ehlo(HELO)
                r = c.mail_transaction(sender, [rcpt], msg)
                if "end" in r:
                    results[n] = ("250" if r["end"].code == 250
                                  else "refused", r["end"])
                elif r["mail"].code != 250:
                    results[n] = ("refused", r["mail"])
                elif r["rcpt"][0].code != 250:
                    results[n] = ("refused", r["rcpt"][0])
                else:
                    results[n] = ("refused", r.get("data"))
                try:
                    c.cmd("QUIT", timeout=5)
                except (ConnectionClosed, ReplyTimeout, OSError):
                    pass
                return
            except (ConnectionClosed, ReplyTimeout, OSError) as e:
                results[n] = ("dropped", repr(e)[:300])
                if not retry or time.monotonic() > deadline:
                    return
                time.sleep(0.25)
            finally:
                c.close()

    def run_sessions(self, px, who, retry=False):
        """SESSIONS concurrent sessions; who(n) -> (sender, rcpt,
        matching). With retry, a session that does not match the filter
        is tried again when its connection drops."""
        results = [None] * SESSIONS
        threads = []
        deadline = time.monotonic() + 40
        for n in range(SESSIONS):
            sender, rcpt, matching = who(n)
            t = threading.Thread(target=self.one_session, daemon=True,
                                 args=(px.port, n, sender, rcpt, results,
                                       deadline, retry and not matching))
            threads.append(t)
        for t in threads:
            t.start()
        harness.join_threads(threads, max(0.1, deadline + 10 - time.monotonic()))
        return results

    def delivered(self, sink, subject):
        tag = re.compile(rb"^Subject: %s\r?$" % re.escape(subject), re.M)
        return any(tag.search(m) for m in sink.messages())

    def assertStillServes(self, px, sink):
        self.assertTrue(px.running(), "the daemon died")
        out = self.converse(px.port, message=make_message("afterwards"))
        self.assertAllAccepted(out)
        self.assertTrue(wait_for(lambda: self.delivered(sink, b"afterwards"),
                                 10), "the last message did not arrive")

    def test_a_hanging_filter_holds_only_its_own_sessions(self):
        sink = self.start_sink()
        px, _ = self.proxy(
            ("hang", dict(stage="rcpt", match="hang@", sleep=3600,
                          timeout=1)),
            cap=sink, workers=2, drain_timeout=3)

        def who(n):
            if n % 10 == 0:
                return ALICE, "hang@" + DOMAIN, True
            return ALICE, BOB, False
        t0 = time.monotonic()
        results = self.run_sessions(px, who)
        self.assertLess(time.monotonic() - t0, 30)
        for n, res in enumerate(results):
            with self.subTest(session=n):
                if who(n)[2]:
                    self.assertEqual(res[0], "refused", res)
                    self.assertReply(res[1], 451, "4.3.0")
                    self.assertFalse(self.delivered(sink, b"robust-%d" % n))
                else:
                    self.assertEqual(res[0], "250", res)
                    self.assertTrue(wait_for(lambda: self.delivered(
                        sink, b"robust-%d" % n), 10), "not at the backend")
        self.assertStillServes(px, sink)
        # the hung calls are logged as timeouts
        recs = px.wait_decisions(lambda d: any(
            e.get("verdict") == "timeout" for e in d.get("filters", [])),
            SESSIONS // 10)
        self.assertEqual(len(recs), SESSIONS // 10)

    def fill_pool(self):
        """One filter thread and one queue slot: a hung call holds the
        thread, the next call waits in the queue for good, and no call
        after that can be queued. Returns (proxy, sink, the session that
        filled it, a session opened before it did)."""
        sink = self.start_sink()
        px, _ = self.proxy(
            ("hang", dict(stage="rcpt", match="hang@", sleep=3600,
                          timeout=1, on_error="accept")),
            cap=sink, filter_threads=1, filter_queue=1, drain_timeout=3)
        early = self.client(px.port)
        self.assertEqual(early.greeting.code, 220)
        first = self.converse(px.port, rcpts=("hang@" + DOMAIN,),
                              message=make_message("first"))
        self.assertAllAccepted(first)
        return px, sink, first, early

    def test_a_full_filter_pool_gets_on_error_at_once(self):
        # A session opened before the pool filled: each of its calls that
        # cannot be queued gets on_error at once ("unavailable"). (A
        # client that arrives once it is full is not served at all: see
        # the next test.)
        px, sink, first, early = self.fill_pool()
        t0 = time.monotonic()
        self.assertReply(early.ehlo(HELO), 250)
        r = early.mail_transaction(ALICE, [BOB], make_message("second"))
        self.assertReply(r["end"], 250)
        self.assertLess(time.monotonic() - t0, 3, "waited for the pool")
        for subject in (b"first", b"second"):
            self.assertTrue(wait_for(lambda: self.delivered(sink, subject),
                                     10), subject)
        rec = self.record(px, first["port"], type="transaction")
        self.assertEqual([(e["verdict"], e.get("action")) for e in
                          self.entries(rec, "hang", "rcpt")],
                         [("timeout", "accept")], rec)
        rec = self.record(px, early.local_port, type="transaction")
        self.assertEqual([(e["stage"], e["verdict"], e.get("action"))
                          for e in self.entries(rec, "hang")],
                         [("connect", "continue", None)] +
                         [(s, "unavailable", "accept") for s in STAGES[1:]],
                         rec)

    def test_a_client_arriving_at_a_full_filter_pool_gets_421_4_3_2(self):
        # Load shedding: every filter call of a new client would fail, so
        # it is refused at once, and logged; the open session is served.
        px, sink, first, early = self.fill_pool()
        late = self.client(px.port, connect=False)
        t0 = time.monotonic()
        late.connect(read_greeting=False)
        g = late.reply(timeout=10)
        self.assertEqual(g.lines, ["421 4.3.2 proxy.portcullis.test Filter "
                                   "pool full, try again later"])
        self.assertLess(time.monotonic() - t0, 2)
        self.assertTrue(late.wait_closed(5))
        recs = px.wait_decisions(lambda d: d.get("action") == "refused")
        self.assertEqual([(d["type"], d["client"]["port"], d["reason"])
                          for d in recs],
                         [("connection", late.local_port,
                           "Filter pool full")])
        self.assertReply(early.ehlo(HELO), 250)
        self.assertReply(early.cmd("NOOP"), 250)

    def test_a_crashing_filter_kills_only_its_worker(self):
        # No sanitizer report for the crash the test asks for.
        old = os.environ.get("ASAN_OPTIONS")
        os.environ["ASAN_OPTIONS"] = (old + ":" if old else
                                      "detect_leaks=1:abort_on_error=0:") + \
            "handle_segv=0"
        self.addCleanup(lambda: os.environ.__setitem__("ASAN_OPTIONS", old)
                        if old is not None else
                        os.environ.pop("ASAN_OPTIONS", None))
        sink = self.start_sink()
        px, _ = self.proxy(
            ("crash", dict(stage="mail", match="crash@", crash="yes")),
            cap=sink, workers=2)

        def who(n):
            if n % 10 == 5:
                return "crash@" + DOMAIN, BOB, True
            return ALICE, BOB, False
        results = self.run_sessions(px, who, retry=True)
        for n, res in enumerate(results):
            with self.subTest(session=n):
                if who(n)[2]:
                    # dropped with its worker, or refused: never a 250
                    self.assertIn(res[0], ("dropped", "refused"), res)
                    if res[0] == "refused":
                        self.assertCode(res[1], 4)
                    self.assertFalse(self.delivered(sink, b"robust-%d" % n),
                                     "a crashing session's message arrived")
                else:
                    # a session that shared the dying worker was dropped
                    # and tried again
                    self.assertEqual(res[0], "250", res)
                    self.assertTrue(wait_for(lambda: self.delivered(
                        sink, b"robust-%d" % n), 10), "not at the backend")
        # the filter did crash its worker: its clients saw the drop
        self.assertTrue([r for n, r in enumerate(results)
                         if who(n)[2] and r[0] == "dropped"], results)
        self.assertStillServes(px, sink)


if __name__ == "__main__":
    unittest.main()
