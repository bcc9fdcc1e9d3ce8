"""
test_dkim_filter.py - the built-in dkim filter, checked against an
independent DKIM implementation (dkimpy, Debian's python3-dkim) with a
real DNS server on loopback (tests/dns/dnsserver.py) serving the keys.

Keys are made at test time (openssl): RSA 2048 and Ed25519, published in
the DNS server's zone. dkimpy signs messages in every canonicalization,
with and without l=, once or several times; Portcullis must find them
pass, and fail when one body byte or one signed header changed. A key
missing from DNS is permerror, a DNS server that never answers
temperror. A domain listed in require without a passing signature of its
own gets 550 5.7.20. Mail that Portcullis signs for a trusted client is
verified by dkimpy, reading the same zone, from what the backend got
(the capture server's bytes, and a private Postfix's Maildir).

Two ways in, both the real pipeline and the real filter:
  * the daemon end to end: SMTP client -> Portcullis (dkim filter, [dns]
    servers = the test server) -> a capture backend that keeps the exact
    bytes, for the headers the backend received;
  * tests/tools/filterhost -c CONF for the many quick cases (one JSON line
    per session, any client address); when that tool cannot load the
    filter yet, the same cases go through the daemon.

PORTCULLIS_FILTER_DIR overrides where dkim.so is looked for, FILTERHOST
the tool; by default both come from the build of PORTCULLIS_BIN
(BUILD/filters/.libs/dkim.so, BUILD/tests/tools/filterhost), so the
sanitized build of tests/run tests its own filter.
"""

import base64
import json
import os
import re
import subprocess
import threading
import sys
import unittest

from harness import (PROJECT, Portcullis, ProxyTestCase, make_tempdir,
                     remove_tree)
import harness  # noqa: E402

sys.path.insert(0, os.path.join(PROJECT, "tests", "dns"))

try:
    import dkim  # dkimpy
except ImportError:  # pragma: no cover - skipped below
    dkim = None
try:
    from dnsserver import DNSServer
except ImportError:  # pragma: no cover - skipped below
    DNSServer = None

# The build the daemon comes from (tests/run builds outside the tree):
# its filters and its filterhost.
BUILD = os.path.dirname(os.path.dirname(os.path.abspath(
    harness.PORTCULLIS_BIN)))
FILTER_DIR = os.environ.get("PORTCULLIS_FILTER_DIR") or os.path.join(
    BUILD, "filters", ".libs")
FILTERHOST = os.environ.get("FILTERHOST") or os.path.join(
    BUILD, "tests", "tools", "filterhost")

AUTHSERV = "proxy.portcullis.test"
UNTRUSTED = "10.0.0.0/8"        # the test clients (127.0.0.1) are strangers
STRANGER = "192.0.2.25"         # a client address for filterhost

# Module state, made by setUpModule.
KEYS = None
ZONE = None
DNS = None
TMP = None


# ---------------------------------------------------------------------------
# keys and zone

def openssl(*args, data=None):
    return subprocess.run(["openssl"] + list(args), input=data,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          check=True, timeout=60).stdout



def concurrent_sessions(port, sender, batches):
    """One session per batch, all at once, each sending its messages from
    sender to bob@example.org; the replies other than 250 to the end of
    data, and the errors, of every session"""
    errors = []

    def session(batch):
        c = harness.SMTPClient(port)
        try:
            c.connect()
            c.ehlo("mx.example.com")
            for m in batch:
                r = c.mail_transaction(sender, ["bob@example.org"], m)
                if r["end"].code != 250:
                    errors.append(r["end"])
            c.cmd("QUIT")
        except Exception as e:  # noqa: BLE001 - reported by the caller
            errors.append(e)
        finally:
            c.close()
    threads = [threading.Thread(target=session, args=(b,)) for b in batches]
    for t in threads:
        t.start()
    harness.join_threads(threads, 120)
    return errors

class Key:
    """A key pair: the PEM private key Portcullis reads, the private key
    dkimpy signs with, and the DNS record."""

    def __init__(self, kind, path):
        self.kind = kind
        self.path = path
        if kind.startswith("rsa"):
            bits = kind[3:] or "2048"
            pem = openssl("genrsa", "-traditional", bits)
            der = openssl("pkey", "-pubout", "-outform", "DER", data=pem)
            self.dkimpy_key = pem
            self.alg = b"rsa-sha256"
            self.txt = "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()
        else:
            pem = openssl("genpkey", "-algorithm", "ed25519")
            priv = openssl("pkey", "-outform", "DER", data=pem)
            pub = openssl("pkey", "-pubout", "-outform", "DER", data=pem)
            # PKCS#8 and SPKI DER of Ed25519 end with the 32 raw bytes
            self.dkimpy_key = base64.b64encode(priv[-32:])
            self.alg = b"ed25519-sha256"
            self.txt = ("v=DKIM1; k=ed25519; p="
                        + base64.b64encode(pub[-32:]).decode())
        self.pem = pem
        with open(path, "wb") as f:
            f.write(pem)
        os.chmod(path, 0o600)


def key_name(selector, domain):
    return "%s._domainkey.%s" % (selector, domain)


def make_zone():
    """The keys, by (selector, domain) as published."""
    return {
        key_name("rsa", "example.com"): [{"TXT": KEYS["rsa"].txt}],
        key_name("ed", "example.com"): [{"TXT": KEYS["ed"].txt}],
        key_name("rsa2", "example.net"): [{"TXT": KEYS["rsa2"].txt}],
        key_name("sign", "signer.test"): [{"TXT": KEYS["sign"].txt}],
        key_name("signed", "signer.test"): [{"TXT": KEYS["signed"].txt}],
        key_name("small", "example.com"): [{"TXT": KEYS["small"].txt}],
        key_name("revoked", "example.com"): [{"TXT": "v=DKIM1; k=rsa; p="}],
        key_name("slow", "example.com"): ["TIMEOUT"],
        key_name("broken", "example.com"): ["SERVFAIL"],
        # "gone": no record at all (NXDOMAIN)
    }


