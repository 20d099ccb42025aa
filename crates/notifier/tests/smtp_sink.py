"""A real SMTP server for the notifier's tests (aiosmtpd).

Saves every accepted message as DIR/msg-<n>.json (written to a temporary name, then renamed, so a
reader never sees half a file) with the envelope and the decoded subject, Message-ID and bodies;
appends every RCPT TO it is offered to DIR/rcpt.log; writes DIR/ready once it listens. Recipients
given with --reject get `550 5.1.1`, with --tempfail `451 4.3.0`. With --auth USER:PASSWORD the
server requires AUTH (PLAIN/LOGIN without TLS, for the test only) and refuses other credentials
with 535. With --delay SECONDS every reply (the greeting included; the last line of a multi-line
reply) is held back that long, as a slow or overloaded server does. Stops on SIGTERM.

    python smtp_sink.py --port 2525 --dir /tmp/sink [--reject a@x.test] [--auth user:pw] [--delay 1.5]
"""

import argparse
import asyncio
import email
import email.policy
import json
import os
import signal

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


def parse_args():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--reject", action="append", default=[])
    parser.add_argument("--tempfail", action="append", default=[])
    parser.add_argument("--auth", default=None)
    parser.add_argument("--delay", type=float, default=0.0)
    return parser.parse_args()


class Handler:
    def __init__(self, directory, reject, tempfail):
        self.directory = directory
        self.reject = {a.lower() for a in reject}
        self.tempfail = {a.lower() for a in tempfail}
        existing = [f for f in os.listdir(directory) if f.startswith("msg-")]
        self.count = len(existing)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with open(os.path.join(self.directory, "rcpt.log"), "a", encoding="utf-8") as log:
            log.write(address + "\n")
        if address.lower() in self.reject:
            return "550 5.1.1 <%s>: mailbox unavailable" % address
        if address.lower() in self.tempfail:
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        message = email.message_from_bytes(raw, policy=email.policy.default)
        text = message.get_body(preferencelist=("plain",))
        html = message.get_body(preferencelist=("html",))
        self.count += 1
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "authenticated": bool(getattr(session, "authenticated", False)),
            "subject": str(message["Subject"] or ""),
            "message_id": str(message["Message-ID"] or ""),
            "from": str(message["From"] or ""),
            "to": str(message["To"] or ""),
            "reply_to": str(message["Reply-To"] or ""),
            "text": text.get_content() if text is not None else "",
            "html": html.get_content() if html is not None else "",
        }
        name = os.path.join(self.directory, "msg-%06d.json" % self.count)
        with open(name + ".tmp", "w", encoding="utf-8") as out:
            json.dump(record, out)
        os.rename(name + ".tmp", name)
        return "250 2.0.0 Ok: queued as %d" % self.count


class SlowSMTP(SMTP):
    """Holds back every reply by `reply_delay` seconds (the scenario of a slow server, not a wait
    for anything). Continuation lines of a multi-line reply (`250-...`) go out at once; the delay
    is before the line that ends the reply, so each reply costs one delay."""

    reply_delay = 0.0

    async def push(self, status):
        text = status.decode("ascii", "replace") if isinstance(status, bytes) else status
        if self.reply_delay > 0 and not (len(text) > 3 and text[3] == "-"):
            await asyncio.sleep(self.reply_delay)
        await super().push(status)


def authenticator_for(spec):
    user, _, password = spec.partition(":")

    def authenticate(server, session, envelope, mechanism, auth_data):
        if (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == user
            and auth_data.password.decode() == password
        ):
            return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    return authenticate


async def main():
    args = parse_args()
    os.makedirs(args.dir, exist_ok=True)
    handler = Handler(args.dir, args.reject, args.tempfail)
    options = {"hostname": "sink.test", "decode_data": False}
    if args.auth:
        options.update(
            authenticator=authenticator_for(args.auth),
            auth_required=True,
            auth_require_tls=False,
        )
    loop = asyncio.get_running_loop()
    SlowSMTP.reply_delay = args.delay
    server = await loop.create_server(lambda: SlowSMTP(handler, **options), args.host, args.port)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    with open(os.path.join(args.dir, "ready.tmp"), "w") as ready:
        ready.write(str(args.port))
    os.rename(os.path.join(args.dir, "ready.tmp"), os.path.join(args.dir, "ready"))
    await stop.wait()
    server.close()
    await server.wait_closed()
    os.remove(os.path.join(args.dir, "ready"))


if __name__ == "__main__":
    asyncio.run(main())
