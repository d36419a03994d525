"""Procedural stand-in photos for the synthetic AVA: one recognisable scene per category.

Real AVA photographs are unavailable offline, so each synthetic image is drawn from its category
and attributes, which makes the truth (subject mask, composition, photometric settings) exact.

How a picture is made:

1. the category's drawing function builds its main subject as a
   :class:`~apm.data.synthetic.drawing.Shape` in its own units and fits it to the attribute box, so the
   mask's height and centre are exact whatever the variant's proportions; it then paints the
   background around the fitted subject (a horizon at the subject's foot, a reflection under a
   boat) on a canvas twice the output size;
2. distractors (``clutter``) are painted over the background; the subject is painted on its own
   layer with its mask; all are box-downsampled (anti-aliasing), the background is blended towards
   a dark plain backdrop (``background_darkness``) and the subject laid over it;
3. the frame is cut out rotated by ``tilt`` (the canvas has a margin, so real scenery rotates into
   the corners) and ``apply_photometric`` runs last.

The generic drawing primitives (colours, outlines, ``Shape``, ``Canvas``, backdrops such as
gradients, ridges and skies) live in :mod:`apm.data.synthetic.drawing`; this module holds the scenes.

``python -m apm.data.synthetic.render`` rewrites ``docs/synthetic_examples.png``, a contact sheet.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw

from apm.data.synthetic.attributes import CATEGORIES, Attributes
from apm.data.synthetic.drawing import (
    RGB,
    SS,
    Canvas,
    Palette,
    Shape,
    bezier,
    blobs,
    day_sky,
    ellipse_points,
    fill_below,
    foliage,
    furrows,
    gradient,
    half_disc,
    hsv,
    mix,
    polygon,
    rect,
    ribbon,
    ridge,
    shade,
    strokes,
)
from apm.data.synthetic.photometric import apply_photometric, plain_floats

#: Most distractors ``clutter=1`` scatters over the background.
MAX_CLUTTER = 12
_WHITE: RGB = (255, 255, 255)


# --- barn ---------------------------------------------------------------------------------------

def _barn(c: Canvas) -> Shape:
    """A red barn (gable-end or side view, gable or gambrel roof, maybe a silo) in a field."""
    rng, col = c.rng, c.colour
    s = Shape()
    red = col(0.0, rng.uniform(0.65, 0.85), rng.uniform(0.5, 0.75), freedom=0.35)
    trim = col(0.1, 0.05, rng.uniform(0.88, 1.0), freedom=0.1)
    roof_hue = rng.choice([0.0, 0.07, 0.6])
    roof = col(roof_hue, rng.uniform(0.1, 0.4), rng.uniform(0.18, 0.38), freedom=0.3)
    gable_end = rng.random() < 0.6
    width = rng.uniform(0.9, 1.3) if gable_end else rng.uniform(1.5, 2.2)
    if rng.random() < 0.4:  # silo first, so the barn overlaps it
        silo = col(0.6, 0.05, rng.uniform(0.6, 0.8), freedom=0.2)
        sx = rng.choice([-1.0, 1.0]) * (width / 2 + rng.uniform(0.0, 0.12))
        s.polygon(rect(sx - 0.13, -0.88, sx + 0.13, 0.0), silo)
        s.ellipse(sx, -0.88, 0.13, 0.1, shade(silo, 0.8))
    (_barn_gable_end if gable_end else _barn_side)(s, rng, width / 2, red, trim, roof)
    subject = c.fit(s)
    horizon = c.base - rng.uniform(0.1, 0.4) * c.height - 0.02 * c.fh
    day_sky(c, horizon)
    trees = col(0.33, 0.5, rng.uniform(0.2, 0.35), freedom=0.3)
    fill_below(c, ridge(c, horizon, rng.uniform(0.01, 0.05) * c.fh), trees)
    near = col(0.13 if rng.random() < 0.3 else 0.27, 0.6, rng.uniform(0.55, 0.8), freedom=0.3)
    far = mix(near, (230, 230, 210), 0.25)
    gradient(c, [(horizon, far), (c.h, near)], top=horizon + 0.01 * c.fh)
    furrows(c, horizon, shade(near, 0.85))
    return subject


def _barn_gable_end(s: Shape, rng: np.random.Generator, half: float, red: RGB, trim: RGB,
                    roof: RGB) -> None:
    """The barn seen end-on: a red gable, a dark roof edge, a cross-braced door, a loft window."""
    wall = rng.uniform(0.5, 0.62)
    if rng.random() < 0.5:
        outline = [(-half, 0), (-half, -wall), (0, -1), (half, -wall), (half, 0)]
    else:  # gambrel: the roof breaks into two pitches
        knee, inset = -wall - 0.55 * (1 - wall), 0.28 * half
        outline = [(-half, 0), (-half, -wall), (-half + inset, knee), (0, -1),
                   (half - inset, knee), (half, -wall), (half, 0)]
    s.polygon(outline, red)
    s.line(outline[1:-1], roof, 0.07)
    _barn_door(s, 0.0, 0.64 * half, 0.62 * wall, red, trim)
    wy = -wall - 0.3 * (1 - wall)
    s.polygon(rect(-0.14 * half, wy - 0.09, 0.14 * half, wy + 0.09), trim)
    s.polygon(rect(-0.1 * half, wy - 0.065, 0.1 * half, wy + 0.065), shade(red, 0.35))


def _barn_side(s: Shape, rng: np.random.Generator, half: float, red: RGB, trim: RGB,
               roof: RGB) -> None:
    """The barn seen along its length: a long red wall under a big dark roof, several doors."""
    wall = rng.uniform(0.45, 0.6)
    s.polygon(rect(-half, -wall, half, 0), red)
    eave, inset = 0.1 * half, rng.uniform(0.1, 0.4) * half
    s.polygon([(-half - eave, -wall), (-half + inset, -1), (half - inset, -1),
               (half + eave, -wall)], roof)
    s.line([(-half - eave, -wall), (half + eave, -wall)], trim, 0.03)
    doors = int(rng.integers(1, 4))
    for k in range(doors):
        x = -half + 2 * half * (k + 0.5) / doors
        _barn_door(s, x, min(0.44 * half / doors + 0.12, 0.3), 0.65 * wall, red, trim)


def _barn_door(s: Shape, x: float, width: float, height: float, red: RGB, trim: RGB) -> None:
    x0, x1, y0 = x - width / 2, x + width / 2, -height
    s.polygon(rect(x0, y0, x1, 0), shade(red, 0.8))
    s.line(np.vstack([rect(x0, y0, x1, 0), [[x0, y0]]]), trim, 0.03)
    s.line([(x0, y0), (x1, 0)], trim, 0.025)
    s.line([(x1, y0), (x0, 0)], trim, 0.025)


# --- beach --------------------------------------------------------------------------------------

def _beach(c: Canvas) -> Shape:
    """Sky, sea and sand, with a striped parasol or a palm tree standing on the sand."""
    rng, col = c.rng, c.colour
    subject = c.fit(_parasol(col, rng) if rng.random() < 0.5 else _palm(col, rng))
    shore = c.base - rng.uniform(0.1, 0.35) * c.height - 0.03 * c.fh
    horizon = shore - rng.uniform(0.12, 0.3) * c.fh
    day_sky(c, horizon)
    deep = col(0.6, rng.uniform(0.6, 0.9), rng.uniform(0.45, 0.7), freedom=0.25)
    shallow = col(0.5, rng.uniform(0.45, 0.7), rng.uniform(0.7, 0.9), freedom=0.25)
    gradient(c, [(horizon, deep), (shore, shallow)], top=horizon, bottom=shore)
    strokes(c, rng.integers(3, 8), horizon, shore, (0.05, 0.2), mix(shallow, _WHITE, 0.5))
    sand = col(0.11, rng.uniform(0.25, 0.45), rng.uniform(0.82, 0.97), freedom=0.2)
    gradient(c, [(shore, sand), (c.h, shade(sand, 0.88))], top=shore)
    foam = ridge(c, shore + 0.015 * c.fh, 0.02 * c.fh, waves=6)
    fill_below(c, foam, (245, 248, 250), bottom=shore + 0.035 * c.fh)
    blobs(c, rng.integers(0, 12), shore + 0.05 * c.fh, c.h, (0.003, 0.008), [shade(sand, 0.75)])
    return subject


def _parasol(col: Palette, rng: np.random.Generator) -> Shape:
    s = Shape()
    rx, ry, top = rng.uniform(0.5, 0.8), rng.uniform(0.2, 0.28), -0.72
    pole = col(0.1, 0.1, 0.9, freedom=0.1)
    s.line([(0, top), (rng.uniform(-0.1, 0.1), 0)], pole, 0.035)
    a = col(rng.choice([0.0, 0.6, 0.12, 0.9]), 0.8, 0.9, freedom=0.8)
    b = (250, 250, 245) if rng.random() < 0.6 else col(0.3, 0.7, 0.9, freedom=1.0)
    n = int(rng.integers(5, 11))
    for i in range(n):  # alternating gores
        start, stop = math.pi * (1 + i / n), math.pi * (1 + (i + 1) / n)
        arc = ellipse_points(0, top, rx, ry, start=start, stop=stop, n=6)
        s.polygon(np.vstack([[[0, top]], arc]), a if i % 2 == 0 else b)
    s.ellipse(0, top - ry, 0.03, 0.03, pole)
    return s


def _leaf(base: Sequence[float], ctrl: Sequence[float], tip: Sequence[float],
          width: float) -> np.ndarray:
    """A curved, pointed leaf: two Bézier edges sharing their ends; it cannot fold over itself."""
    b, k, t = (np.asarray(p, dtype=float) for p in (base, ctrl, tip))
    along = (t - b) / (np.linalg.norm(t - b) + 1e-12)
    offset = np.array([-along[1], along[0]]) * width
    return np.vstack([bezier(b, k + offset, t, n=8), bezier(t, k - offset, b, n=8)[1:-1]])


def _palm(col: Palette, rng: np.random.Generator) -> Shape:
    s = Shape()
    cx, cy = rng.uniform(-0.3, 0.3), -0.8  # the crown
    bark = col(0.08, 0.45, rng.uniform(0.35, 0.55), freedom=0.2)
    spine = bezier((0, 0), (rng.uniform(-0.2, 0.2), -0.4), (cx, cy))
    s.polygon(ribbon(spine, np.linspace(0.09, 0.05, len(spine))), bark)
    leaf = col(0.3, 0.7, rng.uniform(0.35, 0.6), freedom=0.3)
    for angle in np.linspace(-0.2, math.pi + 0.2, int(rng.integers(8, 12))) + rng.normal(0, 0.1):
        reach = rng.uniform(0.35, 0.5)
        dx, dy = reach * math.cos(angle), reach * math.sin(angle)
        tip = (cx + dx, cy - 0.6 * dy + rng.uniform(0.1, 0.3))  # fronds arch up, then droop
        s.polygon(_leaf((cx, cy), (cx + 0.6 * dx, cy - 0.6 * dy - 0.12), tip, 0.09),
                  shade(leaf, rng.uniform(0.8, 1.1)))
    s.ellipse(cx, cy - 0.02, 0.12, 0.07, shade(leaf, 0.7))  # the dense heart of the crown
    for dx in (-0.03, 0.03):
        s.ellipse(cx + dx, cy + 0.05, 0.035, 0.035, col(0.08, 0.6, 0.3, freedom=0.1))
    return s


# --- bird ---------------------------------------------------------------------------------------

_PLUMAGES = ((0.6, 0.7, 0.75), (0.07, 0.5, 0.45), (0.0, 0.85, 0.75), (0.15, 0.8, 0.9),
             (0.0, 0.0, 0.15), (0.6, 0.08, 0.6))


def _bird(c: Canvas) -> Shape:
    """A songbird perched on a branch (against sky or leaves), or one flying across the sky."""
    rng, col = c.rng, c.colour
    body = col(*_PLUMAGES[rng.integers(len(_PLUMAGES))], freedom=0.5)
    breast = mix(body, col(0.08, 0.7, 0.95, freedom=0.4), rng.uniform(0.3, 0.8))
    perched = rng.random() < 0.55
    subject = c.fit((_perched_bird if perched else _flying_bird)(body, breast, rng))
    if perched and rng.random() < 0.3:
        foliage(c)
    else:
        day_sky(c, c.oy + rng.uniform(0.7, 1.2) * c.fh)
    if perched:
        _branch(c)
    return subject


def _bird_head(s: Shape, x: float, y: float, r: float, body: RGB,
               rng: np.random.Generator) -> None:
    beak = hsv(rng.uniform(0.08, 0.14), 0.8, 0.9)
    tip = x + r * rng.uniform(1.8, 2.4)
    s.polygon([(x + 0.7 * r, y - 0.35 * r), (tip, y + 0.1 * r), (x + 0.7 * r, y + 0.4 * r)], beak)
    s.ellipse(x, y, r, r, body)
    s.ellipse(x + 0.35 * r, y - 0.2 * r, 0.24 * r, 0.24 * r, (250, 250, 250))
    s.ellipse(x + 0.4 * r, y - 0.2 * r, 0.15 * r, 0.15 * r, (15, 15, 15))


def _perched_bird(body: RGB, breast: RGB, rng: np.random.Generator) -> Shape:
    s = Shape()
    legs = hsv(0.08, 0.3, 0.3)
    s.line([(-0.05, -0.3), (-0.03, 0)], legs, 0.03)
    s.line([(0.07, -0.3), (0.09, 0)], legs, 0.03)
    s.polygon([(-0.2, -0.45), (-0.62, -0.08), (-0.52, -0.02), (-0.12, -0.3)], shade(body, 0.75))
    s.polygon(ellipse_points(0.0, -0.47, 0.33, 0.22, angle=-0.45), body)
    s.polygon(ellipse_points(0.1, -0.38, 0.2, 0.15, angle=-0.45), breast)
    s.polygon(ellipse_points(-0.08, -0.5, 0.25, 0.12, angle=-0.5), shade(body, 0.7))
    _bird_head(s, 0.26, -0.76, 0.15, body, rng)
    return s


def _flying_bird(body: RGB, breast: RGB, rng: np.random.Generator) -> Shape:
    s = Shape()
    lift = rng.uniform(-0.5, 0.8)  # wing tips above (+) or below (-) the body
    reach = rng.uniform(0.1, 0.35)  # how far back the tips sweep
    s.polygon(_bird_wing(0.06, -0.02, -0.6 * reach, -0.7 * lift), shade(body, 0.6))
    s.polygon([(-0.33, 0.0), (-0.62, -0.1), (-0.66, 0.03), (-0.6, 0.12)], shade(body, 0.75))
    s.polygon(ellipse_points(0.0, 0.0, 0.38, 0.12, angle=-0.1), body)
    s.polygon(ellipse_points(0.05, 0.05, 0.25, 0.06, angle=-0.1), breast)
    s.polygon(_bird_wing(0.12, -0.04, -reach, -lift), shade(body, 0.85))
    _bird_head(s, 0.4, -0.06, 0.12, body, rng)
    return s


def _bird_wing(x: float, y: float, tip_x: float, tip_y: float) -> np.ndarray:
    """A wing from the shoulder (x, y): a curved leading edge to the tip, notched trailing edge."""
    leading = bezier((x, y), (x + 0.05, y + 0.7 * (tip_y - y)), (tip_x, tip_y), n=8)
    t = np.linspace(0.0, 1.0, 7)[1:-1, None]
    root = np.array([x - 0.3, y + 0.02])
    trailing = (1 - t) * np.array([tip_x, tip_y]) + t * root
    trailing[::2, 0] += 0.06  # feather notches
    return np.vstack([leading, trailing, [root]])


def _branch(c: Canvas) -> None:
    """A branch passing under the subject's feet, with a few leaves."""
    rng, col, d = c.rng, c.colour, c.draw
    slope, y = rng.uniform(-0.25, 0.25), c.base + 0.02 * c.height

    def at(x: float) -> float:
        return y + slope * (x - c.cx)

    bark = col(0.08, 0.45, rng.uniform(0.25, 0.45), freedom=0.2)
    start = 0.0 if rng.random() < 0.5 else c.cx - rng.uniform(0.3, 0.6) * c.fw
    thickness = max(2, int(0.07 * c.height + 0.01 * c.fh))
    d.line([(start, at(start)), (c.w, at(c.w))], fill=bark, width=thickness)
    leaf = col(0.3, 0.6, 0.5, freedom=0.3)
    for _ in range(rng.integers(2, 7)):
        x = rng.uniform(max(start, 0), c.w)
        r = (0.05 * c.height + 0.01 * c.fh) * rng.uniform(0.7, 1.3)
        y_leaf = at(x) + rng.choice([-r, r])
        points = ellipse_points(x, y_leaf, r * 1.6, r * 0.6, angle=rng.uniform(-1, 1))
        polygon(d, points, shade(leaf, rng.uniform(0.8, 1.2)))