def zone_dnsfunc(name, timeout=5):
    """dkimpy's DNS: the TXT of the test zone."""
    if isinstance(name, bytes):
        name = name.decode()
    name = name.rstrip(".").lower()
    for entry in ZONE.get(name, []):
        if isinstance(entry, dict) and "TXT" in entry:
            return entry["TXT"].encode()
    return None


def setUpModule():
    global KEYS, ZONE, DNS, TMP
    harness.require_filters()
    harness.skip_unless_tool("python3-dkim", dkim is not None)
    # tests/dns/dnsserver.py needs dnslib
    harness.skip_unless_tool("python3-dnslib", DNSServer is not None)
    so = os.path.join(FILTER_DIR, "dkim.so")
    if not os.path.exists(so):
        raise unittest.SkipTest("dkim filter not built: %s" % so)
    TMP = make_tempdir("portcullis-dkim-")
    KEYS = {
        "rsa": Key("rsa", os.path.join(TMP, "rsa.pem")),
        "ed": Key("ed25519", os.path.join(TMP, "ed.pem")),
        "rsa2": Key("rsa", os.path.join(TMP, "rsa2.pem")),
        "sign": Key("rsa", os.path.join(TMP, "sign.pem")),
        "signed": Key("ed25519", os.path.join(TMP, "signed.pem")),
        "small": Key("rsa768", os.path.join(TMP, "small.pem")),
    }
    ZONE = make_zone()
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
    remove_tree(TMP)


def require_daemon_config():
    """portcullis -t must take the dkim filter with a [dns] section: a
    refusal fails every test of the module."""
    p = Portcullis(backend_port=9)
    try:
        harness.require_config(p, config_for(p, dkim_section()),
                               "the dkim filter with [dns]")
    finally:
        p.stop()


# ---------------------------------------------------------------------------
# configuration

def dkim_section(trusted=UNTRUSTED, timeout=20, **options):
    """[dns] (the test server) and [filter dkim]."""
    return harness.dns_filter_section("dkim", DNS, trusted, timeout, **options)


def config_for(p, section):
    """A complete configuration text for Portcullis p with the dkim filter."""
    return harness.filter_config_text(p, "dkim", section, FILTER_DIR, AUTHSERV)


# ---------------------------------------------------------------------------
# messages

_counter = [0]


def message(subject="DKIM test", body=None, sender="alice@example.com",
            extra=(), folded=True):
    """A message (bytes, CRLF) with a folded Subject and To, which the
    "simple" header canonicalization hashes byte for byte."""
    _counter[0] += 1
    n = _counter[0]
    if body is None:
        body = ("Hello,\r\n\r\nthis is DKIM test message %d.\r\n"
                "A line with  two spaces and a tab\there.   \r\n"
                "\r\n\r\n" % n)
    head = [
        "From: Alice <%s>" % sender,
        "To: Bob <bob@example.org>,\r\n\tCarol <carol@example.org>"
        if folded else "To: Bob <bob@example.org>",
        ("Subject: %s,\r\n  folded over   two lines" % subject)
        if folded else "Subject: %s" % subject,
        "Date: Mon, 02 Mar 2026 10:00:00 +0000",
        "Message-ID: <dkim.%d.%d@example.com>" % (os.getpid(), n),
    ] + list(extra)
    return ("\r\n".join(head) + "\r\n\r\n").encode() + (
        body.encode() if isinstance(body, str) else body)


def sign(msg, selector=b"rsa", domain=b"example.com", key="rsa",
         canon=(b"relaxed", b"relaxed"), length=False, headers=None):
    """msg with a dkimpy DKIM-Signature prepended."""
    k = KEYS[key]
    sig = dkim.sign(msg, selector, domain, k.dkimpy_key,
                    canonicalize=canon, signature_algorithm=k.alg,
                    include_headers=headers, length=length)
    return sig + msg


def change_body_byte(msg):
    """One body byte changed (a letter, so no canonicalization hides it)."""
    head, sep, body = msg.partition(b"\r\n\r\n")
    i = body.index(b"test")
    return head + sep + body[:i] + b"T" + body[i + 1:]


def change_subject(msg):
    """The signed Subject changed by one letter."""
    return msg.replace(b"Subject: DKIM", b"Subject: DKIm", 1)


def header_block(raw):
    """The header block of a message or of filterhost's "headers"."""
    if isinstance(raw, str):
        raw = raw.encode()
    return raw.split(b"\r\n\r\n", 1)[0] + b"\r\n"


def auth_results(headers):
    """The values of Authentication-Results fields, unfolded."""
    out = []
    for m in re.finditer(rb"(?im)^Authentication-Results:(.*(?:\r\n[ \t].*)*)",
                         header_block(headers)):
        out.append(re.sub(rb"\r\n[ \t]", b" ", m.group(1)).strip().decode())
    return out


def resinfos(headers):
    """[(result, {prop: value})] of every dkim resinfo, in order."""
    found = []
    for value in auth_results(headers):
        parts = [p.strip() for p in value.split(";")]
        if parts[0] != AUTHSERV:
            continue
        for part in parts[1:]:
            m = re.match(r"dkim=(\w+)(.*)", part)
            if not m:
                continue
            props = dict(re.findall(r'([\w.]+)=("(?:[^"\\]|\\.)*"|\S+)',
                                    m.group(2)))
            props = {k: v.strip('"') for k, v in props.items()}
            found.append((m.group(1), props))
    return found


