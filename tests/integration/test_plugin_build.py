"""
A filter built out of the tree, the way a third party builds one: with
nothing but the installed header and pkg-config file. The project is
installed with `make install DESTDIR=<tmp>`, the header_rules example
plugin is copied away from the source tree and built with its own
Makefile against <tmp>, and the daemon under test loads it by absolute
path in front of smtp-sink.
"""

import os
import re
import shutil
import subprocess
import unittest

from harness import (DOMAIN, PROJECT, ProxyTestCase, Portcullis, Sink,
                     make_message, make_tempdir, remove_tree, header_fields,
                     PORTCULLIS_BIN)
import harness  # noqa: E402


def setUpModule():
    # a daemon that refuses a filter chain fails every test here
    harness.require_filters()


ALICE = "alice@" + DOMAIN
BOB = "bob@" + DOMAIN

PLUGIN_SRC = os.path.join(PROJECT, "plugins", "header_rules")
PREFIX = "/usr/local"

RULES = """\
# rules of the out-of-tree build test
tag      Subject /free money/          X-Spam-Flag: YES
reject   Subject /viagra|casino/       550 5.7.1 Spam subject refused
"""

# line 2 has an unbalanced parenthesis
BAD_RULES = """\
tag      Subject /free money/          X-Spam-Flag: YES
reject   Subject /(viagra|casino/      550 5.7.1 Spam subject refused
"""


def run(cmd, cwd, env=None, timeout=600):
    return subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, timeout=timeout,
                          stdin=subprocess.DEVNULL, universal_newlines=True,
                          errors="replace")


class PluginBuildTest(ProxyTestCase):
    """Installs and builds once for the class; a proxy per test."""

    @classmethod
    def setUpClass(cls):
        if not os.access(PORTCULLIS_BIN, os.X_OK):
            raise unittest.SkipTest("daemon not built: %s" % PORTCULLIS_BIN)
        cls.tmp = make_tempdir("portcullis-plugin-")
        try:
            cls._install_and_build()
        except Exception:
            remove_tree(cls.tmp)
            raise

    @classmethod
    def tearDownClass(cls):
        remove_tree(cls.tmp)

    @classmethod
    def _install_and_build(cls):
        destdir = os.path.join(cls.tmp, "root")
        # the build tree of the daemon under test (tests/run builds
        # outside the source tree)
        r = run(["make", "install", "DESTDIR=" + destdir], harness.BUILD)
        if r.returncode != 0:
            raise AssertionError("make install failed:\n" + r.stdout[-4000:])
        cls.pkgconfig_dir = destdir + PREFIX + "/lib/pkgconfig"
        cls.installed_header = (destdir + PREFIX +
                                "/include/portcullis/filter.h")
        if not os.path.exists(cls.installed_header):
            raise AssertionError("make install installed no %s"
                                 % cls.installed_header)

        # Away from the source tree: no include/ of the project nearby.
        cls.src = os.path.join(cls.tmp, "header_rules")
        os.makedirs(cls.src)
        for name in ("header_rules.c", "Makefile"):
            shutil.copy(os.path.join(PLUGIN_SRC, name), cls.src)

        env = dict(os.environ)
        for var in ("CPATH", "C_INCLUDE_PATH", "CFLAGS", "CPPFLAGS"):
            env.pop(var, None)
        # Only the DESTDIR's portcullis.pc is visible, and its -I points
        # into the DESTDIR.
        env["PKG_CONFIG_PATH"] = cls.pkgconfig_dir
        env["PKG_CONFIG_LIBDIR"] = cls.pkgconfig_dir
        env["PKG_CONFIG_SYSROOT_DIR"] = destdir
        r = run(["pkg-config", "--cflags", "portcullis"], cls.src, env)
        if r.returncode != 0:
            raise AssertionError("pkg-config --cflags portcullis failed:\n"
                                 + r.stdout)
        cls.cflags = r.stdout.strip()
        # -MD records which filter.h the compiler really read.
        r = run(["make", "CFLAGS=-O2 -g -MD"], cls.src, env)
        if r.returncode != 0:
            raise AssertionError("plugin build failed:\n" + r.stdout[-4000:])
        cls.build_output = r.stdout
        cls.plugin = os.path.join(cls.src, "header_rules.so")
        with open(os.path.join(cls.src, "header_rules.d")) as f:
            cls.deps = f.read()

    def setUp(self):
        self.dir = make_tempdir("portcullis-rules-")
        self.addCleanup(remove_tree, self.dir)
        self.rules = os.path.join(self.dir, "test.rules")
        with open(self.rules, "w") as f:
            f.write(RULES)

    def section(self, rules):
        return ("\n[filter rules]\nmodule = %s\ntimeout = 5\n"
                "rules_file = %s\n" % (self.plugin, rules))

    def proxy(self):
        self.sink = self.start_sink()
        return self.start_proxy(backend_port=self.sink.port, filters="rules",
                                extra=self.section(self.rules))

    def send(self, proxy, subject):
        c = self.client(proxy.port)
        r = c.mail_transaction(ALICE, [BOB], make_message(subject),
                               helo="client.example.test")
        self.assertCode(c.cmd("QUIT"), 221)
        return r["end"]


class TestBuild(PluginBuildTest):

    def test_cflags_point_into_the_install_root(self):
        self.assertIn("-I" + os.path.join(self.tmp, "root"), self.cflags)

    def test_the_installed_header_was_used(self):
        self.assertIn(self.installed_header, self.deps)
        self.assertNotIn(os.path.join(PROJECT, "include"), self.deps)

    def test_the_build_has_no_warnings(self):
        self.assertNotIn("warning:", self.build_output)


class TestRules(PluginBuildTest):

    def test_subject_matching_a_reject_rule_gets_its_reply(self):
        proxy = self.proxy()
        r = self.send(proxy, "Cheap casino chips")
        self.assertReply(r, 550, "5.7.1")
        self.assertIn("Spam subject refused", r.text)
        self.assertEqual(self.sink.settled_count(), 0,
                         "a rejected message reached the backend")

    def test_tag_rule_adds_its_header_to_the_delivered_message(self):
        proxy = self.proxy()
        self.assertCode(self.send(proxy, "Free money for you"), 250)
        self.assertEqual(self.sink.wait_count(1), 1)
        _, msg = Sink.parse(self.sink.messages()[0])
        fields = header_fields(msg)
        self.assertIn((b"x-spam-flag", b"X-Spam-Flag: YES"), fields,
                      msg[:2000])

    def test_clean_message_passes_untouched(self):
        proxy = self.proxy()
        self.assertCode(self.send(proxy, "Minutes of the meeting"), 250)
        self.assertEqual(self.sink.wait_count(1), 1)
        _, msg = Sink.parse(self.sink.messages()[0])
        self.assertNotIn(b"X-Spam-Flag", msg)
        self.assertIn(b"Subject: Minutes of the meeting", msg)

    def test_bad_rules_file_fails_the_config_check_naming_the_line(self):
        bad = os.path.join(self.dir, "bad.rules")
        with open(bad, "w") as f:
            f.write(BAD_RULES)
        p = Portcullis(backend_port=10025, filters="rules")
        self.addCleanup(lambda: remove_tree(p.dir))
        p.dir = make_tempdir("portcullis-proxy-")
        r = p.check_config(p.config_text() + self.section(bad))
        out = (r.stdout + r.stderr).decode(errors="replace")
        self.assertEqual(r.returncode, 1, out)
        self.assertRegex(out, r"\[filter rules\] rules_file: %s:2: "
                         % re.escape(bad))


if __name__ == "__main__":
    unittest.main()
