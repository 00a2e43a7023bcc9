"""A local SMTP catcher for ``make up``: alert mails land here, and a read-only web page lists them.

``python -m nightly_ml.devtools.mailcatcher --host 127.0.0.1 --smtp-port 1025 --web-port 8025 --folder <dir>``

- SMTP (aiosmtpd) on ``host:smtp-port`` accepts every message, sends nothing on, and keeps it as an
  ``.eml`` file in the folder (so the mails outlive a restart and can be opened in a mail program);
- the web page on ``host:web-port`` lists them, newest first (``/``), shows one (``/messages/<id>``: headers
  and the plain-text part; its HTML part at ``/messages/<id>/html``, sandboxed), gives the raw message
  (``/messages/<id>.eml``) and the list as JSON (``/messages.json``); ``/health`` answers ok. GET only, no
  login: bind it to 127.0.0.1 (the default), never to an address others reach.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import signal
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import count
from pathlib import Path
from typing import Any

MESSAGE_ID = re.compile(r"^[0-9TZ]+-[0-9]+$")
PAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'"
# An HTML mail part runs in an opaque origin, loads nothing and runs no script.
MAIL_HTML_CSP = "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:"
STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1.5rem}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:.3rem .7rem;text-align:left}pre{white-space:pre-wrap}"
)


class MailStore:
    """The caught messages, one ``.eml`` file each, named so that names sort by arrival."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._serial = count(1)
        self._lock = threading.Lock()

    def add(self, content: bytes) -> str:
        self.folder.mkdir(parents=True, exist_ok=True)
        with self._lock:
            message_id = f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{next(self._serial)}"
        (self.folder / f"{message_id}.eml").write_bytes(content)
        return message_id

    def ids(self) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted((p.stem for p in self.folder.glob("*.eml") if MESSAGE_ID.match(p.stem)), reverse=True)

    def raw(self, message_id: str) -> bytes | None:
        if not MESSAGE_ID.match(message_id):
            return None
        path = self.folder / f"{message_id}.eml"
        return path.read_bytes() if path.is_file() else None

    def parsed(self, message_id: str) -> EmailMessage | None:
        raw = self.raw(message_id)
        return None if raw is None else message_from_bytes(raw, policy=policy.default)  # type: ignore[return-value]

    def summary(self, message_id: str) -> dict[str, str]:
        message = self.parsed(message_id)
        if message is None:
            return {}
        return {
            "id": message_id,
            "subject": str(message.get("Subject", "")),
            "from": str(message.get("From", "")),
            "to": str(message.get("To", "")),
            "date": str(message.get("Date", "")),
        }


class SmtpHandler:
    """aiosmtpd handler: keep every message, relay none."""

    def __init__(self, store: MailStore) -> None:
        self.store = store

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.store.add(envelope.original_content or envelope.content)
        return "250 Message accepted"


def _text_part(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    return part.get_content() if part is not None else ""


def _html_part(message: EmailMessage) -> str | None:
    part = message.get_body(preferencelist=("html",))
    return part.get_content() if part is not None and part.get_content_type() == "text/html" else None


def render_list(store: MailStore) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(s['date'])}</td><td>{html.escape(s['from'])}</td><td>{html.escape(s['to'])}</td>"
        f'<td><a href="/messages/{s["id"]}">{html.escape(s["subject"]) or "(no subject)"}</a></td></tr>'
        for s in (store.summary(i) for i in store.ids())
    )
    body = (
        f"<table><thead><tr><th>date</th><th>from</th><th>to</th><th>subject</th></tr></thead><tbody>{rows}</tbody>"
        "</table>"
        if rows
        else f"<p>No mail caught yet (kept in <code>{html.escape(str(store.folder))}</code>).</p>"
    )
    return _page("Caught mail", body)


