"""
The resolver every filter uses: pc_dns_query() (proxy/dns.c) and its
[dns] section. tests/tools/dnsquery (built by "make check", beside the
daemon) loads a configuration, calls dns_init() and asks pc_dns_query();
a DNSServer (tests/dns/dnsserver.py, python3-dnslib) on a loopback port
serves the zones and counts the queries it gets, so a cache hit is a count
that did not move. Nothing here leaves 127.0.0.1 / ::1.

Timeouts are short (0.2 to 0.5 s) and the bounds on elapsed time generous,
so a slow (sanitized) build still passes; what is pinned is the shape:
timeout x tries x servers, never c-ares' doubling per round.
"""

import json
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
import unittest

import harness
from harness import (PORTCULLIS_BIN, PROJECT, SANITIZER_PATTERNS,
                     ProxyTestCase, Portcullis, free_port, has_ipv6,
                     make_tempdir, remove_tree)

sys.path.insert(0, os.path.join(PROJECT, "tests", "dns"))
from dnsserver import DNSServer, load_openspf  # noqa: E402

# dnsquery sits in the build tree of the daemon under test.
DNSQUERY_BIN = os.environ.get("DNSQUERY_BIN") or os.path.join(
    os.path.dirname(os.path.dirname(PORTCULLIS_BIN)), "tests", "tools",
    "dnsquery")
# The openspf RFC 7208 suite: the project's copy, else the shared one.
SPF_SUITE = next((p for p in (
    os.path.join(PROJECT, "tests", "spf", "rfc7208-tests.yml"),
    os.path.join(PROJECT, "..", "shared", "testdata", "spf",
                 "rfc7208-tests.yml")) if os.path.exists(p)), "")

PC_DNS_TIMEOUT = -1
PC_DNS_ERROR = -2


def config_text(spool_dir, dns):
    """A whole daemon configuration (dnsquery loads it with conf_load)
    whose [dns] section holds dns (a dict)."""
    text = ("[portcullis]\nlisten = 127.0.0.1:1\nspool_dir = %s\n"
            "[backend]\nservers = 127.0.0.1:2\n[dns]\n" % spool_dir)
    for k, v in dns.items():
        text += "%s = %s\n" % (k, v)
    return text


class DNSQuery:
    """A running dnsquery: ask() one question at a time (one process, so
    one cache), close() for the cache's counters."""

    def __init__(self, conf_path, args=()):
        self.proc = subprocess.Popen(
            [DNSQUERY_BIN, "-c", conf_path, "-s"] + list(args),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, universal_newlines=True, bufsize=1)
        self.lines = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.stats = None
        self.stderr = ""

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def ask(self, name, qtype="A", timeout=30):
        self.proc.stdin.write("%s %s\n" % (name, qtype))
        self.proc.stdin.flush()
        line = self.lines.get(timeout=timeout)
        if line is None:
            raise AssertionError("dnsquery ended: %s" % self.proc.stderr.read())
        return json.loads(line)

    def close(self, timeout=30):
        """End it; the exit status, the stats; stderr kept in .stderr."""
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        rc = self.proc.wait(timeout)
        while True:
            line = self.lines.get(timeout=timeout)
            if line is None:
                break
            obj = json.loads(line)
            if "stats" in obj:
                self.stats = obj["stats"]
        self.stderr = self.proc.stderr.read()
        self.proc.stderr.close()
        self.proc.stdout.close()
        return rc


