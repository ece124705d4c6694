"""Shape limits on a parsed JSON request body: items per array, nesting depth, items in all.

A body's byte size (REHABFHIR_MAX_BODY_BYTES) does not bound the work it causes: 4 MB of
`{"name": [{}, {}, ...]}` is 150 k array items, and each one costs model building,
validation and indexing (issue 15 item 6 measured 9-15 s of a worker for one such Patient).
These limits are checked on the parsed document before anything else looks at it, in one
pass that stops at the first limit crossed (its cost is bounded by MAX_TOTAL_ITEMS, whatever
the body holds):

- MAX_ARRAY_ITEMS items in one array -> 413 `too-costly`, expression the array's path. A
  Bundle's own `entry` is exempt: REHABFHIR_MAX_BUNDLE_ENTRIES governs it.
- MAX_DEPTH levels of nesting -> 400 `structure`, expression the path where it is crossed.
- MAX_TOTAL_ITEMS array items and object members in all -> 413 `too-costly`.

No FHIR specification sets these numbers (the server's own choice, as the body size limit:
/work/shared/reference/security-and-audit.md "Size and depth limits"). The largest Synthea
patient bundle of the reference data (1.5 MB, 499 entries) holds 26 k items, depth 12, and
no array over 499 items.
"""

from __future__ import annotations

from typing import Any

from server.errors import PayloadTooLargeError
from server.errors import StructureError

MAX_ARRAY_ITEMS = 10_000
MAX_DEPTH = 100
MAX_TOTAL_ITEMS = 400_000


def _path(ref: Any) -> str:
    """FHIRPath-like location of a node from its chain of (parent, key) links."""
    parts: list[str] = []
    while ref is not None:
        ref, key = ref
        parts.append(f"[{key}]" if isinstance(key, int) else f".{key}")
    return "".join(reversed(parts)).lstrip(".") or "(body)"


def check_shape(
    doc: Any,
    max_items: int = MAX_ARRAY_ITEMS,
    max_depth: int = MAX_DEPTH,
    max_total: int = MAX_TOTAL_ITEMS,
) -> None:
    """Raise when the parsed body crosses one of the limits; the expression names where."""
    root = doc.get("resourceType") if isinstance(doc, dict) else None
    root_ref = None if not isinstance(root, str) else (None, root)
    bundle_entry = doc.get("entry") if root == "Bundle" else None
    total = 0
    # (node, depth, link): a link is (parent link, key); paths are only spelled out on failure.
    stack: list[tuple[Any, int, Any]] = [(doc, 1, root_ref)]
    while stack:
        node, depth, ref = stack.pop()
        if isinstance(node, dict):
            items: Any = node.items()
        elif isinstance(node, list):
            if len(node) > max_items and node is not bundle_entry:
                raise PayloadTooLargeError(
                    f"{_path(ref)} has {len(node)} items; at most {max_items} are accepted in one array",
                    expression=(_path(ref),),
                    message_id="MSG_BODY_TOO_LARGE",
                )
            items = enumerate(node)
        else:
            continue
        if not node:
            continue
        if depth >= max_depth:
            raise StructureError(
                f"{_path(ref)} nests deeper than {max_depth} levels",
                expression=(_path(ref),),
            )
        total += len(node)
        if total > max_total:
            raise PayloadTooLargeError(
                f"The body holds more than {max_total} array items and object members",
                message_id="MSG_BODY_TOO_LARGE",
            )
        for key, value in items:
            if isinstance(value, (dict, list)):
                stack.append((value, depth + 1, (ref, key)))
