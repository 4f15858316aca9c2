"""Prometheus' plain text exposition format 0.0.4, written by hand (no dependency): the one writer behind the
tenant node's and the gateway's ``GET /metrics``.

Thread-safety: a :class:`TextWriter` belongs to one render.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

__all__ = ["CONTENT_TYPE", "METRICS_HEADERS", "Labels", "TextWriter"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
METRICS_HEADERS = [("content-type", CONTENT_TYPE)]

Labels = Mapping[str, str]
Number = int | float


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{name}="{_label_value(value)}"' for name, value in labels.items()) + "}"


def _number(value: Number) -> str:
    if isinstance(value, float):
        return f"{value:.6g}" if value == value else "NaN"
    return str(value)


class TextWriter:
    """Collects metric families, then :meth:`render` gives the exposition text."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: Iterable[tuple[Labels, Number]]) -> None:
        """One metric family (``kind``: counter or gauge) with its samples (labels, value)."""
        self._lines += (f"# HELP {name} {help_text}", f"# TYPE {name} {kind}")
        self._lines += (f"{name}{_labels(labels)} {_number(value)}" for labels, value in samples)

    def single(self, name: str, kind: str, help_text: str, value: Number) -> None:
        """A family of one sample without labels."""
        self.family(name, kind, help_text, [({}, value)])

    def histogram(self, name: str, help_text: str, bounds: Sequence[float], counts: Sequence[int],
                  total: float) -> None:
        """A histogram: ``counts`` per bucket (not cumulative), one more than ``bounds`` (the last is +Inf),
        and the sum of the observed values."""
        self._lines += (f"# HELP {name} {help_text}", f"# TYPE {name} histogram")
        cumulative = 0
        for bound, count in zip(bounds, counts):
            cumulative += count
            self._lines.append(f'{name}_bucket{{le="{bound}"}} {cumulative}')
        cumulative += counts[len(bounds)]
        self._lines += (f'{name}_bucket{{le="+Inf"}} {cumulative}', f"{name}_sum {total:.6f}",
                        f"{name}_count {cumulative}")

    def render(self) -> bytes:
        return ("\n".join(self._lines) + "\n").encode()