# --- cat ----------------------------------------------------------------------------------------

_COATS = ((0.07, 0.7, 0.85), (0.6, 0.05, 0.55), (0.0, 0.0, 0.14), (0.1, 0.05, 0.95),
          (0.08, 0.5, 0.45))


def _cat(c: Canvas) -> Shape:
    """A cat sitting (body, tail) or a head-and-shoulders close-up, mostly indoors."""
    rng, col = c.rng, c.colour
    fur = col(*_COATS[rng.integers(len(_COATS))], freedom=0.15)
    s = Shape()
    if rng.random() < 0.6:
        _sitting_cat(s, fur, rng)
    else:
        s.polygon(half_disc(0, 0.5, 0.55, 0.35), fur)
        _cat_head(s, 0.0, 0.0, 0.45, fur, rng)
    subject = c.fit(s)
    setting = rng.random()
    if setting < 0.8:  # indoors: a wall, and a wooden floor or a sofa to sit on
        wall = col(rng.uniform(0, 1), rng.uniform(0.1, 0.35), rng.uniform(0.6, 0.9), freedom=0.6)
        floor_y = c.base - rng.uniform(0.05, 0.25) * c.height
        gradient(c, [(0, shade(wall, 0.85)), (floor_y, wall)], bottom=floor_y)
        if setting < 0.5:
            wood = col(0.08, 0.55, rng.uniform(0.35, 0.6), freedom=0.2)
            gradient(c, [(floor_y, shade(wood, 0.8)), (c.h, wood)], top=floor_y)
            furrows(c, floor_y, shade(wood, 0.7))
        else:
            _sofa(c, floor_y)
    else:
        grass = col(0.28, 0.6, rng.uniform(0.4, 0.65), freedom=0.3)
        gradient(c, [(0, shade(grass, 0.7)), (c.h, grass)])
        blades = [shade(grass, 1.3), shade(grass, 0.6)]
        blobs(c, rng.integers(10, 30), 0, c.h, (0.004, 0.012), blades, aspect=0.3)
    return subject