class DNSTestCase(unittest.TestCase):
    """Start DNS servers and dnsquery processes; everything is stopped,
    and a non-zero exit or a sanitizer report of dnsquery fails the
    test."""

    def setUp(self):
        if not os.access(DNSQUERY_BIN, os.X_OK):
            self.skipTest("dnsquery not built (make check): %s" % DNSQUERY_BIN)
        self.dir = make_tempdir("portcullis-dns-")
        self.addCleanup(remove_tree, self.dir)
        self.nconf = 0

    def dns(self, zones=None, **kw):
        server = DNSServer(zones, **kw).start()
        self.addCleanup(server.stop)
        return server

    def conf(self, servers, **dns):
        """A configuration file for these servers (DNSServer objects or
        "host:port" strings) and [dns] keys."""
        if not isinstance(servers, (list, tuple)):
            servers = [servers]
        dns.setdefault("timeout", "0.5")
        dns.setdefault("retries", "1")
        dns["servers"] = ", ".join(
            s if isinstance(s, str) else s.address for s in servers)
        self.nconf += 1
        path = os.path.join(self.dir, "dns%d.conf" % self.nconf)
        with open(path, "w") as f:
            f.write(config_text(self.dir, dns))
        return path

    def assertClean(self, rc, stderr, what="dnsquery"):
        for p in SANITIZER_PATTERNS:
            if p in stderr:
                self.fail("%s: sanitizer report:\n%s" % (what, stderr[-4000:]))
        self.assertEqual(rc, 0, "%s exited %r:\n%s" % (what, rc, stderr[-4000:]))

    def session(self, servers, args=(), **dns):
        """A dnsquery to ask() interactively; closed (and checked) at the
        end of the test unless closed before."""
        q = DNSQuery(self.conf(servers, **dns), args)

        def finish():
            if q.proc.returncode is None:
                self.assertClean(q.close(), q.stderr)
        self.addCleanup(finish)
        return q

    def finish(self, q):
        rc = q.close()
        self.assertClean(rc, q.stderr)
        return q.stats

    def run_batch(self, servers, questions, args=(), wait=120, **dns):
        """dnsquery over many questions (stdin), [results], stats."""
        path = self.conf(servers, **dns)
        text = "".join("%s %s\n" % q for q in questions)
        p = subprocess.run([DNSQUERY_BIN, "-c", path, "-s"] + list(args),
                           input=text, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, universal_newlines=True,
                           timeout=wait)
        self.assertClean(p.returncode, p.stderr)
        results, stats = [], None
        for line in p.stdout.splitlines():
            obj = json.loads(line)
            if "stats" in obj:
                stats = obj["stats"]
            else:
                results.append(obj)
        return results, stats

    def assertAnswer(self, r, rcode="NOERROR"):
        self.assertEqual(r["result"], "reply", r)
        self.assertEqual(r.get("rcode"), rcode, r)
        self.assertGreater(r["length"], 12, r)


ZONES = {
    "example.test": [{"TXT": "v=spf1 ip4:192.0.2.0/24 -all"},
                     {"A": "192.0.2.1"}, {"MX": [10, "mx.example.test"]},
                     {"MX": [20, "mx2.example.test"]}],
    "multi.example.test": [{"TXT": ["v=spf1 ", "ip4:192.0.2.7 ", "-all"]}],
    "mx.example.test": [{"A": "192.0.2.25"}],
    "www.example.test": [{"CNAME": "example.test"}],
    "broken.example.test": ["SERVFAIL"],
    "silent.example.test": ["TIMEOUT"],
}


