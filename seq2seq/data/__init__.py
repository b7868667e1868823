"""Parallel data, from text files to batches: `text` reads and checks files (whole or streamed)
and holds the encode/decode functions validation and `translate` share; `store` prepares the
training corpora once into a store on disk; `batches` cuts length-bucketed batches from lengths
alone and pads them."""
from ..errors import DataError  # noqa: F401
from .batches import (Batch, BatchPlan, batch_indices, epoch_batches, groups, iterate_batches,  # noqa: F401
                      make_batch, pad, plan_batches)
from .text import (TAG_PATTERN, ParallelData, detokenize, encode_parallel, encode_sources, read_lines,  # noqa: F401
                   read_parallel, stream_pairs, tag_sources, tags_in, target_tag)