def _sofa(c: Canvas, seat_y: float) -> None:
    """A sofa under the cat: a back rest behind it, the seat at its feet, a darker front below."""
    rng, d = c.rng, c.draw
    cover = c.colour(rng.uniform(0, 1), rng.uniform(0.3, 0.7), rng.uniform(0.35, 0.7), freedom=0.8)
    back_top = seat_y - rng.uniform(0.5, 0.9) * c.height - 0.05 * c.fh
    d.rounded_rectangle([-10, back_top, c.w + 10, seat_y], radius=0.04 * c.fh,
                        fill=shade(cover, 0.85))
    polygon(d, rect(0, seat_y, c.w, c.h), cover)
    polygon(d, rect(0, seat_y + 0.12 * c.fh, c.w, c.h), shade(cover, 0.7))


def _sitting_cat(s: Shape, fur: RGB, rng: np.random.Generator) -> None:
    tail = bezier((0.2, -0.05), (0.55, -0.05), (rng.uniform(0.35, 0.55), rng.uniform(-0.6, -0.3)))
    s.polygon(ribbon(tail, np.linspace(0.09, 0.06, len(tail))), shade(fur, 0.9))
    s.polygon(ellipse_points(0.0, -0.3, 0.27, 0.3), fur)
    for x in (-0.09, 0.09):  # front legs
        s.polygon(ellipse_points(x, -0.12, 0.055, 0.12), shade(fur, 1.08))
    _cat_head(s, 0.0, -0.68, 0.2, fur, rng)


