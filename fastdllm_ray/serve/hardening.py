"""Request checks the protocol models cannot express, run by the ingress before tokenizing.

JSON's \\u escapes can carry a lone UTF-16 surrogate ("\\ud800"), which Python accepts as a
str but no tokenizer (nor UTF-8) can encode: left alone it surfaces as a TypeError deep in
the tokenizer, i.e. a 500. Here it becomes a 400 naming the field.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from fastdllm_ray.serve.convert import RequestError


def _first_bad_text(value: Any, path: str) -> str | None:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path
        return None
    if isinstance(value, BaseModel):
        items = ((name, getattr(value, name)) for name in type(value).model_fields)
    elif isinstance(value, (list, tuple)):
        items = ((str(i), v) for i, v in enumerate(value))
    else:
        return None
    for key, item in items:
        found = _first_bad_text(item, f"{path}.{key}" if path else key)
        if found:
            return found
    return None


def check_text_fields(body: BaseModel) -> None:
    """Raises a 400 RequestError naming the first text field that is not valid Unicode."""
    field = _first_bad_text(body, "")
    if field is not None:
        raise RequestError(f"{field}: text is not valid Unicode (a lone surrogate escape such as \\ud800)",
                           param=field, code="invalid_unicode")
