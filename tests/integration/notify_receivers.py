"""Real-protocol receivers for notify's channels, run by the tests on loopback: an SMTP server (aiosmtpd)
that can refuse the next mails with a temporary error, and an HTTP server playing the Aliyun and Tencent
Cloud SMS APIs and the DingTalk, WeCom and Feishu robots, which checks each request's signature the way
the provider documents it (written here independently of notify's code) and answers like the provider."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

# ------------------------------------------------------------------------------------------- SMTP


@dataclass
class Mailbox:
    """What the SMTP server accepted; `fail_next` mails are refused with 451 first."""

    mails: list[EmailMessage] = field(default_factory=list)
    fail_next: int = 0
    refused: int = 0
    port: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self.lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                self.refused += 1
                return "451 4.3.0 try again later"
            raw = envelope.original_content or envelope.content
            assert isinstance(raw, bytes)
            mail = message_from_bytes(raw, policy=policy.default)
            assert isinstance(mail, EmailMessage)
            self.mails.append(mail)
        return "250 OK"

    def to(self, address: str) -> list[EmailMessage]:
        with self.lock:
            return [m for m in self.mails if m["To"] == address]


@contextmanager
def smtp_server(port: int) -> Iterator[Mailbox]:
    """An SMTP server on 127.0.0.1:`port` for the duration of the block."""
    box = Mailbox(port=port)
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


def body_of(mail: EmailMessage) -> str:
    part = mail.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


# ------------------------------------------------------------------------------------------- HTTP


def aliyun_signature(params: dict[str, str], secret: str) -> str:
    """Aliyun RPC signature v1.0, from its documentation: sort, RFC 3986-encode, sign with HMAC-SHA1."""

    def enc(text: str) -> str:
        return quote(text, safe="~")

    canonical = "&".join(f"{enc(k)}={enc(params[k])}" for k in sorted(params) if k != "Signature")
    to_sign = "GET&%2F&" + enc(canonical)
    return base64.b64encode(hmac.new(f"{secret}&".encode(), to_sign.encode(), hashlib.sha1).digest()).decode()


def tencent_ok(headers: dict[str, str], raw: bytes, secret_key: str) -> bool:
    """Tencent Cloud API 3.0, TC3-HMAC-SHA256 from its documentation: the canonical request (method, path,
    empty query, the signed headers, SHA-256 of the body) hashed into the string to sign, signed with a key
    derived from the secret by date, service and "tc3_request"; within five minutes."""
    auth = headers.get("authorization", "")
    found = re.fullmatch(
        r"TC3-HMAC-SHA256 Credential=([^/]+)/(\d{4}-\d{2}-\d{2})/(\w+)/tc3_request, "
        r"SignedHeaders=([a-z;-]+), Signature=([0-9a-f]{64})",
        auth,
    )
    timestamp = headers.get("x-tc-timestamp", "")
    if found is None or not timestamp.isdigit() or abs(time.time() - int(timestamp)) > 300:
        return False
    _, date, service, signed, given = found.groups()
    if (
        date != time.strftime("%Y-%m-%d", time.gmtime(int(timestamp)))
        or headers.get("x-tc-action") != "SendSms"
    ):
        return False
    names = signed.split(";")
    canonical_headers = "".join(f"{n}:{headers.get(n, '').strip().lower()}\n" for n in names)
    digest = hashlib.sha256(raw).hexdigest()
    canonical = f"POST\n/\n\n{canonical_headers}\n{signed}\n{digest}"
    scope = f"{date}/{service}/tc3_request"
    to_sign = f"TC3-HMAC-SHA256\n{timestamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    key = f"TC3{secret_key}".encode()
    for part in (date, service, "tc3_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.compare_digest(hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest(), given)


def dingtalk_ok(query: dict[str, str], secret: str) -> bool:
    """DingTalk: sign = base64(HMAC-SHA256(secret, "<timestamp ms>\\n<secret>")), within an hour."""
    timestamp = query.get("timestamp", "")
    if not timestamp.isdigit() or abs(time.time() * 1000 - int(timestamp)) > 3_600_000:
        return False
    mac = hmac.new(secret.encode(), f"{timestamp}\n{secret}".encode(), hashlib.sha256).digest()
    return hmac.compare_digest(base64.b64encode(mac).decode(), query.get("sign", ""))


def feishu_ok(body: dict[str, Any], secret: str) -> bool:
    """Feishu: sign = base64(HMAC-SHA256(key="<timestamp s>\\n<secret>", msg="")), within an hour."""
    timestamp = str(body.get("timestamp", ""))
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > 3600:
        return False
    mac = hmac.new(f"{timestamp}\n{secret}".encode(), b"", hashlib.sha256).digest()
    return hmac.compare_digest(base64.b64encode(mac).decode(), str(body.get("sign", "")))


@dataclass
class Received:
    kind: str  # sms, tencent, dingtalk, wecom, feishu
    query: dict[str, str]
    body: dict[str, Any]
    signature_ok: bool
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class ProviderStub:
    """Plays the Aliyun SMS API (`GET /sms`), Tencent Cloud's (`POST /tencent`) and the robots (`POST
    /dingtalk`, `/wecom`, `/feishu`)."""

    aliyun_secret: str = "test-aliyun-secret"
    tencent_secret: str = "test-tencent-secret-key"
    dingtalk_secret: str = "SECtest-dingtalk-secret"
    feishu_secret: str = "test-feishu-secret"
    received: list[Received] = field(default_factory=list)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def of(self, kind: str) -> list[Received]:
        return [r for r in self.received if r.kind == kind]

    def answer(
        self, kind: str, query: dict[str, str], body: dict[str, Any], headers: dict[str, str], raw: bytes
    ) -> tuple[bool, dict[str, Any]]:
        if kind == "tencent":
            ok = tencent_ok(headers, raw, self.tencent_secret)
            if not ok:
                error = {"Code": "AuthFailure.SignatureFailure", "Message": "bad signature"}
                return ok, {"Response": {"Error": error, "RequestId": "x"}}
            sent = [{"Code": "Ok", "PhoneNumber": n, "SerialNo": "2019:1"} for n in body["PhoneNumberSet"]]
            return ok, {"Response": {"SendStatusSet": sent, "RequestId": "x"}}
        if kind == "sms":
            ok = hmac.compare_digest(aliyun_signature(query, self.aliyun_secret), query.get("Signature", ""))
            answer = {"Code": "OK", "Message": "OK", "BizId": "900619746936498440^0", "RequestId": "x"}
            return ok, answer if ok else {"Code": "SignatureDoesNotMatch", "Message": "bad signature"}
        if kind == "dingtalk":
            ok = dingtalk_ok(query, self.dingtalk_secret)
            return ok, {"errcode": 0, "errmsg": "ok"} if ok else {
                "errcode": 310000,
                "errmsg": "sign not match",
            }
        if kind == "feishu":
            ok = feishu_ok(body, self.feishu_secret)
            return ok, {"code": 0, "msg": "success"} if ok else {"code": 19021, "msg": "sign match fail"}
        ok = body.get("msgtype") == "text" and "content" in body.get("text", {})
        return ok, {"errcode": 0, "errmsg": "ok"} if ok else {"errcode": 40008, "errmsg": "invalid msgtype"}


@contextmanager
def provider_stub() -> Iterator[ProviderStub]:
    """The stub on a free loopback port for the duration of the block."""
    stub = ProviderStub()

    class Handler(BaseHTTPRequestHandler):
        def _handle(self, raw: bytes) -> None:
            parts = urlsplit(self.path)
            kind = parts.path.strip("/").split("/")[0]
            query = dict(parse_qsl(parts.query, keep_blank_values=True))
            headers = {k.lower(): v for k, v in self.headers.items()}
            body = json.loads(raw or b"{}")
            ok, answer = stub.answer(kind, query, body, headers, raw)
            stub.received.append(Received(kind, query, body, ok, headers))
            data = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._handle(b"")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self._handle(self.rfile.read(length))

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    stub.port = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
