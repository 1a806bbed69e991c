"""A loopback HTTP server that speaks Ollama's `/api/chat`, for tests and benchmarks.

In-process on 127.0.0.1 (a free port): answers with scripted responses and records every request. In
pytest use the `ollama_server` fixture (tests/conftest.py); elsewhere `with OllamaServer() as server:`::

    server.script(ScriptedResponse.answer({"labels": []}), ScriptedResponse.http_error(429, "slow down"))
    llm = create_chat_model(OllamaSettings(base_url=server.url, timeout_seconds=30), api_key="k")
    assert server.chat_requests[0].headers["authorization"] == "Bearer k"  # header names are lower case
"""

from __future__ import annotations

import json
import re
import socket
import struct
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

__all__ = [
    "OllamaServer",
    "PromptWord",
    "RecordedRequest",
    "ScriptedResponse",
    "label_words_responder",
    "ollama_server",
    "words_in_prompt",
]


@dataclass(frozen=True)
class ScriptedResponse:
    """One answer to an `/api/chat` request; every field is optional and they combine freely."""

    #: The assistant message text; a dict or list is JSON-encoded.
    content: str | dict[str, Any] | list[Any] = ""
    #: A status other than 200 answers ``{"error": error}`` with that status.
    status: int = 200
    error: str | None = None
    #: None follows the request's ``"stream"`` (Ollama's default is true: NDJSON with chunked transfer
    #: encoding, then a final ``"done": true`` line); True / False force a mode.
    stream: bool | None = None
    #: How many NDJSON message chunks the content is split into.
    chunks: int = 3
    #: Seconds to wait before answering (longer than the client's timeout: a timeout).
    delay: float = 0.0
    #: Seconds between streamed chunks.
    chunk_delay: float = 0.0
    #: Send the status line, headers and part of the body, then close the connection.
    drop: bool = False
    #: Close the connection with a TCP RST without answering.
    reset: bool = False
    #: Streaming only: end the body cleanly but without the final ``done`` line.
    truncate: bool = False
    #: Streaming only: an ``{"error": ...}`` line after the first chunk (how Ollama reports a failure mid-stream).
    stream_error: str | None = None
    #: Extra response headers, e.g. ``{"Retry-After": "3"}``.
    headers: dict[str, str] = field(default_factory=dict)
    #: This and the two counts: fields of the final chunk.
    done_reason: str = "stop"
    prompt_eval_count: int = 0
    eval_count: int = 0

    @classmethod
    def answer(cls, content: str | dict[str, Any] | list[Any], **kwargs: Any) -> ScriptedResponse:
        """A 200 answer with ``content``."""
        return cls(content=content, **kwargs)

    @classmethod
    def http_error(cls, status: int, message: str = "error", **kwargs: Any) -> ScriptedResponse:
        """A ``status`` answer with body ``{"error": message}``."""
        return cls(status=status, error=message, **kwargs)

    @property
    def text(self) -> str:
        return self.content if isinstance(self.content, str) else json.dumps(self.content)