def dkim_entries(record):
    """The dkim filter's entries of a decision record (or of filterhost's
    "filters")."""
    return harness.filter_entries(record, "dkim")


def dkim_results(record):
    merged = {}
    for e in dkim_entries(record):
        merged.update(e.get("results") or {})
    return merged


# ---------------------------------------------------------------------------
# the two ways in

class Outcome:
    """What one message came to: action, reply, the header block the
    backend got (None when refused) and the filter's results."""

    def __init__(self, action, reply, headers, results, raw=None):
        self.action = action
        self.reply = reply
        self.headers = headers
        self.results = results
        self.raw = raw          # the whole message the backend got

    def __repr__(self):
        return "Outcome(%s, %r, %r, %r)" % (self.action, self.reply,
                                           self.results,
                                           self.headers and
                                           auth_results(self.headers))


class Filterhost:
    """tests/tools/filterhost with a dkim configuration."""

    def __init__(self, section):
        self.p = Portcullis(backend_port=9)
        self.text = config_for(self.p, section)
        self.conf = os.path.join(self.p.dir, "filterhost.conf")
        with open(self.conf, "w") as f:
            f.write(self.text)

    def close(self):
        self.p.stop()

    def run(self, msgs, client=STRANGER):
        lines = [json.dumps({
            "client": client, "helo": "mx.example.com",
            "mail": "alice@example.com", "rcpt": ["bob@example.org"],
            "message": m.decode("utf-8")}) for m in msgs]
        r = subprocess.run([FILTERHOST, "-c", self.conf],
                           input=("\n".join(lines) + "\n").encode(),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=120)
        if r.returncode != 0:
            raise AssertionError("filterhost failed (%d): %s" % (
                r.returncode, r.stderr.decode(errors="replace")[-2000:]))
        out = []
        for line in r.stdout.decode().splitlines():
            d = json.loads(line)
            out.append(Outcome(d.get("action"), d.get("reply"),
                               d.get("headers"), dkim_results(d)))
        return out


_filterhost_ok = None


def filterhost_problem():
    """Why filterhost cannot run the dkim filter (None when it can)."""
    global _filterhost_ok
    if _filterhost_ok is not None:
        return _filterhost_ok or None
    problem = ""
    if not os.access(FILTERHOST, os.X_OK):
        problem = "filterhost not built: %s" % FILTERHOST
    else:
        fh = Filterhost(dkim_section())
        try:
            out = fh.run([message()])
            if out[0].action != "accepted" or not out[0].headers:
                problem = "filterhost gave %r" % out
        except Exception as e:  # noqa: BLE001 - any failure means skip
            problem = "filterhost cannot run the dkim filter: %s" % e
        finally:
            fh.close()
    _filterhost_ok = problem
    return problem or None


class DKIMTestCase(ProxyTestCase):

    def proxy(self, section=None, **kw):
        """A daemon with the dkim filter in front of a capture backend."""
        backend = self.start_capture()
        kw.setdefault("filters", "dkim")
        kw.setdefault("filter_dir", FILTER_DIR)
        kw.setdefault("authserv_id", AUTHSERV)
        p = self.start_proxy(backend_port=backend.port,
                             extra=section or dkim_section(), **kw)
        p.backend = backend
        return p

    def send(self, p, msgs):
        """Each message in its own transaction through the daemon."""
        out = []
        c = self.client(p.port)
        c.ehlo("mx.example.com")
        for i, msg in enumerate(msgs):
            before = len(p.backend.messages())
            r = c.mail_transaction("alice@example.com", ["bob@example.org"],
                                   msg)
            end = r.get("end") or r.get("data") or r["rcpt"][-1]
            headers = raw = None
            if end.code == 250:
                got = p.backend.wait_messages(before + 1, 10)
                self.assertGreater(len(got), before, "backend got nothing")
                raw = got[before]
                headers = header_block(raw)
            recs = p.wait_transaction(count=i + 1, timeout=10)
            results = dkim_results(recs[i]) if len(recs) > i else {}
            action = "accepted" if end.code == 250 else (
                "rejected" if end.code >= 500 else "tempfailed")
            out.append(Outcome(action, "%d %s %s" % (end.code, end.enh,
                                                      end.text),
                               headers, results, raw))
        c.cmd("QUIT")
        return out

    def run_cases(self, msgs, section=None):
        """Outcomes of msgs: through filterhost when it can load the
        filter, else through the daemon."""
        section = section or dkim_section()
        if filterhost_problem() is None:
            fh = Filterhost(section)
            self.addCleanup(fh.close)
            return fh.run(msgs)
        return self.send(self.proxy(section), msgs)

    def assertResults(self, outcome, expected, msg=None):
        """The dkim resinfos of outcome are expected: [(result, d, s)]."""
        self.assertEqual(outcome.action, "accepted", msg or outcome)
        got = [(r, p.get("header.d"), p.get("header.s"))
               for r, p in resinfos(outcome.headers)]
        self.assertEqual(got, expected, "%s: %r" % (msg or "", outcome))


# ---------------------------------------------------------------------------
# verification