def _cat_head(s: Shape, x: float, y: float, r: float, fur: RGB, rng: np.random.Generator) -> None:
    """Ears, round face, slit-pupil eyes, pink nose and whiskers: what makes a blob a cat."""
    pink = (235, 150, 160)

    def at(dx: float, dy: float, side: int = 1) -> tuple[float, float]:
        return x + side * dx * r, y + dy * r

    for side in (-1, 1):
        s.polygon([at(0.95, -0.3, side), at(0.8, -1.45, side), at(0.15, -0.8, side)], fur)
        s.polygon([at(0.8, -0.5, side), at(0.75, -1.2, side), at(0.35, -0.8, side)], pink)
    s.polygon(ellipse_points(x, y, r * 1.05, r * 0.9), fur)
    iris = hsv(rng.choice([0.3, 0.15, 0.55, 0.1]), 0.8, 0.85)
    for side in (-1, 1):
        ex, ey = at(0.4, -0.1, side)
        s.ellipse(ex, ey, 0.22 * r, 0.18 * r, iris)
        s.ellipse(ex, ey, 0.06 * r, 0.16 * r, (10, 10, 10))
        for dy in (0.15, 0.35):  # whiskers
            s.line([at(0.3, 0.3, side), at(1.5, dy, side)], (235, 235, 235), 0.02 * r)
    s.polygon([at(-0.12, 0.2), at(0.12, 0.2), at(0, 0.35)], pink)
    s.line([at(-0.15, 0.5), at(0, 0.38), at(0.15, 0.5)], shade(fur, 0.5), 0.04 * r)


# --- flower -------------------------------------------------------------------------------------

def _flower(c: Canvas) -> Shape:
    """A bloom (daisy, round petals, sunflower or tulip), maybe on a stem, before leaves or sky."""
    rng, col = c.rng, c.colour
    s = Shape()
    if rng.random() < 0.65:
        end = (rng.uniform(-0.2, 0.2), rng.uniform(1.2, 2.0))
        stem = bezier((0, 0.3), (rng.uniform(-0.3, 0.3), 1.0), end)
        green = col(0.3, 0.7, rng.uniform(0.35, 0.55), freedom=0.2)
        s.polygon(ribbon(stem, 0.09), green)
        leaves = int(rng.integers(1, 3))
        for k in rng.choice(np.arange(4, len(stem) - 1), size=leaves, replace=False):
            side = rng.choice([-1, 1])
            x, y = stem[k, 0] + side * 0.22, stem[k, 1]
            s.polygon(ellipse_points(x, y, 0.25, 0.08, angle=-side * 0.5), green)
    _FLOWER_HEADS[rng.integers(len(_FLOWER_HEADS))](s, col, rng)
    subject = c.fit(s)
    if rng.random() < 0.65:
        foliage(c)
    else:
        day_sky(c, c.oy + rng.uniform(0.5, 0.9) * c.fh)
        hills = col(0.3, 0.6, 0.45, freedom=0.3)
        fill_below(c, ridge(c, c.oy + c.fh * rng.uniform(0.8, 1.0), 0.1 * c.fh), hills)
    return subject


def _petals(s: Shape, count: int, length: float, width: float, colour: RGB,
            rng: np.random.Generator) -> None:
    offset = rng.uniform(0, 2 * math.pi)
    for k in range(count):
        a = offset + 2 * math.pi * k / count
        centre = length / 2 * math.cos(a), length / 2 * math.sin(a)
        s.polygon(ellipse_points(*centre, length / 2, width, angle=a, n=16), colour)


def _daisy(s: Shape, col: Palette, rng: np.random.Generator) -> None:
    petal = col(0.9, rng.uniform(0, 0.3), 0.97, freedom=0.3)
    _petals(s, int(rng.integers(12, 20)), 1.0, 0.1, petal, rng)
    s.ellipse(0, 0, 0.25, 0.25, col(0.13, 0.9, 0.95, freedom=0.1))


def _round_flower(s: Shape, col: Palette, rng: np.random.Generator) -> None:
    hue = rng.choice([0.95, 0.0, 0.83, 0.75, 0.12])
    petal = col(hue, rng.uniform(0.5, 0.9), rng.uniform(0.75, 1.0), freedom=0.7)
    count = int(rng.integers(5, 9))
    _petals(s, count, 1.0, 0.3, petal, rng)
    _petals(s, count, 0.65, 0.22, mix(petal, _WHITE, 0.3), rng)
    s.ellipse(0, 0, 0.18, 0.18, col(0.12, 0.8, rng.uniform(0.4, 0.9), freedom=0.1))


def _sunflower(s: Shape, col: Palette, rng: np.random.Generator) -> None:
    _petals(s, int(rng.integers(14, 22)), 1.0, 0.13, col(0.13, 0.9, 0.95, freedom=0.2), rng)
    s.ellipse(0, 0, 0.45, 0.45, col(0.07, 0.7, 0.3, freedom=0.1))


