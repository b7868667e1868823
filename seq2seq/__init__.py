"""seq2seq: recurrent encoder-decoder machine translation with attention."""
__version__ = "0.1.0"

from .config import Config, ConfigError, load_config  # noqa: E402,F401
from .translator import Translator  # noqa: E402,F401
