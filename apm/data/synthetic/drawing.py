"""Drawing primitives for the procedural scenes of ``apm.data.synthetic.render``.

Nothing here knows about categories: colours (:func:`hsv`, :func:`mix`, :func:`shade` and the
harmony-steered :class:`Palette`), point and outline helpers (ellipses, rectangles, Bézier curves,
ribbons), the :class:`Shape` a subject is built from and fitted to the attribute box, the
supersampled :class:`Canvas` it is painted on, and generic backdrops (gradients, ridgelines,
scattered discs and strokes, a daylight sky, out-of-focus foliage, receding furrows).
"""
from __future__ import annotations

import colorsys
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from apm.data.synthetic.attributes import Attributes

RGB = tuple[int, int, int]

#: Scenes are drawn at this multiple of the output size and box-filtered down (anti-aliasing).
SS = 2


# --- colour -------------------------------------------------------------------------------------

def hsv(hue: float, sat: float, val: float) -> RGB:
    r, g, b = colorsys.hsv_to_rgb(hue % 1.0, min(max(sat, 0.0), 1.0), min(max(val, 0.0), 1.0))
    return int(r * 255 + 0.5), int(g * 255 + 0.5), int(b * 255 + 0.5)


def mix(a: RGB, b: RGB, t: float) -> RGB:
    return tuple(int(x + (y - x) * t + 0.5) for x, y in zip(a, b, strict=True))  # type: ignore


def shade(colour: RGB, factor: float) -> RGB:
    return tuple(min(255, int(v * factor)) for v in colour)  # type: ignore[return-value]


class Palette:
    """Picks a scene's colours from its category's natural hues, steered by ``harmony``.

    Harmony compresses every hue towards one random key hue per image, a share of the way that
    grows with ``harmony``: an analogous palette, like a colour grade. Its absence scatters hues
    at random: a discordant palette. ``freedom`` says how far an element may move, so the large
    areas that make a scene recognisable stay near their natural hues while accents roam.
    """

    def __init__(self, rng: np.random.Generator, harmony: float) -> None:
        self._rng = rng
        self._harmony = harmony
        self._key = rng.random()

    def __call__(self, hue: float, sat: float, val: float, freedom: float = 0.5) -> RGB:
        rng = self._rng
        hue += rng.normal(0.0, 0.015) + freedom * (1.0 - self._harmony) * rng.uniform(-0.5, 0.5)
        towards_key = (self._key - hue + 0.5) % 1.0 - 0.5
        hue += self._harmony * 0.6 * (0.3 + 0.7 * freedom) * towards_key
        return hsv(hue, sat * rng.uniform(0.9, 1.1), val * rng.uniform(0.92, 1.05))


# --- geometry -----------------------------------------------------------------------------------

Points = np.ndarray | Sequence[Sequence[float]]


def ellipse_points(
    cx: float, cy: float, rx: float, ry: float, angle: float = 0.0,
    start: float = 0.0, stop: float = 2 * math.pi, n: int = 24,
) -> np.ndarray:
    """Points on an (optionally rotated) ellipse or elliptical arc; angles in radians, y down."""
    t = np.linspace(start, stop, n, endpoint=stop - start < 2 * math.pi)
    x, y = rx * np.cos(t), ry * np.sin(t)
    ca, sa = math.cos(angle), math.sin(angle)
    return np.column_stack([cx + x * ca - y * sa, cy + x * sa + y * ca])


def half_disc(cx: float, cy: float, rx: float, ry: float, n: int = 16) -> np.ndarray:
    """The upper half of an ellipse, closed along its diameter (shoulders, islands)."""
    return ellipse_points(cx, cy, rx, ry, start=math.pi, stop=2 * math.pi, n=n)


def rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=float)


