"""Helpers of the end-to-end suites (a module with a unique name: conftest modules are not importable)."""

from __future__ import annotations


def balanced(owners: dict[str, str], partitions: int, live: set[str]) -> bool:
    """Every partition is owned by a live node and every live node owns at least one partition."""
    return (
        len(owners) == partitions
        and set(owners.values()) <= live
        and all(any(o == n for o in owners.values()) for n in live)
    )