def _tulip(s: Shape, col: Palette, rng: np.random.Generator) -> None:
    petal = col(rng.choice([0.0, 0.95, 0.13, 0.8]), 0.8, 0.85, freedom=0.6)
    cup = ellipse_points(0, 0.0, 0.42, 0.55, start=0, stop=math.pi, n=12)
    s.polygon(np.vstack([cup, [(-0.42, -0.5), (0, -0.2), (0.42, -0.5)]]), petal)
    s.polygon([(-0.25, 0.3), (0.0, -0.75), (0.25, 0.3)], shade(petal, 0.8))


_SubjectBuilder = Callable[[Shape, Palette, np.random.Generator], None]
_FLOWER_HEADS: tuple[_SubjectBuilder, ...] = (_daisy, _round_flower, _sunflower, _tulip)


# --- lake ---------------------------------------------------------------------------------------

def _lake(c: Canvas) -> Shape:
    """Still water below low wooded hills, mirroring them, with a sailboat, rowboat or island."""
    rng, col = c.rng, c.colour
    s = Shape()
    _LAKE_SUBJECTS[rng.integers(len(_LAKE_SUBJECTS))](s, col, rng)
    subject = c.fit(s)
    shore = c.base - rng.uniform(0.1, 0.45) * c.height - 0.04 * c.fh
    day_sky(c, shore)
    water = col(0.58, rng.uniform(0.35, 0.7), rng.uniform(0.45, 0.75), freedom=0.25)
    gradient(c, [(shore, mix(water, _WHITE, 0.25)), (c.h, shade(water, 0.7))], top=shore)
    hills = col(rng.uniform(0.28, 0.45), 0.5, rng.uniform(0.3, 0.5), freedom=0.3)
    for depth, amp in ((0.6, 0.12), (1.0, 0.07)):  # far, then near
        crest = ridge(c, shore, amp * c.fh * rng.uniform(0.5, 1.0))
        colour = mix(hills, (200, 215, 230), 0.5 * (1 - depth))
        fill_below(c, crest, colour, bottom=shore)
        mirror = np.column_stack([crest[:, 0], 2 * shore - crest[:, 1]])
        polygon(c.draw, np.vstack([mirror, [[c.w, shore], [0, shore]]]), mix(colour, water, 0.45))
    _treeline(c, shore, shade(hills, 0.7))
    subject.reflected(c.base, 0.8, water, 0.5).draw(c.draw)
    strokes(c, rng.integers(6, 16), shore, c.h, (0.02, 0.1), mix(water, _WHITE, 0.35))
    return subject


def _treeline(c: Canvas, shore: float, colour: RGB) -> None:
    """Small conifers along a shore: the texture that says 'lake in the woods'."""
    d = c.draw
    spacing = 0.025 * c.fw
    for x in np.arange(c.rng.uniform(0, spacing), c.w, spacing):
        height = c.rng.uniform(0.03, 0.07) * c.fh
        tree = [(x - 0.3 * height, shore), (x, shore - height), (x + 0.3 * height, shore)]
        polygon(d, tree, colour)


def _sailboat(s: Shape, col: Palette, rng: np.random.Generator) -> None:
    hull_hue = rng.choice([0.0, 0.6, 0.08])
    hull = col(hull_hue, rng.uniform(0, 0.7), rng.uniform(0.3, 0.95), freedom=0.4)
    sail = col(0.12, rng.uniform(0.0, 0.25), rng.uniform(0.9, 1.0), freedom=0.3)
    s.line([(0, -0.12), (0, -1)], (90, 80, 70), 0.025)
    s.polygon([(0.005, -0.97), (0.005, -0.18), (rng.uniform(0.35, 0.5), -0.18)], sail)
    jib = [(-0.005, -0.9), (-0.005, -0.2), (-rng.uniform(0.25, 0.35), -0.2)]
    s.polygon(jib, shade(sail, 0.92))
    s.polygon([(-0.45, -0.14), (0.55, -0.14), (0.38, 0), (-0.36, 0)], hull)


def _rowboat(s: Shape, col: Palette, rng: np.random.Generator) -> None:
    wood = col(0.07, 0.6, rng.uniform(0.35, 0.65), freedom=0.3)
    shirt = col(rng.uniform(0, 1), 0.7, 0.8, freedom=0.8)
    s.line([(-0.75, 0.0), (0.75, -0.45)], (120, 90, 60), 0.03)  # an oar
    s.polygon(rect(-0.09, -0.72, 0.09, -0.3), shirt)
    s.ellipse(0, -0.83, 0.1, 0.12, hsv(0.07, 0.4, 0.8))
    s.polygon([(-0.65, -0.32), (0.65, -0.32), (0.48, 0), (-0.48, 0)], wood)
    s.line([(-0.62, -0.3), (0.62, -0.3)], shade(wood, 0.6), 0.04)


def _island(s: Shape, col: Palette, rng: np.random.Generator) -> None:
    rock = col(0.25, 0.35, rng.uniform(0.3, 0.45), freedom=0.2)
    pine = col(0.35, 0.6, rng.uniform(0.2, 0.35), freedom=0.2)
    width = rng.uniform(0.7, 1.3)
    for x in np.sort(rng.uniform(-0.6, 0.6, int(rng.integers(2, 6)))) * width:
        top = rng.uniform(-1.0, -0.55)
        tree = [(x - 0.16, -0.15), (x, top), (x + 0.16, -0.15)]
        s.polygon(tree, shade(pine, rng.uniform(0.8, 1.3)))
    s.polygon(half_disc(0, 0, width, 0.28), rock)


_LAKE_SUBJECTS: tuple[_SubjectBuilder, ...] = (_sailboat, _rowboat, _island)


# --- meadow -------------------------------------------------------------------------------------

def _meadow(c: Canvas) -> Shape:
    """A green field dotted with wild flowers under hills and sky, with a lone tree."""
    rng, col = c.rng, c.colour
    s = Shape()
    (_leafy_tree if rng.random() < 0.65 else _conifer)(s, col, rng)
    subject = c.fit(s)
    horizon = c.base - rng.uniform(0.1, 0.5) * c.height - 0.03 * c.fh
    day_sky(c, horizon)
    hills = col(0.3, 0.35, rng.uniform(0.55, 0.7), freedom=0.3)
    fill_below(c, ridge(c, horizon, rng.uniform(0.03, 0.12) * c.fh), hills)
    grass = col(0.27, rng.uniform(0.55, 0.8), rng.uniform(0.5, 0.75), freedom=0.25)
    far = mix(grass, (220, 230, 200), 0.2)
    gradient(c, [(horizon, far), (c.h, shade(grass, 0.85))], top=horizon)
    hues = rng.choice([0.0, 0.13, 0.8, 0.7, 0.95], size=2)
    blossoms = [col(h, 0.7, 0.95, freedom=0.6) for h in hues] + [(250, 250, 245)]
    for t0, t1, size in ((0.0, 0.3, 0.004), (0.3, 1.0, 0.009)):  # small far away, larger near
        y0, y1 = horizon + t0 * (c.h - horizon), horizon + t1 * (c.h - horizon)
        blobs(c, int(rng.integers(15, 45)), y0, y1, (size * 0.6, size), blossoms)
    return subject


