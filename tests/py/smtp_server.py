#!/usr/bin/env python3
"""A real SMTP server for commandpost's mail tests (tests/src/smtp.rs), on aiosmtpd (pinned by scripts/test.sh).

Listens on 127.0.0.1 (port 0 by default: the kernel picks), prints `listening <port>` once it accepts connections,
then one JSON line per message received: the envelope (MAIL FROM, RCPT TO), the login it authenticated as, whether
the session was encrypted, and the message as Python's `email` package parses it (every header decoded, the text and
HTML parts of a multipart/alternative). The raw header block is kept too, so tests can check what was on the wire.

Modes: `starttls` (offered, and required before MAIL and AUTH), `tls` (TLS from the first byte), `plain` (no TLS
offered at all: what a client requiring STARTTLS must refuse). `--auth user:password` requires AUTH (PLAIN or
LOGIN). `--reject` answers every RCPT TO with a permanent 550.
"""

import argparse
import asyncio
import json
import socket
import ssl
import sys
from email import policy
from email.parser import BytesParser

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


def emit(record):
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


class Handler:
    def __init__(self, reject):
        self.reject = reject

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.reject:
            return "550 5.1.1 <%s>: no such mailing list here" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        header_block = raw.split(b"\r\n\r\n", 1)[0].decode("ascii", "replace")
        message = BytesParser(policy=policy.default).parsebytes(raw)
        headers = {}
        for name, value in message.items():
            headers.setdefault(name.lower(), []).append(str(value))
        parts = {}
        if message.is_multipart():
            for part in message.walk():
                if part.is_multipart():
                    continue
                parts[part.get_content_type()] = part.get_content()
        else:
            parts[message.get_content_type()] = message.get_content()
        auth = session.auth_data
        login = auth.login.decode() if isinstance(auth, LoginPassword) else None
        emit(
            {
                "mail_from": envelope.mail_from,
                "rcpt_tos": envelope.rcpt_tos,
                "login": login,
                # After STARTTLS aiosmtpd records the session's TLS; with TLS from the first byte the transport is it.
                "tls": session.ssl is not None
                or server.transport.get_extra_info("ssl_object") is not None,
                "content_type": message.get_content_type(),
                "headers": headers,
                "raw_headers": header_block,
                "parts": parts,
            }
        )
        return "250 2.0.0 queued"


def tls_context(cert, key):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--mode", choices=["starttls", "tls", "plain"], default="starttls")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--auth", help="user:password required with AUTH")
    parser.add_argument("--reject", action="store_true")
    args = parser.parse_args()

    context = tls_context(args.cert, args.key) if args.mode != "plain" else None
    user, password = (args.auth.split(":", 1) + [""])[:2] if args.auth else (None, None)

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == user.encode()
            and auth_data.password == password.encode()
        )
        return AuthResult(success=ok, auth_data=auth_data if ok else None)

    handler = Handler(args.reject)

    def factory():
        return SMTP(
            handler,
            hostname="smtp.test",
            tls_context=context if args.mode == "starttls" else None,
            require_starttls=args.mode == "starttls",
            authenticator=authenticator if args.auth else None,
            auth_required=bool(args.auth),
            # With TLS from the first byte the connection is encrypted already (aiosmtpd only knows of STARTTLS).
            auth_require_tls=args.mode == "starttls",
        )

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(64)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        factory, sock=sock, ssl=context if args.mode == "tls" else None
    )
    sys.stdout.write("listening %d\n" % sock.getsockname()[1])
    sys.stdout.flush()
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
