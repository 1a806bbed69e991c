"""The answer loop both workflows are built from: prepare, one chat call, check, at most one repair.

    START -> prepare --> call_model --> check --ok------> finish --> END
                |            ^            |--repair--> repair --+      ^
                |            +------------------------------------+      |
                |                         '--fail----> fail (raises LLMOutputError)
                '-- nothing to ask: no call ----------------------------'

``build_answer_graph`` wires the four task-specific nodes (labeling: ``receipt_label.graph``;
judging: ``receipt_label.validation``) around the shared ones: the chat call (small in-process
retries, typed errors and the time budget of ``receipt_label.llm``), the verdict, the repair call
and the failure.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, Protocol, TypeVar

from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import Runnable, RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from receipt_label.errors import LLMOutputError
from receipt_label.llm import RATE_LIMIT_ATTEMPTS, RETRY_DELAY_SECONDS, TRANSIENT_ATTEMPTS, invoke_with_retries
from receipt_label.state import ChatState, Verdict

logger = logging.getLogger(__name__)

S = TypeVar("S", bound=ChatState)
S_contra = TypeVar("S_contra", bound=ChatState, contravariant=True)


class StateNode(Protocol[S_contra]):
    """A node: the state in, its update out."""

    def __call__(self, state: S_contra) -> dict[str, Any]: ...


class ConfiguredNode(Protocol[S_contra]):
    """A node that also takes the run's config (callbacks reach the chat model through it)."""

    def __call__(self, state: S_contra, config: RunnableConfig) -> dict[str, Any]: ...


class CheckNode(Protocol[S_contra]):
    """The answer's check: its state update and the answer's errors (none: ok)."""

    def __call__(self, state: S_contra) -> tuple[dict[str, Any], list[str]]: ...


@dataclass(frozen=True)
class ChatCallOptions:
    """The answer loop's tuning; the defaults are what the pipeline uses."""

    max_repair_calls: int = 1
    transient_attempts: int = TRANSIENT_ATTEMPTS
    rate_limit_attempts: int = RATE_LIMIT_ATTEMPTS
    retry_delay_seconds: float = RETRY_DELAY_SECONDS


def fresh_counters() -> dict[str, Any]:
    """The loop's counters at the start of a run (part of what ``prepare`` returns)."""
    return {"llm_calls": 0, "repair_calls": 0}


def call_stats(final: Mapping[str, Any], model_name: str) -> dict[str, Any]:
    """The :class:`~receipt_label.state.ChatCallStats` fields of a finished run's state, as keyword arguments."""
    return {
        "llm_calls": int(final.get("llm_calls", 0)),
        "model_name": model_name,
        "repaired": final.get("repair_calls", 0) > 0,
        "prompt_chars": int(final.get("prompt_chars", 0)),
        "errors": list(final.get("first_errors", [])),
        "input_tokens": int(final.get("input_tokens", 0)),
        "output_tokens": int(final.get("output_tokens", 0)),
    }


def call_model_node(llm: Runnable[Any, Any], options: ChatCallOptions) -> ConfiguredNode[ChatState]:
    """One chat call with ``state["messages"]``: the answer's text, whether it was cut, calls and tokens."""

    def call_model(state: ChatState, config: RunnableConfig) -> dict[str, Any]:
        answer, attempts = invoke_with_retries(
            llm,
            state["messages"],
            config=config,
            transient_attempts=options.transient_attempts,
            rate_limit_attempts=options.rate_limit_attempts,
            retry_delay_seconds=options.retry_delay_seconds,
        )
        text = answer.content if isinstance(answer.content, str) else answer.text
        usage = getattr(answer, "usage_metadata", None) or {}
        input_tokens, output_tokens = int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)
        cut = (answer.response_metadata or {}).get("done_reason") == "length"
        logger.info(
            "chat call done: %d attempt(s), %d answer characters, %d input / %d output tokens%s",
            attempts,
            len(text),
            input_tokens,
            output_tokens,
            " (cut at the output limit)" if cut else "",
        )
        return {
            "answer_text": text,
            "answer_cut": cut,
            "llm_calls": state.get("llm_calls", 0) + attempts,
            "input_tokens": state.get("input_tokens", 0) + input_tokens,
            "output_tokens": state.get("output_tokens", 0) + output_tokens,
        }

    return call_model


