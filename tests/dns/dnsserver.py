#!/usr/bin/python3
"""
dnsserver.py - a real DNS server on a loopback port, for the tests

Built on Debian's python3-dnslib (wire format only; the serving is here).
It serves UDP and TCP on 127.0.0.1 (and [::1] with ipv6=True), on one port,
from zones given as a dict, and never forwards anything: no test that uses
it can reach the Internet.

    from dnsserver import DNSServer
    dns = DNSServer({
        "example.com": [{"TXT": "v=spf1 -all"}, {"A": "192.0.2.1"},
                        {"MX": [10, "mx.example.com"]}],
        "slow.example.com": ["TIMEOUT"],
        "broken.example.com": ["SERVFAIL"],
        "short.example.com": [{"TTL": 1}, {"A": "192.0.2.2"}],
    }).start()
    ... "servers = 127.0.0.1:%d" % dns.port ...
    dns.count("example.com", "TXT")   # queries received for it
    dns.stop()

Zones: a name (any case, trailing dot or not) -> a list of entries:

    {"A": "192.0.2.1"}               also a list of addresses: one RR each
    {"AAAA": "2001:db8::1"}
    {"TXT": "v=spf1 -all"}           one record of one string (longer than
                                     255 octets: cut into several strings)
    {"TXT": ["v=spf1 ", "-all"]}     one record of several strings
    {"SPF": ...}                     as TXT, but type 99
    {"MX": [10, "mx.example.com"]}
    {"PTR": "host.example.com"}, {"CNAME": ...}, {"NS": ...}
    {"SOA": ["ns.example.com", "hostmaster.example.com",
             serial, refresh, retry, expire, minimum]}
    any record may carry {"ttl": N} beside its type
    {"TTL": N}                       the TTL of this name's records
    "TIMEOUT"                        no answer at all, for every type that
                                     has no record listed before it (as in
                                     the openspf suite's zonedata)
    "SERVFAIL"                       likewise, but answer SERVFAIL
    "NOSOA"                          negative answers for this name carry no
                                     SOA (so RFC 2308 says: do not cache)

Answers: the records of the type; a CNAME is followed inside the zones
(up to 8 links; a target that is not in the zones ends in NXDOMAIN). A
name that is not in the zones is NXDOMAIN, a name without the type is
NODATA (NOERROR, no answer); both carry a SOA in the authority section:
the zone's own (the closest enclosing name with a SOA entry), else one
made up for the last two labels, whose TTL and MINIMUM are negative_ttl.
A reply too large for UDP (512 octets, or the client's EDNS size) goes
out truncated (TC, the question kept, no records), so the client asks
again over TCP.

Every query is counted per (name, type), UDP or TCP, answered or not,
so a test proves a cache hit by a count that did not move. silent=True
makes a server that receives and counts but never answers.

openspf_zones(zonedata) turns the zonedata of one scenario of the openspf
RFC 7208 test suite (../shared/testdata/spf/rfc7208-tests.yml) into this
format; load_openspf(path) reads the whole suite (needs python3-yaml).

CLI, for manual use:

    dnsserver.py --port 5353 --zone zones.json [--zone more.json]
    dnsserver.py --port 5353 --openspf rfc7208-tests.yml [--scenario N]
"""

import argparse
import collections
import json
import socket
import socketserver
import struct
import sys
import threading

from dnslib import (AAAA, CNAME, MX, NS, PTR, QTYPE, RCODE, RR, SOA, TXT, A,
                    DNSHeader, DNSRecord)

__all__ = ["DNSServer", "openspf_zones", "load_openspf"]

TYPES = {"A": QTYPE.A, "AAAA": QTYPE.AAAA, "TXT": QTYPE.TXT, "SPF": 99,
         "MX": QTYPE.MX, "PTR": QTYPE.PTR, "CNAME": QTYPE.CNAME,
         "NS": QTYPE.NS, "SOA": QTYPE.SOA}
FLAGS = ("TIMEOUT", "SERVFAIL", "NOSOA")
MAX_CNAME_CHAIN = 8


def _key(name):
    """A name as the zone table keys it: lower case, no trailing dot; from
    a DNSLabel its raw labels (str() would escape a space as \\032)."""
    labels = getattr(name, "label", None)
    if labels is not None:
        return b".".join(labels).decode("utf-8", "surrogateescape").lower().rstrip(".")
    return str(name).lower().rstrip(".")


def _type_name(qtype):
    try:
        return QTYPE[qtype]
    except Exception:
        return str(qtype)


