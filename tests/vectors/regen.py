"""Rewrite the golden vectors: ``python -m tests.vectors.regen [TYPE_TAG ...]``.

Only run this for a deliberate format change, together with a VERSION bump of the type;
the vectors exist to make accidental wire-format changes fail loudly.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.vectors.cases import all_cases

HERE = Path(__file__).parent


def value_repr(value: object) -> str:
    """A repr independent of numpy's version and print options."""
    if hasattr(value, "dtype") and hasattr(value, "tolist"):
        return f"{value.dtype}{list(value.shape)}:{value.tolist()!r}"
    return repr(value)


def build() -> dict[str, dict[str, object]]:
    by_tag: dict[str, dict[str, object]] = {}
    for name, builder in all_cases():
        state = builder()
        tag = state.TYPE_TAG
        assert name.startswith(tag + "/"), f"case {name} must start with its type tag {tag}"
        entry = by_tag.setdefault(tag, {"type": tag, "version": state.VERSION, "cases": {}})
        entry["cases"][name] = {"hex": state.encode().hex(), "value": value_repr(state.value())}  # type: ignore[index]
    return by_tag


def main(tags: list[str] | None = None) -> None:
    for tag, entry in build().items():
        if tags and tag not in tags:
            continue
        (HERE / f"{tag}.json").write_text(json.dumps(entry, indent=1, sort_keys=True) + "\n")
        print(f"wrote {tag}.json ({len(entry['cases'])} cases)")  # type: ignore[arg-type]


if __name__ == "__main__":
    import sys

    main(sys.argv[1:] or None)