class TestAnswers(DNSTestCase):

    def test_a_txt_and_mx_answers_come_back_whole(self):
        server = self.dns(ZONES)
        q = self.session(server)
        r = q.ask("example.test", "A")
        self.assertAnswer(r)
        self.assertEqual([a["data"] for a in r["answers"]], ["192.0.2.1"])
        r = q.ask("example.test", "TXT")
        self.assertAnswer(r)
        self.assertEqual(r["answers"][0]["data"],
                         ["v=spf1 ip4:192.0.2.0/24 -all"])
        r = q.ask("multi.example.test", "TXT")
        self.assertEqual(r["answers"][0]["data"],
                         ["v=spf1 ", "ip4:192.0.2.7 ", "-all"])
        r = q.ask("example.test", "MX")
        self.assertAnswer(r)
        self.assertEqual(sorted(a["data"] for a in r["answers"]),
                         [[10, "mx.example.test"], [20, "mx2.example.test"]])

    def test_a_cname_comes_with_its_target(self):
        server = self.dns(ZONES)
        r = self.session(server).ask("www.example.test", "A")
        self.assertAnswer(r)
        self.assertEqual([(a["type"], a["data"]) for a in r["answers"]],
                         [("CNAME", "example.test"), ("A", "192.0.2.1")])

    def test_an_unknown_name_is_nxdomain_with_the_zone_soa(self):
        server = self.dns(ZONES)
        r = self.session(server).ask("nope.example.test", "TXT")
        self.assertAnswer(r, "NXDOMAIN")
        self.assertEqual(r["answers"], [])
        self.assertEqual([a["type"] for a in r["authority"]], ["SOA"])

    def test_a_name_without_the_type_is_nodata(self):
        server = self.dns(ZONES)
        r = self.session(server).ask("example.test", "AAAA")
        self.assertAnswer(r, "NOERROR")
        self.assertEqual(r["answers"], [])
        self.assertEqual([a["type"] for a in r["authority"]], ["SOA"])

    def test_servfail_is_returned_as_a_reply_and_never_cached(self):
        server = self.dns(ZONES)
        q = self.session(server)
        for _ in range(2):
            r = q.ask("broken.example.test", "TXT")
            self.assertAnswer(r, "SERVFAIL")
        self.assertEqual(server.count("broken.example.test", "TXT"), 2)
        self.assertEqual(self.finish(q)["entries"], 0)

    def test_a_silent_name_times_out_after_timeout_times_tries(self):
        server = self.dns(ZONES)
        q = self.session(server, timeout="0.4", retries="2")
        r = q.ask("silent.example.test", "TXT")
        self.assertEqual(r["result"], "timeout", r)
        self.assertEqual(r["length"], PC_DNS_TIMEOUT)
        # 3 tries of 0.4 s: 1.2 s (c-ares alone would wait 0.4+0.8+1.6)
        self.assertGreaterEqual(r["ms"], 1100, r)
        self.assertLess(r["ms"], 2500, r)
        self.assertEqual(server.count("silent.example.test", "TXT"), 3)

    def test_no_retries_means_one_try(self):
        server = self.dns(ZONES)
        q = self.session(server, timeout="0.3", retries="0")
        r = q.ask("silent.example.test", "A")
        self.assertEqual(r["length"], PC_DNS_TIMEOUT)
        self.assertGreaterEqual(r["ms"], 250, r)
        self.assertLess(r["ms"], 1500, r)
        self.assertEqual(server.count("silent.example.test", "A"), 1)

    def test_a_timeout_is_not_cached(self):
        server = self.dns(ZONES)
        q = self.session(server, timeout="0.2", retries="0")
        q.ask("silent.example.test", "A")
        q.ask("silent.example.test", "A")
        self.assertEqual(server.count("silent.example.test", "A"), 2)

    def test_a_malformed_name_is_a_local_error_and_asks_nobody(self):
        server = self.dns(ZONES)
        q = self.session(server)
        for name in ("a..example.test", "x" * 64 + ".example.test",
                     "hidden.onion"):
            r = q.ask(name, "A")
            self.assertEqual(r["length"], PC_DNS_ERROR, r)
        self.assertEqual(server.count(), 0)

    def test_a_short_buffer_gets_the_whole_length(self):
        server = self.dns(ZONES)
        q = self.session(server, args=["-b", "20"])
        r = q.ask("example.test", "TXT")
        self.assertEqual(r["copied"], 20, r)
        self.assertGreater(r["length"], 20, r)
        # and from the cache, the same
        r2 = q.ask("example.test", "TXT")
        self.assertEqual(r2["length"], r["length"])
        self.assertEqual(server.count("example.test", "TXT"), 1)


