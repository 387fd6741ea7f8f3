"""Synthetic street scenes in the Cityscapes layout with Cityscapes label ids.

- :mod:`.canvas`: the drawing surface (:class:`~.canvas.Scene`), label ids and shared materials;
- :mod:`.objects`: cars, people, poles with signs, trees;
- :mod:`.scene`: the layout of one scene (:func:`render_scene`);
- :mod:`.writer`: a set on disk (:func:`generate_synthetic`) and the explicit generation step that
  ``tools/train.py`` runs when ``data.synthetic.generate`` is set (:func:`ensure_synthetic`); the
  dataset builders never write.
"""

from .canvas import SYNTHETIC_CLASSES
from .scene import render_scene
from .writer import MARKER, SPLIT_CITIES, ensure_synthetic, generate_synthetic

__all__ = ["MARKER", "SPLIT_CITIES", "SYNTHETIC_CLASSES", "ensure_synthetic", "generate_synthetic", "render_scene"]
