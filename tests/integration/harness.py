"""
harness.py - test harness for the Portcullis integration tests

Everything here runs on loopback only and every wait is bounded.

  free_port()           a free TCP port on 127.0.0.1 (and ::1)
  Postfix               a private Postfix instance (virtual Maildir delivery
                        for alice, bob, carol @ example.test), run as root
  Sink                  Postfix's smtp-sink with arbitrary options and a
                        dump directory (one file per completed transaction)
  Exim, OpenSMTPD       Debian's Exim and OpenSMTPD (unpacked by
                        tests/install-deps, run in a mount namespace) as a
                        backend storing to Maildirs or a client relaying
                        to Portcullis with STARTTLS required
  TestCA                a test CA and a server certificate (openssl)
  Portcullis            the daemon under test: config from kwargs, start,
                        decisions, stop (non-zero exit / sanitizer report
                        is a test failure)
  SMTPClient            a raw SMTP client over a socket for precise tests
  run_swaks(), run_smtp_source()
  ProxyTestCase         unittest.TestCase base class wiring all of the above
                        with cleanups
  skip_unless_tool()    the one honest skip: an external tool or package
                        that is not installed (any other skip fails in CI)
  require_config()      portcullis -t must take a module's configuration:
                        a refusal is a failure, never a skip
  join_threads()        join with one deadline, then assert they ended
  main()                the runner tests/run-integration uses: counts every
                        test from its own result, prints the last line

Environment:
  PORTCULLIS_BIN        the daemon (default: <project>/proxy/portcullis)
  PORTCULLIS_TEST_KEEP  if set, temporary directories are kept (debugging)
  PORTCULLIS_PEERS_ROOT where Exim and OpenSMTPD were unpacked (default:
                        <project>/build-peers/root, tests/install-deps)
  CI                    "true": a skip that does not name a missing tool
                        (skip_unless_tool) counts as a failure
"""

import errno
import glob
import json
import os
import pwd
import grp
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import sys
import threading
import time
import traceback
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
PROJECT = os.path.abspath(os.path.join(HERE, "..", ".."))
PORTCULLIS_BIN = os.environ.get("PORTCULLIS_BIN") or os.path.join(
    PROJECT, "proxy", "portcullis")
# The build tree the daemon under test comes from (tests/run builds
# outside the source tree): its filters, test plugins and tools.
BUILD = os.path.dirname(os.path.dirname(os.path.abspath(PORTCULLIS_BIN)))
KEEP = bool(os.environ.get("PORTCULLIS_TEST_KEEP"))

DOMAIN = "example.test"
USERS = ("alice", "bob", "carol")
# Files are handed to unprivileged programs (smtp-sink, virtual(8)) as
# this user.
UNPRIV_USER = "nobody"

CRLF = b"\r\n"


class HarnessError(Exception):
    pass


# Every skip that is allowed in CI starts with this: a test may only step
# aside for an external tool or package that is not installed, never for
# what the build should have made or a configuration the daemon refused.
TOOL_SKIP = "missing tool: "


def in_ci():
    """Whether this is a CI run (env CI=true, as .ci/run runs): then a
    skip that does not name a missing tool is a failure."""
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def skip_unless_tool(tool, present=None):
    """Skip the test (or class, or module) unless the external tool is
    installed: an executable on PATH, or, with present given, whatever
    present says (a Python package, named by its Debian package)."""
    if present is None:
        present = shutil.which(tool) is not None
    if not present:
        raise unittest.SkipTest(TOOL_SKIP + tool)


def require_config(p, text, what):
    """portcullis -t on text (Portcullis p) must succeed: a configuration
    the daemon refuses is a failure of the tests that need it."""
    r = p.check_config(text)
    if r.returncode != 0:
        raise AssertionError(
            "portcullis -t refused the configuration of %s (exit %d):\n%s"
            % (what, r.returncode,
               (r.stderr + r.stdout).decode(errors="replace")[-2000:]))


# ---------------------------------------------------------------------------
# small helpers

def wait_for(predicate, timeout=10.0, interval=0.05):
    """Call predicate until it returns a true value (returned) or timeout
    elapses (then the last value, false, is returned)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def join_threads(threads, timeout):
    """Join threads within one deadline of timeout seconds; an
    AssertionError names the ones still running."""
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    alive = [t.name for t in threads if t.is_alive()]
    if alive:
        raise AssertionError("threads still running after %.0f s: %s"
                             % (timeout, ", ".join(alive)))


_ports_lock = threading.Lock()
_ports_given = set()


def free_port():
    """A TCP port free on 127.0.0.1 and ::1, never handed out twice by
    this process."""
    with _ports_lock:
        for _ in range(200):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            s.close()
            if port in _ports_given:
                continue
            if has_ipv6():
                try:
                    s6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
                    s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    s6.bind(("::1", port))
                    s6.close()
                except OSError:
                    continue
            _ports_given.add(port)
            return port
    raise HarnessError("no free port found")


_ipv6 = None


def has_ipv6():
    global _ipv6
    if _ipv6 is None:
        try:
            s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            s.bind(("::1", 0))
            s.close()
            _ipv6 = True
        except OSError:
            _ipv6 = False
    return _ipv6


def _listening_ports():
    """Ports in LISTEN state on this host (from /proc/net/tcp{,6}).
    Used to wait for a server without connecting to it (a probe
    connection would show up in the logs under test)."""
    ports = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if len(fields) > 3 and fields[3] == "0A":
                        ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        except OSError:
            pass
    return ports


def is_listening(port):
    return port in _listening_ports()


def wait_listening(port, timeout=15.0, proc=None):
    """Wait until something listens on port; False on timeout or when proc
    (a Popen) exits first."""
    def ready():
        if proc is not None and proc.poll() is not None:
            return "exited"
        return is_listening(port)
    r = wait_for(ready, timeout)
    return r is True


def unread_bytes(local_port, remote_port):
    """The bytes waiting in the receive queue of the loopback socket
    127.0.0.1:local_port <- remote_port (from /proc/net/tcp: rx_queue),
    None when there is no such connection."""
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                fields = line.split()
                if (int(fields[1].rsplit(":", 1)[1], 16) == local_port and
                        int(fields[2].rsplit(":", 1)[1], 16) == remote_port):
                    return int(fields[4].split(":")[1], 16)
    except OSError:
        pass
    return None


def children(pid, anvil=False):
    """Process ids whose parent is pid: the master's workers (its anvil,
    named pc-anvil, only with anvil=True)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                comm, fields = f.read().rsplit(")", 1)
        except OSError:
            continue
        fields = fields.split()
        if int(fields[1]) == pid and (comm.endswith("(pc-anvil") == anvil):
            out.append(int(entry))
    return out


def port_accepts(port, host="127.0.0.1", timeout=1.0):
    try:
        socket.create_connection((host, port), timeout).close()
        return True
    except OSError:
        return False


def make_tempdir(prefix):
    d = tempfile.mkdtemp(prefix=prefix)
    os.chmod(d, 0o755)
    return d


def remove_tree(path):
    if path and os.path.isdir(path) and not KEEP:
        shutil.rmtree(path, ignore_errors=True)


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def crlf_to_lf(data):
    return data.replace(b"\r\n", b"\n")


def lf_to_crlf(data):
    return re.sub(rb"(?<!\r)\n", b"\r\n", data)


_msg_counter = [0]


def make_message(subject="test", body=None, sender="alice@" + DOMAIN,
                 to="bob@" + DOMAIN, extra_headers=(), eight_bit=False):
    """A well-formed RFC 5322 message (bytes, CRLF line ends, no final
    terminator) with a unique Message-ID."""
    _msg_counter[0] += 1
    n = _msg_counter[0]
    mid = "<%d.%d.%f@client.%s>" % (os.getpid(), n, time.time(), DOMAIN)
    if body is None:
        body = b"Hello,\r\n\r\nthis is test message %d.\r\n-- \r\nThe tests\r\n" % n
    elif isinstance(body, str):
        body = body.encode("utf-8")
    headers = [
        "From: <%s>" % sender,
        "To: <%s>" % to,
        "Subject: %s" % subject,
        "Date: Mon, 02 Mar 2026 10:00:00 +0000",
        "Message-ID: %s" % mid,
    ]
    headers.extend(extra_headers)
    if eight_bit:
        headers += ["MIME-Version: 1.0",
                    "Content-Type: text/plain; charset=utf-8",
                    "Content-Transfer-Encoding: 8bit"]
    head = "".join(h + "\r\n" for h in headers).encode("utf-8")
    return head + b"\r\n" + body


