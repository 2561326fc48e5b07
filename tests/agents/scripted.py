"""A `Model` for the Agents SDK's `Runner` that replays fixed turns and keeps what it was sent:
the runs are the SDK's own, with no model service behind them."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

from agents import (
    AgentOutputSchemaBase,
    Handoff,
    Model,
    ModelResponse,
    ModelSettings,
    ModelTracing,
    Tool,
    TResponseInputItem,
    Usage,
)
from openai.types.responses import (
    ResponseApplyPatchToolCall,
    ResponseFunctionShellToolCall,
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)
from openai.types.responses.response_prompt_param import ResponsePromptParam


class ScriptedModel(Model):
    """Each call to the model answers with the next turn; `inputs[i]` is what turn i was given
    (turn 0 the prompt, each later one the run's items so far, the tools' outputs included)."""

    def __init__(self, turns: Sequence[Sequence[Any]]) -> None:
        self._turns = [list(turn) for turn in turns]
        self.inputs: list[list[dict[str, Any]]] = []

    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: ModelSettings,
        tools: list[Tool],
        output_schema: AgentOutputSchemaBase | None,
        handoffs: list[Handoff],
        tracing: ModelTracing,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: ResponsePromptParam | None,
    ) -> ModelResponse:
        items = [{"role": "user", "content": input}] if isinstance(input, str) else input
        self.inputs.append(copy.deepcopy([dict(item) for item in items]))  # as it was then
        if not self._turns:
            raise AssertionError("the model was called after its last scripted turn")
        return ModelResponse(output=self._turns.pop(0), usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        raise NotImplementedError("the tests run the model without streaming")

    def outputs(self, turn: int) -> dict[str, dict[str, Any]]:
        """The tool outputs in turn `turn`'s input (every one so far), by call id."""
        return {
            item["call_id"]: item
            for item in self.inputs[turn]
            if str(item.get("type", "")).endswith("_output")
        }


def shell(
    call_id: str,
    *commands: str,
    timeout_ms: int | None = None,
    max_output_length: int | None = None,
) -> ResponseFunctionShellToolCall:
    action: dict[str, Any] = {"commands": list(commands)}
    if timeout_ms is not None:
        action["timeout_ms"] = timeout_ms
    if max_output_length is not None:
        action["max_output_length"] = max_output_length
    return ResponseFunctionShellToolCall.model_validate(
        {
            "id": f"item_{call_id}",
            "call_id": call_id,
            "type": "shell_call",
            "status": "completed",
            "action": action,
        }
    )


def patch(
    call_id: str, kind: str, path: str, diff: str | None = None
) -> ResponseApplyPatchToolCall:
    operation: dict[str, Any] = {"type": kind, "path": path}
    if diff is not None:
        operation["diff"] = diff
    return ResponseApplyPatchToolCall.model_validate(
        {
            "id": f"item_{call_id}",
            "call_id": call_id,
            "type": "apply_patch_call",
            "status": "completed",
            "operation": operation,
        }
    )


def function(call_id: str, name: str, **arguments: Any) -> ResponseFunctionToolCall:
    return ResponseFunctionToolCall(
        id=f"item_{call_id}",
        call_id=call_id,
        type="function_call",
        status="completed",
        name=name,
        arguments=json.dumps(arguments),
    )


def say(text: str) -> ResponseOutputMessage:
    return ResponseOutputMessage(
        id="msg_final",
        type="message",
        role="assistant",
        status="completed",
        content=[ResponseOutputText(type="output_text", text=text, annotations=[])],
    )
