"""What a run leaves on disk: the run directory (`rundir.py`: every path inside it; no other
module spells a run's file names), the checkpoint format and its safe loading (`checkpoint.py`),
checkpoint averaging, `seq2seq info` and `seq2seq plot`.

May import: `seq2seq.errors`, `seq2seq.config`, `seq2seq.data`, `seq2seq.model`."""