def dot_stuff(message):
    """Dot-stuff a CRLF message and append the end-of-data marker."""
    out = []
    for line in message.split(b"\r\n"):
        out.append(b"." + line if line.startswith(b".") else line)
    data = b"\r\n".join(out)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


def split_header(message):
    """(header lines list, body) of a message with LF or CRLF line ends."""
    m = message.replace(b"\r\n", b"\n")
    head, sep, body = m.partition(b"\n\n")
    return head.split(b"\n"), body


def header_fields(message):
    """[(name-lowercase, full-field-bytes)] of the header, unfolded lines
    kept with their continuation lines."""
    lines, _ = split_header(message)
    fields = []
    for line in lines:
        if line[:1] in (b" ", b"\t") and fields:
            name, val = fields[-1]
            fields[-1] = (name, val + b"\n" + line)
        else:
            fields.append((line.split(b":", 1)[0].strip().lower(), line))
    return fields


# ---------------------------------------------------------------------------
# raw SMTP client

class Reply:
    """A complete SMTP reply."""

    def __init__(self, lines):
        self.lines = lines                  # decoded lines, no CRLF
        self.code = int(lines[-1][:3])
        m = re.match(r"\d{3}[ -](\d\.\d{1,3}\.\d{1,3})\b", lines[0])
        self.enh = m.group(1) if m else None
        self.text = "\n".join(l[4:] for l in lines)

    @property
    def keywords(self):
        """EHLO keywords (upper case) -> parameter string."""
        kw = {}
        for line in self.lines[1:]:
            parts = line[4:].split(None, 1)
            if parts:
                kw[parts[0].upper()] = parts[1] if len(parts) > 1 else ""
        return kw

    def __repr__(self):
        return "Reply(%r)" % "\\n".join(self.lines)

    __str__ = __repr__


class ConnectionClosed(HarnessError):
    pass


class ReplyTimeout(HarnessError):
    pass


