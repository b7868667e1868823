"""The progress record of a distillation (DIR/distill.json): how far each corpus's output files
are complete, and what made them what they are.

A rerun after a kill trusts the output files only up to the sizes written here, and continues
reading the source at the recorded byte offset. The record is replaced atomically (a temporary
file, fsync, rename) and only after the lines it counts were fsynced, so at any moment it
describes a prefix of the files that is on disk. Its identity part (teachers' checkpoints, beam,
precision, languages, the student's corpora) must equal the rerun's, or the rerun is refused
with the first difference named: a distilled corpus made half by one teacher and half by
another would be a silent mix."""
from __future__ import annotations

import json
import os
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from seq2seq.errors import DataError

RECORD_FILE = "distill.json"
FORMAT = 1
READ_BLOCK = 1 << 20


@dataclass
class CorpusProgress:
    """One corpus of the student's data.train, distilled into DIR/NAME.SRC_LANG and DIR/NAME.TGT_LANG."""
    path: str              # the corpus's path prefix in the student's config
    name: str              # the output files' prefix inside DIR
    lines: int = 0         # lines complete in both output files
    read_bytes: int = 0    # bytes of the source those lines came from
    crc32: int = 0         # checksum of those bytes: a source changed under them is noticed on resume
    src_bytes: int = 0     # size of DIR/NAME.SRC_LANG holding exactly those lines
    tgt_bytes: int = 0     # size of DIR/NAME.TGT_LANG holding their translations
    done: bool = False


@dataclass
class Identity:
    """What decides the distilled text: a resume must match it exactly."""
    teachers: list[dict]   # per --model, in order: {"model": path, "file": checkpoint or manifest, "sha256": ...}
    beam_size: int
    precision: str
    quantize: str | None
    src_lang: str
    tgt_lang: str
    corpora: list[str]     # the student's data.train paths, in order


@dataclass
class Record:
    identity: Identity
    corpora: list[CorpusProgress] = field(default_factory=list)
    student_config: str = ""   # where the student's config came from (for people; not compared)

    def save(self, out: Path) -> None:
        """Replace DIR/distill.json atomically and durably."""
        data = {"format": FORMAT, "identity": asdict(self.identity), "student_config": self.student_config,
                "corpora": [asdict(c) for c in self.corpora]}
        tmp = out / (RECORD_FILE + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out / RECORD_FILE)
        sync_directory(out)


def load_record(out: Path) -> Record | None:
    """The record in DIR, or None where there is none; a damaged one is a DataError."""
    path = out / RECORD_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format')!r}, expected {FORMAT}")
        return Record(Identity(**data["identity"]), [CorpusProgress(**c) for c in data["corpora"]],
                      data.get("student_config", ""))
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{path}: not a distillation record this version can read ({e}); "
                        f"give a new --out") from None


def mismatch(old: Identity, new: Identity, out: Path) -> str | None:
    """One line naming the first way `new` differs from the distillation begun in `out`, or None."""
    again = "give the same, or a new --out to start over"
    if [t["sha256"] for t in old.teachers] != [t["sha256"] for t in new.teachers]:
        before = " ".join(f"--model {t['model']} ({Path(t['file']).name})" for t in old.teachers)
        return f"--model: {out} was begun with other teachers ({before}, checkpoints by sha256); {again}"
    if old.beam_size != new.beam_size:
        return f"--beam-size {new.beam_size}: {out} was begun with beam {old.beam_size}; {again}"
    if (old.precision, old.quantize) != (new.precision, new.quantize):
        return (f"--precision/--quantize: {out} was begun with precision {old.precision}, quantize "
                f"{old.quantize}; this run would decode with {new.precision}, {new.quantize}; {again}")
    if (old.src_lang, old.tgt_lang) != (new.src_lang, new.tgt_lang):
        return (f"--config: data.src_lang/tgt_lang {new.src_lang}/{new.tgt_lang}, but {out} was begun with "
                f"{old.src_lang}/{old.tgt_lang}; {again}")
    if old.corpora != new.corpora:
        return (f"--config: data.train is {new.corpora}, but {out} was begun with {old.corpora}; {again}")
    return None


def prefix_crc32(path: Path, size: int, crc: int = 0) -> tuple[int, int]:
    """The CRC-32 of the first `size` bytes of `path` (continuing from `crc`), and how many it had."""
    seen = 0
    with open(path, "rb") as f:
        while seen < size:
            block = f.read(min(READ_BLOCK, size - seen))
            if not block:
                break
            crc = zlib.crc32(block, crc)
            seen += len(block)
    return crc, seen


def sync_directory(path: Path) -> None:
    """Make a rename or a new file in `path` durable (where the platform can)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on a directory; the rename itself is still atomic
    finally:
        os.close(fd)
