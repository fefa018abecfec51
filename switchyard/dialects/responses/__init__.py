"""The OpenAI Responses API (``POST /v1/responses``) in front of chat completions providers.

``to_chat`` turns a request into a chat request plus the context the reply needs (``chat_fields``:
where its fields came from);
``to_response`` turns a whole chat completion into a Response object; ``ResponsesStream``
turns streamed chat chunks into the Responses event stream.
"""

from switchyard.dialects.responses.reply import response_dict, to_response
from switchyard.dialects.responses.request import (
    TOP_FIELDS,
    ResponsesContext,
    ResponsesRequest,
    chat_fields,
    to_chat,
)
from switchyard.dialects.responses.stream import ResponsesStream

__all__ = [
    "TOP_FIELDS",
    "ResponsesContext",
    "ResponsesRequest",
    "ResponsesStream",
    "chat_fields",
    "response_dict",
    "to_chat",
    "to_response",
]
