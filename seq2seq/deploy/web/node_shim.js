// Stands in for node's `fs` and `buffer` modules, which @sctg/sentencepiece-js imports at its top
// (the page's import map points both here). The page loads models from bytes, so neither is used.
export const Buffer = undefined;

export function readFileSync() {
  throw new Error("the page has no file system: SentencePiece models are loaded from bytes");
}
