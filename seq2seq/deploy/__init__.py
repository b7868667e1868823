"""Putting a trained model in front of users: the HTTP service (`serve.py`), its dynamic batching
(`batching.py`) and its admission (`admission.py`: how much work is ahead of a request), the ONNX
export (`export.py`) with its check against PyTorch (`export_check.py`), and the in-browser
translator that an export folder serves (`web/`, whose JavaScript mirrors
`seq2seq.decoding.search`).

May import: `seq2seq.errors`, `seq2seq.config`, `seq2seq.data`, `seq2seq.model`, `seq2seq.run`,
`seq2seq.decoding`; never `seq2seq.training`."""