class SMTPClient:
    """A raw SMTP client: bytes in, complete replies out.

    c = SMTPClient(port); c.connect() -> greeting Reply
    c.send(b"...") writes raw bytes; c.reply() reads one complete reply;
    c.cmd("MAIL FROM:<a@b>") sends a line + CRLF and reads its reply.
    """

    def __init__(self, port, host="127.0.0.1", timeout=15.0, source=None):
        self.port = port
        self.host = host
        self.timeout = timeout
        self.source = source  # the local address to connect from, or None
        self.sock = None
        self.buf = b""
        self.eof = False
        self.greeting = None
        self.transcript = []

    def connect(self, read_greeting=True):
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        if self.source:
            self.sock.bind((self.source, 0))
        self.sock.connect((self.host, self.port))
        if read_greeting:
            self.greeting = self.reply()
            return self.greeting
        return None

    @property
    def local_port(self):
        return self.sock.getsockname()[1]

    def wait_read(self, server_port, timeout=10.0):
        """Wait until the server at 127.0.0.1:server_port has read all
        that this client sent (its socket's receive queue is empty)."""
        me = self.local_port
        return wait_for(lambda: unread_bytes(server_port, me) == 0, timeout)

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.transcript.append((">", data))
        self.sock.sendall(data)

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ReplyTimeout("no complete reply within %.1fs; buffer=%r"
                               % (self.timeout, self.buf))
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise ReplyTimeout("no complete reply in time; buffer=%r"
                               % self.buf)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
            raise ConnectionClosed("connection closed; buffer=%r" % self.buf)
        self.transcript.append(("<", chunk))
        self.buf += chunk

    def _line(self, deadline):
        while b"\n" not in self.buf:
            if self.eof:
                raise ConnectionClosed("connection closed; buffer=%r"
                                       % self.buf)
            self._fill(deadline)
        line, _, self.buf = self.buf.partition(b"\n")
        return line.rstrip(b"\r").decode("utf-8", "replace")

    def reply(self, timeout=None):
        """Read one complete (possibly multi-line) reply."""
        deadline = time.monotonic() + (timeout or self.timeout)
        lines = []
        while True:
            line = self._line(deadline)
            if not re.match(r"\d{3}([ -]|$)", line):
                raise HarnessError("malformed reply line %r" % line)
            lines.append(line)
            if len(line) == 3 or line[3] == " ":
                return Reply(lines)

    def replies(self, n, timeout=None):
        return [self.reply(timeout) for _ in range(n)]

    def cmd(self, line, timeout=None):
        if isinstance(line, str):
            line = line.encode("utf-8")
        self.send(line + CRLF)
        return self.reply(timeout)

    def ehlo(self, name="client.example.test"):
        return self.cmd("EHLO " + name)

    def mail_transaction(self, sender, recipients, message, helo=None):
        """EHLO (if helo given), MAIL, RCPT..., DATA, message, '.'; one
        command at a time. Returns dict of replies; stops at the first
        failure of MAIL/DATA."""
        r = {}
        if helo:
            r["ehlo"] = self.ehlo(helo)
        r["mail"] = self.cmd("MAIL FROM:<%s>" % sender)
        r["rcpt"] = [self.cmd("RCPT TO:<%s>" % rc) for rc in recipients]
        if r["mail"].code != 250 or not any(x.code == 250 for x in r["rcpt"]):
            return r
        r["data"] = self.cmd("DATA")
        if r["data"].code != 354:
            return r
        self.send(dot_stuff(message))
        r["end"] = self.reply()
        return r

    def read_all(self, timeout=3.0):
        """Whatever arrives until EOF or a quiet period of timeout."""
        deadline = time.monotonic() + timeout
        data = self.buf
        self.buf = b""
        while not self.eof:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.eof = True
                break
            data += chunk
        return data

    def all_replies(self, timeout=3.0):
        """Parse every reply that arrives until EOF/quiet."""
        data = self.read_all(timeout)
        replies, lines = [], []
        for raw in data.split(b"\n"):
            line = raw.rstrip(b"\r").decode("utf-8", "replace")
            if not line:
                continue
            lines.append(line)
            if len(line) == 3 or (len(line) > 3 and line[3] == " "):
                replies.append(Reply(lines))
                lines = []
        return replies

    def wait_closed(self, timeout=5.0):
        """True when the server closes the connection within timeout
        (anything it sends meanwhile is kept in self.buf)."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            try:
                self._fill(deadline)
            except ConnectionClosed:
                return True
            except ReplyTimeout:
                return False
            except OSError:
                return True
        return True

    def close(self):
        if self.sock:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


# ---------------------------------------------------------------------------
# Postfix

MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command + args
{listen} inet  n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class MaildirStore:
    """What every MTA the suite runs shares once started: a context
    manager, Maildirs read by recipient (maildir(user)), a log read with
    log()."""

    def __enter__(self):
        return self.start()

    def __exit__(self, *a):
        self.stop()

    def message_files(self, user):
        files = glob.glob(os.path.join(self.maildir(user), "new", "*"))
        files.sort(key=lambda p: (os.stat(p).st_mtime, p))
        return files

    def messages(self, user):
        """Delivered messages (bytes, LF line ends as the MTA stores them)
        for user, oldest first."""
        out = []
        for p in self.message_files(user):
            try:
                out.append(read_bytes(p))
            except OSError:
                pass
        return out

    def wait_messages(self, user, count=1, timeout=20):
        """Wait until user has at least count messages; return them all."""
        wait_for(lambda: len(self.message_files(user)) >= count, timeout)
        return self.messages(user)

    def total_messages(self):
        return sum(len(self.message_files(u[1] if isinstance(u, tuple)
                                          else u)) for u in self.users)

    def find_message(self, user, needle, timeout=20):
        """The first delivered message of user containing needle (bytes)."""
        def look():
            for m in self.messages(user):
                if needle in m:
                    return m
            return None
        return wait_for(look, timeout)

    def wait_log(self, pattern, timeout=20):
        """Wait until the log matches pattern (regex); return the match
        object or None."""
        rx = re.compile(pattern, re.M)
        return wait_for(lambda: rx.search(self.log()), timeout)


class Postfix(MaildirStore):
    """A private Postfix instance in a temporary directory.

    Virtual mailbox delivery to Maildirs for users@domain (a user is a
    name, or a tuple (address local part, Maildir name) e.g. for UTF-8
    addresses; messages(name) reads by Maildir name); unknown users
    get Postfix's own 550 5.1.1. XCLIENT/XFORWARD authorised for
    127.0.0.0/8 unless xclient=False / xforward=False. Must run as root.

    p = Postfix(); p.start(); ... p.messages("alice"); p.stop()
    """

    def __init__(self, port=None, users=USERS, domain=DOMAIN, xclient=True,
                 xforward=True, forbid_bare_newline="normalize",
                 extra_main=None, hostname="backend.portcullis.test"):
        self.port = port or free_port()
        self.users = tuple(users)
        self.domain = domain
        self.xclient = xclient
        self.xforward = xforward
        self.forbid_bare_newline = forbid_bare_newline
        self.extra_main = dict(extra_main or {})
        self.hostname = hostname
        self.dir = None
        self.started = False

    # paths
    @property
    def config_dir(self):
        return os.path.join(self.dir, "etc")

    @property
    def queue_dir(self):
        return os.path.join(self.dir, "queue")

    @property
    def mail_base(self):
        return os.path.join(self.dir, "mail")

    @property
    def maillog_path(self):
        return os.path.join(self.dir, "maillog")

    def maildir(self, user):
        return os.path.join(self.mail_base, self.domain, user)

    def _postfix(self, *args, timeout=60, check=True):
        p = subprocess.run(["postfix", "-c", self.config_dir] + list(args),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=timeout)
        if check and p.returncode != 0:
            raise HarnessError("postfix %s failed (%d): %s" % (
                " ".join(args), p.returncode, p.stdout.decode(errors="replace")))
        return p

    def write_config(self):
        nobody = pwd.getpwnam(UNPRIV_USER)
        main = {
            "compatibility_level": "3.6",
            "config_directory": self.config_dir,
            "queue_directory": self.queue_dir,
            "data_directory": os.path.join(self.dir, "data"),
            "meta_directory": "/etc/postfix",
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": self.hostname,
            "mydomain": "portcullis.test",
            "myorigin": "$myhostname",
            "smtpd_banner": "$myhostname ESMTP Postfix (test)",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "all" if has_ipv6() else "ipv4",
            "mynetworks": "127.0.0.0/8 [::1]/128",
            "mydestination": "",
            "relayhost": "",
            "relay_domains": "",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "local_header_rewrite_clients": "",
            "append_dot_mydomain": "no",
            "biff": "no",
            "maillog_file": self.maillog_path,
            "maillog_file_prefixes": self.dir,
            "smtpd_client_port_logging": "yes",
            "smtputf8_enable": "yes",
            "smtpd_forbid_bare_newline": self.forbid_bare_newline,
            "smtpd_forbid_bare_newline_exclusions": "",
            # xclient: True (all of loopback), False, or the list itself
            "smtpd_authorized_xclient_hosts":
                self.xclient if isinstance(self.xclient, str) else
                "127.0.0.0/8 [::1]/128" if self.xclient else "",
            "smtpd_authorized_xforward_hosts":
                "127.0.0.0/8 [::1]/128" if self.xforward else "",
            "smtpd_relay_restrictions":
                "permit_mynetworks, reject_unauth_destination",
            "smtpd_recipient_restrictions": "",
            "smtpd_delay_reject": "yes",
            "virtual_mailbox_domains": self.domain,
            "virtual_mailbox_base": self.mail_base,
            "virtual_mailbox_maps": "texthash:" + os.path.join(
                self.config_dir, "vmailbox"),
            "virtual_uid_maps": "static:%d" % nobody.pw_uid,
            "virtual_gid_maps": "static:%d" % nobody.pw_gid,
            "virtual_minimum_uid": "1",
            "virtual_mailbox_limit": "0",
            "message_size_limit": "10240000",
            "smtpd_error_sleep_time": "0",
            "smtpd_soft_error_limit": "100",
            "smtpd_hard_error_limit": "200",
            "smtpd_client_connection_rate_limit": "0",
            "smtpd_client_message_rate_limit": "0",
            "anvil_rate_time_unit": "60s",
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "in_flow_delay": "0",
            "default_process_limit": "50",
            "smtpd_timeout": "60s",
            "recipient_delimiter": "+",
            "shlib_directory": "/usr/lib/postfix",
        }
        main.update(self.extra_main)
        with open(os.path.join(self.config_dir, "main.cf"), "w") as f:
            for k, v in main.items():
                f.write("%s = %s\n" % (k, v))
        with open(os.path.join(self.config_dir, "master.cf"), "w") as f:
            f.write(MASTER_CF.format(listen="127.0.0.1:%d" % self.port))
        with open(os.path.join(self.config_dir, "vmailbox"), "w") as f:
            for u in self.users:
                local, dirname = u if isinstance(u, tuple) else (u, u)
                f.write("%s@%s %s/%s/\n" % (local, self.domain, self.domain,
                                             dirname))

    def start(self):
        if os.geteuid() != 0:
            raise HarnessError("a private Postfix must be started as root")
        self.dir = make_tempdir("portcullis-postfix-")
        os.makedirs(self.config_dir)
        os.makedirs(self.queue_dir, mode=0o755)
        os.chmod(self.queue_dir, 0o755)
        data = os.path.join(self.dir, "data")
        os.makedirs(data)
        pf = pwd.getpwnam("postfix")
        os.chown(data, pf.pw_uid, pf.pw_gid)
        os.chmod(data, 0o700)
        nobody = pwd.getpwnam(UNPRIV_USER)
        os.makedirs(self.mail_base)
        os.chown(self.mail_base, nobody.pw_uid, nobody.pw_gid)
        self.write_config()
        # "postfix start" creates the missing queue directories with their
        # owners and modes itself (post-install create-missing); if it
        # fails, "postfix check" repairs ownership, then one more try.
        if self._postfix("start", check=False).returncode != 0:
            self._postfix("check", check=False)
            p = self._postfix("start", check=False)
            if p.returncode != 0:
                log = self.maillog()
                self.stop()
                raise HarnessError(
                    "postfix start failed (postfix prints its errors only to "
                    "a tty or the maillog; try 'script -qc \"postfix -c DIR "
                    "start\"'); maillog:\n" + log[-3000:])
        self.started = True
        if not wait_listening(self.port, 30):
            log = self.maillog()
            self.stop()
            raise HarnessError("Postfix did not listen on %d; maillog:\n%s"
                               % (self.port, log[-3000:]))
        return self

    def master_pid(self):
        try:
            with open(os.path.join(self.queue_dir, "pid", "master.pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def stop(self):
        if self.dir is None:
            return
        try:
            if self.started:
                pid = self.master_pid()
                try:
                    self._postfix("stop", timeout=30, check=False)
                except subprocess.TimeoutExpired:
                    pass
                if pid and not wait_for(lambda: not _pid_alive(pid), 15):
                    try:
                        self._postfix("abort", timeout=15, check=False)
                    except subprocess.TimeoutExpired:
                        pass
                    if not wait_for(lambda: not _pid_alive(pid), 5):
                        _kill(pid, signal.SIGKILL)
                # Postfix daemons (children) may linger briefly.
                wait_for(lambda: not is_listening(self.port), 10)
                self.started = False
        finally:
            remove_tree(self.dir)
            self.dir = None

    # results
    def maillog(self):
        try:
            with open(self.maillog_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    log = maillog

    def queue_id_of(self, message_id, timeout=20):
        """Postfix queue id of the message with this Message-ID header
        (from cleanup's log line)."""
        m = self.wait_log(r"\b([0-9A-F]{6,}|[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]{10,}): "
                          r"message-id=%s" % re.escape(message_id), timeout)
        return m.group(1) if m else None

    def smtpd_client_lines(self):
        """The 'QUEUEID: client=...' lines of smtpd."""
        return re.findall(r"postfix/smtpd\[\d+\]: (\w+): (client=.*)",
                          self.maillog())

    def queue_files(self):
        """Messages still in the queue (should be none after delivery)."""
        out = []
        for sub in ("incoming", "active", "deferred", "hold", "maildrop"):
            for root, _, files in os.walk(os.path.join(self.queue_dir, sub)):
                out.extend(os.path.join(root, f) for f in files)
        return out


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as gone
    try:
        with open("/proc/%d/stat" % pid) as f:
            if f.read().split(")")[-1].split()[0] == "Z":
                return False
    except OSError:
        return False
    return True


def _kill(pid, sig):
    try:
        os.kill(pid, sig)
    except OSError:
        pass


# ---------------------------------------------------------------------------
# smtp-sink

class Sink:
    """Postfix's smtp-sink on 127.0.0.1:port with the given options
    (list of strings, e.g. ["-r", "RCPT"], ["-C", "-F"]).

    Every completed transaction is dumped to one file in self.dump_dir
    (smtp-sink removes the file of a transaction that is aborted by RSET
    or a disconnect before "."; a transaction the sink answers at "." with
    -f/-r/-q/-Q is dumped all the same).
    """

    def __init__(self, options=(), port=None, dump=True):
        self.options = list(options)
        self.port = port or free_port()
        self.dump = dump
        self.dir = None
        self.proc = None
        self.log = None

    @property
    def dump_dir(self):
        return os.path.join(self.dir, "dump")

    def start(self):
        self.dir = make_tempdir("portcullis-sink-")
        nobody = pwd.getpwnam(UNPRIV_USER)
        os.makedirs(self.dump_dir)
        os.chown(self.dump_dir, nobody.pw_uid, nobody.pw_gid)
        cmd = ["smtp-sink", "-u", UNPRIV_USER] + self.options
        if self.dump:
            cmd += ["-d", os.path.join(self.dump_dir, "msg.")]
        cmd += ["127.0.0.1:%d" % self.port, "64"]
        self.cmd = cmd
        self.log = open(os.path.join(self.dir, "sink.log"), "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log,
                                     stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        if not wait_listening(self.port, 10, self.proc):
            out = self.output()
            self.stop()
            raise HarnessError("smtp-sink %r did not start: %s" % (cmd, out))
        return self

    def output(self):
        try:
            return read_bytes(os.path.join(self.dir, "sink.log")).decode(
                "utf-8", "replace")
        except OSError:
            return ""

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
            self.proc = None
        if self.log:
            self.log.close()
            self.log = None
        remove_tree(self.dir)
        self.dir = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *a):
        self.stop()

    def _all_files(self):
        out = []
        for p in glob.glob(os.path.join(self.dump_dir, "msg.*")):
            try:
                st = os.stat(p)
            except OSError:
                continue
            out.append((st.st_mtime, p, st.st_size))
        out.sort()
        return out

    def files(self):
        """Dump files of transactions that got their data. The sink opens
        a dump file (empty) at MAIL and writes it at "."; the empty file
        of a transaction still open at the sink is not counted (it goes
        away on RSET or disconnect)."""
        return [p for _, p, size in self._all_files() if size > 0]

    def open_transactions(self):
        return [p for _, p, size in self._all_files() if size == 0]

    def count(self):
        return len(self.files())

    def settled_count(self, timeout=5):
        """Wait (bounded) until the sink has no open transaction, then
        count the dumped messages."""
        wait_for(lambda: not self.open_transactions(), timeout)
        return self.count()

    def messages(self):
        """Dumped transactions (bytes, LF line ends), oldest first."""
        out = []
        for p in self.files():
            try:
                out.append(read_bytes(p))
            except OSError:
                pass
        return out

    def wait_count(self, n, timeout=10):
        """Wait until at least n transactions are dumped; return count."""
        wait_for(lambda: self.count() >= n, timeout)
        return self.count()

    @staticmethod
    def parse(dump):
        """(sink headers dict of lists, message bytes) of one dump. The
        sink headers are X-Client-Addr, X-Client-Proto, X-Helo-Args,
        X-Mail-Args, X-Rcpt-Args and the sink's own Received header; the
        message is what the client sent, with LF line ends (plus one
        trailing empty line the sink appends)."""
        meta = {}
        lines = dump.split(b"\n")
        i = 0
        while i < len(lines):
            line = lines[i].decode("utf-8", "replace")
            m = re.match(r"(X-[A-Za-z-]+): ?(.*)", line)
            if m:
                meta.setdefault(m.group(1), []).append(m.group(2))
                i += 1
                continue
            if line.startswith("Received: "):
                i += 1
                while i < len(lines) and lines[i][:1] in (b"\t", b" "):
                    i += 1
                break
            break
        msg = b"\n".join(lines[i:])
        if msg.endswith(b"\n\n"):
            msg = msg[:-1]
        return meta, msg


# ---------------------------------------------------------------------------
# a byte-exact capturing backend

class CaptureServer:
    """A minimal strict SMTP server (Python thread) that records the exact
    bytes it receives, for checks smtp-sink and Postfix cannot make (they
    store messages with LF line ends).

    Only <CRLF>.<CRLF> ends DATA. self.sessions is a list of dicts:
    {"commands": [lines], "raw": bytes of the whole session,
     "messages": [raw DATA bytes up to and excluding the final ".\r\n"],
     "closed": True once the connection ended}.
    keywords: the EHLO keywords it announces.
    hook(sess, line): called for every command line before it is
    answered; None answers as usual, b"DROP" closes the connection without
    a reply, other bytes are sent as the reply instead (a reply starting
    with 421 also closes the connection).
    idle_timeout: seconds of silence after which it says 421 and closes,
    as a real MTA does.
    data_delay: seconds to wait after a message before its final reply
    (self.data_received is set when the message is in).
    body_reply: bytes sent as a reply, once, as soon as the first bytes of
    a message body arrive (a backend refusing a message as it streams;
    b"": no reply, a backend that stalls); the server then reads nothing
    for body_hold seconds and drains the rest of the connection without
    another reply.
    """

    def __init__(self, keywords=("PIPELINING", "8BITMIME", "DSN",
                                 "ENHANCEDSTATUSCODES", "SIZE 10240000",
                                 "XFORWARD NAME ADDR PROTO HELO"),
                 port=None, data_reply=b"250 2.0.0 Ok: queued as CAPT%d",
                 hook=None, idle_timeout=None, data_delay=0,
                 body_reply=None, body_hold=5):
        self.keywords = list(keywords)
        self.data_delay = data_delay
        self.data_received = threading.Event()
        self.body_reply = body_reply
        self.body_hold = body_hold
        self.port = port or free_port()
        self.data_reply = data_reply
        self.hook = hook
        self.idle_timeout = idle_timeout
        self.sessions = []
        self.lock = threading.Lock()
        self.sock = None
        self.thread = None
        self.stopping = False
        self.queue_counter = 0

    def start(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        self.stopping = True
        try:
            if self.thread:
                # the accept loop looks at stopping every 0.2 s
                join_threads([self.thread], 5)
        finally:
            if self.sock:
                self.sock.close()
                self.sock = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *a):
        self.stop()

    def _accept_loop(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,),
                             daemon=True).start()

    def messages(self):
        with self.lock:
            return [m for s in self.sessions for m in s["messages"]]

    def commands(self):
        with self.lock:
            return [c for s in self.sessions for c in s["commands"]]

    def wait_messages(self, n, timeout=10):
        wait_for(lambda: len(self.messages()) >= n, timeout)
        return self.messages()

    def _serve(self, conn):
        sess = {"commands": [], "raw": b"", "messages": [], "closed": False}
        with self.lock:
            self.sessions.append(sess)
        conn.settimeout(self.idle_timeout or 30)
        buf = b""

        def recv():
            nonlocal buf
            try:
                chunk = conn.recv(65536)
            except socket.timeout:
                if self.idle_timeout:
                    send(b"421 4.4.2 capture.portcullis.test Error: "
                         b"timeout exceeded\r\n")
                chunk = b""
            except OSError:
                chunk = b""
            if chunk:
                sess["raw"] += chunk
                buf += chunk
            return bool(chunk)

        def send(data):
            try:
                conn.sendall(data)
            except OSError:
                pass
        try:
            send(b"220 capture.portcullis.test ESMTP\r\n")
            while not self.stopping:
                while b"\r\n" not in buf:
                    if not recv():
                        return
                line, _, buf = buf.partition(b"\r\n")
                sess["commands"].append(line)
                verb = line.split(b" ", 1)[0].upper()
                special = self.hook(sess, line) if self.hook else None
                if special == b"DROP":
                    return
                if special is not None:
                    send(special + b"\r\n")
                    if special.startswith(b"421"):
                        return
                    continue
                if verb == b"EHLO":
                    lines = [b"capture.portcullis.test"] + [
                        k.encode() for k in self.keywords]
                    out = b""
                    for i, l in enumerate(lines):
                        sep = b" " if i == len(lines) - 1 else b"-"
                        out += b"250" + sep + l + b"\r\n"
                    send(out)
                elif verb == b"HELO":
                    send(b"250 capture.portcullis.test\r\n")
                elif verb == b"XCLIENT":
                    send(b"220 capture.portcullis.test ESMTP\r\n")
                elif verb == b"DATA":
                    send(b"354 go ahead\r\n")
                    if self.body_reply is not None:
                        reply, self.body_reply = self.body_reply, None
                        while not buf and recv():
                            pass
                        if reply:
                            send(reply + b"\r\n")
                        time.sleep(self.body_hold)
                        while recv():
                            buf = b""
                        return
                    while b"\r\n.\r\n" not in b"\r\n" + buf:
                        if not recv():
                            return
                    if buf.startswith(b".\r\n"):
                        data, rest = b"", buf[3:]
                    else:
                        i = buf.index(b"\r\n.\r\n")
                        data, rest = buf[:i + 2], buf[i + 5:]
                    buf = rest
                    sess["messages"].append(data)
                    self.data_received.set()
                    if self.data_delay:
                        time.sleep(self.data_delay)
                    with self.lock:
                        self.queue_counter += 1
                        n = self.queue_counter
                    reply = self.data_reply
                    if b"%d" in reply:
                        reply = reply % n
                    send(reply + b"\r\n")
                elif verb == b"QUIT":
                    send(b"221 2.0.0 Bye\r\n")
                    return
                elif verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP",
                              b"XFORWARD"):
                    send(b"250 2.0.0 Ok\r\n")
                else:
                    send(b"502 5.5.1 Not implemented\r\n")
        finally:
            conn.close()
            sess["closed"] = True