def _leafy_tree(s: Shape, col: Palette, rng: np.random.Generator) -> None:
    bark = col(0.07, 0.5, rng.uniform(0.2, 0.4), freedom=0.2)
    trunk = bezier((0, 0), (rng.uniform(-0.08, 0.08), -0.3), (0, -0.6))
    s.polygon(ribbon(trunk, np.linspace(0.14, 0.07, len(trunk))), bark)
    leaves = col(0.07 if rng.random() < 0.2 else 0.3, 0.65, rng.uniform(0.35, 0.55), freedom=0.35)
    width = rng.uniform(0.3, 0.5)
    for _ in range(int(rng.integers(6, 11))):
        r = rng.uniform(0.16, 0.26)
        x, y = rng.uniform(-width, width), rng.uniform(-0.95 + r, -0.5)
        s.ellipse(x, y, r * 1.1, r, shade(leaves, rng.uniform(0.8, 1.2)))


def _conifer(s: Shape, col: Palette, rng: np.random.Generator) -> None:
    s.polygon(rect(-0.04, -0.2, 0.04, 0), col(0.07, 0.5, 0.3, freedom=0.2))
    needles = col(0.38, 0.6, rng.uniform(0.2, 0.4), freedom=0.3)
    tiers = int(rng.integers(3, 6))
    for k in range(tiers):
        bottom = -0.15 - 0.75 * k / tiers
        half = 0.3 * (1 - 0.7 * k / tiers)
        top = bottom - 0.85 / tiers - 0.15
        s.polygon([(-half, bottom), (0, top), (half, bottom)], shade(needles, 1 + 0.08 * k))


# --- mountain -----------------------------------------------------------------------------------

def _mountain(c: Canvas) -> Shape:
    """A snow-capped main peak before a hazy range, with forest, meadow or a lake at its foot."""
    rng, col = c.rng, c.colour
    subject = c.fit(_peak(col, rng))
    day_sky(c, c.base)
    haze = col(0.6, 0.2, rng.uniform(0.6, 0.8), freedom=0.2)
    range_ = ridge(c, c.base, c.height * rng.uniform(0.3, 0.8), waves=6)
    fill_below(c, range_, haze, bottom=c.base)
    ground = rng.choice(3, p=[0.45, 0.4, 0.15])  # forest, meadow or lake
    if ground == 2:
        water = col(0.58, 0.5, rng.uniform(0.45, 0.7), freedom=0.25)
        gradient(c, [(c.base, water), (c.h, shade(water, 0.7))], top=c.base)
        subject.reflected(c.base, 0.6, water, 0.55).draw(c.draw)
        strokes(c, rng.integers(6, 16), c.base, c.h, (0.02, 0.1), mix(water, _WHITE, 0.3))
    else:
        green = col(0.33 if ground == 0 else 0.25, 0.6, rng.uniform(0.25, 0.55), freedom=0.25)
        depth = rng.uniform(0.02, 0.06) * c.fh
        fill_below(c, ridge(c, c.base + depth, depth), green)
    return subject


def _peak(col: Palette, rng: np.random.Generator) -> Shape:
    """A jagged peak with a shadowed flank and a snow cap that fingers down its gullies."""
    s = Shape()
    half = rng.uniform(0.8, 1.3)
    apex = rng.uniform(-0.25, 0.25) * half
    t = np.linspace(0.0, 1.0, 8)

    def jitter() -> np.ndarray:
        return np.r_[0, rng.normal(0, 0.05, 6), 0]

    left = np.column_stack([-half + (apex + half) * t + jitter(), -t])  # foot to summit
    right = np.column_stack([apex + (half - apex) * t + jitter(), -1 + t])  # summit to foot
    outline = np.vstack([left, right[1:]])
    rock = col(rng.choice([0.6, 0.08]), rng.uniform(0.1, 0.3), rng.uniform(0.35, 0.55), freedom=0.2)
    s.polygon(outline, rock)
    s.polygon(np.vstack([right, [[apex + rng.uniform(-0.2, 0.2), 0]]]), shade(rock, 0.7))
    snowline = -1 + rng.uniform(0.25, 0.5)
    xl = np.interp(snowline, left[::-1, 1], left[::-1, 0])
    xr = np.interp(snowline, right[:, 1], right[:, 0])
    fingers = snowline + np.where(np.arange(5) % 2 == 0, rng.uniform(0.05, 0.15, 5), 0.0)
    summit = outline[outline[:, 1] < snowline]
    edge = np.column_stack([np.linspace(xr, xl, 7)[1:-1], fingers])
    snow = col(0.6, 0.04, 0.97, freedom=0.1)
    s.polygon(np.vstack([[[xl, snowline]], summit, [[xr, snowline]], edge]), snow)
    shaded = np.vstack([summit[summit[:, 0] >= apex], [[xr, snowline], [apex, snowline + 0.05]]])
    s.polygon(shaded, col(0.6, 0.12, 0.82, freedom=0.1))
    return s


# --- portrait -----------------------------------------------------------------------------------

_SKINS = ((0.07, 0.25, 0.95), (0.07, 0.35, 0.85), (0.06, 0.45, 0.7), (0.06, 0.55, 0.5),
          (0.05, 0.6, 0.35))
_HAIRS = ((0.0, 0.0, 0.1), (0.07, 0.6, 0.25), (0.08, 0.6, 0.45), (0.12, 0.55, 0.85),
          (0.04, 0.8, 0.6), (0.0, 0.0, 0.7))


