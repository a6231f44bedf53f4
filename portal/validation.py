"""Small input checks shared by every service: types, lengths, ranges. Raise ValidationError."""

from __future__ import annotations

from typing import Any

from portal.errors import ValidationError

_MISSING = object()


def get_str(
    data: dict,
    key: str,
    *,
    required: bool = True,
    min_len: int = 0,
    max_len: int = 255,
    strip: bool = True,
    default: str | None = None,
    label: str | None = None,
) -> str | None:
    label = label or key
    value = data.get(key, _MISSING) if isinstance(data, dict) else _MISSING
    if value is _MISSING or value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise ValidationError(f"{label} is required", field=key)
        return default
    if not isinstance(value, str):
        raise ValidationError(f"{label} must be a string", field=key)
    if strip:
        value = value.strip()
    if "\x00" in value:
        raise ValidationError(f"{label} contains a NUL character", field=key)
    if len(value) < min_len:
        raise ValidationError(f"{label} must be at least {min_len} characters", field=key)
    if len(value) > max_len:
        raise ValidationError(f"{label} must be at most {max_len} characters", field=key)
    return value


def get_int(
    data: dict,
    key: str,
    *,
    required: bool = False,
    default: int | None = None,
    min_value: int | None = None,
    max_value: int | None = None,
    label: str | None = None,
) -> int | None:
    label = label or key
    value = data.get(key, _MISSING) if isinstance(data, dict) else _MISSING
    if value is _MISSING or value is None or value == "":
        if required:
            raise ValidationError(f"{label} is required", field=key)
        return default
    if isinstance(value, bool):
        raise ValidationError(f"{label} must be a whole number", field=key)
    if isinstance(value, str):
        try:
            value = int(value.strip(), 10)
        except ValueError:
            raise ValidationError(f"{label} must be a whole number", field=key) from None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise ValidationError(f"{label} must be a whole number", field=key)
    if min_value is not None and value < min_value:
        raise ValidationError(f"{label} must be at least {min_value}", field=key)
    if max_value is not None and value > max_value:
        raise ValidationError(f"{label} must be at most {max_value}", field=key)
    return value


def get_bool(data: dict, key: str, *, default: bool = False, label: str | None = None) -> bool:
    value = data.get(key, _MISSING) if isinstance(data, dict) else _MISSING
    if value is _MISSING or value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"true", "1", "on", "yes"}:
        return True
    if isinstance(value, str) and value.lower() in {"false", "0", "off", "no"}:
        return False
    raise ValidationError(f"{label or key} must be true or false", field=key)


def get_choice(data: dict, key: str, choices, *, required=True, default=None, label=None) -> Any:
    value = get_str(data, key, required=required, default=default, label=label, max_len=64)
    if value is not None and value not in choices:
        allowed = ", ".join(sorted(choices))
        raise ValidationError(f"{label or key} must be one of: {allowed}", field=key)
    return value


#: Tags typed as one comma-separated string (a page's field): at most this many characters.
TAGS_TEXT_MAX = 600


def get_tags(data: dict, key: str = "tags", *, max_tags: int = 16, max_len: int = 32) -> list[str]:
    """Tags: a list of short strings or a comma-separated string; lower-cased, de-duplicated."""
    value = data.get(key) if isinstance(data, dict) else None
    if value is None or value == "":
        return []
    if isinstance(value, str):
        if len(value) > TAGS_TEXT_MAX:
            raise ValidationError(f"{key} must be at most {TAGS_TEXT_MAX} characters", field=key)
        value = value.split(",")
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise ValidationError(f"{key} must be a list of strings", field=key)
    tags: list[str] = []
    for raw in value:
        tag = raw.strip().lower()
        if not tag:
            continue
        if len(tag) > max_len or not all(c.isalnum() or c in "-_.:" for c in tag):
            raise ValidationError(
                f"tag '{tag[:40]}' must be at most {max_len} letters, digits or - _ . :", field=key
            )
        if tag not in tags:
            tags.append(tag)
    if len(tags) > max_tags:
        raise ValidationError(f"at most {max_tags} tags", field=key)
    return tags