# ---------------------------------------------------------------------------
# Exim and OpenSMTPD, unpacked from Debian's packages
#
# Debian's exim4-daemon-light and opensmtpd conflict with postfix (each is
# a mail-transport-agent): installing either removes the Postfix the suite
# needs. tests/install-deps unpacks their .debs (dpkg-deb -x) under
# build-peers/root instead, and each instance runs in a private mount
# namespace (unshare -m) in which the paths compiled into the binaries are
# bound to its temporary directory: /etc/passwd and /etc/group with the
# package's system users added, and for OpenSMTPD /var (its spool, chroot
# and control socket) and /usr/libexec (its delivery agents). Nothing of
# the system is changed and two instances never share a file.

PEERS_ROOT = os.environ.get("PORTCULLIS_PEERS_ROOT") or os.path.join(
    PROJECT, "build-peers", "root")
EXIM_BIN = os.path.join(PEERS_ROOT, "usr", "sbin", "exim4")
OPENSMTPD_BIN = os.path.join(PEERS_ROOT, "usr", "sbin", "smtpd")


def skip_unless_peer(binary, package):
    """Skip unless tests/install-deps unpacked package (binary is its
    daemon) and unshare(1) can make the namespace it runs in."""
    skip_unless_tool("unshare")
    skip_unless_tool("%s (Debian's %s, unpacked by tests/install-deps "
                     "under %s)" % (os.path.basename(binary), package,
                                    PEERS_ROOT), os.access(binary, os.X_OK))