def _portrait(c: Canvas) -> Shape:
    """Head and shoulders: a face with eyes, brows, nose and mouth; short, long, bun or no hair."""
    rng, col = c.rng, c.colour
    skin = hsv(*_SKINS[rng.integers(len(_SKINS))])
    hair = hsv(*_HAIRS[rng.integers(len(_HAIRS))])
    style = ("short", "long", "bun", "bald")[rng.integers(4)]
    s = Shape()
    hx, hy, rx, ry = 0.0, -0.62, 0.17, 0.22  # the head's centre and radii
    if style == "long":  # falls behind the head to the shoulders
        back = half_disc(hx, hy, rx * 1.35, ry * 1.2, n=12)
        s.polygon(np.vstack([back, [[hx + rx * 1.4, -0.22], [hx - rx * 1.4, -0.22]]]), hair)
    shirt = col(rng.uniform(0, 1), rng.uniform(0.2, 0.8), rng.uniform(0.3, 0.9), freedom=1.0)
    s.polygon(half_disc(0, 0, 0.55, 0.32), shirt)
    s.polygon(rect(-0.07, -0.45, 0.07, -0.28), shade(skin, 0.9))  # neck
    for side in (-1, 1):
        s.ellipse(hx + side * rx, hy, 0.035, 0.055, shade(skin, 0.95))  # ears
    s.ellipse(hx, hy, rx, ry, skin)
    if style != "bald":
        cap = half_disc(hx, hy - 0.02, rx * 1.08, ry * 1.08, n=14)
        fringe = [[hx + rx * 0.9, hy - 0.05], [hx + rx * 0.3, hy - ry * 0.55],
                  [hx - rx * 0.8, hy - ry * 0.4]]
        s.polygon(np.vstack([[[hx - rx * 1.08, hy]], cap, fringe]), hair)
    if style == "bun":
        s.ellipse(hx, hy - ry * 1.15, rx * 0.5, rx * 0.45, hair)
    _face(s, hx, hy, rx, ry, skin, hair, rng)
    subject = c.fit(s)
    backdrop = col(rng.uniform(0, 1), rng.uniform(0.1, 0.5), rng.uniform(0.3, 0.8), freedom=0.6)
    if rng.random() < 0.6:  # a studio backdrop
        gradient(c, [(0, shade(backdrop, 1.2)), (c.h, shade(backdrop, 0.7))])
    else:  # out-of-focus evening lights
        gradient(c, [(0, shade(backdrop, 0.35)), (c.h, shade(backdrop, 0.2))])
        lights = [col(h, 0.6, 1.0, freedom=0.3) for h in (0.08, 0.12, 0.0)] + [(255, 245, 225)]
        blobs(c, rng.integers(8, 25), 0, c.h, (0.02, 0.07), lights)
    return subject


def _face(s: Shape, hx: float, hy: float, rx: float, ry: float, skin: RGB, hair: RGB,
          rng: np.random.Generator) -> None:
    iris = hsv(rng.choice([0.08, 0.58, 0.3]), 0.6, rng.uniform(0.25, 0.6))
    brow = shade(hair, 0.9)
    for side in (-1, 1):
        ex, ey = hx + side * 0.38 * rx, hy - 0.05 * ry
        s.ellipse(ex, ey, 0.2 * rx, 0.09 * ry, (245, 245, 245))
        s.ellipse(ex, ey, 0.09 * rx, 0.09 * ry, iris)
        s.line([(ex - 0.22 * rx, ey - 0.22 * ry), (ex + 0.22 * rx, ey - 0.25 * ry)], brow,
               0.05 * ry)
    nose = [(hx, hy + 0.02 * ry), (hx - 0.1 * rx, hy + 0.3 * ry), (hx + 0.05 * rx, hy + 0.3 * ry)]
    s.polygon(nose, shade(skin, 0.8))
    lips = mix(skin, (200, 60, 70), rng.uniform(0.4, 0.8))
    mouth = ellipse_points(hx, hy + 0.5 * ry, 0.3 * rx, 0.1 * ry, start=0, stop=math.pi, n=8)
    s.polygon(mouth, lips)


# --- sunset -------------------------------------------------------------------------------------

def _sunset(c: Canvas) -> Shape:
    """A glowing sun disk on the horizon under a purple-red-orange sky, over sea or dark land."""
    rng, col = c.rng, c.colour
    sunk = rng.uniform(0.0, 0.4)  # the share of the disk's diameter below the horizon
    chord = math.asin(1 - 2 * sunk)  # the horizon cuts the unit disk at y = 1 - 2 * sunk
    sun = col(rng.uniform(0.1, 0.16), rng.uniform(0.15, 0.55), 1.0, freedom=0.1)
    s = Shape()
    visible = ellipse_points(0, 0, 1, 1, start=math.pi - chord, stop=2 * math.pi + chord, n=32)
    s.polygon(visible, sun)
    subject = c.fit(s)
    horizon = c.base
    top = col(rng.uniform(0.66, 0.75), 0.6, rng.uniform(0.25, 0.45), freedom=0.15)
    middle = col(rng.uniform(0.93, 1.0), 0.75, rng.uniform(0.6, 0.8), freedom=0.1)
    low = col(0.06, 0.85, 1.0, freedom=0.05)
    gradient(c, [(horizon - 0.9 * c.fh, top), (horizon - 0.4 * c.fh, middle),
                  (horizon - 0.08 * c.fh, low), (horizon, mix(low, sun, 0.5))], bottom=horizon + 1)
    r = c.height / (2 - 2 * sunk)
    centre_y = horizon - (1 - 2 * sunk) * r
    d = c.draw
    for t in np.linspace(1.0, 0.0, 6):  # a glow fading out in small steps, dimmer than the disk
        radius = 1.05 * r + t * 0.3 * c.fh
        d.ellipse([c.cx - radius, centre_y - radius, c.cx + radius, centre_y + radius],
                  fill=mix(low, sun, 0.5 - 0.35 * t))
    streaks = [shade(middle, 0.75), top]  # thin clouds
    blobs(c, rng.integers(0, 6), horizon - 0.6 * c.fh, horizon - 0.1 * c.fh, (0.006, 0.015),
           streaks, aspect=12)
    if rng.random() < 0.5:
        sea = col(0.7, 0.5, rng.uniform(0.2, 0.35), freedom=0.2)
        gradient(c, [(horizon, mix(sea, low, 0.4)), (c.h, shade(sea, 0.6))], top=horizon)
        strokes(c, rng.integers(8, 20), horizon, c.h, (0.02, 0.08), mix(low, sun, 0.5),
                 x=lambda _: c.cx + rng.normal(0, 0.2) * c.height)  # the sun's path on the water
    else:
        land = ridge(c, horizon + rng.uniform(0.0, 0.05) * c.fh, 0.06 * c.fh, waves=6)
        fill_below(c, land, col(0.75, 0.4, 0.12, freedom=0.1))
    return subject


