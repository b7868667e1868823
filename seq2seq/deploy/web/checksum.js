// The export folder's files against manifest.json's SHA-256 sums, as seq2seq/decoding/onnx_model.py's
// verify checks them in Python.
//
// Web Crypto (crypto.subtle) exists only in secure contexts (https, localhost). Served over plain
// http from any other host, the page hashes with js-sha256 (pinned in web/package.json and copied
// beside the page as sha256.min.mjs); where neither can be had, the page says on screen that it
// could not check, rather than skipping the check unseen.

export const FALLBACK = "./sha256.min.mjs";

function toHex(digest) {
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * A SHA-256 hasher: {name: "Web Crypto" | "js-sha256", hex(bytes) -> Promise<string>}, or
 * {name: null, why} when there is none. `subtle` and `load` (which imports js-sha256) are
 * parameters so that a test can take either away.
 */
export async function sha256Hasher({ subtle = globalThis.crypto?.subtle, load = () => import(FALLBACK) } = {}) {
  if (subtle) {
    return { name: "Web Crypto", hex: async (bytes) => toHex(new Uint8Array(await subtle.digest("SHA-256", bytes))) };
  }
  try {
    const { sha256 } = await load();
    return { name: "js-sha256", hex: async (bytes) => sha256(bytes) };
  } catch (e) {
    return {
      name: null,
      why: `the page is not in a secure context (no Web Crypto) and ${FALLBACK.slice(2)} could not be loaded ` +
        `(${e?.message ?? e})`,
    };
  }
}

/**
 * Throws unless manifest.json lists its files (path -> SHA-256), each inside the export folder:
 * no absolute path, drive or ".." step (either separator), as onnx_model.py's listed_files refuses.
 */
export function checkFileList(files) {
  if (files === null || typeof files !== "object" || Array.isArray(files) || Object.keys(files).length === 0) {
    throw new Error("manifest.json: lists no files with their SHA-256 (\"files\"), so nothing can be verified; " +
                    "export the model again");
  }
  for (const [name, digest] of Object.entries(files)) {
    const quoted = JSON.stringify(name);
    if (name === "" || /^[\\/]/.test(name) || /^[A-Za-z]:/.test(name) || name.split(/[\\/]/).includes("..")) {
      throw new Error(`manifest.json: lists ${quoted}, a path outside the export folder; refusing the export`);
    }
    if (typeof digest !== "string") throw new Error(`manifest.json: the SHA-256 of ${quoted} is not a string`);
  }
}

/** Throws unless `bytes`, the file `name`, have the SHA-256 that `files` lists for it. Every file
 * the page loads must be listed; with no hasher (name null) the sums go unchecked. */
export async function checkFile(name, bytes, files, hasher) {
  const expected = files[name];
  if (typeof expected !== "string") {
    throw new Error(`${name}: not listed in manifest.json's files; export the model again`);
  }
  if (hasher.name === null) return;
  if ((await hasher.hex(bytes)) !== expected) {
    throw new Error(`${name}: its SHA-256 differs from manifest.json's; copy the export folder again`);
  }
}