def bezier(p0: Sequence[float], p1: Sequence[float], p2: Sequence[float],
            n: int = 12) -> np.ndarray:
    """A quadratic Bézier curve: the spine of trunks, tails, stems and leaves."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    a, b, c = (np.asarray(p, dtype=float) for p in (p0, p1, p2))
    return (1 - t) ** 2 * a + 2 * (1 - t) * t * b + t**2 * c


def ribbon(spine: np.ndarray, widths: np.ndarray | float) -> np.ndarray:
    """Outline of a band of varying width along a gently curved polyline (a trunk, a tail)."""
    tangent = np.gradient(spine, axis=0)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True) + 1e-12
    normal = np.column_stack([-tangent[:, 1], tangent[:, 0]]) * (np.asarray(widths)[..., None] / 2)
    return np.vstack([spine + normal, (spine - normal)[::-1]])


def polygon(draw: ImageDraw.ImageDraw, points: Points, fill: RGB | int) -> None:
    draw.polygon(np.asarray(points, dtype=float).ravel().tolist(), fill=fill)


# --- the subject --------------------------------------------------------------------------------

_Op = tuple[str, np.ndarray, RGB, float]


class Shape:
    """A subject built from primitives in its own units, fitted to the attribute box afterwards.

    Every primitive counts towards the subject's mask, so details (eyes, windows) must lie on the
    body and anything sticking out (whiskers, a mast) is part of the subject.
    """

    def __init__(self, ops: list[_Op] | None = None) -> None:
        self.ops: list[_Op] = ops if ops is not None else []

    def polygon(self, points: Points, fill: RGB) -> None:
        self.ops.append(("polygon", np.asarray(points, dtype=float), fill, 0.0))

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, fill: RGB) -> None:
        self.ops.append(("ellipse", np.array([[cx - rx, cy - ry], [cx + rx, cy + ry]]), fill, 0.0))

    def line(self, points: Points, fill: RGB, width: float) -> None:
        self.ops.append(("line", np.asarray(points, dtype=float), fill, width))

    def bounds(self) -> tuple[float, float, float, float]:
        lo = np.min([pts.min(axis=0) - width / 2 for _, pts, _, width in self.ops], axis=0)
        hi = np.max([pts.max(axis=0) + width / 2 for _, pts, _, width in self.ops], axis=0)
        return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])

    def _mapped(self, sx: float, sy: float, dx: float, dy: float,
                recolour: Callable[[RGB], RGB]) -> Shape:
        scale, shift = np.array([sx, sy]), np.array([dx, dy])
        return Shape([(kind, pts * scale + shift, recolour(fill), width * abs(sy))
                       for kind, pts, fill, width in self.ops])

    def fitted(self, cx: float, cy: float, height: float, flip: bool) -> Shape:
        """Scale to ``height``, centre the bounding box on (cx, cy), mirrored if ``flip``."""
        x0, y0, x1, y1 = self.bounds()
        s = height / (y1 - y0)
        sx = -s if flip else s
        return self._mapped(sx, s, cx - sx * (x0 + x1) / 2, cy - s * (y0 + y1) / 2, lambda c: c)

    def reflected(self, axis_y: float, squash: float, tint: RGB, amount: float) -> Shape:
        """A mirror image below ``axis_y``, vertically squashed and tinted (a water reflection)."""
        return self._mapped(1.0, -squash, 0.0, axis_y * (1 + squash),
                            lambda c: mix(c, tint, amount))

    def draw(self, draw: ImageDraw.ImageDraw, fill: int | None = None) -> None:
        """Paint every primitive in its colour, or all in ``fill`` (for the mask)."""
        for kind, pts, colour, width in self.ops:
            paint = colour if fill is None else fill
            if kind == "polygon":
                polygon(draw, pts, paint)
            elif kind == "ellipse":
                draw.ellipse(np.sort(pts, axis=0).ravel().tolist(), fill=paint)
            else:
                width_px = max(1, round(width))
                draw.line(pts.ravel().tolist(), fill=paint, width=width_px, joint="curve")


# --- the canvas ---------------------------------------------------------------------------------

@dataclass
class Canvas:
    """The supersampled drawing surface: the frame plus the margin that ``tilt`` rotates into view.

    Frame and subject geometry are in canvas pixels: the frame's top-left corner is (ox, oy).
    """

    image: Image.Image
    ox: int
    oy: int
    fw: int
    fh: int
    rng: np.random.Generator
    colour: Palette
    cx: float
    cy: float
    height: float

    @classmethod
    def create(cls, attrs: Attributes, width: int, height: int,
               rng: np.random.Generator) -> Canvas:
        fw, fh = width * SS, height * SS
        cos, sin = math.cos(math.radians(attrs.tilt)), abs(math.sin(math.radians(attrs.tilt)))
        # The rotated frame's bounding box is everything tilt can bring into view; the margins
        # are whole output pixels so the frame stays pixel-aligned after downsampling.
        pad_x = SS * (math.ceil(max(0.0, fw * cos + fh * sin - fw) / (2 * SS)) + 1)
        pad_y = SS * (math.ceil(max(0.0, fw * sin + fh * cos - fh) / (2 * SS)) + 1)
        image = Image.new("RGB", (fw + 2 * pad_x, fh + 2 * pad_y))
        return cls(image, pad_x, pad_y, fw, fh, rng, Palette(rng, attrs.harmony),
                   pad_x + attrs.subject_x * fw, pad_y + attrs.subject_y * fh,
                   attrs.subject_size * fh)

    @property
    def draw(self) -> ImageDraw.ImageDraw:
        return ImageDraw.Draw(self.image)

    @property
    def w(self) -> int:
        return self.image.size[0]

    @property
    def h(self) -> int:
        return self.image.size[1]

    @property
    def base(self) -> float:
        """Canvas y of the subject's foot: where most scenes put the ground or the waterline."""
        return self.cy + self.height / 2

    def fit(self, shape: Shape) -> Shape:
        """The subject at its place in the frame, facing left or right at random."""
        return shape.fitted(self.cx, self.cy, self.height, flip=bool(self.rng.random() < 0.5))