def render_message(message_id: str, message: EmailMessage) -> str:
    headers = "".join(
        f"<tr><th>{name}</th><td>{html.escape(str(message.get(name, '')))}</td></tr>"
        for name in ("Subject", "From", "To", "Date")
    )
    links = f'<a href="/">all mail</a> · <a href="/messages/{message_id}.eml">raw</a>'
    if _html_part(message) is not None:
        links += f' · <a href="/messages/{message_id}/html">HTML part</a>'
    body = f"<p>{links}</p><table>{headers}</table><pre>{html.escape(_text_part(message))}</pre>"
    return _page(str(message.get("Subject", "")) or "(no subject)", body)


def _page(title: str, body: str) -> str:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )


def make_handler(store: MailStore) -> type[BaseHTTPRequestHandler]:
    class Viewer(BaseHTTPRequestHandler):
        server_version = "nightly-ml-mailcatcher"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/":
                return self._send(200, render_list(store), "text/html", PAGE_CSP)
            if path == "/health":
                return self._send(200, "ok", "text/plain", PAGE_CSP)
            if path == "/messages.json":
                listed = [store.summary(i) for i in store.ids()]
                return self._send(200, json.dumps(listed), "application/json", PAGE_CSP)
            found = re.fullmatch(r"/messages/([^/]+?)(\.eml|/html)?", path)
            message = store.parsed(found.group(1)) if found else None
            if found is None or message is None:
                return self._send(404, _page("Not found", "<p>No such message.</p>"), "text/html", PAGE_CSP)
            message_id, suffix = found.group(1), found.group(2)
            if suffix == ".eml":
                return self._send(200, store.raw(message_id) or b"", "message/rfc822", PAGE_CSP)
            if suffix == "/html":
                part = _html_part(message)
                if part is None:
                    return self._send(404, _page("Not found", "<p>No HTML part.</p>"), "text/html", PAGE_CSP)
                return self._send(200, part, "text/html", MAIL_HTML_CSP)
            return self._send(200, render_message(message_id, message), "text/html", PAGE_CSP)

        def _send(self, status: int, content: str | bytes, kind: str, csp: str) -> None:
            data = content.encode() if isinstance(content, str) else content
            self.send_response(status)
            self.send_header("Content-Type", f"{kind}; charset=utf-8" if kind.startswith("text/") else kind)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Content-Security-Policy", csp)
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            return  # quiet: `make up` prints Airflow's output

    return Viewer


class MailCatcher:
    """The SMTP server and the web page, started and stopped together (in threads of this process)."""

    def __init__(self, host: str, smtp_port: int, web_port: int, folder: Path) -> None:
        from aiosmtpd.controller import Controller

        self.store = MailStore(folder)
        self.smtp = Controller(SmtpHandler(self.store), hostname=host, port=smtp_port)
        self.web = ThreadingHTTPServer((host, web_port), make_handler(self.store))
        self._web_thread = threading.Thread(target=self.web.serve_forever, name="mail-viewer", daemon=True)

    def start(self) -> MailCatcher:
        self.smtp.start()
        self._web_thread.start()
        return self

    def stop(self) -> None:
        self.web.shutdown()
        self.web.server_close()
        self.smtp.stop()

    def __enter__(self) -> MailCatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def command(python: str, host: str, smtp_port: int, web_port: int, folder: Path) -> list[str]:
    """The command line ``make up`` starts the catcher with."""
    return [
        python,
        "-m",
        "nightly_ml.devtools.mailcatcher",
        "--host",
        host,
        "--smtp-port",
        str(smtp_port),
        "--web-port",
        str(web_port),
        "--folder",
        str(folder),
    ]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m nightly_ml.devtools.mailcatcher", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1", help="address both servers bind to")
    parser.add_argument("--smtp-port", type=int, default=1025)
    parser.add_argument("--web-port", type=int, default=8025)
    parser.add_argument("--folder", type=Path, required=True, help="where the caught messages are kept")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with MailCatcher(args.host, args.smtp_port, args.web_port, args.folder):
        print(f"Mail catcher: SMTP on {args.host}:{args.smtp_port}, web page on http://{args.host}:{args.web_port}/")
        stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
