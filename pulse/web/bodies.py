"""Request bodies of the API, read and checked before anything reaches the library: a size
limit, JSON objects only, known fields only, each of its type. What the library checks itself
(name lengths, step counts, progress range, ...) it still checks: one set of rules."""

from __future__ import annotations

import json
from typing import Any

from ..errors import BadValue

MAX_BODY = 64 * 1024


class TooLarge(Exception):
    pass


_TEXT = (str,)
_NUMBER = (int, float)

# Per call: each field the body may have, and its type. Required fields are checked by the
# library (an error without a message, a create without steps), so its wording is the CLI's.
FIELDS: dict[str, dict[str, tuple[type, ...]]] = {
    "create": {"name": _TEXT, "steps": (list,), "stall": _NUMBER},
    "next": {"message": _TEXT},
    "heartbeat": {"message": _TEXT, "progress": _NUMBER},
    "done": {"result": _TEXT},
    "error": {"message": _TEXT},
    "wait": {"question": _TEXT},
}


def parse(raw: bytes, call: str) -> dict[str, Any]:
    """The body of ``call`` as a dict of known, typed fields; BadValue says what is wrong."""
    if not raw.strip():
        doc: Any = {}
    else:
        try:
            doc = json.loads(raw)
        except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
            raise BadValue(f"the body is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise BadValue("the body must be a JSON object")
    allowed = FIELDS[call]
    unknown = sorted(set(doc) - set(allowed))
    if unknown:
        known = ", ".join(allowed) or "none"
        raise BadValue(f"unknown field(s) {', '.join(unknown)} for {call}; known: {known}")
    body: dict[str, Any] = {}
    for name, value in doc.items():
        if value is None:
            continue  # null: as if absent
        types = allowed[name]
        # bool is an int in Python; true is no progress and no stall time
        if isinstance(value, bool) or not isinstance(value, types):
            kind = {"str": "a string", "list": "a list", "int": "a number"}[types[0].__name__]
            raise BadValue(f"{name} must be {kind}")
        body[name] = value
    if call == "create":
        if "name" not in body:
            raise BadValue("create needs a name")
        steps = body.get("steps")
        if not steps or not all(isinstance(s, str) for s in steps):
            raise BadValue("steps must be a non-empty list of strings")
    return body