class TestCA:
    """A test CA and a server certificate for mx.example.test made with the
    openssl command in a temporary directory: ca.pem, server.pem,
    server.key."""

    def __init__(self, name="mx.example.test"):
        self.name = name
        self.dir = None

    def _openssl(self, *args):
        subprocess.run(("openssl",) + args, cwd=self.dir, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       timeout=60)

    def make(self):
        self.dir = make_tempdir("portcullis-ca-")
        self._openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes",
                      "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
                      "-subj", "/O=Portcullis Test/CN=Portcullis Test CA")
        self._openssl("req", "-new", "-nodes", "-newkey", "rsa:2048",
                      "-keyout", "server.key", "-out", "server.csr",
                      "-subj", "/O=Portcullis Test/CN=" + self.name,
                      "-addext", "subjectAltName=DNS:%s,IP:127.0.0.1"
                      % self.name)
        self._openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem",
                      "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
                      "-copy_extensions", "copy", "-out", "server.pem")
        os.chmod(os.path.join(self.dir, "server.key"), 0o644)
        return self

    @property
    def ca(self):
        return os.path.join(self.dir, "ca.pem")

    @property
    def cert(self):
        return os.path.join(self.dir, "server.pem")

    @property
    def key(self):
        return os.path.join(self.dir, "server.key")

    def remove(self):
        remove_tree(self.dir)
        self.dir = None


class PeerMTA(MaildirStore):
    """What Exim and OpenSMTPD share: a temporary directory, the daemon in
    the foreground in its own mount namespace and process group, Maildirs
    under mail/ (one per recipient's local part), a log file.

    m = Exim(port=P) (a backend storing example.test's mail), or
    Exim(relay_port=Q, ca=CA) (a client relaying all mail to
    127.0.0.1:Q with STARTTLS required); m.start(); m.messages("bob");
    m.stop()
    """

    name = "peer"
    # (name, uid) of the system users the package's postinst would create
    system_users = ()
    # paths under the temporary directory bound over system paths
    bind_dirs = ()

    def __init__(self, port=None, relay_port=None, ca=None, users=USERS,
                 domain=DOMAIN, hostname=None):
        self.port = port or free_port()
        self.relay_port = relay_port
        self.ca = ca
        self.users = tuple(users)
        self.domain = domain
        self.hostname = hostname or "%s.%s.test" % (
            self.name, "client" if relay_port else "backend")
        self.dir = None
        self.proc = None
        self.out = None

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def maildir(self, user):
        return self.path("mail", user)

    def _accounts(self):
        """passwd and group files: the system's, plus system_users."""
        nobody = pwd.getpwnam(UNPRIV_USER)
        with open("/etc/passwd") as f:
            passwd = f.read()
        with open("/etc/group") as f:
            group = f.read()
        for name, uid in self.system_users:
            if not passwd.endswith("\n"):
                passwd += "\n"
            passwd += "%s:x:%d:%d::%s:/usr/sbin/nologin\n" % (
                name, uid, uid, "/var/lib/opensmtpd/empty")
            group += "%s:x:%d:\n" % (name, uid)
        with open(self.path("passwd"), "w") as f:
            f.write(passwd)
        with open(self.path("group"), "w") as f:
            f.write(group)
        os.makedirs(self.path("mail"))
        os.chown(self.path("mail"), nobody.pw_uid, nobody.pw_gid)

    def command(self):
        raise NotImplementedError

    def write_config(self):
        raise NotImplementedError

    def log(self):
        raise NotImplementedError

    def start(self):
        if os.geteuid() != 0:
            raise HarnessError("%s must be started as root (mount namespace)"
                               % self.name)
        self.dir = make_tempdir("portcullis-%s-" % self.name)
        self._accounts()
        self.write_config()
        binds = [(self.path("passwd"), "/etc/passwd"),
                 (self.path("group"), "/etc/group")]
        binds += [(self.path(src), dst) for src, dst in self.bind_dirs]
        script = "".join('mount --bind "%s" "%s" || exit 111\n' % b
                         for b in binds) + 'exec "$@"\n'
        with open(self.path("namespace.sh"), "w") as f:
            f.write(script)
        self.out = open(self.path("daemon.out"), "wb")
        # start_new_session: stop() ends the daemon's process group, its
        # delivery children with it
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh",
             self.path("namespace.sh")] + self.command(),
            stdin=subprocess.DEVNULL, stdout=self.out,
            stderr=subprocess.STDOUT, start_new_session=True)
        if not wait_listening(self.port, 15, self.proc):
            out = self.output()
            self.stop()
            raise HarnessError("%s did not listen on %d:\n%s\n%s" % (
                self.name, self.port, out[-3000:], self.log()[-3000:]))
        return self

    def output(self):
        try:
            return read_bytes(self.path("daemon.out")).decode("utf-8",
                                                              "replace")
        except (OSError, TypeError):
            return ""

    def stop(self):
        if self.proc is not None:
            pgid = self.proc.pid
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    pass
            try:
                os.killpg(pgid, signal.SIGKILL)
            except OSError:
                pass
            if self.proc.poll() is None:
                self.proc.wait(5)
            self.proc = None
            wait_for(lambda: not is_listening(self.port), 10)
        if self.out:
            self.out.close()
            self.out = None
        remove_tree(self.dir)
        self.dir = None



