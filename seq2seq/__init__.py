"""seq2seq: recurrent encoder-decoder machine translation with attention.

Python API: `Translator.load(run_dir).translate(sentences)` and `train(config, run_dir)`;
see examples/api_example.py.
"""
__version__ = "0.1.0"

from seq2seq.config import Config, config_from_dict, load_config  # noqa: E402,F401
from seq2seq.errors import CheckpointError, ConfigError, DataError, Interrupted, TrainingError  # noqa: E402,F401
from seq2seq.decoding.search import Sampling  # noqa: E402,F401
from seq2seq.training.begin import load_run_config  # noqa: E402,F401
from seq2seq.training.loop import train  # noqa: E402,F401
from seq2seq.decoding.translator import Translation, Translator  # noqa: E402,F401
