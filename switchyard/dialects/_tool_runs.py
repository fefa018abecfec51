"""A translated chat history's tool runs kept whole.

OpenAI's chat API wants an assistant message that calls tools to be followed at once by the
``tool`` messages answering those calls: anything between them (a system or developer message,
a user message) is refused ("An assistant message with 'tool_calls' must be followed by tool
messages responding to each 'tool_call_id'"), and chat templates that pair a call with its
result misread it. Responses and Messages histories may put a turn there: an agent inserts a
system or developer message (a changed instruction, an environment note) while its tools run,
and a Responses tool output's images become a user message that follows it.

Such a message is moved to follow the run, after the last ``tool`` message answering the
calls (or, when some call is never answered, before the next assistant message or at the
end). Not before the assistant message: the model made its calls without having read it, and
a history showing an instruction before calls that break it would mislead the next turn.
After the run it is the last thing read before the model answers, as it was in the client's
history: nothing the model wrote came between where it was and where it goes.
"""

from __future__ import annotations

from typing import Any


def keep_tool_runs_whole(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``messages`` with what came inside a tool run moved after it (see the module
    docstring)."""
    out: list[dict[str, Any]] = []
    unanswered: set[Any] = set()  # call ids of the open run not yet answered
    held: list[dict[str, Any]] = []  # messages that came inside the open run
    for message in messages:
        role = message.get("role")
        if unanswered:
            if role == "tool":
                out.append(message)
                unanswered.discard(message.get("tool_call_id"))
                if not unanswered:
                    out += held
                    held = []
                continue
            if role != "assistant":
                held.append(message)
                continue
            unanswered = set()  # a new assistant turn: the run ended with calls unanswered
            out += held
            held = []
        out.append(message)
        if role == "assistant" and message.get("tool_calls"):
            unanswered = {call.get("id") for call in message["tool_calls"]}
    out += held
    return out
