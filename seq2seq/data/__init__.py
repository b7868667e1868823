"""Parallel data, from text files to batches: `text` reads and checks files (whole or streamed)
and holds the source encoding and detokenizing that validation and `translate` share; `encode`
is the one encode-and-filter path; the prepared store is `format` (its layout on disk), `prepare`
(building it once, cached by fingerprint) and `sampling` (streamed samples, weighted epoch draws);
`batches` cuts length-bucketed batches from lengths alone and pads them; `tokenizer` wraps
SentencePiece (its special ids are the ones every other wing uses).

May import: `seq2seq.errors`, `seq2seq.config`."""
from seq2seq.errors import DataError  # noqa: F401
from seq2seq.data.batches import (Batch, BatchPlan, batch_indices, epoch_batches, groups, iterate_batches,  # noqa: F401
                      make_batch, pad, plan_batches)
from seq2seq.data.encode import ParallelData, encode_parallel  # noqa: F401
from seq2seq.data.text import (TAG_PATTERN, corpus_tags, describe_train, detokenize, encode_sources, read_lines,  # noqa: F401
                   read_parallel, stream_pairs, tag_piece, tag_sources, tag_training_sources, tags_in, target_tag)
