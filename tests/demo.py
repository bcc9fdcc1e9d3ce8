"""
demo.py - Portcullis for real, in front of a private Postfix

Starts a private Postfix on a loopback port (virtual Maildirs for alice,
bob and carol @ example.test), Portcullis in front of it on another
loopback port, sends a few messages with swaks, and shows what a mail
administrator looks at: the SMTP dialogue, the JSON decisions, and the
mail as Postfix delivered it. Everything is stopped at the end.

Run as root through ./run-demo (it builds first).
"""

import base64
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "integration"))
sys.path.insert(0, os.path.join(HERE, "dns"))

import dkim  # noqa: E402  (dkimpy, Debian's python3-dkim)
import harness  # noqa: E402
from dnsserver import DNSServer  # noqa: E402


def dkim_key():
    """An RSA 2048 key made now: (PEM private key, DKIM TXT record)."""
    pem = subprocess.run(["openssl", "genrsa", "-traditional", "2048"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         check=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubout", "-outform", "DER"],
                         input=pem, stdout=subprocess.PIPE, check=True).stdout
    return pem, "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()


def banner(text):
    print()
    print("=" * 72)
    print(text)
    print("=" * 72)


def swaks(proxy, *args):
    """Send with swaks through the proxy and show its dialogue."""
    cmd = ["--server", "127.0.0.1:%d" % proxy.port, "--helo", "client.example.net"] + list(args)
    print("$ swaks " + " ".join(cmd))
    result = harness.run_swaks(cmd)
    for line in result.stdout.splitlines():
        # The dialogue, without the message body lines swaks echoes.
        if line.startswith(("<-", "<**", " -> MAIL", " -> RCPT", " -> DATA", " -> EHLO", " -> QUIT")):
            print("    " + line)
    return result


def main():
    postfix = harness.Postfix()
    proxy = None
    dns = None
    try:
        banner("Starting a private Postfix on 127.0.0.1:%d" % postfix.port)
        postfix.start()
        # A local test zone: example.net lets 127.0.0.1 send (SPF) and
        # publishes a DKIM key; forged.example lets nobody send.
        key_pem, key_txt = dkim_key()
        dns = DNSServer({
            "example.net": [{"TXT": "v=spf1 ip4:127.0.0.1 -all"}],
            "demo._domainkey.example.net": [{"TXT": key_txt}],
            "forged.example": [{"TXT": "v=spf1 ip4:192.0.2.0/24 -all exp=why.forged.example"}],
            "why.forged.example": [{"TXT": "%{i} is not a mail server of %{d}"}],
        })
        dns.start()
        banner("A DNS server for the test zone on 127.0.0.1:%d" % dns.port)
        # The built-in filters next to the daemon that was just built.
        build = os.path.dirname(os.path.dirname(os.path.abspath(harness.PORTCULLIS_BIN)))
        proxy = harness.Portcullis(
            backend_port=postfix.port, log_level="info",
            filters="size, relay, spf, dkim",
            filter_dir=os.path.join(build, "filters", ".libs"),
            # The demo's clients come from 127.0.0.1: not trusted here, so
            # they may send to example.test only, and SPF and DKIM are
            # checked for them.
            extra="\n[filter size]\nmodule = size\nlimit = 64k\n"
                  "\n[filter relay]\nmodule = relay\nlocal_domains = example.test\n"
                  "trusted_networks = 192.0.2.0/24\n"
                  "\n[filter spf]\nmodule = spf\ntrusted_networks =\n"
                  "\n[filter dkim]\nmodule = dkim\ntrusted_networks =\n"
                  "\n[dns]\nservers = 127.0.0.1:%d\ntimeout = 2\n" % dns.port)
        banner("Starting Portcullis on 127.0.0.1:%d in front of it" % proxy.port)
        proxy.start()
        print(open(proxy.conf_path).read())

        banner("1. A message to alice from example.net, signed with its DKIM key:\n"
               "   SPF pass, DKIM pass, relayed; Postfix's queue id comes back")
        message = (b"From: Sender <sender@example.net>\r\nTo: alice@example.test\r\n"
                   b"Subject: Hello through Portcullis\r\n"
                   b"Message-ID: <demo-1@example.net>\r\n\r\nSigned by example.net.\r\n")
        signed = dkim.sign(message, b"demo", b"example.net", key_pem,
                           include_headers=[b"from", b"to", b"subject", b"message-id"])
        path = os.path.join(proxy.dir, "signed.eml")
        with open(path, "wb") as f:
            f.write(signed + message)
        swaks(proxy, "--from", "sender@example.net", "--to", "alice@example.test",
              "--data", "@" + path)

        banner("2. Three recipients, one unknown: Postfix's own 550 reaches the client")
        swaks(proxy, "--from", "sender@example.net",
              "--to", "bob@example.test,nobody@example.test,carol@example.test",
              "--h-Subject", "Two of three")

        banner("3. A smuggling attempt (bare LF before the dot): refused")
        raw = (b"line one\n.\nMAIL FROM:<evil@example.net>\r\n"
               b"RCPT TO:<alice@example.test>\r\nDATA\r\nsmuggled\r\n.\r\n")
        with harness.SMTPClient(proxy.port) as client:
            client.connect()
            for line in ("EHLO client.example.net", "MAIL FROM:<sender@example.net>",
                         "RCPT TO:<alice@example.test>", "DATA"):
                reply = client.cmd(line)
                print("     -> %s\n    <-  %s" % (line, reply.lines[-1]))
            print("     -> %r" % raw)
            client.send(raw)
            reply = client.reply()
            print("    <-  %s" % (reply.lines[-1]))
            client.cmd("QUIT")

        banner("4. A forged sender: forged.example's SPF record refuses 127.0.0.1,\n"
               "   so MAIL gets 550 5.7.23 with the domain's own explanation")
        swaks(proxy, "--from", "ceo@forged.example", "--to", "alice@example.test",
              "--h-Subject", "Wire the money")

        banner("5. A stranger tries to relay through us: the relay filter says 554 5.7.1")
        swaks(proxy, "--from", "spammer@example.net", "--to", "victim@elsewhere.example",
              "--h-Subject", "Relay me")

        banner("6. A message over the size filter's 64k limit: 552 5.3.4 at MAIL")
        with harness.SMTPClient(proxy.port) as client:
            client.connect()
            for line in ("EHLO client.example.net",
                         "MAIL FROM:<sender@example.net> SIZE=10000000", "QUIT"):
                reply = client.cmd(line)
                print("     -> %s\n    <-  %s" % (line, "\n    <-  ".join(reply.lines)))

        harness.wait_for(lambda: len(postfix.messages("alice")) >= 1 and
                         len(postfix.messages("bob")) >= 1 and
                         len(postfix.messages("carol")) >= 1, timeout=30)

        banner("The decision log (%s)" % proxy.decisions_path)
        for record in proxy.decisions():
            print(json.dumps(record, indent=None))

        banner("The mail Postfix delivered to alice's Maildir")
        for message in postfix.messages("alice"):
            print(message.decode("utf-8", "replace"))
        print("bob has %d message(s), carol has %d message(s)" %
              (len(postfix.messages("bob")), len(postfix.messages("carol"))))
        return 0
    finally:
        if proxy is not None:
            proxy.stop()
        if dns is not None:
            dns.stop()
        postfix.stop()


if __name__ == "__main__":
    sys.exit(main())
