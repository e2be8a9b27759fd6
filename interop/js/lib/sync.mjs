// The client side of /daimon/sync/1 (p2p/sync.py; docs/wire.md "Stream protocols").
//
// One request per stream. A frame is a 4-byte big-endian length and that many bytes; a
// control frame holds a msgpack array. Requests: ["head", chain_id] -> ["ok", height, hash,
// weight] | ["none"]; ["blocks", chain_id, start, count] -> ["ok", k] then k byte frames.

import { byteStream } from 'it-byte-stream'
import { Decoder } from '@msgpack/msgpack'
import { WireError, pack } from './codec.mjs'

export const SYNC_PROTOCOL = '/daimon/sync/1'
export const CONTROL_FRAME_CAP = 4096 // bytes: the server's cap on a request, ours on a status reply
export const MAX_BLOCK_BYTES = 3 * 1024 * 1024 / 2 // one block, the protocol's cap (chain/constants.py)
export const MAX_RESPONSE_BYTES = 16 * 1024 * 1024 // what one server reply may hold in all
export const MAX_BATCH = 64 // the server clamps a request to this many blocks

const controlDecoder = new Decoder({ useBigInt64: true })

async function readFrame (bytes, cap, signal) {
  const prefix = (await bytes.read({ bytes: 4, signal })).subarray()
  const size = new DataView(prefix.buffer, prefix.byteOffset, 4).getUint32(0)
  if (size > cap) throw new WireError(`frame of ${size} bytes over the cap of ${cap}`)
  return size === 0 ? new Uint8Array(0) : (await bytes.read({ bytes: size, signal })).subarray()
}

async function writeControl (bytes, array, signal) {
  const body = pack(array)
  const frame = new Uint8Array(4 + body.length)
  new DataView(frame.buffer).setUint32(0, body.length)
  frame.set(body, 4)
  await bytes.write(frame, { signal })
}

async function readControl (bytes, signal) {
  const reply = controlDecoder.decode(await readFrame(bytes, CONTROL_FRAME_CAP, signal))
  if (!Array.isArray(reply) || reply.length === 0) throw new WireError('a control frame is a non-empty array')
  if (reply[0] === 'busy') throw new WireError('peer busy')
  if (reply[0] === 'err') throw new WireError(`peer error: ${String(reply[1]).slice(0, 200)}`)
  return reply
}

/** Open a stream on `connection`, send `request`, hand the stream to `read`, close it. */
async function request (connection, request, read, signal) {
  const stream = await connection.newStream(SYNC_PROTOCOL, { signal })
  try {
    const bytes = byteStream(stream)
    await writeControl(bytes, request, signal)
    const result = await read(bytes)
    await stream.close({ signal })
    return result
  } catch (err) {
    stream.abort(err)
    throw err
  }
}

/** The peer's head of `chainId`: `{ height, hash }`, or null if it has no block yet. */
export async function requestHead (connection, chainId, signal) {
  return request(connection, ['head', chainId], async (bytes) => {
    const reply = await readControl(bytes, signal)
    if (reply[0] === 'none') return null
    if (reply[0] !== 'ok' || reply.length !== 4) throw new WireError(`unexpected head reply ${reply[0]}`)
    return { height: Number(reply[1]), hash: reply[2] }
  }, signal)
}

/** Up to `count` (at most MAX_BATCH) encoded blocks from `start`, as the peer sends them. */
export async function requestBlocks (connection, chainId, start, count, signal) {
  const asked = Math.min(count, MAX_BATCH)
  return request(connection, ['blocks', chainId, start, asked], async (bytes) => {
    const reply = await readControl(bytes, signal)
    if (reply[0] !== 'ok' || reply.length !== 2) throw new WireError(`unexpected blocks reply ${reply[0]}`)
    const k = Number(reply[1])
    if (!Number.isInteger(k) || k < 0 || k > asked) throw new WireError(`peer sends ${reply[1]} blocks, asked ${asked}`)
    const items = []
    let budget = MAX_RESPONSE_BYTES
    for (let i = 0; i < k; i++) {
      const item = await readFrame(bytes, Math.min(MAX_BLOCK_BYTES, budget), signal)
      budget -= item.length
      items.push(item)
    }
    return items
  }, signal)
}

/** Blocks `from`..`to` (inclusive), in as many requests as the server's batch cap needs. */
export async function fetchRange (connection, chainId, from, to, signal) {
  const out = []
  while (from + out.length <= to) {
    const start = from + out.length
    const items = await requestBlocks(connection, chainId, start, to - start + 1, signal)
    if (items.length === 0) throw new WireError(`peer has no block at height ${start} (head was ${to})`)
    out.push(...items)
  }
  return out.slice(0, to - from + 1)
}