# --- background helpers -------------------------------------------------------------------------

def gradient(c: Canvas, stops: Sequence[tuple[float, RGB]], top: float = 0.0,
              bottom: float | None = None) -> None:
    """Fill canvas rows [top, bottom) with a vertical gradient through (canvas y, colour) stops."""
    y0 = max(0, int(top))
    y1 = min(c.h, math.ceil(c.h if bottom is None else bottom))
    if y1 <= y0:
        return
    pos = np.maximum.accumulate(np.array([p for p, _ in stops], dtype=float))
    cols = np.array([col for _, col in stops], dtype=float)
    ys = np.arange(y0, y1) + 0.5
    rows = np.column_stack([np.interp(ys, pos, cols[:, k]) for k in range(3)])
    strip = Image.fromarray(rows.astype(np.uint8)[:, None, :])
    c.image.paste(strip.resize((c.w, y1 - y0), Image.Resampling.NEAREST), (0, y0))


def ridge(c: Canvas, base: float, amplitude: float, waves: int = 4, n: int = 40) -> np.ndarray:
    """A random smooth skyline (hills, shore, forest edge) across the canvas, between ``base``
    and ``base - amplitude``."""
    rng = c.rng
    x = np.linspace(0.0, c.w, n)
    order = np.arange(1, waves + 1)
    freq = rng.uniform(0.5, 1.5, waves) * order * 2 * np.pi / c.w
    amp = rng.uniform(0.3, 1.0, waves) / order
    phase = rng.uniform(0, 2 * np.pi, waves)
    profile = (amp[:, None] * np.sin(freq[:, None] * x + phase[:, None])).sum(axis=0)
    profile = (profile - profile.min()) / (np.ptp(profile) + 1e-9)
    return np.column_stack([x, base - amplitude * profile])


def fill_below(c: Canvas, skyline: np.ndarray, colour: RGB, bottom: float | None = None) -> None:
    """Fill the canvas under a :func:`ridge` skyline, down to ``bottom`` (default: the canvas foot)."""
    bottom = c.h if bottom is None else bottom
    polygon(c.draw, np.vstack([skyline, [[skyline[-1, 0], bottom], [skyline[0, 0], bottom]]]), colour)


