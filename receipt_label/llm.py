"""The `ChatOllama` factory, and helpers to name a chat model and call it with small retries.

The API key is held by an `httpx.Auth` object that adds `Authorization: Bearer <key>` to each
request. It is not a plain header in `client_kwargs` on purpose: `ChatOllama`'s repr (which
LangChain puts into trace payloads as the model's "serialized" form) prints `client_kwargs`, so a
plain header would carry the key into LangSmith. `BearerAuth` prints as `BearerAuth(***)`.

The client also enforces the caller's time budget (`receipt_label.budget`): each request's timeouts
are cut to the time left, and each streamed chunk checks the deadline, so a stalled or trickling
stream stops at the deadline with `TimeBudgetExceededError`.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Generator, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import httpx
from langchain_core.messages import BaseMessage, HumanMessage
from langchain_core.runnables import Runnable, RunnableConfig
from pydantic import SecretStr

from receipt_label.answer import ANSWER_JSON_SCHEMA
from receipt_label.budget import TimeBudget, current_budget
from receipt_label.config import OllamaSettings
from receipt_label.errors import (
    LLMRateLimitError,
    LLMTransientError,
    TimeBudgetExceededError,
    classify_llm_exception,
)

if TYPE_CHECKING:
    from langchain_ollama import ChatOllama

logger = logging.getLogger(__name__)

TRANSIENT_ATTEMPTS = 2
"""In-process attempts per chat call for `LLMTransientError` (the state machine retries the receipt after that)."""
RATE_LIMIT_ATTEMPTS = 1
"""In-process attempts for HTTP 429: not repeated here; the state machine backs off with jitter (no Lambda time)."""
RETRY_DELAY_SECONDS = 1.0
MIN_CALL_SECONDS = 1.0
"""A chat call (or another attempt of one) does not start with less time left in the budget than this."""
PREFLIGHT_PROMPT = "Reply with an empty labels list."
"""The preflight's one message; the answer is capped at one token and not read."""


class BearerAuth(httpx.Auth):
    """Adds `Authorization: Bearer <key>` to every request; never shows the key in repr or str."""

    def __init__(self, api_key: str | SecretStr) -> None:
        self._key = api_key if isinstance(api_key, SecretStr) else SecretStr(api_key)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._key.get_secret_value()}"
        yield request

    def __repr__(self) -> str:
        return "BearerAuth(***)"

    __str__ = __repr__


class _BudgetedStream(httpx.SyncByteStream):
    """A response body that stops with `TimeBudgetExceededError` once the budget's deadline has passed."""

    def __init__(self, stream: httpx.SyncByteStream, budget: TimeBudget) -> None:
        self._stream = stream
        self._budget = budget

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._stream:
            if self._budget.remaining() <= 0:
                raise TimeBudgetExceededError("time budget ran out while the model's answer was still streaming")
            yield chunk

    def close(self) -> None:
        self._stream.close()


def _budget_request_hook(request: httpx.Request) -> None:
    """Cut the request's connect/read/write/pool timeouts to the time left in the current budget."""
    budget = current_budget()
    if budget is None:
        return
    left = budget.remaining()
    if left <= 0:
        raise TimeBudgetExceededError("time budget ran out before the request was sent")
    timeouts = request.extensions.get("timeout") or {}
    request.extensions["timeout"] = {
        name: left if timeouts.get(name) is None else min(float(timeouts[name]), left)
        for name in ("connect", "read", "write", "pool")
    }


def _budget_response_hook(response: httpx.Response) -> None:
    """Check the deadline on every chunk of the body (a stream that trickles never ends otherwise)."""
    budget = current_budget()
    if budget is not None and isinstance(response.stream, httpx.SyncByteStream):
        response.stream = _BudgetedStream(response.stream, budget)


def create_chat_model(settings: OllamaSettings, *, api_key: str | SecretStr | None = None) -> ChatOllama:
    """A `ChatOllama` for labeling: temperature 0, `format` = the answer's JSON schema, bearer auth, timeout.

    `api_key` (e.g. read from Secrets Manager) wins over `settings.api_key`; with neither, no
    Authorization header is sent (a local Ollama). Calls stream (NDJSON), so the timeout bounds
    connect, write and the wait for each chunk, not the whole generation; `settings.num_predict`
    caps the answer's length and the current `time_budget` the whole call.
    """
    from langchain_ollama import ChatOllama

    key = api_key if api_key is not None else settings.api_key
    client_kwargs: dict[str, Any] = {"timeout": httpx.Timeout(settings.timeout_seconds)}
    # Sync hooks for the sync client only: httpx.AsyncClient awaits its hooks.
    sync_client_kwargs = {"event_hooks": {"request": [_budget_request_hook], "response": [_budget_response_hook]}}
    if key is not None and (key.get_secret_value() if isinstance(key, SecretStr) else key).strip():
        client_kwargs["auth"] = BearerAuth(key)
    return ChatOllama(
        model=settings.model,
        base_url=settings.base_url,
        temperature=0,
        format=ANSWER_JSON_SCHEMA,
        num_ctx=settings.num_ctx,
        num_predict=settings.num_predict,
        client_kwargs=client_kwargs,
        sync_client_kwargs=sync_client_kwargs,
    )


