"""Pure pixel measurements of visual attributes (no model, no I/O).

Shared by ``describe`` (the offline ``attributes`` backend) and ``evaluate`` (attribute adherence
of generated images). Every function takes a channel-first array and returns a dict whose keys are
exactly the ground-truth column names of the demo datasets' ``labels.csv``:

* :func:`measure_derm` -> ``diameter_mm, asymmetry, border_irregularity, border, colors, n_colors,
  structures, skin_tone, hair, center_x, center_y``
* :func:`measure_cxr` -> ``side, zone, opacity_extent, ctr, heart_width_px, thorax_width_px``
"""

from __future__ import annotations

from medsynth.pixel_attributes.cxr import CXR_COLUMNS, measure_cxr
from medsynth.pixel_attributes.derm import COLOR_VOCAB, DERM_COLUMNS, STRUCTURE_VOCAB, measure_derm

__all__ = ["COLOR_VOCAB", "CXR_COLUMNS", "DERM_COLUMNS", "STRUCTURE_VOCAB", "measure_cxr",
           "measure_derm"]
