"""A schemathesis check of our own, loaded by tests/test_serving_schemathesis.py (SCHEMATHESIS_HOOKS).

A chat body the OpenAPI document allows may still be refused with a 400 for a rule JSON Schema cannot
state, so tests/schemathesis.toml lets positive chat cases be answered 400. This check holds that
allowance to those rules: such a 400 must name the conversation (its last message is not a user's
question; an image is misplaced or not one; its question text is missing or too long), the image itself,
or max_tokens beyond what the prompt leaves of the model's context (context_length_exceeded: the prompt's
length is known only once it is built). A conversation without an image is answered, not refused. A 400
naming any other field means the document allows what the server refuses: declare the rule in the schema
(serving/api/schemas.py).
"""
from __future__ import annotations

import re

import schemathesis

CHAT = "/v1/chat/completions"
UNSTATABLE = re.compile(r"^messages\.\d+\.(role|content)$|^messages\.content\.image_url\.url$")
CONTEXT_LENGTH_EXCEEDED, QUESTION_TOO_LONG = "context_length_exceeded", "question_too_long"


@schemathesis.check
def chat_refusals_name_rules_the_schema_cannot_state(ctx, response, case) -> None:  # noqa: ANN001 (schemathesis)
    """A schema-valid chat body refused with 400 names the conversation, its image or the context, nothing else;
    a question without an image is refused only for its length."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or case.operation.path != CHAT:
        return
    if response.status_code != 400:
        return
    error = response.json()["error"]
    if error.get("code") == CONTEXT_LENGTH_EXCEEDED and error.get("param") == "max_tokens":
        return
    if not UNSTATABLE.match(error.get("param") or ""):
        raise AssertionError(f"the document allows this body, the server refuses it at {error.get('param')!r}: "
                             f"{error.get('message')}")
    if error.get("code") != QUESTION_TOO_LONG and _asks_without_an_image(case.body):
        raise AssertionError(f"a question without an image is answered, not refused: {error.get('message')}")


def _asks_without_an_image(body: object) -> bool:
    """Whether the body is a conversation with no image whose last message is a user's question with text."""
    messages = body.get("messages") if isinstance(body, dict) else None
    if not messages or messages[-1].get("role") != "user":
        return False
    parts = [part for message in messages if isinstance(message.get("content"), list) for part in message["content"]]
    if any(part.get("type") == "image_url" for part in parts):
        return False
    content = messages[-1]["content"]
    texts = [content] if isinstance(content, str) else [part["text"] for part in content if part["type"] == "text"]
    return any(text.strip() for text in texts)