class VerifyTest(DKIMTestCase):

    def test_dkimpy_signatures_pass_in_every_canonicalization(self):
        cases = []
        for key, sel in (("rsa", b"rsa"), ("ed", b"ed")):
            for canon in ((b"relaxed", b"relaxed"), (b"simple", b"simple"),
                          (b"relaxed", b"simple"), (b"simple", b"relaxed")):
                cases.append(((key, sel, canon),
                              sign(message(), sel, key=key, canon=canon)))
        out = self.run_cases([m for _, m in cases])
        for ((key, sel, canon), _), o in zip(cases, out):
            self.assertResults(o, [("pass", "example.com", sel.decode())],
                               "%s %s" % (key, canon))
            self.assertEqual(o.results.get("dkim"), "pass", o)

    def test_resinfo_names_domain_selector_algorithm_and_b(self):
        msg = sign(message(), key="ed", selector=b"ed")
        o = self.run_cases([msg])[0]
        (result, props), = resinfos(o.headers)
        self.assertEqual(result, "pass")
        self.assertEqual(props["header.d"], "example.com")
        self.assertEqual(props["header.s"], "ed")
        self.assertEqual(props["header.a"], "ed25519-sha256")
        b = re.search(rb"\bb=([A-Za-z0-9+/=\s]+)", msg.split(b"\r\n\r\n")[0])
        b = re.sub(rb"\s", b"", b.group(1)).decode()
        self.assertGreaterEqual(len(props["header.b"]), 8)
        self.assertTrue(b.startswith(props["header.b"]), (b, props))
        # one Authentication-Results field of ours, at the top
        self.assertTrue(header_block(o.headers).startswith(
            b"Authentication-Results: " + AUTHSERV.encode() + b";"),
            o.headers[:300])

    def test_folded_headers_pass_with_simple_canonicalization(self):
        # the header's bytes, folding and double spaces, are what is hashed
        msg = message(extra=("X-Folded: one\r\n two\r\n\t  three  ",))
        msg = sign(msg, canon=(b"simple", b"simple"),
                   headers=[b"from", b"to", b"subject", b"x-folded"])
        o = self.run_cases([msg])[0]
        self.assertResults(o, [("pass", "example.com", "rsa")])

    def test_body_length_tag_passes_and_covers_only_its_bytes(self):
        msg = sign(message(), length=True)
        self.assertIn(b"l=", msg.split(b"\r\n\r\n")[0])
        appended = msg + b"Appended after signing.\r\n"
        out = self.run_cases([msg, appended])
        for o in out:
            self.assertResults(o, [("pass", "example.com", "rsa")])

    def test_several_signatures_each_get_a_resinfo_in_one_field(self):
        msg = message(sender="alice@example.com")
        msg = sign(msg, b"rsa2", b"example.net", key="rsa2")
        msg = sign(msg, b"ed", b"example.com", key="ed")
        msg = sign(msg, b"rsa", b"example.com", key="rsa",
                   canon=(b"simple", b"simple"))
        o = self.run_cases([msg])[0]
        self.assertResults(o, [("pass", "example.com", "rsa"),
                               ("pass", "example.com", "ed"),
                               ("pass", "example.net", "rsa2")])
        self.assertEqual(len(auth_results(o.headers)), 1, o.headers)
        self.assertEqual(o.results.get("dkim"), "pass")
        self.assertEqual(o.results.get("signatures", "").count("pass"), 3)

    def test_changed_body_byte_fails(self):
        cases = [change_body_byte(sign(message(), canon=c))
                 for c in ((b"relaxed", b"relaxed"), (b"simple", b"simple"))]
        cases.append(change_body_byte(sign(message(), b"ed", key="ed")))
        for o in self.run_cases(cases):
            (result, props), = resinfos(o.headers)
            self.assertEqual(result, "fail", o)
            self.assertIn("body hash", props.get("reason", ""), o)
            self.assertEqual(o.action, "accepted")  # RFC 6376 6.3

    def test_changed_signed_header_fails(self):
        cases = [change_subject(sign(message(), canon=c))
                 for c in ((b"relaxed", b"relaxed"), (b"simple", b"simple"))]
        cases.append(change_subject(sign(message(), b"ed", key="ed")))
        for o in self.run_cases(cases):
            self.assertResults(o, [("fail", "example.com",
                                    resinfos(o.headers)[0][1]["header.s"])])

    def test_refolded_header_fails_simple_but_passes_relaxed(self):
        def refold(m):
            return m.replace(b",\r\n  folded over", b", folded over", 1)
        simple = refold(sign(message(), canon=(b"simple", b"simple")))
        relaxed = refold(sign(message(), canon=(b"relaxed", b"simple")))
        s, r = self.run_cases([simple, relaxed])
        self.assertEqual(resinfos(s.headers)[0][0], "fail")
        self.assertEqual(resinfos(r.headers)[0][0], "pass")

    def test_unparsable_signature_is_neutral(self):
        msg = b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com\r\n" + \
            sign(message())
        o = self.run_cases([msg])[0]
        (r1, p1), (r2, _) = resinfos(o.headers)
        self.assertEqual((r1, p1.get("header.d")), ("neutral", "example.com"))
        self.assertIn("selector", p1.get("reason", ""))
        self.assertEqual(r2, "pass")        # the good one still counts
        self.assertEqual(o.results.get("dkim"), "pass")

    def test_rsa_sha1_and_small_keys_are_policy(self):
        m = message()
        sha1 = dkim.sign(m, b"rsa", b"example.com", KEYS["rsa"].dkimpy_key,
                         signature_algorithm=b"rsa-sha1") + m
        small = sign(message(), b"small", key="small")
        for o in self.run_cases([sha1, small]):
            (result, props), = resinfos(o.headers)
            self.assertEqual(result, "policy", o)
            self.assertTrue(props.get("reason"), o)

    def test_revoked_key_is_permerror(self):
        o = self.run_cases([sign(message(), b"revoked")])[0]
        self.assertResults(o, [("permerror", "example.com", "revoked")])

    def test_unsigned_mail_is_dkim_none(self):
        o = self.run_cases([message()])[0]
        self.assertEqual(auth_results(o.headers), [AUTHSERV + "; dkim=none"])
        self.assertEqual(o.results.get("dkim"), "none")

    def test_key_missing_from_dns_is_permerror(self):
        o = self.run_cases([sign(message(), b"gone")])[0]
        self.assertResults(o, [("permerror", "example.com", "gone")])

    def test_dns_timeout_is_temperror_and_accepted_by_default(self):
        o = self.run_cases([sign(message(), b"slow")])[0]
        self.assertResults(o, [("temperror", "example.com", "slow")])

    def test_servfail_is_temperror(self):
        o = self.run_cases([sign(message(), b"broken")])[0]
        self.assertResults(o, [("temperror", "example.com", "broken")])

    def test_dns_timeout_with_on_temperror_tempfail_is_451(self):
        o = self.run_cases([sign(message(), b"slow")],
                           dkim_section(on_temperror="tempfail"))[0]
        self.assertEqual(o.action, "tempfailed", o)
        self.assertRegex(o.reply, r"^451 4\.4\.3", o)

    def test_one_passing_signature_outweighs_a_temperror(self):
        msg = sign(sign(message(), b"slow"), b"rsa")
        o = self.run_cases([msg], dkim_section(on_temperror="tempfail"))[0]
        self.assertResults(o, [("pass", "example.com", "rsa"),
                               ("temperror", "example.com", "slow")])

    def test_max_signatures_keeps_the_author_signature(self):
        msg = sign(message(), b"rsa")           # the author's, at the bottom
        for _ in range(3):
            msg = sign(msg, b"rsa2", b"example.net", key="rsa2")
        o = self.run_cases([msg], dkim_section(max_signatures=2))[0]
        got = [(r, p["header.d"]) for r, p in resinfos(o.headers)]
        self.assertIn(("pass", "example.com"), got)
        self.assertEqual(len(got), 2, got)
        self.assertEqual(o.results.get("ignored"), 2, o)

    def test_forged_authentication_results_do_not_survive(self):
        forged = "Authentication-Results: %s; dkim=pass header.d=example.com" \
            % AUTHSERV
        o = self.run_cases([message(extra=(forged,))])[0]
        self.assertEqual(auth_results(o.headers), [AUTHSERV + "; dkim=none"])


