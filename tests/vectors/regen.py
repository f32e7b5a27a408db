"""Rewrite the golden vectors: ``python -m tests.vectors.regen``.

Only run this for a deliberate format change, together with a VERSION bump of the type;
the vectors exist to make accidental wire-format changes fail loudly.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.vectors.cases import all_cases

HERE = Path(__file__).parent


def build() -> dict[str, dict[str, object]]:
    by_tag: dict[str, dict[str, object]] = {}
    for name, builder in all_cases():
        state = builder()
        tag = state.TYPE_TAG
        assert name.startswith(tag + "/"), f"case {name} must start with its type tag {tag}"
        entry = by_tag.setdefault(tag, {"type": tag, "version": state.VERSION, "cases": {}})
        entry["cases"][name] = {"hex": state.encode().hex(), "value": repr(state.value())}  # type: ignore[index]
    return by_tag


def main() -> None:
    for tag, entry in build().items():
        (HERE / f"{tag}.json").write_text(json.dumps(entry, indent=1, sort_keys=True) + "\n")
        print(f"wrote {tag}.json ({len(entry['cases'])} cases)")  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
