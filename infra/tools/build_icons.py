"""Write the portal's app icons (PNG) with the standard library alone: no network, no Pillow.

The icon is a white house (a shelter) with a red door on the dashboard's navy, so
it reads at 48 px on a home screen. ``icon-maskable-512.png`` keeps the house in
the central 60 % (the maskable safe zone is a circle of 80 %) on a full-bleed
background, for launchers that crop icons to their own shape.

Usage: ``python infra/tools/build_icons.py [OUT_DIR]`` (default: the gateway's
``static/icons``). Deterministic: the same bytes on every run, so the checked-in
files can be compared with a fresh build.
"""

from __future__ import annotations

import struct
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

Colour = tuple[int, int, int, int]
NAVY: Colour = (0x13, 0x29, 0x4B, 255)
WHITE: Colour = (255, 255, 255, 255)
RED: Colour = (0xD2, 0x1F, 0x1F, 255)
CLEAR: Colour = (0, 0, 0, 0)
DEFAULT_OUT = Path(__file__).resolve().parents[2] / "services" / "gateway" / "static" / "icons"


def png(width: int, height: int, pixel: Callable[[float, float], Colour]) -> bytes:
    """An RGBA PNG whose pixel at (x, y) — in 0..1 units, centre sampled — is ``pixel``."""
    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter type 0 (none) for each scanline
        for x in range(width):
            rows.extend(pixel((x + 0.5) / width, (y + 0.5) / height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(bytes(rows), 9)) + chunk(b"IEND", b""))


def house(x: float, y: float, scale: float) -> Colour | None:
    """The house's colour at (x, y) in a square of side 1 centred on the icon, or None."""
    u, v = (x - 0.5) / scale + 0.5, (y - 0.5) / scale + 0.5
    roof = 0.12 <= v <= 0.45 and abs(u - 0.5) <= (v - 0.12) / 0.33 * 0.40
    walls = 0.45 <= v <= 0.88 and 0.2 <= u <= 0.8
    door = 0.62 <= v <= 0.88 and 0.43 <= u <= 0.57
    if door:
        return RED
    if roof or walls:
        return WHITE
    return None


def rounded(x: float, y: float, radius: float) -> bool:
    """Whether (x, y) lies in the unit square with corners rounded by ``radius``."""
    cx = min(max(x, radius), 1 - radius)
    cy = min(max(y, radius), 1 - radius)
    return (x - cx) ** 2 + (y - cy) ** 2 <= radius ** 2


def icon(x: float, y: float) -> Colour:
    """The regular icon: a rounded navy tile with the house."""
    if not rounded(x, y, 0.18):
        return CLEAR
    return house(x, y, 0.8) or NAVY


def maskable(x: float, y: float) -> Colour:
    """The maskable icon: full-bleed navy, the house inside the safe zone."""
    return house(x, y, 0.6) or NAVY


def build(out: Path) -> list[Path]:
    """Write every icon into ``out``; return the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    made = {"icon-192.png": png(192, 192, icon), "icon-512.png": png(512, 512, icon),
            "icon-maskable-512.png": png(512, 512, maskable)}
    paths = []
    for name, data in made.items():
        path = out / name
        path.write_bytes(data)
        paths.append(path)
    return paths


if __name__ == "__main__":
    for written in build(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT):
        print(f"build_icons: wrote {written}")