def _strings(value):
    """TXT/SPF data: a list of byte strings of at most 255 octets."""
    if isinstance(value, (str, bytes)):
        value = [value]
    out = []
    for s in value:
        if isinstance(s, str):
            s = s.encode("utf-8")
        elif not isinstance(s, bytes):
            s = str(s).encode("utf-8")
        if not s:
            out.append(s)
        for i in range(0, len(s), 255):
            out.append(s[i:i + 255])
    return out


def _rdatas(rtype, value):
    """The dnslib rdata objects of one zone entry."""
    if rtype in ("A", "AAAA"):
        cls = A if rtype == "A" else AAAA
        values = value if isinstance(value, list) else [value]
        return [cls(str(v)) for v in values]
    if rtype in ("TXT", "SPF"):
        return [TXT(_strings(value))]
    if rtype == "MX":
        pref, host = value
        return [MX(str(host), int(pref))]
    if rtype == "PTR":
        return [PTR(str(value))]
    if rtype == "CNAME":
        return [CNAME(str(value))]
    if rtype == "NS":
        return [NS(str(value))]
    if rtype == "SOA":
        mname, rname = value[0], value[1]
        times = tuple(int(t) for t in value[2:7])
        if len(times) != 5:
            raise ValueError("SOA needs mname, rname and 5 numbers")
        return [SOA(str(mname), str(rname), times)]
    raise ValueError("unknown record type %r" % rtype)


class _Name:
    """One name of the zones, normalised."""

    def __init__(self, name, entries, default_ttl):
        self.name = _key(name)
        self.ttl = default_ttl
        self.nosoa = False
        # ("rr", qtype, rdata, ttl or None) or ("TIMEOUT",) / ("SERVFAIL",)
        self.entries = []
        for e in entries:
            if isinstance(e, str):
                flag = e.upper()
                if flag not in FLAGS:
                    raise ValueError("%s: unknown entry %r" % (name, e))
                if flag == "NOSOA":
                    self.nosoa = True
                else:
                    self.entries.append((flag,))
                continue
            e = dict(e)
            if "TTL" in e and len(e) == 1:
                self.ttl = int(e["TTL"])
                continue
            ttl = e.pop("ttl", None)
            if len(e) != 1:
                raise ValueError("%s: one type per entry: %r" % (name, e))
            (rtype, value), = e.items()
            rtype = rtype.upper()
            if rtype not in TYPES:
                raise ValueError("%s: unknown type %r" % (name, rtype))
            for rdata in _rdatas(rtype, value):
                self.entries.append(("rr", TYPES[rtype], rdata, ttl))

    def records(self, qtype):
        """(outcome, [(qtype, rdata, ttl)]) for a question of this type:
        outcome is "answer", "TIMEOUT" or "SERVFAIL"."""
        found = []
        for e in self.entries:
            if e[0] != "rr":
                # openspf: a TIMEOUT after a record of the type is moot
                if not found:
                    return e[0], []
                break
            _, rtype, rdata, ttl = e
            if rtype == qtype or qtype == QTYPE.ANY:
                found.append((rtype, rdata, self.ttl if ttl is None else ttl))
        return "answer", found

    def cname(self):
        for e in self.entries:
            if e[0] == "rr" and e[1] == QTYPE.CNAME:
                return e[2], self.ttl if e[3] is None else e[3]
        return None