class RequireTest(DKIMTestCase):

    def section(self, **kw):
        return dkim_section(require="example.com, Example.ORG", **kw)

    def test_required_domain_without_signature_is_550_5_7_20(self):
        o = self.run_cases([message()], self.section())[0]
        self.assertEqual(o.action, "rejected", o)
        self.assertRegex(o.reply, r"^550 5\.7\.20 ", o)
        self.assertIn("example.com", o.reply)
        self.assertEqual(o.results.get("require"),
                         "example.com: no passing signature", o)

    def test_required_domain_with_failing_signature_is_refused(self):
        o = self.run_cases([change_body_byte(sign(message()))],
                           self.section())[0]
        self.assertRegex(o.reply, r"^550 5\.7\.20 ", o)

    def test_signature_by_another_domain_does_not_count(self):
        msg = sign(message(), b"rsa2", b"example.net", key="rsa2")
        o = self.run_cases([msg], self.section())[0]
        self.assertRegex(o.reply, r"^550 5\.7\.20 ", o)

    def test_required_domain_with_passing_signature_is_accepted(self):
        out = self.run_cases([sign(message()),
                              sign(message(), b"ed", key="ed")],
                             self.section())
        for o in out:
            self.assertResults(o, [("pass", "example.com",
                                    resinfos(o.headers)[0][1]["header.s"])])
            self.assertEqual(o.results.get("require"), "example.com: pass")

    def test_a_second_from_of_a_required_domain_needs_its_signature(self):
        # signed by example.net for its own From, with a From of
        # example.com added: the reader may show either
        msg = message(sender="x@example.net")
        msg = sign(msg, b"rsa2", b"example.net", key="rsa2")
        msg = b"From: boss@example.com\r\n" + msg
        o = self.run_cases([msg], self.section())[0]
        self.assertRegex(o.reply, r"^550 5\.7\.20 ", o)

    def test_every_spelling_of_a_required_idn_author_domain_is_required(self):
        # require names the U-label; the From may spell the domain in
        # upper case, NFD, fullwidth letters or as its A-label
        froms = ["x@BÜCHER.example", "x@bu\u0308cher.example",
                 "x@ｂüｃｈｅｒ。example", "x@XN--BCHER-KVA.example"]
        out = self.run_cases([message(sender=f) for f in froms],
                             dkim_section(require="bücher.example"))
        for f, o in zip(froms, out):
            with self.subTest(sender=f):
                self.assertRegex(o.reply, r"^550 5\.7\.20 ", o)
                self.assertEqual(o.results.get("require"),
                                 "xn--bcher-kva.example: no passing "
                                 "signature", o)

    def test_other_domains_need_nothing(self):
        o = self.run_cases([message(sender="x@example.net")],
                           self.section())[0]
        self.assertEqual(o.action, "accepted", o)

    def test_required_domain_whose_key_lookup_timed_out_is_451(self):
        o = self.run_cases([sign(message(), b"slow")], self.section())[0]
        self.assertEqual(o.action, "tempfailed", o)
        self.assertRegex(o.reply, r"^451 4\.4\.3 ", o)