class Exim(PeerMTA):
    """Exim 4 (Debian's exim4-daemon-light) as a daemon in the foreground
    (-bdf) on 127.0.0.1:port with a configuration in its temporary
    directory (-C): its spool, log and pid file there. A backend delivers
    users@domain to Maildirs as nobody (deliver_drop_privilege: an
    alternate configuration costs Exim its root privilege) and refuses
    other recipients; a client (relay_port) takes any recipient from
    loopback and sends everything to 127.0.0.1:relay_port with STARTTLS
    required (hosts_require_tls) and the server's certificate verified
    against ca. Exim 4.96 offers neither XCLIENT nor XFORWARD."""

    name = "exim"
    system_users = (("Debian-exim", 64990),)

    def write_config(self):
        nobody = pwd.getpwnam(UNPRIV_USER)
        for d in ("spool", "log"):
            os.makedirs(self.path(d))
            os.chown(self.path(d), nobody.pw_uid, nobody.pw_gid)
        conf = [
            "exim_path = " + EXIM_BIN,
            "keep_environment =",
            "exim_user = " + UNPRIV_USER,
            "exim_group = " + grp.getgrgid(nobody.pw_gid).gr_name,
            "deliver_drop_privilege = true",
            "primary_hostname = " + self.hostname,
            "spool_directory = " + self.path("spool"),
            "log_file_path = " + self.path("log", "%slog"),
            "pid_file_path = " + self.path("exim.pid"),
            "local_interfaces = <; 127.0.0.1",
            "daemon_smtp_ports = %d" % self.port,
            # no DNS, no ident: loopback only, every wait bounded
            "host_lookup =",
            "rfc1413_hosts =",
            "tls_advertise_hosts =",
            "domainlist local_domains = " + self.domain,
            "hostlist relay_from_hosts = <; 127.0.0.0/8",
            "acl_smtp_rcpt = acl_check_rcpt",
            "log_selector = +received_recipients +tls_cipher +tls_peerdn",
            "",
            "begin acl",
            "acl_check_rcpt:",
        ]
        if self.relay_port:
            conf += ["  accept hosts = +relay_from_hosts",
                     "  deny message = relay not permitted",
                     "",
                     "begin routers",
                     "to_portcullis:",
                     "  driver = manualroute",
                     "  route_list = * 127.0.0.1",
                     # the proxy is on this host: send, do not defer
                     "  self = send",
                     "  transport = portcullis_tls",
                     "",
                     "begin transports",
                     "portcullis_tls:",
                     "  driver = smtp",
                     "  port = %d" % self.relay_port,
                     "  allow_localhost",
                     "  helo_data = " + self.hostname,
                     "  hosts_require_tls = *",
                     "  tls_verify_hosts = *",
                     "  tls_verify_certificates = " + self.ca,
                     "",
                     "begin retry",
                     "*  *  F,1h,10m"]
        else:
            conf += ["  accept domains = +local_domains",
                     "         local_parts = " + " : ".join(self.users),
                     "  deny message = relay not permitted",
                     "",
                     "begin routers",
                     "local_maildir:",
                     "  driver = accept",
                     "  domains = +local_domains",
                     "  local_parts = " + " : ".join(self.users),
                     "  transport = maildir",
                     "",
                     "begin transports",
                     "maildir:",
                     "  driver = appendfile",
                     # $local_part_data: the list's entry, not the tainted
                     # address
                     "  directory = %s/${local_part_data}" % self.path("mail"),
                     "  maildir_format",
                     "  create_directory"]
        with open(self.path("exim.conf"), "w") as f:
            f.write("\n".join(conf) + "\n")

    def command(self):
        return [EXIM_BIN, "-C", self.path("exim.conf"), "-bdf",
                "-oX", str(self.port), "-oP", self.path("exim.pid")]

    def log(self):
        try:
            return read_bytes(self.path("log", "mainlog")).decode(
                "utf-8", "replace")
        except (OSError, TypeError):
            return ""


class OpenSMTPD(PeerMTA):
    """OpenSMTPD (Debian's opensmtpd) in the foreground (-d) on
    127.0.0.1:port. Its spool, chroot and control socket are under /var
    and its delivery agents under /usr/libexec, compiled in: both are
    bound to directories of its own. A backend delivers users@domain to
    Maildirs as nobody (a virtual table) and refuses other recipients
    (550 Invalid recipient); a client relays all mail to
    smtp+tls://127.0.0.1:relay_port (STARTTLS required) with the server
    certificate verified against ca (bound over the system's CA bundle).
    OpenSMTPD offers neither XCLIENT nor XFORWARD."""

    name = "opensmtpd"
    system_users = (("opensmtpd", 64991), ("opensmtpq", 64992))
    bind_dirs = (("var", "/var"), ("libexec", "/usr/libexec"))

    def write_config(self):
        for d in ("var/spool", "var/lib/opensmtpd/empty", "var/run",
                  "libexec", "etc"):
            os.makedirs(self.path(d))
        os.symlink(os.path.join(PEERS_ROOT, "usr", "libexec", "opensmtpd"),
                   self.path("libexec", "opensmtpd"))
        conf = []
        if self.relay_port:
            # the bundle OpenSMTPD verifies against holds only the test CA
            shutil.copy(self.ca, self.path("etc", "ca.pem"))
            self.bind_dirs = self.bind_dirs + (
                ("etc/ca.pem", "/etc/ssl/certs/ca-certificates.crt"),)
            conf += ["listen on 127.0.0.1 port %d hostname %s"
                     % (self.port, self.hostname),
                     'action "portcullis" relay host smtp+tls://127.0.0.1:%d '
                     'helo %s' % (self.relay_port, self.hostname),
                     'match from src 127.0.0.0/8 for any action "portcullis"']
        else:
            with open(self.path("etc", "vusers"), "w") as f:
                for u in self.users:
                    f.write("%s@%s %s\n" % (u, self.domain, UNPRIV_USER))
            conf += ["table vusers file:" + self.path("etc", "vusers"),
                     "listen on 127.0.0.1 port %d hostname %s"
                     % (self.port, self.hostname),
                     'action "deliver" maildir "%s/%%{rcpt.user}" '
                     'virtual <vusers>' % self.path("mail"),
                     'match from any for domain "%s" action "deliver"'
                     % self.domain]
        with open(self.path("etc", "smtpd.conf"), "w") as f:
            f.write("\n".join(conf) + "\n")

    def command(self):
        return [OPENSMTPD_BIN, "-d", "-f", self.path("etc", "smtpd.conf")]

    def log(self):
        # -d logs to standard error
        return self.output()


# ---------------------------------------------------------------------------
# Portcullis

SANITIZER_PATTERNS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "runtime error:",
    "WARNING: ThreadSanitizer",
    "SUMMARY: UndefinedBehaviorSanitizer",
)


class DaemonProblem(AssertionError):
    pass


