"""A schemathesis check of our own, loaded by tests/test_serving_schemathesis.py (SCHEMATHESIS_HOOKS).

A chat body the OpenAPI document allows may still be refused with a 400 for a rule JSON Schema cannot
state, so tests/schemathesis.toml lets positive chat cases be answered 400. This check holds that
allowance to those rules: such a 400 must name the conversation (its last message is not a user's
question; its image is missing, misplaced or not one; its question text is missing or too long) or the
image itself. A 400 naming any other field means the document allows what the server refuses: declare the
rule in the schema (serving/api/schemas.py).
"""
from __future__ import annotations

import re

import schemathesis

CHAT = "/v1/chat/completions"
UNSTATABLE = re.compile(r"^messages\.\d+\.(role|content)$|^messages\.content\.image_url\.url$")


@schemathesis.check
def chat_refusals_name_rules_the_schema_cannot_state(ctx, response, case) -> None:  # noqa: ANN001 (schemathesis)
    """A schema-valid chat body refused with 400 names the conversation or its image, nothing else."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or case.operation.path != CHAT:
        return
    if response.status_code != 400:
        return
    error = response.json()["error"]
    if not UNSTATABLE.match(error.get("param") or ""):
        raise AssertionError(f"the document allows this body, the server refuses it at {error.get('param')!r}: "
                             f"{error.get('message')}")
