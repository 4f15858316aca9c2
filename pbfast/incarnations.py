"""The lives of one tenant record, and which one was live at a point in time.

A tenant starts with one incarnation (``tenants/{id}/{incarnation}/`` in the replica). An in-place restore
ends it and starts a new one seeded from an earlier incarnation's replica at a point in time
(:meth:`pbfast.control_plane.registry.Registry.update_tenant_with_new_incarnation`). The ended ones stay listed in the record's
``history``, so "the tenant at time T" is the incarnation live at T, read at T; for an incarnation whose
replica holds nothing yet at T (just started, never opened since), it is its seed.

Shared by the control plane (seed of an in-place restore) and ``pbfast tenant restore --to`` (which
replica to read), so both pick the same incarnation for the same T.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

from pbfast.timefmt import format_rfc3339, parse_rfc3339

__all__ = ["Life", "life_at", "lives_from_json", "lives_json", "lives_of", "lives_to_json"]


class Life(TypedDict):
    """One incarnation: live from ``startedAt`` until ``endedAt`` (None: the current one), Unix seconds;
    ``seed`` is what it started from (``{"incarnation", "at"}``), None for a tenant's first life."""

    incarnation: str
    startedAt: float
    endedAt: float | None
    seed: dict[str, str] | None


def lives_of(tenant: Mapping[str, Any]) -> list[Life]:
    """The record's incarnations, oldest first, the current one last. Records from before in-place
    restores have no ``history``/``incarnationStartedAt``/``seed``: one life since ``createdAt``."""
    lives: list[Life] = [
        {"incarnation": str(entry["incarnation"]), "startedAt": float(entry["startedAt"]),
         "endedAt": float(entry["endedAt"]), "seed": entry.get("seed")}
        for entry in tenant.get("history") or []
    ]
    lives.append({"incarnation": str(tenant.get("incarnation", "0")),
                  "startedAt": float(tenant.get("incarnationStartedAt", tenant["createdAt"])),
                  "endedAt": None, "seed": tenant.get("seed")})
    return lives


def life_at(lives: Sequence[Life], moment: float) -> Life | None:
    """The incarnation live at ``moment`` (``startedAt <= moment < endedAt``; the current one from its
    start on), or None when no retained incarnation covers it (before the oldest one kept)."""
    for life in reversed(lives):
        if life["startedAt"] <= moment and (life["endedAt"] is None or moment < life["endedAt"]):
            return life
    return None


def lives_json(tenant: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The API form of :func:`lives_of` (see :func:`lives_to_json`)."""
    return lives_to_json(lives_of(tenant))


def lives_to_json(lives: Sequence[Life]) -> list[dict[str, Any]]:
    """The API form of a tenant's lives: times as RFC 3339 UTC with microseconds (the form ``at`` takes),
    the seed as ``restoredFrom``."""
    return [{"incarnation": life["incarnation"],
             "startedAt": format_rfc3339(life["startedAt"]),
             "endedAt": None if life["endedAt"] is None else format_rfc3339(life["endedAt"]),
             "restoredFrom": life["seed"]}
            for life in lives]


def lives_from_json(tenant: Mapping[str, Any]) -> list[Life]:
    """:func:`lives_json` read back from a tenant's API JSON. A control plane from before in-place restores
    sends no ``incarnations``: then the tenant's one incarnation, live since forever."""
    entries = tenant.get("incarnations")
    if not entries:
        return [{"incarnation": str(tenant.get("incarnation", "0")), "startedAt": float("-inf"),
                 "endedAt": None, "seed": None}]
    return [{"incarnation": str(entry["incarnation"]),
             "startedAt": parse_rfc3339(entry["startedAt"]).timestamp(),
             "endedAt": None if entry.get("endedAt") is None else parse_rfc3339(entry["endedAt"]).timestamp(),
             "seed": entry.get("restoredFrom")}
            for entry in entries]
