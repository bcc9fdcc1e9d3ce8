"""
demo.py - Portcullis for real, in front of a private Postfix

Starts a private Postfix on a loopback port (virtual Maildirs for alice,
bob and carol @ example.test), Portcullis in front of it on another
loopback port, sends a few messages with swaks, and shows what a mail
administrator looks at: the SMTP dialogue, the JSON decisions, and the
mail as Postfix delivered it. Everything is stopped at the end.

Run as root through ./run-demo (it builds first).
"""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "integration"))

import harness  # noqa: E402


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
    try:
        banner("Starting a private Postfix on 127.0.0.1:%d" % postfix.port)
        postfix.start()
        # The built-in filters next to the daemon that was just built.
        build = os.path.dirname(os.path.dirname(os.path.abspath(harness.PORTCULLIS_BIN)))
        proxy = harness.Portcullis(
            backend_port=postfix.port, log_level="info",
            filters="size, relay",
            filter_dir=os.path.join(build, "filters", ".libs"),
            # The demo's clients come from 127.0.0.1: not trusted here, so
            # they may send to example.test only.
            extra="\n[filter size]\nmodule = size\nlimit = 64k\n"
                  "\n[filter relay]\nmodule = relay\nlocal_domains = example.test\n"
                  "trusted_networks = 192.0.2.0/24\n")
        banner("Starting Portcullis on 127.0.0.1:%d in front of it" % proxy.port)
        proxy.start()
        print(open(proxy.conf_path).read())

        banner("1. A message to alice: relayed, Postfix's queue id comes back")
        swaks(proxy, "--from", "sender@example.net", "--to", "alice@example.test",
              "--h-Subject", "Hello through Portcullis")

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

        banner("4. A stranger tries to relay through us: the relay filter says 554 5.7.1")
        swaks(proxy, "--from", "spammer@example.net", "--to", "victim@elsewhere.example",
              "--h-Subject", "Relay me")

        banner("5. A message over the size filter's 64k limit: 552 5.3.4 at MAIL")
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
        postfix.stop()


if __name__ == "__main__":
    sys.exit(main())