def blobs(c: Canvas, count: int, top: float, bottom: float, size: tuple[float, float],
           colours: Sequence[RGB], aspect: float = 1.0) -> None:
    """Scatter discs between two canvas rows: bokeh, meadow flowers, pebbles, cloud streaks."""
    rng, d = c.rng, c.draw
    if bottom <= top:  # the band lies outside the canvas (a subject at the very edge)
        return
    for _ in range(count):
        x, y = rng.uniform(0, c.w), rng.uniform(top, bottom)
        r = rng.uniform(*size) * c.fh
        colour = colours[rng.integers(len(colours))]
        d.ellipse([x - r * aspect, y - r, x + r * aspect, y + r], fill=colour)


def strokes(c: Canvas, count: int, top: float, bottom: float, length: tuple[float, float],
             colour: RGB, x: Callable[[float], float] | None = None) -> None:
    """Short horizontal strokes between two canvas rows: ripples, waves, glitter on water.

    ``x`` maps the depth (0 at ``top``, 1 at ``bottom``) to a stroke's centre; by default the
    centres spread over the whole width.
    """
    rng, d = c.rng, c.draw
    if bottom <= top:
        return
    width = max(1, int(0.006 * c.fh))
    for _ in range(count):
        t = rng.uniform(0, 1)
        y = top + t * (bottom - top)
        centre = rng.uniform(0, c.w) if x is None else x(t)
        half = rng.uniform(*length) * c.fw * (1 if x is None else 0.3 + t)
        d.line([(centre - half, y), (centre + half, y)], fill=colour, width=width)


def _clouds(c: Canvas, top: float, bottom: float, colour: RGB) -> None:
    rng, d = c.rng, c.draw
    if bottom <= top:  # no sky in view
        return
    for _ in range(rng.integers(1, 5)):
        x, y = rng.uniform(0, c.w), rng.uniform(top, bottom)
        size = rng.uniform(0.05, 0.13) * c.fh
        for _ in range(rng.integers(3, 6)):
            px, py = x + rng.normal(0, size * 0.8), y + rng.normal(0, size * 0.12)
            r = size * rng.uniform(0.4, 0.8)
            puff = shade(colour, rng.uniform(0.93, 1.0))
            d.ellipse([px - 1.6 * r, py - 0.6 * r, px + 1.6 * r, py + 0.6 * r], fill=puff)


def day_sky(c: Canvas, horizon: float) -> None:
    """A daylight sky, deep overhead and pale at the horizon, often with clouds."""
    rng, col = c.rng, c.colour
    top = col(0.6, rng.uniform(0.25, 0.75), rng.uniform(0.65, 0.92), freedom=0.25)
    low = col(0.56, rng.uniform(0.05, 0.25), rng.uniform(0.88, 1.0), freedom=0.25)
    gradient(c, [(c.oy, top), (horizon, low)])
    if rng.random() < 0.6:
        _clouds(c, c.oy, c.oy + 0.75 * (horizon - c.oy), col(0.6, 0.04, 0.98, freedom=0.1))


def foliage(c: Canvas) -> None:
    """Out-of-focus greenery: the backdrop of close-ups (flowers, perched birds)."""
    rng, col = c.rng, c.colour
    dark = col(0.3, 0.6, rng.uniform(0.2, 0.4), freedom=0.3)
    light = col(0.25, 0.5, rng.uniform(0.5, 0.75), freedom=0.3)
    gradient(c, [(0, light), (c.h, dark)] if rng.random() < 0.5 else [(0, dark), (c.h, light)])
    bokeh = [mix(dark, light, 0.5), light, shade(light, 1.15)]
    blobs(c, rng.integers(6, 18), 0, c.h, (0.04, 0.12), bokeh)


def furrows(c: Canvas, top: float, colour: RGB) -> None:
    """Rows of a field or planks of a floor, spaced wider towards the camera so they recede."""
    d = c.draw
    for t in np.linspace(0.05, 1.0, int(c.rng.integers(5, 11))) ** 1.8:
        y = top + t * (c.h - top)
        d.line([(0, y), (c.w, y + c.rng.normal(0, 0.01) * c.fh)], fill=colour,
               width=max(1, int(0.004 * c.fh * (1 + 3 * t))))
