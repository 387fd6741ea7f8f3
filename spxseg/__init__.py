"""spxseg: efficient semantic segmentation with superpixel transformers.

Importing ``spxseg`` or ``spxseg.config`` does not import torch, timm or OpenCV: the model and the predictor
load on first use of ``spxseg.Segmenter`` / ``spxseg.build_model`` / ``spxseg.SegOutput`` (and
``load_config`` imports timm to resolve an unset ``data.mean`` / ``data.std``).
"""

from spxseg.config import Config, ConfigError, load_config

__version__ = "0.1.0"

__all__ = ["Config", "ConfigError", "SegOutput", "Segmenter", "build_model", "load_config", "__version__"]

_LAZY = {"Segmenter": "spxseg.engine.predictor", "build_model": "spxseg.models", "SegOutput": "spxseg.models"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'spxseg' has no attribute {name!r}")
