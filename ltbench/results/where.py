"""``--where KEY=VALUE`` (repeatable) on `ltbench table`, `status` and `plot`: keep the records whose spec has
that value. KEY is any setting as a user writes it (``method``, ``benchmark``, ``seed``, ``backbone``,
``recipe``, ``data.KEY``, ``STAGE.KEY``, ``stage1.KEY`` of a decoupled method's stage-1 run); VALUE is
parsed as --set parses it and compared by value (``1e-3`` matches 0.001). A key no record has is an error
with a did-you-mean, never an empty result."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..errors import LtbenchError
from ..spec.run_spec import flat_settings, parse_value
from ..spec.schema import SINCE, did_you_mean

Condition = tuple[str, Any, str]  # key, value, the text the user typed


def parse_where(items: Iterable[str] | None) -> list[Condition]:
    conditions = []
    for item in items or []:
        key, eq, text = item.partition("=")
        key, text = key.strip(), text.strip()
        if not eq or not key or not text:
            raise LtbenchError(f"--where {item!r}: expected KEY=VALUE, e.g. --where train.epochs=200 or "
                               "--where recipe=paper.")
        conditions.append((key, parse_value(text), item))
    return conditions


def spec_values(spec: dict[str, Any]) -> dict[str, Any]:
    """A spec's settings by the names --where takes (None when the spec is not a run's)."""
    try:
        return {"method": spec["method"], "benchmark": spec["benchmark"], "seed": spec["seed"], **flat_settings(spec)}
    except (KeyError, TypeError, AttributeError):
        return {}


def _same(have: Any, want: Any) -> bool:
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (have, want))
    if numbers:
        return float(have) == float(want)
    if isinstance(have, list) and isinstance(want, list):
        return len(have) == len(want) and all(_same(a, b) for a, b in zip(have, want, strict=True))
    return str(have).lower() == str(want).lower()


def matches(spec: dict[str, Any], conditions: list[Condition]) -> bool:
    values = spec_values(spec)
    for key, want, _ in conditions:
        have = values[key] if key in values else SINCE.get(key.rsplit(".", 1)[-1], _MISSING) if values else _MISSING
        if have is _MISSING or not _same(have, want):
            return False
    return True


_MISSING = object()


def check_keys(conditions: list[Condition], specs: Iterable[dict[str, Any]]) -> None:
    """Refuse a key that no spec has (after SINCE's keys, which every stage has at their earlier value)."""
    known: set[str] = set()
    for spec in specs:
        known |= set(spec_values(spec))
    for key, _, item in conditions:
        if key not in known and key.rsplit(".", 1)[-1] not in SINCE:
            raise LtbenchError(f"--where {item!r}: no record has a setting {key!r}{did_you_mean(key, known)}; "
                               "`ltbench show RUN_ID` lists a run's settings.")


def select(records: list[dict[str, Any]], conditions: list[Condition]) -> list[dict[str, Any]]:
    """The records (result.json, each with its "spec") that meet every condition."""
    if not conditions or not records:
        return records
    check_keys(conditions, [r.get("spec", {}) for r in records])
    return [r for r in records if matches(r.get("spec", {}), conditions)]