@dataclass(frozen=True)
class RecordedRequest:
    """One request as received (header names lower case); ``json``, ``messages`` and ``prompt_chars`` parse its body."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None

    @property
    def messages(self) -> list[dict[str, Any]]:
        data = self.json
        return list(data.get("messages") or []) if isinstance(data, dict) else []

    @property
    def prompt_chars(self) -> int:
        return sum(len(str(m.get("content") or "")) for m in self.messages)


Responder = Callable[[RecordedRequest], ScriptedResponse]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _record(self) -> RecordedRequest:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = RecordedRequest(
            method=self.command,
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        self.server.owner._record(request)
        return request

    def do_GET(self) -> None:
        self._record()
        if self.path == "/api/tags":
            self._send_json(200, {"models": [{"name": self.server.owner.model, "model": self.server.owner.model}]})
        elif self.path == "/api/version":
            self._send_json(200, {"version": "0.0.0-loopback"})
        else:
            self._send_json(404, {"error": f"loopback: no route {self.path}"})

    def do_POST(self) -> None:
        request = self._record()
        if self.path != "/api/chat":
            self._send_json(404, {"error": f"loopback: no route {self.path}"})
            return
        response = self.server.owner._next_response(request)
        try:
            self._respond(request, response)
        except OSError:  # the client gave up (timeout) or the connection was dropped on purpose
            self.close_connection = True

    def _send_json(self, status: int, payload: Any, extra: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _abort(self, *, reset: bool) -> None:
        self.wfile.flush()
        if reset:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            self.connection.shutdown(socket.SHUT_RDWR)
        self.connection.close()
        self.close_connection = True

    def _respond(self, request: RecordedRequest, r: ScriptedResponse) -> None:
        if r.delay and self.server.owner._stopping.wait(r.delay):
            self._abort(reset=True)
            return
        if r.reset:
            self._abort(reset=True)
            return
        if r.status != 200:
            if r.drop:
                self.send_response(r.status)
                self.send_header("Content-Length", "100")
                self.end_headers()
                self.wfile.write(b'{"err')
                self._abort(reset=False)
                return
            self._send_json(r.status, {"error": r.error or "error"}, r.headers)
            return
        body = request.json if isinstance(request.json, dict) else {}
        stream = body.get("stream", True) if r.stream is None else r.stream
        model = str(body.get("model") or self.server.owner.model)
        if stream:
            self._respond_stream(model, r)
        else:
            self._respond_plain(model, r)

    def _final(self, model: str, r: ScriptedResponse, content: str) -> dict[str, Any]:
        return {
            "model": model,
            "created_at": _now(),
            "message": {"role": "assistant", "content": content},
            "done": True,
            "done_reason": r.done_reason,
            "total_duration": 1000,
            "load_duration": 0,
            "prompt_eval_count": r.prompt_eval_count,
            "prompt_eval_duration": 0,
            "eval_count": r.eval_count,
            "eval_duration": 0,
        }

    def _respond_plain(self, model: str, r: ScriptedResponse) -> None:
        if r.drop:
            body = json.dumps(self._final(model, r, r.text)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self._abort(reset=False)
            return
        self._send_json(200, self._final(model, r, r.text), r.headers)

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _respond_stream(self, model: str, r: ScriptedResponse) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        for k, v in r.headers.items():
            self.send_header(k, v)
        self.end_headers()
        text = r.text
        n = max(1, r.chunks)
        size = -(-len(text) // n) if text else 0
        pieces = [text[i : i + size] for i in range(0, len(text), size)] if size else []
        for index, piece in enumerate(pieces):
            line = {
                "model": model,
                "created_at": _now(),
                "message": {"role": "assistant", "content": piece},
                "done": False,
            }
            self._write_chunk(json.dumps(line).encode() + b"\n")
            if index == 0 and r.stream_error is not None:
                self._write_chunk(json.dumps({"error": r.stream_error}).encode() + b"\n")
                self._write_chunk(b"")
                return
            if index == 0 and r.drop:
                self._abort(reset=False)
                return
            if r.chunk_delay and self.server.owner._stopping.wait(r.chunk_delay):
                return
        if r.drop:  # empty content: drop right after the headers
            self._abort(reset=False)
            return
        if not r.truncate:
            self._write_chunk(json.dumps(self._final(model, r, "")).encode() + b"\n")
        self._write_chunk(b"")  # end of the chunked body


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: OllamaServer


def _now() -> str:
    return datetime.now(UTC).isoformat()


class OllamaServer:
    """The server: each `/api/chat` request takes the next response queued by :meth:`script` (FIFO).

    With the queue empty, ``responder(request)`` answers (e.g. :func:`label_words_responder`), else
    ``default``, else HTTP 500 ``loopback: no scripted response left``; both are settable at any time.
    A responder that raises gets a 500 answer (so the client does not hang) and the exception is raised
    again when the ``with`` block ends, or by :meth:`raise_responder_error`: script deliberate 500s with
    ``ScriptedResponse.http_error(500, ...)``, never by raising. GET `/api/tags` and `/api/version` answer too.
    """

    def __init__(
        self,
        *,
        default: ScriptedResponse | None = None,
        responder: Responder | None = None,
        model: str = "loopback-model",
    ) -> None:
        self.default = default
        self.responder = responder
        self.model = model
        self._queue: deque[ScriptedResponse] = deque()
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._responder_errors: list[Exception] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # lifecycle
    def start(self) -> OllamaServer:
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server(("127.0.0.1", 0), _Handler)
        server.owner = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> OllamaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.raise_responder_error()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``, the ``OLLAMA_BASE_URL`` / ``base_url``; RuntimeError when not started."""
        if self._server is None:
            raise RuntimeError("the loopback Ollama server is not running; call start()")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # scripting and inspection
    def script(self, *responses: ScriptedResponse) -> OllamaServer:
        """Queue ``responses``, one per `/api/chat` request to come, in order."""
        with self._lock:
            self._queue.extend(responses)
        return self

    @property
    def pending(self) -> list[ScriptedResponse]:
        """Scripted responses not consumed yet."""
        with self._lock:
            return list(self._queue)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received, in order."""
        with self._lock:
            return list(self._requests)

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        """The POST `/api/chat` requests, in order."""
        return [r for r in self.requests if r.method == "POST" and r.path == "/api/chat"]

    def clear(self) -> None:
        """Forget recorded requests and queued responses."""
        with self._lock:
            self._requests.clear()
            self._queue.clear()

    @property
    def responder_errors(self) -> list[Exception]:
        """Exceptions the responder raised, in order (not yet raised again)."""
        with self._lock:
            return list(self._responder_errors)

    def raise_responder_error(self) -> None:
        """Raise the first exception the responder raised (with its traceback), once; later ones become notes."""
        with self._lock:
            errors, self._responder_errors = self._responder_errors, []
        if errors:
            first = errors[0]
            for later in errors[1:]:
                first.add_note(f"the responder also raised {later!r}")
            raise first

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _next_response(self, request: RecordedRequest) -> ScriptedResponse:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
            responder = self.responder
            default = self.default
        if responder is not None:
            try:
                return responder(request)
            except Exception as exc:  # answered 500 so the client does not hang; raised again at the end
                with self._lock:
                    self._responder_errors.append(exc)
                return ScriptedResponse.http_error(500, f"loopback: responder failed: {exc!r}")
        if default is not None:
            return default
        return ScriptedResponse.http_error(500, "loopback: no scripted response left")


_WORD_RE = re.compile(r"\[(\d+):(\d+)\] (.*?)(?: \{([A-Z0-9_]+(?:, [A-Z0-9_]+)*)\})?(?=  \[\d+:\d+\] |$)")


@dataclass(frozen=True)
class PromptWord:
    line_id: int
    word_id: int
    text: str
    labels: tuple[str, ...]  # labels the prompt shows the word already has (context only)


def words_in_prompt(request: RecordedRequest) -> list[PromptWord]:
    """The words (`[line:word] text {LABEL}`) of the latest user message that lists any, in prompt order.

    A repair call ends with a user message listing problems, not words: the receipt listing of the
    first user message is used then.
    """
    for message in reversed([m for m in request.messages if m.get("role") == "user"]):
        words: list[PromptWord] = []
        for line in str(message.get("content") or "").splitlines():
            if not line.startswith("["):  # listing lines start with a word; problem lists start with "- "
                continue
            for match in _WORD_RE.finditer(line.strip()):
                labels = tuple(match.group(4).split(", ")) if match.group(4) else ()
                words.append(PromptWord(int(match.group(1)), int(match.group(2)), match.group(3).strip(), labels))
        if words:
            return words
    return []


def label_words_responder(label_for: Callable[[str], str | tuple[str, ...] | None]) -> Responder:
    """A responder answering well-formed labels: `label_for(text)` for each word of the prompt not yet labeled.

    A tuple of labels gives the word one answer item per label; None leaves the word out.
    """

    def respond(request: RecordedRequest) -> ScriptedResponse:
        labels = []
        for word in words_in_prompt(request):
            chosen = None if word.labels else label_for(word.text)
            for label in (chosen,) if isinstance(chosen, str) else (chosen or ()):
                reasoning = f"{word.text!r} looks like {label}"
                labels.append(
                    {"line_id": word.line_id, "word_id": word.word_id, "label": label, "reasoning": reasoning}
                )
        return ScriptedResponse.answer({"labels": labels})

    return respond


@pytest.fixture
def ollama_server() -> Iterator[OllamaServer]:
    """A started loopback Ollama server (see the module docstring), stopped after the test.

    The teardown raises the first exception the test's responder raised, so the test reports it.
    """
    with OllamaServer() as server:
        yield server
