"""Training a model: how a run begins (`begin.py`: from scratch, resumed, or from a parent), the
loop (`loop.py`), one update (`update.py`), validation, the moving average of the weights
(`ema.py`), several processes under torchrun (`distributed.py`), and what a parent run gives a
fine-tuning child (`finetune.py`, `transfer.py`).

May import every wing below it: `seq2seq.errors`, `seq2seq.config`, `seq2seq.metrics`,
`seq2seq.data`, `seq2seq.model`, `seq2seq.run`, `seq2seq.decoding`."""