class TestCache(DNSTestCase):

    def test_a_second_query_is_answered_from_the_cache(self):
        server = self.dns(ZONES)
        q = self.session(server)
        first = q.ask("example.test", "TXT")
        second = q.ask("example.test", "TXT")
        self.assertEqual(first["answers"], second["answers"])
        self.assertEqual(server.count("example.test", "TXT"), 1)
        # another type of the same name is another question
        q.ask("example.test", "A")
        self.assertEqual(server.count("example.test", "A"), 1)
        stats = self.finish(q)
        self.assertEqual(stats["hits"], 1)
        self.assertEqual(stats["entries"], 2)

    def test_the_cache_ignores_case_and_a_trailing_dot(self):
        server = self.dns(ZONES)
        q = self.session(server)
        q.ask("example.test", "A")
        r = q.ask("EXAMPLE.Test.", "A")
        self.assertAnswer(r)
        self.assertEqual(server.count("example.test", "A"), 1)

    def test_an_answer_expires_with_its_ttl(self):
        server = self.dns({"short.example.test": [{"TTL": 1},
                                                  {"A": "192.0.2.9"}]})
        q = self.session(server)
        q.ask("short.example.test")
        q.ask("short.example.test")
        self.assertEqual(server.count("short.example.test", "A"), 1)
        time.sleep(2.1)
        r = q.ask("short.example.test")
        self.assertAnswer(r)
        self.assertEqual(server.count("short.example.test", "A"), 2)

    def test_the_smallest_ttl_of_the_answer_counts(self):
        server = self.dns({"two.example.test": [{"A": "192.0.2.1", "ttl": 600},
                                                {"A": "192.0.2.2", "ttl": 1}]})
        q = self.session(server)
        q.ask("two.example.test")
        time.sleep(2.1)
        q.ask("two.example.test")
        self.assertEqual(server.count("two.example.test", "A"), 2)

    def test_max_ttl_caps_a_long_ttl(self):
        server = self.dns({"long.example.test": [{"TTL": 86400},
                                                 {"A": "192.0.2.9"}]})
        q = self.session(server, max_ttl="1")
        q.ask("long.example.test")
        q.ask("long.example.test")
        self.assertEqual(server.count("long.example.test", "A"), 1)
        time.sleep(2.1)
        q.ask("long.example.test")
        self.assertEqual(server.count("long.example.test", "A"), 2)

    def test_nxdomain_is_cached_for_the_soa_minimum_then_asked_again(self):
        # the zone's SOA: TTL 3600, MINIMUM 1 -> kept 1 s (RFC 2308 5)
        server = self.dns({"neg.test": [
            {"SOA": ["ns.neg.test", "hostmaster.neg.test", 1, 3600, 600,
                     86400, 1], "ttl": 3600}]})
        q = self.session(server)
        for _ in range(3):
            self.assertAnswer(q.ask("nope.neg.test", "TXT"), "NXDOMAIN")
        self.assertEqual(server.count("nope.neg.test", "TXT"), 1)
        time.sleep(2.1)
        self.assertAnswer(q.ask("nope.neg.test", "TXT"), "NXDOMAIN")
        self.assertEqual(server.count("nope.neg.test", "TXT"), 2)

    def test_nodata_is_cached_for_the_soa_ttl_when_smaller(self):
        # SOA TTL 1, MINIMUM 3600 -> kept 1 s
        server = self.dns({"neg.test": [
            {"SOA": ["ns.neg.test", "hostmaster.neg.test", 1, 3600, 600,
                     86400, 3600], "ttl": 1},
            {"A": "192.0.2.3"}]})
        q = self.session(server)
        for _ in range(3):
            r = q.ask("neg.test", "TXT")
            self.assertAnswer(r, "NOERROR")
            self.assertEqual(r["answers"], [])
        self.assertEqual(server.count("neg.test", "TXT"), 1)
        time.sleep(2.1)
        q.ask("neg.test", "TXT")
        self.assertEqual(server.count("neg.test", "TXT"), 2)

    def test_negative_ttl_caps_the_soa(self):
        server = self.dns(ZONES, negative_ttl=3600)
        q = self.session(server, negative_ttl="1")
        q.ask("nope.example.test", "A")
        q.ask("nope.example.test", "A")
        self.assertEqual(server.count("nope.example.test", "A"), 1)
        time.sleep(2.1)
        q.ask("nope.example.test", "A")
        self.assertEqual(server.count("nope.example.test", "A"), 2)

    def test_a_negative_answer_without_soa_is_not_cached(self):
        server = self.dns(ZONES, soa=False)
        q = self.session(server)
        for _ in range(2):
            r = q.ask("nope.example.test", "A")
            self.assertAnswer(r, "NXDOMAIN")
            self.assertEqual(r["authority"], [])
            r = q.ask("example.test", "AAAA")
            self.assertAnswer(r, "NOERROR")
        self.assertEqual(server.count("nope.example.test", "A"), 2)
        self.assertEqual(server.count("example.test", "AAAA"), 2)

    def test_cache_size_bounds_the_entries_least_recently_used_first(self):
        zones = {"%s.example.test" % n: [{"A": "192.0.2.%d" % i}]
                 for i, n in enumerate("abcd", 1)}
        server = self.dns(zones)
        q = self.session(server, cache_size="3")
        for n in "abc":
            q.ask("%s.example.test" % n)
        q.ask("a.example.test")          # a is fresh again: b is the oldest
        q.ask("d.example.test")          # pushes b out
        q.ask("a.example.test")
        q.ask("c.example.test")
        q.ask("b.example.test")          # asked again
        self.assertEqual(server.count("a.example.test"), 1)
        self.assertEqual(server.count("c.example.test"), 1)
        self.assertEqual(server.count("b.example.test"), 2)
        stats = self.finish(q)
        self.assertEqual(stats["capacity"], 3)
        self.assertLessEqual(stats["entries"], 3)
        self.assertEqual(stats["evicted"], 2)

    def test_cache_size_0_turns_the_cache_off(self):
        server = self.dns(ZONES)
        q = self.session(server, cache_size="0")
        for _ in range(3):
            self.assertAnswer(q.ask("example.test", "TXT"))
        self.assertEqual(server.count("example.test", "TXT"), 3)
        self.assertFalse(self.finish(q)["cache"])


