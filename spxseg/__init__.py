"""spxseg: efficient semantic segmentation with superpixel transformers."""

from spxseg.config import Config, ConfigError, load_config
from spxseg.engine.predictor import Segmenter
from spxseg.models import SegOutput, build_model

__version__ = "0.1.0"

__all__ = ["Config", "ConfigError", "SegOutput", "Segmenter", "build_model", "load_config", "__version__"]
