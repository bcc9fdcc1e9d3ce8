"""
rspamd_helper - Debian's rspamd as a milter, for test_milter_filter

Rspamd runs in the foreground (rspamd -f) from a configuration written
into a temporary directory: no system service, no redis, no network
checks. It has one worker, the proxy in milter mode that scans the
message itself (milter = yes, self_scan = yes), on a loopback port, and
what the tests need of its scanning:

  - GTUBE: rspamd's built-in test pattern makes the action "reject"
    (rspamd answers the end of the message with a reply code: its
    reject_message, "Spam message rejected", as 554 5.7.1);
  - a local Lua rule, PORTCULLIS_TAG_ME (score 8, above the add_header
    threshold of 6, below reject at 15), fires on a Subject containing
    TAG_SUBJECT: the action "add header", for which rspamd adds
    "X-Spam: Yes" itself and the milter_headers module X-Spamd-Result
    and X-Spam-Status;
  - everything else scores 0 ("no action") and gets X-Spamd-Result and
    X-Spam-Status: No.

Only the Lua modules with a section below are loaded (milter_headers);
rspamd disables the others ("disabling unconfigured lua module"), and
the C filters are off (filters = ""), so nothing asks a DNS server.

Rspamd drops its privileges to _rspamd (Debian's package creates the
user): the directory is given to it. Starting takes seconds (rspamd
compiles its list of public suffixes first): start it once per class.
"""

import os
import pwd
import shutil
import subprocess
import unittest

from harness import free_port, make_tempdir, remove_tree, wait_listening

RSPAMD_USER = "_rspamd"
TAG_SUBJECT = "please tag me"
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
REJECT_MESSAGE = "Spam message rejected"

CONFIG = """\
options {
  pidfile = "%(dir)s/rspamd.pid";
  dbdir = "%(dir)s/db";
  tempdir = "%(dir)s";
  hs_cache_dir = "%(dir)s/db";
  filters = "";
  local_addrs = [];
  task_timeout = 8s;
  # no rule here asks; a stray query would go nowhere, quickly
  dns { nameserver = ["127.0.0.1:1"]; timeout = 1s; retransmits = 1; }
}
logging {
  type = "file";
  filename = "%(dir)s/rspamd.log";
  level = "info";
}
actions {
  reject = 15;
  add_header = 6;
  greylist = null;
}
modules { path = "/usr/share/rspamd/plugins"; }
lua = "%(dir)s/local.lua";
milter_headers {
  use = ["x-spamd-result", "x-spam-status"];
  skip_local = false;
  skip_authenticated = false;
}
worker "rspamd_proxy" {
  bind_socket = "127.0.0.1:%(port)d";
  milter = yes;
  self_scan = yes;
  timeout = 30s;
  count = 1;
  spam_header = "X-Spam";
  reject_message = "%(reject)s";
  upstream "local" { default = yes; self_scan = yes; }
}
"""

RULES = """\
rspamd_config.PORTCULLIS_TAG_ME = {
  callback = function(task)
    local s = task:get_subject()
    return s ~= nil and s:find('%s', 1, true) ~= nil
  end,
  score = 8.0,
  description = 'the test asks rspamd to tag this message',
}
"""


class Rspamd:
    """rspamd -f with its proxy worker as a milter on 127.0.0.1:port."""

    def __init__(self):
        if not shutil.which("rspamd"):
            raise unittest.SkipTest("missing tool: rspamd")
        try:
            user = pwd.getpwnam(RSPAMD_USER)
        except KeyError:
            raise unittest.SkipTest("missing tool: rspamd (no user %s: "
                                    "not Debian's package)" % RSPAMD_USER)
        if os.geteuid() != 0:
            raise unittest.SkipTest("rspamd drops to %s: run as root"
                                    % RSPAMD_USER)
        self.dir = make_tempdir("portcullis-rspamd-")
        self.port = free_port()
        self.log = os.path.join(self.dir, "rspamd.log")
        os.makedirs(os.path.join(self.dir, "db"))
        conf = os.path.join(self.dir, "rspamd.conf")
        with open(conf, "w") as f:
            f.write(CONFIG % {"dir": self.dir, "port": self.port,
                              "reject": REJECT_MESSAGE})
        with open(os.path.join(self.dir, "local.lua"), "w") as f:
            f.write(RULES % TAG_SUBJECT)
        for root, dirs, files in os.walk(self.dir):
            for name in [root] + [os.path.join(root, n) for n in dirs + files]:
                os.chown(name, user.pw_uid, user.pw_gid)
        self.out = open(os.path.join(self.dir, "stderr"), "wb")
        self.proc = subprocess.Popen(
            ["rspamd", "-f", "-c", conf, "-u", RSPAMD_USER, "-g",
             RSPAMD_USER], stdout=self.out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
        # the public suffix list is compiled before the worker listens:
        # seconds, more on a busy machine
        if not wait_listening(self.port, 90, self.proc):
            why = self.tail()
            self.stop()
            raise AssertionError("rspamd did not listen on %d: %s"
                                 % (self.port, why))

    @property
    def spec(self):
        return "inet:%d@127.0.0.1" % self.port

    def tail(self, n=4000):
        out = b""
        for path in (os.path.join(self.dir, "stderr"), self.log):
            try:
                with open(path, "rb") as f:
                    out += f.read()[-n:]
            except OSError:
                pass
        return out.decode(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.out.close()
        remove_tree(self.dir)