class Portcullis:
    """The daemon under test.

    Portcullis(backend_port=P, max_recipients=3, backend_client_identity=
    "header", log_level="info")

    Keyword arguments become config keys: a key prefixed backend_ goes to
    [backend], log_ to [log], any other to [portcullis]. A value None
    omits the key. extra= is raw text appended to the file.
    """

    DEFAULTS = {
        "portcullis": {
            "hostname": "proxy.portcullis.test",
            "workers": "1",
            "user": "",
            "max_errors": "20",
            "timeout_command": "30",
            "timeout_data": "30",
            "drain_timeout": "10",
            # The suites open hundreds of sessions a minute from
            # 127.0.0.1; test_anvil tests the limits from 127.0.0.2 on.
            "client_limit_exceptions": "127.0.0.1",
            # Most suites have no DNS server: the client's name is looked
            # up only where a test serves it (test_identity).
            "client_name_lookup": "no",
        },
        "backend": {
            "client_identity": "auto",
            "timeout_connect": "5",
            "timeout_greeting": "10",
            "timeout_command": "10",
            "timeout_data_init": "10",
            "timeout_data_block": "10",
            "timeout_data_end": "10",
        },
        "log": {
            "diagnostics": "stderr",
            "level": "debug",
        },
    }

    def __init__(self, backend_port=None, port=None, port6=None,
                 binary=None, extra="", **kwargs):
        self.binary = binary or PORTCULLIS_BIN
        self.port = port or free_port()
        self.port6 = port6
        self.backend_port = backend_port
        self.extra = extra
        self.kwargs = kwargs
        self.dir = None
        self.proc = None
        self.stderr_file = None
        self.stopped_rc = None

    @property
    def conf_path(self):
        return os.path.join(self.dir, "portcullis.conf")

    @property
    def decisions_path(self):
        return os.path.join(self.dir, "decisions.json")

    @property
    def stderr_path(self):
        return os.path.join(self.dir, "stderr.log")

    def config_text(self):
        sections = {k: dict(v) for k, v in self.DEFAULTS.items()}
        listen = "127.0.0.1:%d" % self.port
        if self.port6:
            listen += ", [::1]:%d" % self.port6
        sections["portcullis"].update({
            "listen": listen,
            "spool_dir": os.path.join(self.dir, "spool"),
            "pid_file": os.path.join(self.dir, "portcullis.pid"),
        })
        if self.backend_port is not None:
            sections["backend"]["servers"] = "127.0.0.1:%d" % self.backend_port
        sections["log"]["decisions"] = self.decisions_path
        for key, value in self.kwargs.items():
            if key.startswith("backend_"):
                sec, key = "backend", key[len("backend_"):]
            elif key.startswith("log_"):
                sec, key = "log", key[len("log_"):]
            else:
                sec = "portcullis"
            if value is None:
                sections[sec].pop(key, None)
            else:
                sections[sec][key] = str(value)
        out = []
        for sec in ("portcullis", "backend", "log"):
            out.append("[%s]" % sec)
            for k, v in sections[sec].items():
                out.append("%s = %s" % (k, v))
            out.append("")
        return "\n".join(out) + self.extra

    def write_config(self):
        if self.dir is None:
            self.dir = make_tempdir("portcullis-proxy-")
        with open(self.conf_path, "w") as f:
            f.write(self.config_text())

    def start(self, wait=True, wait_probe=True):
        if not os.access(self.binary, os.X_OK):
            raise unittest.SkipTest("daemon not built: %s" % self.binary)
        self.write_config()
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        self.stderr_file = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [self.binary, "-f", "-c", self.conf_path],
            stdin=subprocess.DEVNULL, stdout=self.stderr_file,
            stderr=subprocess.STDOUT, env=env)
        if wait and not wait_listening(self.port, 15, self.proc):
            rc = self.proc.poll()
            text = self.stderr()
            self.kill()
            raise DaemonProblem("portcullis did not listen on %d (exit %r); "
                                "output:\n%s" % (self.port, rc, text[-4000:]))
        if wait and wait_probe and self.backend_port is not None:
            # Best effort: the daemon learns the backend's capabilities by
            # an EHLO probe just after it starts listening; tests that do
            # not test that race wait for its log line (at most 5s).
            wait_for(lambda: re.search(r"backend offers|probe failed",
                                       self.stderr()), 5)
        if wait and self.port6 and not wait_listening(self.port6, 5,
                                                      self.proc):
            text = self.stderr()
            self.kill()
            raise DaemonProblem("portcullis did not listen on [::1]:%d; "
                                "output:\n%s" % (self.port6, text[-4000:]))
        return self

    def stderr(self):
        try:
            return read_bytes(self.stderr_path).decode("utf-8", "replace")
        except (OSError, TypeError):
            return ""

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def wait_exit(self, timeout):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def wait_log(self, pattern, count=1, timeout=10):
        """Wait until the daemon's diagnostics hold count lines matching
        the regular expression pattern; the matches, or [] on timeout."""
        rx = re.compile(pattern)

        def look():
            found = rx.findall(self.stderr())
            return found if len(found) >= count else []
        return wait_for(look, timeout)

    def wait_log_reopened(self, timeout=10):
        """After SIGUSR1: wait until every worker has the decision log
        open by its name again (a reopen logs nothing; /proc shows what
        each worker's descriptors point at)."""
        def reopened():
            workers = children(self.pid)
            if not workers:
                return False
            for w in workers:
                try:
                    fds = os.listdir("/proc/%d/fd" % w)
                    links = [os.readlink("/proc/%d/fd/%s" % (w, fd))
                             for fd in fds]
                except OSError:
                    return False
                if self.decisions_path not in links or any(
                        l.startswith(self.decisions_path + ".")
                        for l in links):
                    return False
            return True
        return wait_for(reopened, timeout)

    def sanitizer_report(self):
        text = self.stderr()
        for p in SANITIZER_PATTERNS:
            i = text.find(p)
            if i >= 0:
                return text[max(0, i - 200):i + 3000]
        return None

    def stop(self, timeout=None):
        """SIGTERM, wait; raise DaemonProblem on a non-zero exit, a hang or
        a sanitizer report. Idempotent; always cleans up."""
        problems = []
        try:
            if self.proc is not None:
                if self.proc.poll() is None:
                    self.proc.send_signal(signal.SIGTERM)
                    drain = float(self.kwargs.get(
                        "drain_timeout",
                        self.DEFAULTS["portcullis"]["drain_timeout"]))
                    rc = self.wait_exit(timeout or drain + 10)
                    if rc is None:
                        problems.append("did not exit within %.0fs of SIGTERM"
                                        % (timeout or drain + 10))
                        self.kill()
                rc = self.proc.returncode
                self.stopped_rc = rc
                if rc not in (0, None):
                    problems.append("exited with status %r" % rc)
                report = self.sanitizer_report()
                if report:
                    problems.append("sanitizer report:\n" + report)
                if problems:
                    problems.append("last output:\n" + self.stderr()[-3000:])
                self.proc = None
        finally:
            if self.stderr_file:
                self.stderr_file.close()
                self.stderr_file = None
            if not problems:
                remove_tree(self.dir)
                self.dir = None
            elif not KEEP:
                # keep the evidence in the message, then clean up
                remove_tree(self.dir)
                self.dir = None
        if problems:
            raise DaemonProblem("portcullis: " + "\n".join(problems))

    # decision log
    def decisions(self):
        """All complete records of the decision log (list of dicts)."""
        try:
            data = read_bytes(self.decisions_path)
        except (OSError, TypeError):
            return []
        out = []
        for line in data.split(b"\n"):
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except ValueError:
                pass  # a line being written
        return out

    def transactions(self):
        return [d for d in self.decisions() if d.get("type") == "transaction"]

    def wait_decisions(self, predicate=None, count=1, timeout=10):
        """Wait until count records match predicate (default: any record);
        return the matching records."""
        predicate = predicate or (lambda d: True)

        def look():
            found = [d for d in self.decisions() if predicate(d)]
            return found if len(found) >= count else None
        return wait_for(look, timeout) or [
            d for d in self.decisions() if predicate(d)]

    def wait_transaction(self, count=1, timeout=10, **match):
        """Wait for count transaction records whose top-level fields equal
        match (e.g. action="accepted")."""
        def pred(d):
            if d.get("type") != "transaction":
                return False
            return all(d.get(k) == v for k, v in match.items())
        return self.wait_decisions(pred, count, timeout)

    def check_config(self, text, timeout=10):
        """Run 'portcullis -t -c FILE' on text; return CompletedProcess
        (the file is <dir>/check.conf)."""
        if not os.access(self.binary, os.X_OK):
            raise unittest.SkipTest("daemon not built: %s" % self.binary)
        if self.dir is None:
            self.dir = make_tempdir("portcullis-proxy-")
        path = os.path.join(self.dir, "check.conf")
        with open(path, "w") as f:
            f.write(text)
        return subprocess.run([self.binary, "-t", "-c", path],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=timeout)


# ---------------------------------------------------------------------------
# external clients

def run_swaks(args, timeout=60):
    """swaks with the given arguments; CompletedProcess (text)."""
    return subprocess.run(["swaks"] + list(args), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=timeout,
                          stdin=subprocess.DEVNULL,
                          universal_newlines=True, errors="replace")


def run_smtp_source(args, timeout=120):
    """smtp-source with the given arguments; CompletedProcess (text)."""
    return subprocess.run(["smtp-source"] + list(args),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=timeout, stdin=subprocess.DEVNULL,
                          universal_newlines=True, errors="replace")


# ---------------------------------------------------------------------------
# unittest base

