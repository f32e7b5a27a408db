"""Entry point hypothesis calls at start-up (``[project.entry-points.hypothesis]``)."""

from __future__ import annotations


def _hypothesis_setup_hook() -> None:
    from .strategies import register_type_strategies

    register_type_strategies()