def check_endpoint(llm: Runnable[Any, Any], *, config: RunnableConfig | None = None) -> int:
    """The preflight: one chat call answered with at most one token; return the HTTP attempts made.

    It proves what a labeling run needs before any receipt is tried: the endpoint answers, it
    accepts the key and it serves the model. Failures raise the same typed errors as a labeling
    call (`LLMAuthError`, `LLMModelNotFoundError`, `LLMTransientError`, ...), after the same small
    in-process retries for transient ones.
    """
    options = {"num_predict": 1, "temperature": 0}
    target = _unwrap(llm)
    num_ctx = getattr(target, "num_ctx", None)
    if isinstance(num_ctx, int):
        options["num_ctx"] = num_ctx
    bound = llm.bind(options=options) if _is_ollama(llm) else llm
    _, attempts = invoke_with_retries(bound, [HumanMessage(PREFLIGHT_PROMPT)], config=config)
    return attempts


def with_answer_format(llm: Runnable[Any, Any], schema: dict[str, Any]) -> Runnable[Any, Any]:
    """``llm`` answering in ``schema`` (Ollama's ``format``, instead of the labeling answer's); other models as is."""
    return llm.bind(format=schema) if _is_ollama(llm) else llm


def model_name_of(llm: Runnable[Any, Any]) -> str:
    """The model's name for `label_proposed_by`: `.model` / `.model_name` of the model (or of a bound model)."""
    target = _unwrap(llm)
    for attr in ("model", "model_name"):
        value = getattr(target, attr, None)
        if isinstance(value, str) and value:
            return value
    llm_type = getattr(target, "_llm_type", None)
    return llm_type if isinstance(llm_type, str) and llm_type else type(target).__name__


def invoke_with_retries(
    llm: Runnable[Any, Any],
    messages: Sequence[BaseMessage],
    *,
    config: RunnableConfig | None = None,
    transient_attempts: int = TRANSIENT_ATTEMPTS,
    rate_limit_attempts: int = RATE_LIMIT_ATTEMPTS,
    retry_delay_seconds: float = RETRY_DELAY_SECONDS,
    min_call_seconds: float = MIN_CALL_SECONDS,
) -> tuple[BaseMessage, int]:
    """Invoke the chat model; return (answer message, HTTP attempts made).

    Errors are mapped by `classify_llm_exception`; transient ones are retried up to
    `transient_attempts` in total and 429 up to `rate_limit_attempts`, with jittered exponential
    delay. Exceptions that are not LLM I/O errors propagate unchanged. Under a `time_budget`, no
    attempt starts with less than `min_call_seconds` left, and a failure at the deadline (the
    shortened timeout firing) is `TimeBudgetExceededError`.
    """
    expect_done = _is_ollama(llm)
    budget = current_budget()
    attempts = 0
    while True:
        attempts += 1
        if budget is not None:
            _require(budget, min_call_seconds, f"chat call attempt {attempts}", attempts - 1)
        try:
            answer = llm.invoke(list(messages), config=config)
            _check_complete(answer, expect_done=expect_done)
        except Exception as exc:
            mapped = classify_llm_exception(exc)
            if mapped is None:
                raise
            if budget is not None and not isinstance(mapped, TimeBudgetExceededError) and budget.remaining() <= 0:
                mapped = TimeBudgetExceededError(f"time budget ran out during the chat call ({mapped})")
            limit = rate_limit_attempts if isinstance(mapped, LLMRateLimitError) else transient_attempts
            retryable = isinstance(mapped, LLMRateLimitError | LLMTransientError)
            if not retryable or attempts >= limit:
                mapped.attempts = attempts
                logger.warning("chat call failed after %d attempt(s): %s: %s", attempts, type(mapped).__name__, mapped)
                raise mapped from exc
            delay = retry_delay_seconds * (2 ** (attempts - 1)) * random.uniform(0.5, 1.0)  # noqa: S311 - jitter
            if budget is not None:
                _require(budget, delay + min_call_seconds, f"chat call attempt {attempts + 1}", attempts)
            logger.info(
                "chat call attempt %d failed (%s: %s); retrying in %.2fs",
                attempts,
                type(mapped).__name__,
                mapped,
                delay,
            )
            time.sleep(delay)
            continue
        return answer, attempts


def _require(budget: TimeBudget, seconds: float, what: str, attempts: int) -> None:
    try:
        budget.require(seconds, what)
    except TimeBudgetExceededError as error:
        error.attempts = attempts
        logger.warning("chat call not started: %s", error)
        raise


def _unwrap(llm: Runnable[Any, Any]) -> Any:
    target: Any = llm
    for _ in range(5):  # RunnableBinding (.bind / .with_config) keeps the model in .bound
        bound = getattr(target, "bound", None)
        if bound is None:
            break
        target = bound
    return target


def _is_ollama(llm: Runnable[Any, Any]) -> bool:
    from langchain_ollama import ChatOllama

    return isinstance(_unwrap(llm), ChatOllama)


def _check_complete(answer: object, *, expect_done: bool) -> None:
    """Reject a non-message, or an Ollama stream that ended without its final `done` line (a truncated stream)."""
    if not isinstance(answer, BaseMessage):
        raise TypeError(f"the chat model returned {type(answer).__name__}, expected a message")
    if expect_done and (answer.response_metadata or {}).get("done") is not True:
        raise LLMTransientError("Ollama response stream ended before its final chunk (truncated stream)")