class ProxyTestCase(unittest.TestCase):
    """Base class: start_postfix(), start_sink(), start_proxy() and
    client() register their own cleanups (Postfix always stopped; the
    proxy's stop turns a bad exit or a sanitizer report into a failure)."""

    maxDiff = 4000

    def start_postfix(self, **kw):
        p = Postfix(**kw)
        self.addCleanup(p.stop)
        p.start()
        return p

    def start_sink(self, *options, **kw):
        s = Sink(options, **kw)
        self.addCleanup(s.stop)
        s.start()
        return s

    def start_capture(self, **kw):
        c = CaptureServer(**kw)
        self.addCleanup(c.stop)
        c.start()
        return c

    def start_proxy(self, backend_port=None, **kw):
        p = Portcullis(backend_port=backend_port, **kw)
        self.addCleanup(p.stop)
        p.start()
        self.proxy_output_on_failure(p)
        return p

    def proxy_output_on_failure(self, proxy):
        self._proxies = getattr(self, "_proxies", [])
        self._proxies.append(proxy)

    def client(self, port, host="127.0.0.1", timeout=15.0, connect=True,
               source=None):
        c = SMTPClient(port, host, timeout, source)
        self.addCleanup(c.close)
        if connect:
            c.connect()
        return c

    # assertions
    def assertCode(self, reply, code, msg=None):
        """reply's code equals code (int) or starts with it (e.g. 4, 45)."""
        s = str(code)
        ok = str(reply.code).startswith(s)
        if not ok:
            self.fail("%sexpected reply %s, got %r" % (
                (msg + ": ") if msg else "", s + "x" * (3 - len(s)), reply))

    def assertEnh(self, reply, enh, msg=None):
        if reply.enh != enh:
            self.fail("%sexpected enhanced status %s, got %r" % (
                (msg + ": ") if msg else "", enh, reply))

    def assertReply(self, reply, code, enh=None, msg=None):
        self.assertCode(reply, code, msg)
        if enh is not None:
            self.assertEnh(reply, enh, msg)


def filter_entries(record, name):
    """The entries of filter name in a decision record (or in filterhost's
    "filters"), found loosely: any dict under it that names the filter."""
    found = []

    def walk(x):
        if isinstance(x, dict):
            if x.get("filter") == name or x.get("name") == name:
                found.append(x)
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)
    walk(record)
    return found


def dns_filter_section(name, dns, trusted, timeout, **options):
    """[dns] pointing at the loopback server dns (None: port 53) and a
    [filter name] section for the built-in module name; trusted None
    leaves trusted_networks at the filter's default."""
    lines = ["", "[dns]",
             "servers = 127.0.0.1:%d" % (dns.port if dns else 53),
             "timeout = 1", "retries = 0", "",
             "[filter %s]" % name, "module = %s" % name, "timeout = %d" % timeout,
             "on_error = tempfail"]
    if trusted is not None:
        lines.append("trusted_networks = %s" % trusted)
    for k, v in options.items():
        lines.append("%s = %s" % (k, v))
    return "\n".join(lines) + "\n"


def filter_config_text(p, name, section, filter_dir, authserv_id=None):
    """A complete configuration text for Portcullis p with the chain of
    filter name alone (unless p already names one) and section."""
    if p.dir is None:
        p.dir = make_tempdir("portcullis-proxy-")
    p.kwargs.setdefault("filters", name)
    p.kwargs.setdefault("filter_dir", filter_dir)
    if authserv_id is not None:
        p.kwargs.setdefault("authserv_id", authserv_id)
    p.extra = section
    return p.config_text()


def require_filters(binary=None):
    """The daemon must take a filter chain ([portcullis] filters): the
    filter modules' setUpModule() call this, and a daemon that is not
    built or refuses the chain fails them (a daemon not built is a skip
    outside CI, like every test that needs it)."""
    binary = binary or PORTCULLIS_BIN
    if not os.access(binary, os.X_OK):
        raise unittest.SkipTest("daemon not built: %s" % binary)
    d = make_tempdir("portcullis-filtercheck-")
    try:
        path = os.path.join(d, "check.conf")
        with open(path, "w") as f:
            f.write("[portcullis]\nlisten = 127.0.0.1:1\nspool_dir = %s\n"
                    "filters =\n[backend]\nservers = 127.0.0.1:2\n" % d)
        r = subprocess.run([binary, "-t", "-c", path], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=30)
        if r.returncode != 0:
            raise AssertionError("portcullis -t refused an empty filter "
                                 "chain (exit %d):\n%s" % (
                                     r.returncode,
                                     r.stdout.decode(errors="replace")[-2000:]))
    finally:
        remove_tree(d)


# ---------------------------------------------------------------------------
# the runner

class _HonestResult(unittest.TextTestResult):
    """unittest's verbose result that keeps one outcome per test id
    ("passed", "failed", "skipped"), and the skips of a class or module
    whose setUp skipped it, so every test loaded is counted once."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.outcome = {}
        self.skipped_scopes = {}    # "module" or "module.Class" -> reason
        self.failed_scopes = {}     # the same, for a setUp that failed
        self.extra_failures = 0     # teardowns failed after their tests ran

    def _set(self, test, what):
        tid = test.id()
        if self.outcome.get(tid) != "failed":
            self.outcome[tid] = what

    def _scope(self, test):
        """The class or module a setUpClass/setUpModule error names."""
        m = re.match(r"(setUpClass|setUpModule|tearDownClass|tearDownModule)"
                     r" \(([^)]*)\)", test.description
                     if hasattr(test, "description") else "")
        return m.groups() if m else (None, None)

    def addSuccess(self, test):
        super().addSuccess(test)
        self._set(test, "passed")

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._set(test, "passed")

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._set(test, "failed")

    def _fail_scope(self, test):
        kind, scope = self._scope(test)
        if kind is None:
            self._set(test, "failed")
        elif kind.startswith("setUp"):
            self.failed_scopes[scope] = True
        else:
            self.extra_failures += 1

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._fail_scope(test)

    def addError(self, test, err):
        super().addError(test, err)
        self._fail_scope(test)

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            self._set(test, "failed")

    def addSkip(self, test, reason):
        if in_ci() and not reason.startswith(TOOL_SKIP):
            # CI: stepping aside for anything but a missing tool hides a
            # regression (a module refused, a part not built)
            try:
                raise AssertionError("skipped in CI, and not for a missing "
                                     "tool: " + reason)
            except AssertionError:
                self.addFailure(test, sys.exc_info())
            return
        super().addSkip(test, reason)
        kind, scope = self._scope(test)
        if kind is None:
            self._set(test, "skipped")
        else:
            self.skipped_scopes[scope] = reason

    def counts(self, ids):
        """(passed, failed, skipped) over the test ids loaded: a test with
        no outcome of its own takes its class's or module's, and one that
        never ran for another reason (a crash, a timeout) failed."""
        n = {"passed": 0, "failed": 0, "skipped": 0}
        for tid in ids:
            what = self.outcome.get(tid)
            if what is None:
                cls, mod = tid.rsplit(".", 1)[0], tid.split(".", 1)[0]
                if cls in self.failed_scopes or mod in self.failed_scopes:
                    what = "failed"
                elif cls in self.skipped_scopes or mod in self.skipped_scopes:
                    what = "skipped"
                else:
                    what = "failed"
            n[what] += 1
        return n["passed"], n["failed"] + self.extra_failures, n["skipped"]


def _test_ids(suite):
    """The ids of every test in a (nested) suite."""
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from _test_ids(t)
        else:
            yield t.id()


def main(names):
    """Run the modules (or Module.Class.test) named; print unittest's
    verbose report, then the last line "N passed, N failed[, N skipped]"
    counted per test. Returns the exit status: 1 on any failure or when
    nothing ran."""
    loader = unittest.TestLoader()
    try:
        suite = loader.loadTestsFromNames(names)
    except Exception:  # noqa: BLE001 - an import error is a failed run
        traceback.print_exc()
        print("0 passed, 1 failed")
        return 1
    ids = list(_test_ids(suite))
    # a module that does not import shows up as a _FailedTest
    runner = unittest.TextTestRunner(verbosity=2, resultclass=_HonestResult,
                                     stream=sys.stdout)
    result = runner.run(suite)
    passed, failed, skipped = result.counts(ids)
    if not ids:
        failed = max(failed, 1)
    line = "%d passed, %d failed" % (passed, failed)
    if skipped:
        line += ", %d skipped" % skipped
    print(line)
    sys.stdout.flush()
    return 1 if failed else 0
