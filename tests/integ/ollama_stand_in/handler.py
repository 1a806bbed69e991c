"""A stand-in Ollama server as a Lambda function behind a function URL (payload format 2.0).

Deployed by the integration tests (``tests/integ``) in place of a real Ollama endpoint: it speaks
just enough of Ollama's HTTP API for ``langchain_ollama.ChatOllama`` and answers deterministically,
so an integration run in a real AWS account needs no model and no external endpoint.

Routes
- ``GET /``: 200 ``Ollama is running`` (no key needed, as with Ollama).
- ``GET /api/tags``: ``{"models": [{"name": MODEL, "model": MODEL}]}`` (key required).
- ``POST /api/chat``: key required, model must be ``MODEL``; streams NDJSON like Ollama (or one JSON
  object with ``"stream": false``). The ``format`` field is accepted and ignored.
- anything else: 404.

Authorization: ``Authorization: Bearer <key>`` must equal the SecretString (stripped) of the secret
``API_KEY_SECRET_ARN``. The value is cached for the container and read again when a request's key
does not match, so a rotated key works at once. A wrong or missing key: 401 ``{"error": "unauthorized"}``.

The answer, from the receipt listing of the prompt (``[<line>:<word>] <text>`` words separated by two
spaces, one row per line, `` {LABEL, ...}`` after a word already labeled): a price
(``^-?\\$?\\d+[.,]\\d\\d$``) is ``LINE_TOTAL``, an alphabetic word is ``PRODUCT_NAME``, a labeled word
and anything else get nothing. A receipt with a word containing ``QQGARBLEDQQ`` is answered with prose,
not JSON, every time (the pipeline fails it with LLMOutputError after its one repair call). A call
with ``options.num_predict == 1`` (the pipeline's preflight) gets a few characters and
``done_reason: "length"``.

Every authorized ``/api/chat`` call adds 1 to ``calls`` of item ``{"pk": "calls"}`` in the DynamoDB
table ``CALLS_TABLE``, so a test can assert how many LLM calls a run made.

Environment: ``API_KEY_SECRET_ARN``, ``MODEL``, ``CALLS_TABLE``. Standard library and boto3 only.
The key, the request headers and the request body are never logged. A failing AWS call (reading the
secret, counting) fails the invocation: the function URL answers 502, a transient error to the pipeline.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import os
import re
import threading
from datetime import UTC, datetime
from typing import Any

import boto3

logger = logging.getLogger(__name__)
logger.setLevel(logging.INFO)
# botocore logs response bodies at DEBUG, GetSecretValue's SecretString (the key) included: keep that
# logger at INFO whatever the root level.
logging.getLogger("botocore.parsers").setLevel(logging.INFO)

# The prompt's word listing (receipt_label.prompts.receipt_listing); the same pattern as tests/ollama_server.py.
WORD_RE = re.compile(r"\[(\d+):(\d+)\] (.*?)(?: \{([A-Z0-9_]+(?:, [A-Z0-9_]+)*)\})?(?=  \[\d+:\d+\] |$)")
PRICE_RE = re.compile(r"^-?\$?\d+[.,]\d\d$")
GARBLED_MARKER = "QQGARBLEDQQ"
# No braces: the pipeline's parser looks for a JSON object inside prose, and must find none.
GARBLED_ANSWER = "Sure! Here are the labels for this receipt: the prices are line totals and the words are products."
PREFLIGHT_ANSWER = '{"labels": []}'[:3]  # what one token of the answer looks like: cut short
CHUNK_CHARS = 64
"""Characters of answer per streamed NDJSON chunk (Ollama sends one token per chunk; fewer lines are enough)."""

_lock = threading.Lock()
_state: dict[str, Any] = {"key": None, "secrets": None, "dynamodb": None}


def reset() -> None:
    """Forget the cached key and boto3 clients (tests: a fresh container)."""
    with _lock:
        _state.update(key=None, secrets=None, dynamodb=None)


def _client(service: str) -> Any:
    with _lock:
        if _state[service] is None:
            _state[service] = boto3.client("secretsmanager" if service == "secrets" else service)
        return _state[service]


def _read_key() -> str:
    """The secret's SecretString, stripped (as the pipeline reads it), now cached for the container."""
    value = _client("secrets").get_secret_value(SecretId=os.environ["API_KEY_SECRET_ARN"]).get("SecretString")
    key = (value or "").strip()
    with _lock:
        _state["key"] = key
    return key


def _matches(token: str, key: str | None) -> bool:
    return bool(key) and hmac.compare_digest(token.encode(), str(key).encode())


def _authorized(headers: dict[str, str]) -> bool:
    scheme, _, token = (headers.get("authorization") or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return False
    with _lock:
        cached = _state["key"]
    if _matches(token, cached):
        return True
    return _matches(token, _read_key())  # not read yet in this container, or the key may have been rotated


def _count_call() -> None:
    _client("dynamodb").update_item(
        TableName=os.environ["CALLS_TABLE"],
        Key={"pk": {"S": "calls"}},
        UpdateExpression="ADD #calls :one",
        ExpressionAttributeNames={"#calls": "calls"},
        ExpressionAttributeValues={":one": {"N": "1"}},
    )


def _response(status: int, body: str, content_type: str) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"content-type": content_type},
        "body": body,
        "isBase64Encoded": False,
    }


