// Text in and out of the in-browser translator, as seq2seq/data/text.py and seq2seq/tokenizer.py
// do it in Python: strip, tag, encode and cut a source; map ids between SentencePiece and the
// model's own (kept-piece) ids; detokenize an output to one line.
//
// The SentencePiece processor is handed in (an object with encodeIds(text) and decodeIds(ids)),
// so node can test this module with the same library the page uses.

export const PAD = 0;
export const UNK = 1;
export const BOS = 2;
export const EOS = 3;

// The characters Python's str.isspace() accepts (str.strip() and the regex \s both use it).
// JavaScript's trim() differs: it also strips U+FEFF, and keeps U+001C..U+001F and U+0085.
const PY_SPACE = "\\t\\n\\v\\f\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
const STRIP = new RegExp(`^[${PY_SPACE}]+|[${PY_SPACE}]+$`, "g");
// Python's str.splitlines() boundaries (\r\n counts once).
const LINE_BREAK = /\r\n|[\n\v\f\r\x1c\x1d\x1e\x85\u2028\u2029]/;
// data/text.py's TAG_PATTERN, <2[^<>\s]+>, matched at the start of a line.
const TAG_AT_START = new RegExp(`^<2[^<>${PY_SPACE}]+>`);

/** Python's str.strip(). */
export function pyStrip(text) {
  return text.replace(STRIP, "");
}

/** Python's str.splitlines(): no empty last line after a final line break. */
export function pySplitlines(text) {
  const lines = text.split(LINE_BREAK);
  if (lines.length > 0 && lines[lines.length - 1] === "") lines.pop();
  return lines;
}

/** A text area's value as input lines, as `translate` reads a file: split on \n only, no empty
 * line after a final \n. */
export function inputLines(text) {
  const lines = text.split("\n");
  if (lines[lines.length - 1] === "") lines.pop();
  return lines;
}

/**
 * The pieces of a SentencePiece model file (ModelProto), in id order: field 1 is the repeated
 * SentencePiece message, whose field 1 is the piece string. Only what the page needs (piece
 * labels for the attention heatmap) is read.
 */
export function modelPieces(bytes) {
  const decoder = new TextDecoder("utf-8");
  const pieces = [];
  let pos = 0;
  const varint = (end) => {
    let value = 0;
    let scale = 1;
    for (;;) {
      if (pos >= end) throw new Error("SentencePiece model: truncated varint");
      const b = bytes[pos++];
      value += (b & 0x7f) * scale;
      if (b < 0x80) return value;
      scale *= 128;
    }
  };
  const skip = (wire, end) => {
    if (wire === 0) varint(end);
    else if (wire === 1) pos += 8;
    else if (wire === 2) {
      const length = varint(end); // read before adding: `pos += varint()` would add to the old pos
      pos += length;
    }
    else if (wire === 5) pos += 4;
    else throw new Error(`SentencePiece model: unexpected wire type ${wire}`);
  };
  while (pos < bytes.length) {
    const key = varint(bytes.length);
    const field = Math.floor(key / 8);
    const wire = key % 8;
    if (field === 1 && wire === 2) {
      const length = varint(bytes.length);
      const end = pos + length;
      let piece = "";
      while (pos < end) {
        const inner = varint(end);
        if (inner === (1 << 3 | 2)) {
          const length = varint(end);
          piece = decoder.decode(bytes.subarray(pos, pos + length));
          pos += length;
        } else {
          skip(inner % 8, end);
        }
      }
      pos = end;
      pieces.push(piece);
    } else {
      skip(wire, bytes.length);
    }
  }
  return pieces;
}

/**
 * Raw text <-> the model's piece ids with one SentencePiece processor, as tokenizer.Tokenizer.
 * `spelled` (SentencePiece id -> list of our ids; the manifest's src_pieces) and `kept` (our id ->
 * SentencePiece id; the manifest's tgt_kept) are null where our ids are SentencePiece's.
 */
export class Tokenizer {
  constructor(processor, pieces, { spelled = null, kept = null } = {}) {
    this.sp = processor;
    this.spPieces = pieces; // SentencePiece id -> piece
    this.spelled = spelled;
    this.kept = kept;
    if (kept === null && spelled !== null) {
      // Our id -> SentencePiece id, for labels: the first SentencePiece id spelled as that one id.
      this.kept = [];
      spelled.forEach((ours, i) => {
        if (ours.length === 1 && this.kept[ours[0]] === undefined) this.kept[ours[0]] = i;
      });
    }
  }

  encode(text) {
    const ids = this.sp.encodeIds(text);
    return this.spelled === null ? ids : ids.flatMap((i) => this.spelled[i]);
  }

  /** Text of our ids; special ids (and UNK) never reach the text. */
  decode(ids) {
    const own = ids.filter((i) => i > EOS);
    return this.sp.decodeIds(this.kept === null ? own : own.map((i) => this.kept[i]));
  }

  idToPiece(i) {
    const sp = this.kept === null ? i : this.kept[i];
    return sp === undefined ? "<unk>" : (this.spPieces[sp] ?? "<unk>");
  }

  pieces(ids) {
    return ids.map((i) => this.idToPiece(i));
  }
}

/**
 * Source lines as the model reads them, as data/text.py's encode_sources: stripped, tagged with
 * `srcTag` (unless a line already starts with a tag, or is empty), encoded and cut to `maxLen`
 * pieces. Returns {ids, cut}, cut listing [index, pieces] of each line that was cut.
 */
export function encodeSources(lines, tokenizer, { maxLen, srcTag = null }) {
  const ids = [];
  const cut = [];
  lines.forEach((raw, n) => {
    let line = pyStrip(raw);
    if (srcTag !== null && line !== "" && !TAG_AT_START.test(line)) line = `${srcTag} ${line}`;
    const encoded = line === "" ? [] : tokenizer.encode(line);
    if (encoded.length > maxLen) cut.push([n, encoded.length]);
    ids.push(encoded.slice(0, maxLen));
  });
  return { ids, cut };
}

/** Output ids as one line of text, as data/text.py's detokenize. */
export function detokenize(tokenizer, ids) {
  return pySplitlines(tokenizer.decode(ids)).join(" ");
}