#: One drawing function per category: paints the background, returns the fitted subject.
_SCENES: dict[str, Callable[[Canvas], Shape]] = {
    "barn": _barn, "beach": _beach, "bird": _bird, "cat": _cat, "flower": _flower, "lake": _lake,
    "meadow": _meadow, "mountain": _mountain, "portrait": _portrait, "sunset": _sunset,
}


# --- composition --------------------------------------------------------------------------------

def _scatter_clutter(c: Canvas, clutter: float) -> None:
    """Distractors in front of the background but behind the subject: busy, never occluding it."""
    rng, d = c.rng, c.draw
    for _ in range(round(clutter * MAX_CLUTTER)):
        x, y = c.ox + rng.uniform(0, c.fw), c.oy + rng.uniform(0, c.fh)
        size = rng.uniform(0.07, 0.22) * min(c.fw, c.fh)
        colour = hsv(rng.random(), rng.uniform(0.3, 1.0), rng.uniform(0.3, 1.0))
        sides = int(rng.choice([2, 3, 4, 5, 24]))  # a stick, polygons or an ellipse
        if sides == 2:
            a = rng.uniform(0, math.pi)
            dx, dy = size * math.cos(a), size * math.sin(a)
            d.line([(x - dx, y - dy), (x + dx, y + dy)], fill=colour,
                   width=max(1, int(size * 0.15)))
        else:
            ry, angle = size / 2 * rng.uniform(0.4, 1.0), rng.uniform(0, math.pi)
            polygon(d, ellipse_points(x, y, size / 2, ry, angle, n=sides), colour)


def _composite(c: Canvas, subject: Shape, darkness: float) -> tuple[Image.Image, Image.Image]:
    """Darken the background, lay the subject over it; returns the picture and the subject's alpha.

    The subject is painted on black and downsampled with its mask, i.e. premultiplied by its
    coverage, so ``background * (1 - alpha) + subject`` is exact at anti-aliased edges and the
    blending runs on the small image rather than the supersampled one.
    """
    backdrop = hsv(c.rng.random(), c.rng.uniform(0.0, 0.4), c.rng.uniform(0.04, 0.1))
    layer, mask = Image.new("RGB", c.image.size), Image.new("L", c.image.size)
    subject.draw(ImageDraw.Draw(layer))
    subject.draw(ImageDraw.Draw(mask), fill=255)
    background, layer, alpha = c.image.reduce(SS), layer.reduce(SS), mask.reduce(SS)
    if darkness > 0.0:
        background = Image.blend(background, Image.new("RGB", background.size, backdrop), darkness)
    background.paste((0, 0, 0), mask=alpha)
    return ImageChops.add(background, layer), alpha


def _frame(image: Image.Image, c: Canvas, tilt: float, resample: Image.Resampling) -> Image.Image:
    """Cut the frame out of a downsampled canvas, rolled by ``tilt`` degrees counter-clockwise."""
    ox, oy, fw, fh = c.ox // SS, c.oy // SS, c.fw // SS, c.fh // SS
    if tilt == 0.0:
        return image.crop((ox, oy, ox + fw, oy + fh))
    cos, sin = math.cos(math.radians(tilt)), math.sin(math.radians(tilt))
    hx, hy = fw / 2, fh / 2
    # Output pixel -> canvas pixel: a rotation about the frame centre (PIL's rotate convention).
    data = (cos, -sin, ox + hx - cos * hx + sin * hy, sin, cos, oy + hy - sin * hx - cos * hy)
    return image.transform((fw, fh), Image.Transform.AFFINE, data, resample=resample)


def render_scene(
    category: str, attrs: Attributes, width: int, height: int, rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Render one synthetic photo: an RGB uint8 (height, width, 3) image and its subject mask.

    The mask is boolean (height, width) and covers the main subject only (never the distractors).
    All randomness comes from ``rng``, so a seed reproduces the image exactly.
    """
    if category not in _SCENES:
        raise ValueError(f"unknown category {category!r}; expected one of {CATEGORIES}")
    attrs = plain_floats(attrs)
    c = Canvas.create(attrs, width, height, rng)
    subject = _SCENES[category](c)
    _scatter_clutter(c, attrs.clutter)
    picture, alpha = _composite(c, subject, attrs.background_darkness)
    image = np.asarray(_frame(picture, c, attrs.tilt, Image.Resampling.BILINEAR))
    # Nearest is enough for the mask, which is thresholded anyway, and ten times cheaper.
    mask = np.asarray(_frame(alpha, c, attrs.tilt, Image.Resampling.NEAREST)) >= 128
    return apply_photometric(image, attrs, rng), mask


# --- contact sheet ------------------------------------------------------------------------------

def _example_attributes(rng: np.random.Generator) -> Attributes:
    """Attributes spread over their ranges but short of the extremes, so the scenes stay legible.

    No noise: it would make the contact sheet's PNG five times larger and show nothing new.
    """
    return Attributes(
        blur=rng.uniform(0.0, 0.3), exposure=rng.uniform(-0.7, 0.7),
        contrast=rng.uniform(0.7, 1.3), saturation=rng.uniform(0.6, 1.4),
        harmony=rng.uniform(0.0, 1.0), noise=0.0, tilt=rng.uniform(-10, 10),
        subject_x=rng.uniform(0.3, 0.7), subject_y=rng.uniform(0.35, 0.65),
        subject_size=rng.uniform(0.3, 0.7), clutter=rng.uniform(0.0, 0.5),
        background_darkness=rng.uniform(0.0, 0.5),
    )


def contact_sheet(columns: int = 6, cell: tuple[int, int] = (160, 120),
                  seed: int = 0) -> Image.Image:
    """One labelled row per category, ``columns`` random variants each: a visual check."""
    rng = np.random.default_rng(seed)
    label_w, gap = 70, 2
    w, h = cell
    size = (label_w + columns * (w + gap), len(CATEGORIES) * (h + gap))
    sheet = Image.new("RGB", size, _WHITE)
    draw = ImageDraw.Draw(sheet)
    for row, category in enumerate(CATEGORIES):
        y = row * (h + gap)
        draw.text((6, y + h // 2 - 6), category, fill=(0, 0, 0))
        for col in range(columns):
            image, _ = render_scene(category, _example_attributes(rng), w, h, rng)
            sheet.paste(Image.fromarray(image), (label_w + col * (w + gap), y))
    return sheet


if __name__ == "__main__":
    out = Path(__file__).resolve().parents[2] / "docs" / "synthetic_examples.png"
    contact_sheet().save(out, optimize=True)
    print(f"wrote {out}")
