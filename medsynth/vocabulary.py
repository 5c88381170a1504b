"""Controlled vocabularies shared by the demo phantoms, the pixel measurers and the prompts.

One definition each, so that what a phantom draws, what :mod:`medsynth.pixel_attributes` detects and
what a describer may answer are the same words in the same (canonical) order. The built-in
``derm`` prompt template (``medsynth/describe/templates/derm.yaml``) lists the same values; a
test keeps the two in step.
"""

from __future__ import annotations

DERM_COLORS = ("light_brown", "dark_brown", "black", "blue_grey", "red", "white")
"""Dermoscopy colours (ABCD rule), in the canonical order used in ``labels.csv`` and records."""
DERM_STRUCTURES = ("pigment_network", "dots_globules", "streaks", "blue_white_veil")
"""Dermoscopy structures, in canonical order (``none`` when a lesion shows none)."""
DERM_COLOR_RGB: dict[str, tuple[int, int, int]] = {
    "light_brown": (176, 116, 72),
    "dark_brown": (98, 58, 34),
    "black": (32, 26, 26),
    "blue_grey": (104, 116, 138),
    "red": (186, 62, 64),
    "white": (232, 226, 222),
}
"""Typical dermoscopic appearance (sRGB) of each colour: the phantom paints with it, the
measurer labels each lesion pixel with the nearest of them."""
DERM_SKIN_RGB: dict[int, tuple[int, int, int]] = {
    1: (238, 204, 190),
    2: (228, 184, 162),
    3: (212, 160, 128),
    4: (186, 132, 98),
    5: (150, 102, 72),
    6: (112, 76, 56),
}
"""Fitzpatrick-like skin types 1..6 under dermoscope light (pinker and brighter than daylight)."""

PROSTATE_ZONES = ("peripheral", "transition")
"""Prostate zones a phantom lesion sits in (``none`` without a lesion)."""
PROSTATE_LEVELS = ("base", "mid", "apex")
"""Cranio-caudal thirds of the gland (``none`` without a lesion)."""
PROSTATE_MARGINS = ("circumscribed", "ill_defined")
"""Lesion margins (``none`` without a lesion)."""
PROSTATE_SIDES = ("left", "right")
"""The patient's side of a lesion (``none`` without a lesion)."""
