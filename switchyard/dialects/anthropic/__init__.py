"""Anthropic's Messages API (``POST /v1/messages``) in front of chat completions providers.

``to_chat`` turns a request into a chat request plus the context the reply needs (``chat_fields``:
where its fields came from);
``to_message`` turns a whole chat completion into a Message; ``MessagesStream`` turns streamed
chat chunks into Anthropic's event stream; ``error_body`` / ``error_event`` render Switchyard's
errors the way Anthropic's SDKs expect them; ``page_body`` / ``model_body`` answer the model
listing in Anthropic's shape.
"""

from switchyard.dialects.anthropic.errors import error_body, error_event, error_type
from switchyard.dialects.anthropic.models import VERSION_HEADER, model_body, page_body
from switchyard.dialects.anthropic.reply import message_dict, to_message
from switchyard.dialects.anthropic.request import (
    TOP_FIELDS,
    MessagesContext,
    MessagesRequest,
    chat_fields,
    to_chat,
)
from switchyard.dialects.anthropic.stream import MessagesStream

__all__ = [
    "TOP_FIELDS",
    "VERSION_HEADER",
    "MessagesContext",
    "MessagesRequest",
    "MessagesStream",
    "chat_fields",
    "error_body",
    "error_event",
    "error_type",
    "message_dict",
    "model_body",
    "page_body",
    "to_chat",
    "to_message",
]