class DNSServer:
    """A DNS server on 127.0.0.1 (and ::1 with ipv6=True), UDP and TCP on
    one port (port=None: a free one). See the module's doc string."""

    def __init__(self, zones=None, port=None, ipv6=False, ttl=300,
                 negative_ttl=300, silent=False, soa=True, host="127.0.0.1"):
        self.port = port
        self.ipv6 = ipv6
        self.host = host
        self.default_ttl = ttl
        self.negative_ttl = negative_ttl
        self.silent = silent
        self.soa = soa
        self._lock = threading.Lock()
        self._names = {}
        self._counts = collections.Counter()
        self.log = []        # (name, type, "udp"/"tcp", rcode or None)
        self._servers = []
        self._threads = []
        for name, entries in (zones or {}).items():
            self.set(name, entries)

    # --- zones and counts ------------------------------------------------

    def set(self, name, entries):
        """Add or replace a name's entries (while running, too)."""
        n = _Name(name, entries, self.default_ttl)
        with self._lock:
            self._names[n.name] = n

    def remove(self, name):
        with self._lock:
            self._names.pop(_key(name), None)

    def count(self, name=None, qtype=None):
        """Queries received for name (and type, a name like "TXT" or a
        number); with no name, all of them."""
        with self._lock:
            if name is None:
                return sum(self._counts.values())
            if qtype is None:
                return sum(v for (n, _), v in self._counts.items()
                           if n == _key(name))
            t = TYPES.get(str(qtype).upper(), qtype)
            return self._counts[(_key(name), int(t))]

    def queries(self, proto=None):
        with self._lock:
            return [q for q in self.log if proto is None or q[2] == proto]

    def reset_counts(self):
        with self._lock:
            self._counts.clear()
            self.log = []

    # --- answers ---------------------------------------------------------

    def _soa_for(self, qname):
        """The SOA RR for a negative answer about qname, or None."""
        labels = _key(qname).split(".")
        for i in range(len(labels)):
            n = self._names.get(".".join(labels[i:]))
            if n is None:
                continue
            for e in n.entries:
                if e[0] == "rr" and e[1] == QTYPE.SOA:
                    ttl = n.ttl if e[3] is None else e[3]
                    return RR(n.name + ".", QTYPE.SOA, rdata=e[2], ttl=ttl)
        apex = ".".join(labels[-2:]) if len(labels) >= 2 else labels[0]
        soa = SOA("ns.%s." % apex, "hostmaster.%s." % apex,
                  (1, 3600, 600, 86400, self.negative_ttl))
        return RR(apex + ".", QTYPE.SOA, rdata=soa, ttl=self.negative_ttl)

    def answer(self, request):
        """The reply to a parsed request, or None for no reply at all."""
        q = request.q
        qtype = q.qtype
        reply = request.reply()
        with self._lock:
            name = self._names.get(_key(q.qname))
            owner = q.qname
            seen = set()
            while True:
                if name is None:
                    reply.header.rcode = RCODE.NXDOMAIN
                    negative = True
                    break
                cname = name.cname() if qtype != QTYPE.CNAME else None
                if cname is not None:
                    if name.name in seen or len(seen) >= MAX_CNAME_CHAIN:
                        negative = False
                        break
                    seen.add(name.name)
                    target, ttl = cname
                    reply.add_answer(RR(owner, QTYPE.CNAME, rdata=target,
                                        ttl=ttl))
                    owner = target.label
                    name = self._names.get(_key(target.label))
                    continue
                outcome, records = name.records(qtype)
                if outcome == "TIMEOUT":
                    return None
                if outcome == "SERVFAIL":
                    reply = request.reply()
                    reply.header.rcode = RCODE.SERVFAIL
                    return reply
                for rtype, rdata, ttl in records:
                    reply.add_answer(RR(owner, rtype, rdata=rdata, ttl=ttl))
                negative = not records
                break
            first = self._names.get(_key(q.qname))
            nosoa = (name and name.nosoa) or (first and first.nosoa)
            if negative and self.soa and not nosoa:
                reply.add_auth(self._soa_for(owner))
        return reply

    def _handle(self, data, proto):
        """Bytes in, bytes out (or None): count, answer, truncate."""
        try:
            request = DNSRecord.parse(data)
        except Exception:
            return None
        if not request.questions:
            return None
        q = request.q
        with self._lock:
            self._counts[(_key(q.qname), int(q.qtype))] += 1
        if self.silent:
            self._log(q, proto, None)
            return None
        reply = self.answer(request)
        self._log(q, proto, None if reply is None else reply.header.rcode)
        if reply is None:
            return None
        out = reply.pack()
        if proto == "udp" and len(out) > self._udp_limit(request):
            short = DNSRecord(DNSHeader(id=reply.header.id,
                                        bitmap=reply.header.bitmap, tc=1),
                              q=request.q)
            out = short.pack()
        return out

    @staticmethod
    def _udp_limit(request):
        for rr in request.ar:
            if rr.rtype == QTYPE.OPT:
                return max(512, min(int(rr.rclass), 65535))
        return 512

    def _log(self, q, proto, rcode):
        with self._lock:
            self.log.append((_key(q.qname), _type_name(q.qtype), proto, rcode))

    # --- sockets ---------------------------------------------------------

    def start(self):
        """Bind UDP and TCP (same port) and serve in threads."""
        owner = self

        class UDPHandler(socketserver.BaseRequestHandler):
            def handle(self):
                data, sock = self.request
                out = owner._handle(data, "udp")
                if out is not None:
                    sock.sendto(out, self.client_address)

        class TCPHandler(socketserver.BaseRequestHandler):
            def handle(self):
                sock = self.request
                sock.settimeout(30)
                try:
                    while True:
                        head = self._read(sock, 2)
                        if head is None:
                            return
                        data = self._read(sock, struct.unpack("!H", head)[0])
                        if data is None:
                            return
                        out = owner._handle(data, "tcp")
                        if out is not None:
                            sock.sendall(struct.pack("!H", len(out)) + out)
                except OSError:
                    return

            @staticmethod
            def _read(sock, n):
                buf = b""
                while len(buf) < n:
                    chunk = sock.recv(n - len(buf))
                    if not chunk:
                        return None
                    buf += chunk
                return buf

        hosts = [(socket.AF_INET, self.host)]
        if self.ipv6:
            hosts.append((socket.AF_INET6, "::1"))
        for attempt in range(50):
            servers = []
            port = self.port or 0
            try:
                for family, host in hosts:
                    for base, handler in (
                            (socketserver.ThreadingUDPServer, UDPHandler),
                            (socketserver.ThreadingTCPServer, TCPHandler)):
                        cls = type("S", (base,), {
                            "address_family": family,
                            # TIME_WAIT only; on UDP it would share ports
                            "allow_reuse_address":
                                base is socketserver.ThreadingTCPServer,
                            "daemon_threads": True})
                        s = cls((host, port), handler)
                        servers.append(s)
                        port = s.server_address[1]
            except OSError:
                for s in servers:
                    s.server_close()
                if self.port:
                    raise
                continue
            self.port = port
            self._servers = servers
            break
        else:
            raise OSError("no free port for UDP and TCP together")
        for s in self._servers:
            t = threading.Thread(target=s.serve_forever,
                                 kwargs={"poll_interval": 0.05}, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self):
        for s in self._servers:
            s.shutdown()
            s.server_close()
        for t in self._threads:
            t.join(5)
        self._servers = []
        self._threads = []

    @property
    def address(self):
        """As the [dns] servers setting writes it."""
        return "%s:%d" % (self.host, self.port)

    def __enter__(self):
        return self.start()

    def __exit__(self, *a):
        self.stop()


