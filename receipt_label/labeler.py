"""`label_receipt`: run the labeling graph for one receipt, with LangSmith tracing only when configured."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any

from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tracers.langchain import LangChainTracer
from langgraph.graph.state import CompiledStateGraph
from langsmith import tracing_context

from receipt_dynamo import Receipt, ReceiptDetails
from receipt_label.chat_graph import call_stats
from receipt_label.graph import LabelingOptions, build_labeling_graph
from receipt_label.llm import model_name_of
from receipt_label.state import LabelingResult

logger = logging.getLogger(__name__)

_TRACING_FLAGS = ("LANGSMITH_TRACING", "LANGSMITH_TRACING_V2", "LANGCHAIN_TRACING_V2", "LANGCHAIN_TRACING")
_TRACING_KEYS = ("LANGSMITH_API_KEY", "LANGCHAIN_API_KEY")


def _flag_set(env: Mapping[str, str]) -> bool:
    return any(env.get(name, "").strip().lower() == "true" for name in _TRACING_FLAGS)


def tracing_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Environment-driven LangSmith tracing is on only when a tracing flag is "true" AND a LangSmith key is set."""
    env = os.environ if environ is None else environ
    return _flag_set(env) and any(env.get(name, "").strip() for name in _TRACING_KEYS)


def _has_langsmith_tracer(config: RunnableConfig | None) -> bool:
    callbacks = (config or {}).get("callbacks")
    handlers = callbacks if isinstance(callbacks, list) else getattr(callbacks, "handlers", [])
    return any(isinstance(h, LangChainTracer) for h in handlers or [])


@contextlib.contextmanager
def _tracing_scope(config: RunnableConfig | None) -> Iterator[None]:
    """Tracing follows the environment, except that a flag without a key turns it off (no attempt to reach
    LangSmith without credentials). A `LangChainTracer` passed in `config` (how the Lambda traces, with a
    key read from Secrets Manager) is always honoured."""
    if _flag_set(os.environ) and not tracing_enabled() and not _has_langsmith_tracer(config):
        with tracing_context(enabled=False):
            yield
    else:
        yield


def invoke_graph(
    graph: CompiledStateGraph[Any, Any, Any, Any],
    state: dict[str, Any],
    run_name: str,
    receipt: Receipt,
    model: str,
    config: RunnableConfig | None,
) -> dict[str, Any]:
    """Run a receipt's graph as the run ``run_name`` (tag ``receipt_label``; image, receipt and model as
    metadata), merged with the caller's ``config``, under the tracing rules of :func:`tracing_enabled`."""
    metadata = {"image_id": receipt.image_id, "receipt_id": receipt.receipt_id, "model": model}
    run_config: RunnableConfig = {"run_name": run_name, "tags": ["receipt_label"], "metadata": metadata}
    if config:
        run_config = {**run_config, **config}
        run_config["tags"] = ["receipt_label", *(config.get("tags") or [])]
        run_config["metadata"] = {**(config.get("metadata") or {}), **metadata}
    with _tracing_scope(config):
        return dict(graph.invoke(state, config=run_config))


def label_receipt(
    details: ReceiptDetails,
    *,
    llm: Runnable[Any, Any],
    model_name: str | None = None,
    options: LabelingOptions | None = None,
    config: RunnableConfig | None = None,
) -> LabelingResult:
    """Propose a label for the words of one receipt, normally with exactly one chat call.

    `llm`: a chat model (`create_chat_model(...)` in production; a fake one in tests).
    `model_name`: names the proposer (`label_proposed_by = "receipt_label:<model_name>"`);
    by default the chat model's `.model`. `config`: extra callbacks / tags / metadata.

    Raises `LLMRateLimitError`, `LLMTransientError`, `LLMRequestError` (the call failed) or
    `LLMOutputError` (the answer was unusable after one repair call); nothing is returned then.
    """
    name = model_name or model_name_of(llm)
    graph = build_labeling_graph(llm, model_name=name, options=options)
    receipt = details.receipt
    final = invoke_graph(graph, {"details": details, "model_name": name}, "label_receipt", receipt, name, config)
    result = LabelingResult(
        labels=list(final["labels"]), rejected=list(final.get("rejected", [])), **call_stats(final, name)
    )
    logger.info(
        "labeled receipt %s/%s: %d labels, %d rejected, %d llm call(s)%s",
        receipt.image_id,
        receipt.receipt_id,
        len(result.labels),
        len(result.rejected),
        result.llm_calls,
        " (after a repair)" if result.repaired else "",
    )
    return result
