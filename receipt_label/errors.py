"""Errors of the labeling workflow, and the mapping from HTTP client errors to them.

The class names are part of the contract: the process Lambda lets them propagate and the Step
Functions state machine matches on the names to decide what to retry.

| error | raised for | state machine |
|---|---|---|
| `LLMRateLimitError` | HTTP 429 from Ollama | retried, longer backoff |
| `LLMTransientError` | HTTP 5xx/408/425, timeouts, refused/dropped connections, broken streams | retried |
| `LLMOutputError` | the model's answer is unusable after the one repair call | not retried |
| `LLMAuthError` | HTTP 401/403: the endpoint rejected the API key | not retried |
| `LLMModelNotFoundError` | HTTP 404 naming the model: the endpoint does not serve it | not retried |
| `LLMRequestError` | other HTTP 4xx (bad request 400, a 404 that is not about the model, ...) | not retried |
| `TimeBudgetExceededError` | LLM work stopped at the deadline the caller set (`receipt_label.budget`) | retried |

`LLMAuthError` and `LLMModelNotFoundError` are `LLMRequestError`s: code that catches the latter
catches them too.
"""

from __future__ import annotations

import json

import httpx
from ollama import ResponseError

_MAX_DETAIL_CHARS = 300
# ChatOllama (invoke) and langchain-core (stream path) raise these ValueErrors for a stream without any chunk.
_EMPTY_STREAM_MESSAGES = ("No data received from Ollama stream", "No generations found in stream")


class LabelingError(Exception):
    """Base class of every error receipt_label raises on purpose."""


class LLMError(LabelingError):
    """A chat call failed or its answer could not be used."""

    attempts: int = 0
    """HTTP attempts made for the failing chat call (set by `invoke_with_retries`)."""


class LLMRateLimitError(LLMError):
    """The LLM endpoint answered HTTP 429 (too many requests)."""


class LLMTransientError(LLMError):
    """A failure that may pass on retry: HTTP 5xx, timeout, connection refused/reset/dropped, broken stream."""


class LLMRequestError(LLMError):
    """The endpoint rejected the request itself (HTTP 4xx other than 408/425/429): retrying cannot help."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class LLMAuthError(LLMRequestError):
    """The endpoint rejected the credentials (HTTP 401 or 403): the API key is missing, wrong or revoked."""


class LLMModelNotFoundError(LLMRequestError):
    """The endpoint answered 404 for the model: it does not serve (or has not pulled) that model."""


class TimeBudgetExceededError(LLMError):
    """LLM work stopped because the time budget ran out; another try (with a fresh budget) may finish."""


class LLMOutputError(LLMError):
    """The model's answer was unusable (not JSON, wrong schema, too many invalid items) after one repair call."""

    def __init__(self, message: str, *, errors: list[str], llm_calls: int) -> None:
        super().__init__(message)
        self.errors = errors
        self.llm_calls = llm_calls


def _short(text: object) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= _MAX_DETAIL_CHARS else s[:_MAX_DETAIL_CHARS] + "..."


def classify_llm_exception(exc: BaseException) -> LLMError | None:
    """Map an exception raised by a chat model call to the contract's error, or None if it is not an LLM I/O error.

    Covers what the `ollama` client (used by `ChatOllama`) lets through: `ollama.ResponseError`
    with `.status_code` for HTTP errors (-1 for an `{"error": ...}` line inside a stream), the
    built-in `ConnectionError` it raises for `httpx.ConnectError` on plain calls, raw `httpx`
    transport errors (timeouts, `RemoteProtocolError` for a dropped connection, `ReadError` for a
    reset, `ConnectError` on streaming calls), `json.JSONDecodeError` for a cut NDJSON line and
    the `ValueError`s `ChatOllama` / langchain-core raise for a stream without any chunk.
    """
    if isinstance(exc, LLMError):
        return exc
    if isinstance(exc, ResponseError):
        status = exc.status_code
        detail = _short(exc.error)
        if status == 429:
            return LLMRateLimitError(f"Ollama rate limit (HTTP 429): {detail}")
        if status == -1:
            return LLMTransientError(f"Ollama reported an error inside the response stream: {detail}")
        if status >= 500 or status in (408, 425):
            return LLMTransientError(f"Ollama server error (HTTP {status}): {detail}")
        if status in (401, 403):
            return LLMAuthError(f"Ollama rejected the credentials (HTTP {status}): {detail}", status_code=status)
        if status == 404 and "model" in detail.lower():
            return LLMModelNotFoundError(f"Ollama does not serve the model (HTTP 404): {detail}", status_code=status)
        return LLMRequestError(f"Ollama rejected the request (HTTP {status}): {detail}", status_code=status)
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return LLMRequestError(f"invalid Ollama base URL: {_short(exc)}")
    if isinstance(exc, httpx.TimeoutException):
        return LLMTransientError(f"Ollama request timed out ({type(exc).__name__}): {_short(exc)}")
    if isinstance(exc, httpx.TransportError):
        return LLMTransientError(f"Ollama connection failed ({type(exc).__name__}): {_short(exc)}")
    if isinstance(exc, ConnectionError | TimeoutError):
        return LLMTransientError(f"Ollama connection failed ({type(exc).__name__}): {_short(exc)}")
    if isinstance(exc, json.JSONDecodeError):
        return LLMTransientError(f"Ollama response stream was cut inside a line: {_short(exc)}")
    if isinstance(exc, ValueError) and any(m in str(exc) for m in _EMPTY_STREAM_MESSAGES):
        return LLMTransientError("Ollama closed the response stream without sending any data")
    return None