class TestTransport(DNSTestCase):

    def test_a_reply_too_large_for_udp_comes_over_tcp(self):
        strings = ["%03d" % i + "x" * 196 for i in range(10)]  # ~2 kB
        server = self.dns({"big.example.test": [{"TXT": strings}]})
        q = self.session(server)
        r = q.ask("big.example.test", "TXT")
        self.assertAnswer(r)
        self.assertGreater(r["length"], 2000)
        self.assertEqual(r["answers"][0]["data"], strings)
        self.assertEqual([p for _, _, p, _ in server.queries()],
                         ["udp", "tcp"])

    def test_a_server_on_a_non_default_port(self):
        port = free_port()
        server = self.dns(ZONES, port=port)
        self.assertNotEqual(port, 53)
        r = self.session("127.0.0.1:%d" % port).ask("example.test")
        self.assertAnswer(r)
        self.assertEqual(server.count("example.test", "A"), 1)

    def test_an_ipv6_server(self):
        if not has_ipv6():
            self.skipTest("no ::1")
        server = self.dns(ZONES, ipv6=True)
        r = self.session("[::1]:%d" % server.port).ask("example.test", "MX")
        self.assertAnswer(r)

    def test_a_silent_first_server_fails_over_to_the_second(self):
        silent = self.dns(ZONES, silent=True)
        good = self.dns(ZONES)
        q = self.session([silent, good], timeout="0.5", retries="0")
        r = q.ask("example.test", "TXT")
        self.assertAnswer(r)
        self.assertGreaterEqual(r["ms"], 400, r)
        self.assertLess(r["ms"], 2000, r)
        self.assertEqual(silent.count("example.test", "TXT"), 1)
        self.assertEqual(good.count("example.test", "TXT"), 1)

    def test_every_silent_server_is_tried_in_every_round(self):
        one = self.dns(ZONES, silent=True)
        two = self.dns(ZONES, silent=True)
        q = self.session([one, two], timeout="0.3", retries="1")
        r = q.ask("example.test")
        self.assertEqual(r["length"], PC_DNS_TIMEOUT, r)
        # 0.3 s x 2 servers x 2 tries
        self.assertGreaterEqual(r["ms"], 1100, r)
        self.assertLess(r["ms"], 2600, r)
        self.assertEqual(one.count(), 2)
        self.assertEqual(two.count(), 2)

    def test_a_port_without_a_server_gives_up_at_once(self):
        port = free_port()   # nothing listens: ICMP port unreachable
        q = self.session("127.0.0.1:%d" % port, timeout="2", retries="2")
        r = q.ask("example.test")
        self.assertEqual(r["length"], PC_DNS_TIMEOUT, r)
        self.assertLess(r["ms"], 1000, r)


