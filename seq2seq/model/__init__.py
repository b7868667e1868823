"""The network: encoder, attention, decoder and their recurrence cells, the `Seq2Seq` model that
joins them (`build_model` is the only way to make one), and the decoding-step object (`step.py`)
that search runs one target position at a time. Techniques of the network live here, each in its
own module: layer-normalized cells (`recurrence.py`), word dropout (`word_dropout.py`), and the
float type of the products (`precision.py`).

May import: `seq2seq.errors`, `seq2seq.config`, `seq2seq.data` (the tokenizer's special ids)."""
