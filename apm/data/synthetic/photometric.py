"""The camera's share of a synthetic photo: exposure, contrast, saturation, blur and noise.

These are what a photographer gets wrong after composing the scene, so they are applied to the
finished rendering: tone (exposure, contrast), colour, the lens's blur, and last the sensor's noise,
which the lens does not blur.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from apm.data.synthetic.attributes import Attributes

#: sRGB is close to a 2.2 power law; exposure acts on linear light, so it is undone and redone.
_GAMMA = 2.2
#: Blur sigma per unit of ``blur``, as a fraction of the image's short side.
BLUR_SIGMA_FRACTION = 0.015


def tone_curve(exposure: float, contrast: float) -> np.ndarray:
    """Map each 8-bit code to its exposed, contrast-adjusted 8-bit code.

    Both operations act on one channel value at a time, so a 256-entry table applies them to a
    whole image with a single lookup. Exposure scales linear intensity by ``2**exposure`` and
    clips like a sensor does; contrast then stretches about mid-grey in display space.
    """
    linear = (np.arange(256) / 255.0) ** _GAMMA
    exposed = np.clip(linear * 2.0**exposure, 0.0, 1.0) ** (1.0 / _GAMMA)
    return np.clip(np.rint((0.5 + (exposed - 0.5) * contrast) * 255.0), 0, 255).astype(np.uint8)


def plain_floats(attrs: Attributes) -> Attributes:
    """The same attributes as Python floats.

    Attributes read from Arrow or Ray batches arrive as NumPy scalars, which some Pillow calls
    reject (``GaussianBlur`` takes a float32 radius for a sequence).
    """
    return Attributes(**{name: float(value) for name, value in attrs.to_dict().items()})


def apply_photometric(image: np.ndarray, attrs: Attributes, rng: np.random.Generator) -> np.ndarray:
    """Apply the photometric attributes to an RGB uint8 image; returns a new uint8 image.

    The per-pixel steps run as Pillow's C routines on 8-bit data (a table lookup, a blend with
    the Rec. 601 luma, an extended-box Gaussian); only the noise is drawn with NumPy.
    """
    attrs = plain_floats(attrs)
    picture = Image.fromarray(image).point(tone_curve(attrs.exposure, attrs.contrast).tolist() * 3)
    if attrs.saturation != 1.0:  # blend with (or extrapolate away from) the luminance
        picture = Image.blend(picture.convert("L").convert("RGB"), picture, attrs.saturation)
    sigma = attrs.blur * BLUR_SIGMA_FRACTION * min(image.shape[:2])
    if sigma > 0.0:
        picture = picture.filter(ImageFilter.GaussianBlur(sigma))
    out = np.array(picture)
    if attrs.noise > 0.0:  # in place: at 500x375 the temporaries would cost as much as the draws
        noisy = rng.standard_normal(out.shape, dtype=np.float32)
        noisy *= np.float32(255.0 * attrs.noise)
        noisy += out
        noisy += np.float32(0.5)  # round to nearest on the cast below
        out = np.clip(noisy, 0.0, 255.0, out=noisy).astype(np.uint8)
    return out