def _json(status: int, payload: Any) -> dict[str, Any]:
    return _response(status, json.dumps(payload), "application/json; charset=utf-8")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def words_in_messages(messages: list[Any]) -> list[tuple[int, int, str, tuple[str, ...]]]:
    """``(line_id, word_id, text, labels)`` of the latest user message listing words, in prompt order.

    A repair call ends with a user message listing problems (lines starting ``- ``), not words; the
    receipt listing of the first user message is used then.
    """
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    for message in reversed(users):
        words = []
        for line in str(message.get("content") or "").splitlines():
            if not line.startswith("["):
                continue
            for match in WORD_RE.finditer(line.strip()):
                labels = tuple(match.group(4).split(", ")) if match.group(4) else ()
                words.append((int(match.group(1)), int(match.group(2)), match.group(3).strip(), labels))
        if words:
            return words
    return []


def label_for(text: str) -> str | None:
    """The deterministic rule: a price is LINE_TOTAL, an alphabetic word PRODUCT_NAME, anything else nothing."""
    if PRICE_RE.match(text):
        return "LINE_TOTAL"
    if text.isalpha():
        return "PRODUCT_NAME"
    return None


def answer_for(messages: list[Any]) -> str:
    words = words_in_messages(messages)
    if any(GARBLED_MARKER in text for _, _, text, _ in words):
        return GARBLED_ANSWER
    labels = []
    for line_id, word_id, text, existing in words:
        label = None if existing else label_for(text)
        if label is not None:
            labels.append(
                {"line_id": line_id, "word_id": word_id, "label": label, "reasoning": f"stand-in rule: {label}"}
            )
    return json.dumps({"labels": labels})


def _chat(request: dict[str, Any], model: str) -> dict[str, Any]:
    raw_messages, raw_options = request.get("messages"), request.get("options")
    messages: list[Any] = raw_messages if isinstance(raw_messages, list) else []
    options: dict[str, Any] = raw_options if isinstance(raw_options, dict) else {}
    preflight = options.get("num_predict") == 1
    content = PREFLIGHT_ANSWER if preflight else answer_for(messages)
    prompt_chars = sum(len(str(m.get("content") or "")) for m in messages if isinstance(m, dict))
    final = {
        "model": model,
        "created_at": _now(),
        "message": {"role": "assistant", "content": ""},
        "done": True,
        "done_reason": "length" if preflight else "stop",
        "total_duration": 1_000_000,
        "load_duration": 0,
        "prompt_eval_count": max(1, -(-prompt_chars // 4)),
        "prompt_eval_duration": 0,
        "eval_count": 1 if preflight else max(1, -(-len(content) // 4)),
        "eval_duration": 0,
    }
    logger.info(
        "chat: %s, %d message(s), %d answer characters, stream=%s",
        "preflight" if preflight else "labels",
        len(messages),
        len(content),
        request.get("stream", True) is not False,
    )
    if request.get("stream", True) is False:
        final["message"] = {"role": "assistant", "content": content}
        return _json(200, final)
    lines = [
        json.dumps(
            {
                "model": model,
                "created_at": _now(),
                "message": {"role": "assistant", "content": content[i : i + CHUNK_CHARS]},
                "done": False,
            }
        )
        for i in range(0, len(content), CHUNK_CHARS)
    ]
    lines.append(json.dumps(final))
    return _response(200, "".join(line + "\n" for line in lines), "application/x-ndjson")


def _body(event: dict[str, Any]) -> Any:
    raw = event.get("body") or ""
    if event.get("isBase64Encoded"):
        raw = base64.b64decode(raw).decode("utf-8")
    return json.loads(raw) if raw.strip() else {}


def _route(event: dict[str, Any]) -> dict[str, Any]:
    method = str(((event.get("requestContext") or {}).get("http") or {}).get("method") or "").upper()
    path = str(event.get("rawPath") or "/")
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
    model = os.environ["MODEL"]
    if path == "/" and method in ("GET", "HEAD"):
        return _response(200, "Ollama is running", "text/plain; charset=utf-8")
    if (method, path) not in (("GET", "/api/tags"), ("POST", "/api/chat")):
        return _json(404, {"error": "not found"})
    if not _authorized(headers):
        return _json(401, {"error": "unauthorized"})
    if path == "/api/tags":
        return _json(200, {"models": [{"name": model, "model": model}]})
    _count_call()
    try:
        request = _body(event)
    except (ValueError, UnicodeDecodeError):
        return _json(400, {"error": "invalid JSON body"})
    if not isinstance(request, dict):
        return _json(400, {"error": "the body must be a JSON object"})
    requested = str(request.get("model") or "")
    if requested != model:
        return _json(404, {"error": f'model "{requested}" not found, try pulling it first'})
    return _chat(request, model)


def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    response = _route(event)
    method = ((event.get("requestContext") or {}).get("http") or {}).get("method")
    logger.info("%s %s -> %d", method, event.get("rawPath"), response["statusCode"])
    return response