def verdict_update(state: ChatState, errors: list[str], options: ChatCallOptions) -> dict[str, Any]:
    """``errors``, the verdict they give (ok, repair while a repair call is left, else fail) and the first errors."""
    verdict: Verdict
    if not errors:
        verdict = "ok"
    elif state.get("repair_calls", 0) < options.max_repair_calls:
        verdict = "repair"
    else:
        verdict = "fail"
    update: dict[str, Any] = {"errors": errors, "verdict": verdict}
    if errors and not state.get("first_errors"):
        update["first_errors"] = errors
    if errors:
        logger.info("answer needs %s: %s", verdict, "; ".join(errors[:3]))
    return update


def cut_answer_errors(state: ChatState, errors: list[str], *, field: str = "reasoning") -> list[str]:
    """``errors``, led by the output limit when the answer was cut there (``field``: what to keep short)."""
    if state.get("answer_cut"):
        return [f"the answer was cut off at the output token limit: keep each {field} to a few words", *errors]
    return errors


def repair_node(repair_prompt: Callable[[Sequence[str]], str]) -> StateNode[ChatState]:
    """The conversation so far, the unusable answer and ``repair_prompt(errors)``: the next call's messages."""

    def repair(state: ChatState) -> dict[str, Any]:
        messages = [
            *state["messages"],
            AIMessage(content=state["answer_text"]),
            HumanMessage(content=repair_prompt(state["errors"])),
        ]
        return {"messages": messages, "repair_calls": state.get("repair_calls", 0) + 1}

    return repair


def fail(state: ChatState) -> NoReturn:
    """Raise ``LLMOutputError`` with the last answer's errors."""
    calls = state.get("llm_calls", 0)
    errors = state["errors"]
    raise LLMOutputError(
        f"the model's answer was unusable after {calls} call(s): {'; '.join(errors[:5])}",
        errors=list(errors),
        llm_calls=calls,
    )


def build_answer_graph(
    state_schema: type[S],
    *,
    llm: Runnable[Any, Any],
    options: ChatCallOptions,
    prepare: tuple[str, StateNode[S]],
    needs_call: Callable[[S], bool],
    check: tuple[str, CheckNode[S]],
    finish: tuple[str, StateNode[S]],
    repair_prompt: Callable[[Sequence[str]], str],
    name: str,
) -> CompiledStateGraph[Any, Any, Any, Any]:
    """Compile the loop. ``prepare`` / ``check`` / ``finish`` are (node name, function) pairs.

    ``prepare`` returns the first messages (plus ``fresh_counters()``); ``needs_call(state)`` False
    goes straight to ``finish``; ``check`` returns its state update and the answer's errors (none:
    ok); ``finish`` builds the result from the accepted answer.
    """
    prepare_name, prepare_fn = prepare
    check_name, check_fn = check
    finish_name, finish_fn = finish

    def checked(state: S) -> dict[str, Any]:
        update, errors = check_fn(state)
        return {**update, **verdict_update(state, errors, options)}

    def after_prepare(state: S) -> str:
        return "call_model" if needs_call(state) else finish_name

    def route(state: ChatState) -> str:
        return state["verdict"]

    builder: StateGraph[S, Any, Any, Any] = StateGraph(state_schema)
    builder.add_node(prepare_name, prepare_fn)
    builder.add_node("call_model", call_model_node(llm, options))
    builder.add_node(check_name, checked)
    builder.add_node("repair", repair_node(repair_prompt))
    builder.add_node("fail", fail)
    builder.add_node(finish_name, finish_fn)
    builder.add_edge(START, prepare_name)
    builder.add_conditional_edges(prepare_name, after_prepare, ["call_model", finish_name])
    builder.add_edge("call_model", check_name)
    builder.add_conditional_edges(check_name, route, {"ok": finish_name, "repair": "repair", "fail": "fail"})
    builder.add_edge("repair", "call_model")
    builder.add_edge(finish_name, END)
    builder.add_edge("fail", END)
    return builder.compile(name=name)