# --- the openspf test suite --------------------------------------------------

def openspf_zones(zonedata):
    """The zonedata of one openspf scenario in DNSServer's format, read as
    the suite's own drivers read it (pyspf's testspf.py): names in lower
    case; "NONE" entries dropped ("TXT: NONE" stands for "no TXT"); SPF
    records served as TXT too, unless the name has TXT entries of its own
    (NONE included), and after its other entries (so after a TIMEOUT)."""
    zones = {}
    for name, records in (zonedata or {}).items():
        out, generated, has_txt = [], [], False
        for r in records:
            if isinstance(r, str):
                out.append(r)
                continue
            for rtype, value in r.items():
                rtype = rtype.upper()
                if rtype == "TXT":
                    has_txt = True
                elif rtype == "SPF" and value != "NONE":
                    generated.append({"TXT": value})
                if value == "NONE":
                    continue
                out.append({rtype: value})
        if not has_txt:
            out.extend(generated)
        zones[_key(name)] = out
    return zones


def load_openspf(path):
    """[{"description", "tests", "zones"}] for every scenario of a suite
    file such as rfc7208-tests.yml (needs python3-yaml)."""
    import yaml
    with open(path, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    return [{"description": d.get("description", ""),
             "tests": d.get("tests", {}),
             "zones": openspf_zones(d.get("zonedata"))} for d in docs]


def main(argv=None):
    ap = argparse.ArgumentParser(description="Serve test zones on loopback.")
    ap.add_argument("--port", type=int, default=5353)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--ipv6", action="store_true", help="also serve on ::1")
    ap.add_argument("--zone", action="append", default=[],
                    help="a JSON file: {name: [entries]}")
    ap.add_argument("--openspf", help="an openspf suite (YAML)")
    ap.add_argument("--scenario", type=int, action="append",
                    help="serve this scenario of --openspf (from 0); "
                         "default all of them")
    ap.add_argument("--ttl", type=int, default=300)
    ap.add_argument("--negative-ttl", type=int, default=300)
    args = ap.parse_args(argv)
    zones = {}
    for path in args.zone:
        with open(path, encoding="utf-8") as f:
            zones.update(json.load(f))
    if args.openspf:
        suite = load_openspf(args.openspf)
        for i, s in enumerate(suite):
            if args.scenario is None or i in args.scenario:
                zones.update(s["zones"])
    server = DNSServer(zones, port=args.port, ipv6=args.ipv6, ttl=args.ttl,
                       negative_ttl=args.negative_ttl, host=args.host)
    server.start()
    print("serving %d names on %s (UDP and TCP)%s" % (
        len(zones), server.address, " and [::1]" if args.ipv6 else ""),
        flush=True)
    seen = 0
    try:
        while True:
            threading.Event().wait(0.5)
            log = server.queries()
            for name, qtype, proto, rcode in log[seen:]:
                print("%s %s %s -> %s" % (proto, name, qtype,
                      "no answer" if rcode is None else RCODE[rcode]),
                      flush=True)
            seen = len(log)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