class DaemonTest(DKIMTestCase):
    """End to end: what the backend receives from the daemon."""

    def test_verified_message_reaches_the_backend_unchanged_below_the_header(self):
        p = self.proxy()
        msg = sign(message(), canon=(b"simple", b"simple"))
        o, = self.send(p, [msg])
        self.assertResults(o, [("pass", "example.com", "rsa")])
        # what Portcullis added is one field on top; the rest is as sent
        first, rest = o.raw.split(b"\r\n", 1)
        self.assertTrue(first.startswith(b"Authentication-Results: "), first)
        self.assertEqual(rest, msg)
        # dkimpy agrees with what the backend got
        self.assertTrue(dkim.verify(o.raw, dnsfunc=zone_dnsfunc))

    def test_decision_record_has_the_results(self):
        p = self.proxy()
        self.send(p, [sign(change_subject(sign(message())), b"ed", key="ed")])
        rec = p.wait_transaction(count=1)[-1]
        res = dkim_results(rec)
        self.assertEqual(res.get("dkim"), "pass", rec)
        self.assertRegex(res.get("signatures", ""),
                         r"^pass d=example\.com s=ed a=ed25519-sha256; "
                         r"fail d=example\.com s=rsa a=rsa-sha256 \(", res)

    def test_require_refuses_at_end_of_data(self):
        p = self.proxy(dkim_section(require="example.com"))
        o, = self.send(p, [message()])
        self.assertEqual(o.action, "rejected")
        self.assertRegex(o.reply, r"^550 5\.7\.20 ")
        self.assertEqual(p.backend.messages(), [])

    def test_concurrent_sessions_get_their_own_results(self):
        # the filter's hooks run on a thread pool; one DKIM_LIB serves all
        p = self.proxy(filter_threads="8")
        expected, msgs = {}, []
        for i in range(24):
            key, sel = (("ed", b"ed") if i % 3 == 0 else ("rsa", b"rsa"))
            msg = sign(message(subject="DKIM concurrent %d" % i), sel,
                       key=key)
            if i % 2:
                msg = change_body_byte(msg)
            mid = re.search(rb"Message-ID: (<[^>]+>)", msg).group(1)
            expected[mid] = "fail" if i % 2 else "pass"
            msgs.append(msg)
        errors = concurrent_sessions(p.port, "alice@example.com",
                                     [msgs[i::8] for i in range(8)])
        self.assertEqual(errors, [])
        got = p.backend.wait_messages(len(msgs), 30)
        self.assertEqual(len(got), len(msgs))
        for raw in got:
            mid = re.search(rb"Message-ID: (<[^>]+>)", raw).group(1)
            (result, _), = resinfos(raw)
            self.assertEqual(result, expected[mid], raw[:600])

    def test_keys_are_told_apart_and_a_new_key_in_dns_is_used(self):
        # libopendkim's key decoding is answered from a cache of decoded
        # keys keyed on their bytes: it must never hand one key's object
        # for another, nor keep a key that DNS no longer publishes
        name = key_name("rot", "example.com")
        DNS.set(name, [{"TXT": KEYS["rsa"].txt, "ttl": 0}])
        self.addCleanup(DNS.remove, name)
        p = self.proxy(log_level="debug")
        by_rsa = sign(message(subject="rot 1"), b"rot")
        forged = sign(message(subject="rot 2"), b"rot", key="rsa2")
        other = sign(message(subject="rot 3"), b"rsa2", b"example.net",
                     key="rsa2")
        out = self.send(p, [by_rsa, by_rsa, forged, other])
        self.assertEqual([[r for r, _ in resinfos(o.headers)] for o in out],
                         [["pass"], ["pass"], ["fail"], ["pass"]], out)
        # the key is rotated: same selector, rsa2's key (TTL 0: no DNS
        # cache in the way), and the old signatures stop verifying
        DNS.set(name, [{"TXT": KEYS["rsa2"].txt, "ttl": 0}])
        out = self.send(p, [by_rsa, forged])
        self.assertEqual([[r for r, _ in resinfos(o.headers)] for o in out],
                         [["fail"], ["pass"]], out)
        # and the second of the first messages was checked with the
        # decoded key of the first: the cache is in use
        self.assertIn("decoded keys are reused", p.stderr())

    def test_a_message_whose_keys_are_cached_is_verified_on_the_event_loop(self):
        # the data hook runs on the event loop when the DNS cache holds
        # every key and the message is small; else it says so in the
        # log and runs on a thread
        p = self.proxy(log_level="debug")

        def moved():
            return len(re.findall(r"filter dkim: session \w+: would block at data "
                                  r"on the event loop", p.stderr()))
        def body(kib):
            return "".join("line %06d of a longer message\r\n" % i
                           for i in range(kib * 1024 // 32))
        big = message(subject="big", body=body(260))
        two = sign(sign(message(subject="two")), b"ed", key="ed")
        five = message(subject="five")
        for k in range(5):
            five = sign(five, *((b"ed", b"example.com", "ed") if k % 2 else ()))
        steps = [
            (sign(message(subject="first")), 1),   # the key is not cached
            (sign(message(subject="second")), 0),  # it is now
            (sign(big), 1),                        # too big for the loop
            (two, 1),                              # ed's key is not cached
            (two, 0),
            (five, 1),                             # too many signatures
            # 150 KiB hashed twice is too much
            (sign(sign(message(subject="two long", body=body(150))), b"ed", key="ed"), 1),
        ]
        for n, (msg, more) in enumerate(steps):
            before = moved()
            o, = self.send(p, [msg])
            sigs = len(re.findall(rb"(?im)^DKIM-Signature:", header_block(msg)))
            self.assertEqual([r for r, _ in resinfos(o.headers)], ["pass"] * sigs, o)
            self.assertEqual(moved() - before, more, "step %d" % n)
        self.assertGreater(len(big), 256 * 1024)

    def test_dns_timeout_through_the_daemon(self):
        p = self.proxy(dkim_section(on_temperror="tempfail"))
        o, = self.send(p, [sign(message(), b"slow")])
        self.assertEqual(o.action, "tempfailed", o)
        self.assertRegex(o.reply, r"^451 4\.4\.3 ")


# ---------------------------------------------------------------------------
# signing

SIGN_ALL = ("signer.test:sign:%s, signer.test:signed:%s"
            % ("{sign}", "{signed}"))


def sign_section(entries=None, trusted=None, **kw):
    entries = entries or SIGN_ALL.format(sign=KEYS["sign"].path,
                                         signed=KEYS["signed"].path)
    return dkim_section(trusted=trusted, sign=entries, **kw)


class SignTest(DKIMTestCase):

    def signed(self, section, msgs):
        """Through the daemon from 127.0.0.1 (trusted by default)."""
        return self.send(self.proxy(section), msgs)

    @staticmethod
    def verify_all(raw):
        """dkimpy's verdict on every DKIM-Signature of raw, top first."""
        n = len(re.findall(rb"(?im)^DKIM-Signature:", header_block(raw)))
        d = dkim.DKIM(raw)
        return [d.verify(idx=i, dnsfunc=zone_dnsfunc) for i in range(n)]

    def test_trusted_mail_is_signed_with_rsa_and_ed25519(self):
        o, = self.signed(sign_section(), [message(sender="alice@signer.test")])
        self.assertEqual(o.action, "accepted", o)
        sigs = re.findall(rb"(?im)^DKIM-Signature:(.*)", o.headers)
        self.assertEqual(len(sigs), 2, o.headers)
        algs = sorted(re.search(rb"a=([\w-]+)", s).group(1) for s in sigs)
        self.assertEqual(algs, [b"ed25519-sha256", b"rsa-sha256"])
        self.assertEqual(self.verify_all(o.raw), [True, True], o.raw[:1500])
        for s in sigs:
            self.assertIn(b"c=relaxed/relaxed", s)
            self.assertIn(b"d=signer.test", s)
        self.assertEqual(o.results.get("dkim"), "signed")
        # trusted mail is not verified: no Authentication-Results
        self.assertEqual(auth_results(o.headers), [])

    def test_every_message_is_signed_with_the_keys_decoded_at_init(self):
        # libopendkim decodes the signing key again for each message; the
        # filter answers with the key it decoded at init, which the daemon
        # (linked with OpenSSL for TLS) reaches only by passing the call
        # on to the filter: the signatures must still verify, and the
        # filter says the keys are reused
        p = self.proxy(sign_section(), log_level="debug")
        out = self.send(p, [message(sender="a@signer.test",
                                    subject="init key %d" % i)
                            for i in range(3)])
        for o in out:
            self.assertEqual(o.results.get("dkim"), "signed", o)
            self.assertEqual(self.verify_all(o.raw), [True, True],
                             o.raw[:1500])
        log = p.stderr()
        self.assertIn("decoded signing keys are reused", log)
        self.assertNotIn("decodes the signing key itself", log)

    def test_concurrent_sessions_sign_with_the_shared_keys(self):
        # the filter threads sign with one decoded key object at a time
        p = self.proxy(sign_section(), filter_threads="8")
        errors = concurrent_sessions(
            p.port, "a@signer.test",
            [[message(sender="a@signer.test", subject="concurrent %d.%d" % (k, i))
              for i in range(3)] for k in range(8)])
        self.assertEqual(errors, [])
        got = p.backend.wait_messages(24, 30)
        self.assertEqual(len(got), 24)
        for raw in got:
            self.assertEqual(self.verify_all(raw), [True, True], raw[:1500])

    def test_two_sections_signing_with_one_key_both_sign(self):
        # two instances add the same key text; each signature verifies
        extra = sign_section() + "\n".join(
            ["", "[filter dkim2]", "module = dkim", "timeout = 20",
             "sign = signer.test:sign:%s" % KEYS["sign"].path, ""])
        o, = self.send(self.proxy(extra, filters="dkim, dkim2",
                                  log_level="debug"),
                       [message(sender="a@signer.test")])
        self.assertEqual(o.action, "accepted", o)
        self.assertEqual(self.verify_all(o.raw), [True, True, True],
                         o.raw[:2000])

    def test_simple_canonicalization_signature_verifies(self):
        o, = self.signed(sign_section(canonicalization="simple/simple"),
                         [message(sender="alice@signer.test")])
        self.assertIn(b"c=simple/simple", o.headers)
        self.assertEqual(self.verify_all(o.raw), [True, True])

    def test_signed_headers_default_and_from_oversigned(self):
        o, = self.signed(sign_section(), [message(sender="a@signer.test")])
        h = re.search(rb"(?im)^DKIM-Signature:.*\bh=([^;]+)", o.headers)
        names = [x.strip().lower() for x in h.group(1).split(b":")]
        self.assertEqual(names.count(b"from"), 2, names)  # oversigned
        for name in (b"to", b"subject", b"date", b"message-id"):
            self.assertIn(name, names)

    def test_sign_headers_option(self):
        o, = self.signed(sign_section(sign_headers="From, Subject"),
                         [message(sender="a@signer.test")])
        h = re.search(rb"(?im)^DKIM-Signature:.*\bh=([^;]+)", o.headers)
        names = sorted(set(x.strip().lower() for x in h.group(1).split(b":")))
        self.assertEqual(names, [b"from", b"subject"])
        self.assertEqual(self.verify_all(o.raw), [True, True])

    def test_big_body_is_signed_streaming(self):
        body = "".join("line %06d of a long message\r\n" % i
                       for i in range(40000))          # about 1.3 MB
        o, = self.signed(sign_section(),
                         [message(sender="a@signer.test", body=body)])
        self.assertEqual(self.verify_all(o.raw), [True, True])

    def test_other_from_domains_are_not_signed(self):
        o, = self.signed(sign_section(), [message(sender="a@example.com")])
        self.assertNotIn(b"DKIM-Signature", o.headers)
        self.assertEqual(o.results.get("dkim"), "unsigned")

    def test_untrusted_client_is_verified_not_signed(self):
        o, = self.signed(sign_section(trusted=UNTRUSTED),
                         [message(sender="a@signer.test")])
        self.assertNotIn(b"DKIM-Signature", o.headers)
        self.assertEqual(auth_results(o.headers), [AUTHSERV + "; dkim=none"])

    def test_empty_trusted_networks_trusts_no_one(self):
        o, = self.signed(sign_section(trusted=""),
                         [message(sender="a@signer.test")])
        self.assertNotIn(b"DKIM-Signature", o.headers)

    def test_signed_mail_verifies_as_pass_through_portcullis(self):
        # what we sign, we (as another hop) verify
        o, = self.signed(sign_section(), [message(sender="a@signer.test")])
        body = o.raw
        v = self.run_cases([body])[0]
        self.assertResults(v, [("pass", "signer.test", "signed"),
                               ("pass", "signer.test", "sign")])


class PostfixTest(DKIMTestCase):
    """Through a real MTA: what lands in the Maildir still verifies."""

    def test_signed_and_verified_mail_delivered_by_postfix_verifies(self):
        pf = self.start_postfix()
        # Portcullis signs for a trusted client; Postfix delivers
        p = self.start_proxy(backend_port=pf.port, filters="dkim",
                             filter_dir=FILTER_DIR, authserv_id=AUTHSERV,
                             extra=sign_section(
                                 trusted="127.0.0.0/8, ::1/128"))
        c = self.client(p.port)
        c.ehlo("submit.example.test")
        msg = message(sender="alice@signer.test", subject="DKIM Postfix")
        r = c.mail_transaction("alice@signer.test",
                               ["bob@" + harness.DOMAIN], msg)
        self.assertEqual(r["end"].code, 250, r)
        c.cmd("QUIT")
        got = pf.wait_messages("bob", 1)
        self.assertEqual(len(got), 1, pf.maillog()[-2000:])
        delivered = got[0].replace(b"\n", b"\r\n")
        self.assertEqual(SignTest.verify_all(delivered), [True, True],
                         delivered[:1500])
        # and Portcullis, as the next hop, agrees
        v = self.run_cases([delivered])[0]
        self.assertResults(v, [("pass", "signer.test", "signed"),
                               ("pass", "signer.test", "sign")])


class ConfigTest(DKIMTestCase):

    def check(self, **options):
        p = Portcullis(backend_port=9)
        self.addCleanup(p.stop)
        trusted = options.pop("trusted_networks", UNTRUSTED)
        text = config_for(p, dkim_section(trusted=trusted, **options))
        r = p.check_config(text)
        return r.returncode, (r.stdout + r.stderr).decode(errors="replace")

    def test_valid_configuration_passes(self):
        rc, out = self.check(sign="signer.test:sign:%s" % KEYS["sign"].path,
                             require="example.com", on_temperror="tempfail",
                             canonicalization="relaxed/simple",
                             max_signatures="3")
        self.assertEqual(rc, 0, out)

    def test_missing_key_file_is_named(self):
        rc, out = self.check(sign="signer.test:sign:/nonexistent/k.pem")
        self.assertNotEqual(rc, 0)
        self.assertRegex(out, r"\[filter dkim\] sign: key /nonexistent/k\.pem")

    def test_key_file_that_is_no_key_is_named(self):
        bad = os.path.join(TMP, "bad.pem")
        with open(bad, "w") as f:
            f.write("-----BEGIN PRIVATE KEY-----\nnot a key\n"
                    "-----END PRIVATE KEY-----\n")
        rc, out = self.check(sign="signer.test:sign:%s" % bad)
        self.assertNotEqual(rc, 0)
        self.assertIn("sign: key %s: not a PEM private key" % bad, out)

    def test_small_rsa_key_is_refused(self):
        small = os.path.join(TMP, "small.pem")
        with open(small, "wb") as f:
            f.write(openssl("genrsa", "512"))
        rc, out = self.check(sign="signer.test:sign:%s" % small)
        self.assertNotEqual(rc, 0)
        self.assertIn("512 bits", out)

    def test_bad_values_are_refused_with_their_key(self):
        for key, value in (("on_temperror", "maybe"),
                           ("max_signatures", "0"),
                           ("canonicalization", "loose/simple"),
                           ("sign_headers", "Subject, To"),
                           ("require", "not a domain!"),
                           ("trusted_networks", "10.0.0.1/8"),
                           ("sign", "signer.test:sign"),
                           ("sign", "signer.test:bad selector:/k.pem")):
            rc, out = self.check(**{key: value})
            self.assertNotEqual(rc, 0, "%s = %s" % (key, value))
            self.assertIn("[filter dkim] %s:" % key, out, out)


if __name__ == "__main__":
    unittest.main()
