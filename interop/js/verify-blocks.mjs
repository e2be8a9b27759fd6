#!/usr/bin/env node
// Check a chain given as a file of frames (4-byte big-endian length, then one encoded block,
// heights 0..n-1 in order), with the follower's own code: canonical encoding, body hashes,
// committer signatures, the Problem block's proposal hash and the hash chain.
//
//   node verify-blocks.mjs --chain <64 hex> --file blocks.bin
//
// Prints one JSON line {"ok", "hashes": [...]} or {"ok": false, "error"}; exit 0 or 1.

import './lib/node20.mjs'
import { readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { decodeBlock, hex, verifyHashChain } from './lib/codec.mjs'

function frames (data) {
  const out = []
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength)
  for (let pos = 0; pos < data.length;) {
    if (pos + 4 > data.length) throw new Error('truncated frame length')
    const size = view.getUint32(pos)
    if (pos + 4 + size > data.length) throw new Error('truncated frame')
    out.push(data.subarray(pos + 4, pos + 4 + size))
    pos += 4 + size
  }
  return out
}

const { values } = parseArgs({ options: { chain: { type: 'string' }, file: { type: 'string' } } })
try {
  const blocks = frames(new Uint8Array(readFileSync(values.file))).map(decodeBlock)
  verifyHashChain(blocks, Uint8Array.from(Buffer.from(values.chain ?? '', 'hex')))
  process.stdout.write(JSON.stringify({ ok: true, hashes: blocks.map((b) => hex(b.hash)) }) + '\n')
} catch (err) {
  process.stdout.write(JSON.stringify({ ok: false, error: err.message }) + '\n')
  process.exitCode = 1
}
