// checksum.js on its own (node --test web/test/checksum.test.mjs): the js-sha256 fallback that the
// page uses outside secure contexts gives Web Crypto's digests, a page with neither says why, and
// manifest file lists that name a path outside the folder are refused.
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { test } from "node:test";
import { checkFile, checkFileList, sha256Hasher } from "../../seq2seq/deploy/web/checksum.js";

// In an export folder the page imports js-sha256 from beside itself; here, from web/node_modules.
const loadJsSha256 = () => import("../node_modules/js-sha256/build/sha256.min.mjs");

const expected = (bytes) => createHash("sha256").update(bytes).digest("hex");

// Lengths around SHA-256's 64-byte blocks and its 55/56-byte padding edge, and a large file.
const samples = [0, 1, 3, 55, 56, 63, 64, 65, 119, 120, 1000, (1 << 20) + 17]
  .map((n) => new Uint8Array(randomBytes(n)));

test("js-sha256 gives the digests of Web Crypto and node's crypto", async () => {
  const fallback = await sha256Hasher({ subtle: null, load: loadJsSha256 });
  const subtle = await sha256Hasher({ subtle: globalThis.crypto.subtle });
  assert.equal(fallback.name, "js-sha256");
  assert.equal(subtle.name, "Web Crypto");
  assert.equal(await fallback.hex(new TextEncoder().encode("abc")),
               "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  for (const bytes of samples) {
    assert.equal(await fallback.hex(bytes), expected(bytes), `${bytes.length} bytes`);
    assert.equal(await subtle.hex(bytes), expected(bytes), `${bytes.length} bytes`);
  }
});

test("without Web Crypto and without js-sha256 the hasher says why", async () => {
  const none = await sha256Hasher({ subtle: null, load: () => Promise.reject(new Error("404")) });
  assert.equal(none.name, null);
  assert.match(none.why, /not in a secure context.*sha256\.min\.mjs could not be loaded \(404\)/);
});

test("checkFile refuses a changed or unlisted file and passes an unchanged one", async () => {
  const hasher = await sha256Hasher({ subtle: null, load: loadJsSha256 });
  const bytes = samples[10]; // 1000 bytes
  const files = { "encoder.onnx": expected(bytes) };
  await checkFile("encoder.onnx", bytes, files, hasher);
  const changed = bytes.slice();
  changed[500] ^= 1;
  await assert.rejects(checkFile("encoder.onnx", changed, files, hasher), /encoder\.onnx: its SHA-256 differs/);
  await assert.rejects(checkFile("decoder_step.onnx", bytes, files, hasher), /decoder_step\.onnx: not listed/);
  // With no hasher the sums go unchecked (the page says so), but the file must still be listed.
  await checkFile("encoder.onnx", changed, files, { name: null, why: "none" });
  await assert.rejects(checkFile("spm.model", bytes, files, { name: null, why: "none" }), /not listed/);
});

test("checkFileList refuses a missing list and paths outside the folder", () => {
  checkFileList({ "encoder.onnx": "00", "sub/spm.model": "11" });
  for (const files of [undefined, null, {}, [], "encoder.onnx"]) {
    assert.throws(() => checkFileList(files), /lists no files/, JSON.stringify(files));
  }
  const outside = ["/etc/passwd", "../x.onnx", "a/../../b", "a\\..\\b", "\\\\server\\share\\x", "C:\\x", "c:x", ""];
  for (const name of outside) {
    assert.throws(() => checkFileList({ [name]: "00" }), /a path outside the export folder/, name);
  }
  assert.throws(() => checkFileList({ "encoder.onnx": 5 }), /is not a string/);
});
