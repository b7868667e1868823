"""Turning a trained model into text: greedy, beam and sampling search written only against the
step contract (`search.py`, with the seeded draws of sampling in `draws.py`), and the objects
behind that contract: an ensemble of runs (`ensemble.py`), an exported ONNX folder
(`onnx_model.py`), int8 weights (`quantize.py`). The `Translator` (`translator.py`) loads any of
them and is what `translate`, the service and the Python API call; `translate_command.py` is the
`seq2seq translate` command's files and output formats, `evaluate_command.py` the scoring
command's.

May import: `seq2seq.errors`, `seq2seq.config`, `seq2seq.metrics`, `seq2seq.data`,
`seq2seq.model`, `seq2seq.run`."""
