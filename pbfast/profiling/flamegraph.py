"""A flame graph of a CPU profile as one self-contained SVG (no script, no external files): for people
without pprof. Each box is a function in a stack, as wide as the CPU time spent in it and what it called;
callers below, callees above; hovering a box shows its name, time and share."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from html import escape

from pbfast.profiling.cpu import CpuProfile

__all__ = ["flamegraph_svg"]

WIDTH = 1200
ROW = 17
FONT_SIZE = 11
CHAR_WIDTH = 6.6  # average width of one character at FONT_SIZE in the default sans-serif font
MIN_BOX_WIDTH = 0.3  # narrower boxes (and what they called) are left out
MARGIN = 10
TITLE_HEIGHT = 40


@dataclass(slots=True)
class _Node:
    weight: int = 0
    children: dict[str, _Node] = field(default_factory=dict)


def _tree(profile: CpuProfile) -> _Node:
    root = _Node()
    for _, frames, _, cpu_ns in profile.weighted_stacks():
        root.weight += cpu_ns
        node = root
        for frame in reversed(frames):  # root first
            node = node.children.setdefault(frame.name, _Node())
            node.weight += cpu_ns
    return root


def _colour(name: str) -> str:
    hashed = zlib.crc32(name.encode())
    return f"rgb({205 + hashed % 50},{(hashed >> 8) % 170 + 50},{(hashed >> 16) % 55})"


def flamegraph_svg(profile: CpuProfile, title: str) -> bytes:
    root = _tree(profile)
    total = max(root.weight, 1)
    scale = (WIDTH - 2 * MARGIN) / total
    boxes: list[tuple[int, float, float, str, int]] = []  # depth, x, width, name, weight
    pending = [(0, MARGIN + 0.0, "all", root)]
    while pending:
        depth, x, name, node = pending.pop()
        width = node.weight * scale
        if width < MIN_BOX_WIDTH:
            continue
        boxes.append((depth, x, width, name, node.weight))
        child_x = x
        for child_name, child in sorted(node.children.items()):
            pending.append((depth + 1, child_x, child_name, child))
            child_x += child.weight * scale
    depth_max = max((box[0] for box in boxes), default=0)
    height = TITLE_HEIGHT + (depth_max + 1) * ROW + MARGIN
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="Verdana, sans-serif" font-size="{FONT_SIZE}">',
        f'<rect width="{WIDTH}" height="{height}" fill="#f8f8f0"/>',
        f'<text x="{WIDTH / 2}" y="20" text-anchor="middle" font-size="15">{escape(title)}</text>',
        f'<text x="{MARGIN}" y="34" fill="#555">CPU {total / 1e6:.1f} ms in '
        f'{profile.duration_ns / 1e9:.1f} s; width: CPU time; hover a box for details</text>',
    ]
    for depth, x, width, name, weight in boxes:
        y = height - MARGIN - (depth + 1) * ROW
        label = f"{name} ({weight / 1e6:.1f} ms, {100 * weight / total:.1f}%)"
        parts.append(f'<g><title>{escape(label)}</title><rect x="{x:.1f}" y="{y}" width="{width:.1f}" '
                     f'height="{ROW - 1}" fill="{_colour(name)}" rx="2"/>')
        fits = int((width - 4) / CHAR_WIDTH)
        if fits >= 3:
            text = name if len(name) <= fits else name[:fits - 2] + ".."
            parts.append(f'<text x="{x + 2:.1f}" y="{y + ROW - 5}">{escape(text)}</text>')
        parts.append("</g>")
    parts.append("</svg>")
    return "\n".join(parts).encode()
