"""Training a model: how a run begins (`begin.py`: from scratch, resumed, or from a parent, with
its tokenizers from `tokenizers.py`), the loop (`loop.py`), one update (`update.py`), the
learning-rate schedule (`schedule.py`), the log (`log.py`), when and what to save
(`checkpoints.py`), validation, the moving average of the weights (`ema.py`), CPU threads
(`machine.py`), several processes under torchrun (`distributed.py`), what a parent run gives a
fine-tuning child (`finetune.py`, `transfer.py`), and sequence-level distillation (`distill*.py`:
teachers translate a student's training data).

May import every wing below it: `seq2seq.errors`, `seq2seq.config`, `seq2seq.metrics`,
`seq2seq.data`, `seq2seq.model`, `seq2seq.run`, `seq2seq.decoding`."""
