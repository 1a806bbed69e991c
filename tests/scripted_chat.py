"""A scripted fake chat model for tests and benchmarks (no network), and well-formed answers.

    from tests.scripted_chat import ScriptedChatModel, well_formed_answer
    llm = ScriptedChatModel(answers=['not json', well_formed_answer(details, lambda w: "PRODUCT_NAME")])
    result = label_receipt(details, llm=llm)
    llm.calls            # the message lists the model received, one per call
    llm.prompts          # the same, as text (the last user message of each call)

`answers` items are consumed in order, one per call: a `str` (the answer text), a `dict`/`list`
(JSON-encoded), an `Exception` instance (raised, e.g. `LLMTransientError(...)` or an `httpx`
error) or a callable `(messages) -> str | dict | Exception`. When the list is exhausted the last
item repeats if `repeat_last` is true, otherwise the call fails with an `AssertionError`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import PrivateAttr

from receipt_dynamo import ReceiptDetails, ReceiptWord


class ScriptedChatModel(BaseChatModel):
    answers: list[Any]
    model: str = "scripted-model"
    repeat_last: bool = False
    _calls: list[list[BaseMessage]] = PrivateAttr(default_factory=list)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def _llm_type(self) -> str:
        return "scripted-chat-model"

    @property
    def calls(self) -> list[list[BaseMessage]]:
        with self._lock:
            return list(self._calls)

    @property
    def prompts(self) -> list[str]:
        out = []
        for messages in self.calls:
            users = [m for m in messages if isinstance(m, HumanMessage)]
            out.append(str(users[-1].content) if users else "")
        return out

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        with self._lock:
            index = len(self._calls)
            self._calls.append(list(messages))
        if index < len(self.answers):
            answer = self.answers[index]
        elif self.repeat_last and self.answers:
            answer = self.answers[-1]
        else:
            raise AssertionError(f"ScriptedChatModel: call {index + 1} but only {len(self.answers)} answer(s) scripted")
        if callable(answer) and not isinstance(answer, BaseException):
            answer = answer(list(messages))
        if isinstance(answer, BaseException):
            raise answer
        text = answer if isinstance(answer, str) else json.dumps(answer)
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


def well_formed_answer(details: ReceiptDetails, label_for: Callable[[ReceiptWord], str | None]) -> dict[str, Any]:
    """`{"labels": [...]}` with `label_for(word)` for every word not yet labeled (None leaves the word out)."""
    labeled = {(lab.line_id, lab.word_id) for lab in details.labels}
    items = []
    for word in details.words:
        if (word.line_id, word.word_id) in labeled:
            continue
        label = label_for(word)
        if label is not None:
            items.append(
                {
                    "line_id": word.line_id,
                    "word_id": word.word_id,
                    "label": label,
                    "reasoning": f"{word.text} is {label}",
                }
            )
    return {"labels": items}


class RecordingTracer(BaseCallbackHandler):
    """A LangChain callback handler with a tracer's flush: ``events`` records chat starts and flushes."""

    def __init__(self, events: list[str] | None = None, *, flush_error: Exception | None = None) -> None:
        self.events = [] if events is None else events
        self.flush_timeouts: list[float | None] = []
        self.flush_error = flush_error
        self.client = self  # LangChainTracer flushes through ``tracer.client.flush``

    def on_chat_model_start(self, serialized: dict[str, Any], messages: list[list[Any]], **kwargs: Any) -> None:
        self.events.append("chat")

    def wait_for_futures(self) -> None:
        self.events.append("wait")

    def flush(self, timeout: float | None = None) -> None:
        self.flush_timeouts.append(timeout)
        if self.flush_error is not None:
            raise self.flush_error
        self.events.append("flush")
