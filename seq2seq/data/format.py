"""The prepared store's layout on disk, and reading and writing it. A store is a directory:

    meta.json            format version, the fingerprint of its inputs, counts per corpus
    src.ids, tgt.ids     every pair's piece ids, one after another (uint16, or int32 for
                         vocabularies over 65,536 pieces)
    src.off, tgt.off     int64 offsets into the ids: pair i is ids[off[i]:off[i + 1]]
    src.len, tgt.len     lengths in pieces (uint8, int16 or int32, by data.max_*_len)
    sampled.K/           with tokenizer.sampling: the same six files for random segmentation
                         K (0, 1, ...) of the same pairs (meta.json's "sampled_copies")

Corpora are stored one after another, in data.train's order. Training keeps only the lengths in
memory (one or two bytes a pair and side) and reads the ids of a batch's pairs with positioned
reads, through the page cache that every process on the machine shares.
"""
from __future__ import annotations

import json
import os
import struct
from array import array
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

STORE_VERSION = 1  # part of every fingerprint: a new layout makes old stores out of date
META = "meta.json"
FILES = ("src.ids", "tgt.ids", "src.off", "tgt.off", "src.len", "tgt.len")

_DTYPES = {"B": torch.uint8, "H": torch.uint16, "h": torch.int16, "i": torch.int32}


def _typecode(largest: int, codes: str) -> str:
    """The first array typecode of `codes` that holds 0..largest."""
    for code in codes:
        if largest < 1 << (8 * array(code).itemsize - (code.islower())):
            return code
    raise ValueError(largest)


def id_type(vocab_size: int) -> str:
    """The typecode of piece ids for the larger vocabulary of the two sides."""
    return _typecode(vocab_size - 1, "Hi")


def len_type(max_len: int) -> str:
    """The typecode of lengths up to the larger of data.max_src_len and data.max_tgt_len."""
    return _typecode(max_len, "Bhi")


def read_meta(directory: Path) -> dict | None:
    """A store's meta.json, or None when it is missing or torn."""
    try:
        return json.loads((directory / META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def write_meta(directory: Path, meta: dict) -> None:
    (directory / META).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")


@dataclass
class Store:
    """A prepared store opened for reading; the same `lengths` and `pair` as ParallelData."""
    directory: Path
    meta: dict
    src_lens: torch.Tensor
    tgt_lens: torch.Tensor
    _fds: dict = field(default_factory=dict, repr=False)
    _maps: dict = field(default_factory=dict, repr=False)
    _copies: dict = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, directory: Path, meta: dict | None = None) -> "Store":
        """The store in `directory`; `meta`: that of the store whose sampled copy this is."""
        meta = meta if meta is not None else json.loads((directory / META).read_text(encoding="utf-8"))
        lens = [torch.frombuffer(bytearray((directory / f"{side}.len").read_bytes()) or bytearray(1),
                                 dtype=_DTYPES[meta["len_type"]])[:meta["pairs"]] for side in ("src", "tgt")]
        return cls(directory, meta, *lens)

    def for_epoch(self, epoch: int) -> "Store":
        """The segmentation that epoch `epoch` (from 1) trains on: with random segmentations
        (tokenizer.sampling), copy (epoch - 1) mod their number; otherwise this store itself."""
        copies = self.meta.get("sampled_copies", 0)
        if not copies:
            return self
        k = (epoch - 1) % copies
        if k not in self._copies:
            self._copies[k] = Store.open(self.directory / sampled_dir(k), self.meta)
        return self._copies[k]

    def __len__(self) -> int:
        return self.meta["pairs"]

    def lengths(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Source and target lengths in pieces, (len(self),) each."""
        return self.src_lens, self.tgt_lens

    def _read(self, name: str, size: int, offset: int) -> bytes:
        # Opened lazily, so that a Store can be handed to another process before its first read.
        key = (os.getpid(), name)
        if key not in self._fds:
            self._fds[key] = os.open(self.directory / name, os.O_RDONLY)
        return os.pread(self._fds[key], size, offset)

    def _ids(self, side: str, i: int) -> list[int]:
        start, end = struct.unpack("<2q", self._read(f"{side}.off", 16, 8 * i))
        code = self.meta["id_type"]
        width = array(code).itemsize
        return array(code, self._read(f"{side}.ids", (end - start) * width, start * width)).tolist()

    def pair(self, i: int) -> tuple[list[int], list[int]]:
        return self._ids("src", i), self._ids("tgt", i)

    def _map(self, name: str, dtype: np.dtype) -> np.ndarray:
        # Mapped lazily and per process, as the file descriptors above are.
        key = (os.getpid(), name)
        if key not in self._maps:
            path = self.directory / name
            self._maps[key] = (np.memmap(path, dtype=dtype, mode="r") if path.stat().st_size
                               else np.zeros(0, dtype=dtype))
        return self._maps[key]

    def ids(self, side: str, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The ids of pairs `indices` (n,) on `side`, one pair after another (total,), and their
        lengths (n,): a few array reads through the page cache instead of four reads a pair."""
        offsets = self._map(f"{side}.off", np.dtype("<i8"))
        ids = self._map(f"{side}.ids", np.dtype(self.meta["id_type"]))
        starts, ends = offsets[indices], offsets[indices + 1]
        lengths = ends - starts
        before = np.cumsum(lengths) - lengths  # where each pair begins in the flat result
        flat = ids[np.repeat(starts - before, lengths) + np.arange(int(lengths.sum()))]
        return torch.from_numpy(np.asarray(flat, dtype=np.int64)), torch.from_numpy(np.asarray(lengths, dtype=np.int64))

    def corpus_ranges(self) -> list[tuple[int, int]]:
        """[start, end) of each corpus's pairs: corpora are stored one after another."""
        ranges, start = [], 0
        for c in self.meta["corpora"]:
            ranges.append((start, start + c["kept"]))
            start += c["kept"]
        return ranges


def sampled_dir(k: int) -> str:
    """The subdirectory of random segmentation `k`."""
    return f"sampled.{k}"


class Writer:
    """Appends encoded pairs to the store's files in `directory`."""

    def __init__(self, directory: Path, id_code: str, len_code: str):
        self.directory, self.id_code, self.len_code = directory, id_code, len_code
        self.files = {name: open(directory / name, "wb") for name in FILES}
        self.offsets = {"src": 0, "tgt": 0}
        for side in ("src", "tgt"):
            self.files[f"{side}.off"].write(struct.pack("<q", 0))

    def write(self, side: str, seqs: list[list[int]]) -> None:
        ids, offs, lens = array(self.id_code), array("q"), array(self.len_code)
        for s in seqs:
            ids.extend(s)
            self.offsets[side] += len(s)
            offs.append(self.offsets[side])
            lens.append(len(s))
        self.files[f"{side}.ids"].write(ids.tobytes())
        self.files[f"{side}.off"].write(offs.tobytes())
        self.files[f"{side}.len"].write(lens.tobytes())

    def close(self) -> None:
        for f in self.files.values():
            f.flush()
            os.fsync(f.fileno())
            f.close()