class TestConcurrency(DNSTestCase):

    def test_many_threads_get_their_own_answers(self):
        zones = {"h%d.example.test" % i: [{"A": "10.0.%d.%d" % (i // 250,
                                                                 i % 250)}]
                 for i in range(400)}
        server = self.dns(zones)
        start = time.monotonic()
        results, stats = self.run_batch(
            server, [("h%d.example.test" % i, "A") for i in range(400)],
            args=["-j", "32"])
        elapsed = time.monotonic() - start
        self.assertEqual(len(results), 400)
        for r in results:
            i = int(r["name"][1:].split(".")[0])
            self.assertEqual([a["data"] for a in r["answers"]],
                             ["10.0.%d.%d" % (i // 250, i % 250)], r)
        self.assertEqual(len({r["thread"] for r in results}) > 1, True)
        self.assertEqual(server.count(), 400)
        self.assertEqual(stats["entries"], 400)
        print("\n  400 names over 32 threads: %.2f s" % elapsed,
              file=sys.stderr)

    def test_many_threads_asking_one_name_share_the_cache(self):
        server = self.dns(ZONES)
        results, stats = self.run_batch(
            server, [("example.test", "TXT")], args=["-j", "32", "-r", "500"])
        self.assertEqual(len(results), 500)
        self.assertTrue(all(r["answers"][0]["data"] ==
                            ["v=spf1 ip4:192.0.2.0/24 -all"] for r in results))
        # only the threads that missed together asked
        self.assertLessEqual(server.count(), 32)
        self.assertEqual(stats["hits"] + stats["misses"], 500)
        hits = sorted(r["ms"] for r in results)
        print("\n  cache hit, median: %.1f us" % (hits[len(hits) // 2] * 1000),
              file=sys.stderr)

    def test_threads_time_out_independently(self):
        # a silent name must not hold up the others' answers
        server = self.dns(ZONES)
        questions = [("silent.example.test", "A")] * 4 + \
            [("example.test", "A"), ("example.test", "TXT"),
             ("example.test", "MX"), ("mx.example.test", "A")] * 10
        results, _ = self.run_batch(server, questions, args=["-j", "8"],
                                    timeout="0.5", retries="0",
                                    cache_size="0")
        fast = [r for r in results if r["name"] != "silent.example.test"]
        self.assertTrue(all(r["result"] == "reply" for r in fast))
        self.assertLess(max(r["ms"] for r in fast), 400)
        slow = [r for r in results if r["name"] == "silent.example.test"]
        self.assertTrue(all(r["length"] == PC_DNS_TIMEOUT for r in slow))


class TestOpenSPFZones(DNSTestCase):
    """The DNS server speaks the zonedata of the openspf RFC 7208 suite."""

    def suite(self):
        try:
            import yaml  # noqa: F401
        except ImportError:
            yaml = None
        harness.skip_unless_tool("python3-yaml", yaml is not None)
        if not os.path.exists(SPF_SUITE):
            self.skipTest("no %s" % SPF_SUITE)
        return load_openspf(SPF_SUITE)

    def scenario(self, suite, name):
        for s in suite:
            if name in s["zones"]:
                return s["zones"]
        self.fail("no scenario serves %s" % name)

    def test_every_scenario_loads(self):
        suite = self.suite()
        self.assertGreaterEqual(len(suite), 15)
        for s in suite:
            DNSServer(s["zones"])   # parses every record, or raises

    def test_record_selection_zones_are_served_as_the_suite_means(self):
        suite = self.suite()
        server = self.dns(self.scenario(suite, "spftimeout.example.net"))
        q = self.session(server, timeout="0.2", retries="0")
        r = q.ask("both.example.net", "TXT")
        self.assertEqual(r["answers"][0]["data"], ["v=spf1 -all"])
        r = q.ask("both.example.net", "SPF")
        self.assertEqual(r["answers"][0]["type"], "SPF")
        # TXT: NONE -> no TXT, and no TXT made from the SPF record
        r = q.ask("spfonly.example.net", "TXT")
        self.assertAnswer(r)
        self.assertEqual(r["answers"], [])
        # a TIMEOUT after the TXT record: TXT answers, SPF times out
        self.assertAnswer(q.ask("spftimeout.example.net", "TXT"))
        self.assertEqual(q.ask("spftimeout.example.net", "SPF")["length"],
                         PC_DNS_TIMEOUT)
        self.assertEqual(q.ask("txttimeout.example.net", "TXT")["length"],
                         PC_DNS_TIMEOUT)
        self.assertAnswer(q.ask("txttimeout.example.net", "SPF"))
        self.assertEqual(q.ask("alltimeout.example.net", "TXT")["length"],
                         PC_DNS_TIMEOUT)

    def test_spf_records_are_served_as_txt_too_with_their_strings(self):
        suite = self.suite()
        server = self.dns(self.scenario(suite, "null.example.com"))
        q = self.session(server, timeout="0.2", retries="0")
        r = q.ask("null.example.com", "TXT")
        self.assertIn(["v=spf1 ip4:", "192.0.2.5 -all"],
                      [a["data"] for a in r["answers"]])
        server = self.dns(self.scenario(suite, "example3.com"))
        q = self.session(server, timeout="0.2", retries="0")
        r = q.ask("example3.com", "MX")
        self.assertEqual(r["answers"][0]["data"], [0, "mail.example1.com"])
        r = q.ask("example2.com", "TXT")
        self.assertEqual(r["answers"][0]["data"], ["v=spf1", "mx"])


class TestConfig(DNSTestCase):
    """[dns] errors through portcullis -t: FILE:LINE: [dns] key: message."""

    def setUp(self):
        super().setUp()
        if not os.access(PORTCULLIS_BIN, os.X_OK):
            self.skipTest("daemon not built")

    def check(self, dns_lines):
        text = config_text(self.dir, {}) + "".join(
            l + "\n" for l in dns_lines)
        path = os.path.join(self.dir, "check.conf")
        with open(path, "w") as f:
            f.write(text)
        r = subprocess.run([PORTCULLIS_BIN, "-t", "-c", path],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           universal_newlines=True, timeout=30)
        first = text.split("\n").index("[dns]") + 2   # line of dns_lines[0]
        return r, path, first

    def assertRefused(self, line, key):
        r, path, first = self.check([line])
        self.assertNotEqual(r.returncode, 0, "accepted: %s" % line)
        self.assertRegex(r.stderr, r"%s:%d: \[dns\] %s: \S" % (
            re.escape(path), first, re.escape(key)))
        return r.stderr

    def test_a_dns_section_with_every_key_is_accepted(self):
        r, _, _ = self.check([
            "servers = 127.0.0.1:5353, [::1]:53, 192.0.2.53:53",
            "timeout = 0.25", "retries = 0", "cache_size = 50000",
            "max_ttl = 3600", "negative_ttl = 60"])
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_no_dns_section_uses_the_system_servers(self):
        r, _, _ = self.check([])
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_bad_timeouts_are_refused(self):
        for value in ("abc", "0", "0.0001", "1.2345", ".5", "5s", "-1",
                      "301"):
            self.assertRefused("timeout = %s" % value, "timeout")

    def test_bad_servers_are_refused(self):
        for value in ("localhost:53", "127.0.0.1", "[::1]", "::1:53",
                      "127.0.0.1:0", "127.0.0.1:99999", "127.0.0.1:53, ,"):
            self.assertRefused("servers = %s" % value, "servers")
        err = self.assertRefused("servers = ns.example.test:53", "servers")
        self.assertIn("IP address", err)

    def test_bad_numbers_are_refused(self):
        self.assertRefused("retries = 11", "retries")
        self.assertRefused("cache_size = lots", "cache_size")
        self.assertRefused("max_ttl = -5", "max_ttl")
        self.assertRefused("negative_ttl = 1h", "negative_ttl")

    def test_an_unknown_key_is_refused(self):
        self.assertRefused("nameserver = 127.0.0.1:53", "nameserver")


class TestDaemon(ProxyTestCase):
    """The daemon configures the resolver in the master and each worker
    before loading filters (dns_init), and still serves and stops cleanly."""

    def test_the_daemon_runs_with_a_dns_section(self):
        server = DNSServer(ZONES).start()
        self.addCleanup(server.stop)
        cap = self.start_capture()
        proxy = self.start_proxy(
            backend_port=cap.port,
            extra="\n[dns]\nservers = %s\ntimeout = 0.5\n" % server.address)
        c = self.client(proxy.port)
        self.assertCode(c.ehlo(), 250)
        c.cmd("QUIT")
        # the master (checking the chain) and the worker, at debug level
        line = "dns: servers %s, timeout 500 ms, 3 tries" % server.address
        self.assertTrue(harness.wait_for(
            lambda: proxy.stderr().count(line) >= 2, 5), proxy.stderr())


if __name__ == "__main__":
    unittest.main()
