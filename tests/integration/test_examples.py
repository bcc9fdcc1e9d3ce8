"""
The example configurations in etc/ stay true: each one, with its file
paths pointed at files the test makes (a certificate and key, a CA, a
DKIM key, a spool and log directory, the built filters), passes
`portcullis -t`. A key renamed or removed in the code and not in an
example fails here, naming the example.
"""

import glob
import os
import re
import resource
import shutil
import subprocess
import unittest

from harness import PORTCULLIS_BIN, PROJECT, make_tempdir, remove_tree

FILTER_DIR = os.environ.get("PORTCULLIS_FILTER_DIR") or os.path.join(
    PROJECT, "filters", ".libs")


class TestExamples(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        if not os.access(PORTCULLIS_BIN, os.X_OK):
            raise unittest.SkipTest("daemon not built: %s" % PORTCULLIS_BIN)
        if not shutil.which("openssl"):
            raise unittest.SkipTest("openssl command not installed")
        cls.dir = make_tempdir("portcullis-examples-")
        cls.cert = os.path.join(cls.dir, "cert.pem")
        cls.key = os.path.join(cls.dir, "key.pem")
        cls.dkim = os.path.join(cls.dir, "dkim.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                        "-keyout", cls.key, "-out", cls.cert, "-days", "2",
                        "-subj", "/CN=mx.example.org"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(["openssl", "genrsa", "-traditional", "-out", cls.dkim, "2048"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    @classmethod
    def tearDownClass(cls):
        remove_tree(cls.dir)

    def localize(self, text):
        """The example with its paths pointed at the test's files."""
        d = self.dir

        def files(m, path):
            return "%s= %s" % (m.group(1), " ".join(path for _ in m.group(2).split()))
        text = re.sub(r"(?m)^(tls_certificate\s*)=\s*(.*)$",
                      lambda m: files(m, self.cert), text)
        text = re.sub(r"(?m)^(tls_key\s*)=\s*(.*)$", lambda m: files(m, self.key), text)
        text = re.sub(r"(?m)^tls_ca_file\s*=.*$", "tls_ca_file = " + self.cert, text)
        text = re.sub(r"(?m)^(sign\s*=\s*[^:\s]+:[^:\s]+:)\S+", r"\g<1>" + self.dkim, text)
        text = re.sub(r"(?m)^user\s*=.*$", "user =", text)
        for key, value in (("spool_dir", os.path.join(d, "spool")),
                           ("pid_file", os.path.join(d, "portcullis.pid")),
                           ("decisions", os.path.join(d, "decisions.json")),
                           ("filter_dir", FILTER_DIR)):
            text = re.sub(r"(?m)^%s\s*=.*$" % key, "%s = %s" % (key, value), text)
        # The example is sized for its systemd unit (LimitNOFILE=65536);
        # this machine's hard limit may be lower: that is not the example's.
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        fits = max(100, (hard - 400) // 2) if hard != resource.RLIM_INFINITY else None
        if fits:
            text = re.sub(r"(?m)^max_sessions\s*=\s*(\d+)",
                          lambda m: "max_sessions = %d" % min(int(m.group(1)), fits), text)
        if not re.search(r"(?m)^filter_dir\s*=", text):
            text = text.replace("[portcullis]\n", "[portcullis]\nfilter_dir = %s\n"
                                % FILTER_DIR, 1)
        if not re.search(r"(?m)^spool_dir\s*=", text):
            text = text.replace("[portcullis]\n", "[portcullis]\nspool_dir = %s\n"
                                % os.path.join(d, "spool"), 1)
        return text

    def test_every_example_passes_the_check(self):
        examples = sorted(glob.glob(os.path.join(PROJECT, "etc", "*.conf")))
        self.assertGreaterEqual(len(examples), 4, examples)
        for path in examples:
            with self.subTest(example=os.path.basename(path)):
                with open(path) as f:
                    text = self.localize(f.read())
                conf = os.path.join(self.dir, os.path.basename(path))
                with open(conf, "w") as f:
                    f.write(text)
                r = subprocess.run([PORTCULLIS_BIN, "-t", "-c", conf],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   timeout=30)
                self.assertEqual(r.returncode, 0, "%s:\n%s" % (
                    os.path.basename(path), r.stderr.decode(errors="replace")))


if __name__ == "__main__":
    unittest.main()
