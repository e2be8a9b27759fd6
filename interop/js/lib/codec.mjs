// DaiMoN objects as the Python node encodes them (chain/codec.py, chain/types.py; docs/wire.md).
//
// Every protocol object is a msgpack array of its fields in a fixed order; integers take their
// shortest msgpack form, bytes are `bin`, text is `str`, no maps, no floats. There is one
// encoding per value, so a hash is SHA-256 of those bytes. We decode with @msgpack/msgpack,
// re-encode, and refuse any input whose re-encoding differs: what we then hash is exactly
// what the Python node hashed.

import { createHash, createPublicKey, verify as verifySignature } from 'node:crypto'
import { Decoder, Encoder } from '@msgpack/msgpack'

export const HASH_SIZE = 32
export const ZERO_HASH = new Uint8Array(HASH_SIZE)
export const KIND_PROBLEM = 0
export const KIND_IMPROVEMENT = 1
export const DOMAIN_HEADER = 'daimon/header/v1'
// BlockHeader fields, in encoding order (chain/types.py BlockHeader.FIELDS).
export const HEADER_FIELDS = ['chain_id', 'height', 'parent', 'kind', 'period', 'timestamp', 'committer',
  'body_hash', 'state_root', 'signature']
// An Ed25519 public key in SubjectPublicKeyInfo DER is this prefix, then the 32 raw bytes.
const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex')

// uint64/int64 values come back as BigInt (and go out as 8-byte ints again): exact round trips.
const decoder = new Decoder({ useBigInt64: true })
const encoder = new Encoder({ useBigInt64: true })

export class WireError extends Error {}

export function sha256 (data) {
  return new Uint8Array(createHash('sha256').update(data).digest())
}

export function hex (bytes) {
  return Buffer.from(bytes).toString('hex')
}

export function equalBytes (a, b) {
  return a.length === b.length && Buffer.compare(Buffer.from(a), Buffer.from(b)) === 0
}

export function pack (obj) {
  return encoder.encode(obj)
}

/** One msgpack value from `data`; a WireError unless `data` is exactly its canonical encoding. */
export function unpackCanonical (data) {
  let obj
  try {
    obj = decoder.decode(data)
  } catch (err) {
    throw new WireError(`malformed msgpack: ${err.message}`)
  }
  if (!equalBytes(pack(obj), data)) {
    throw new WireError('non-canonical msgpack')
  }
  return obj
}

function expectBytes (value, name, length) {
  if (!(value instanceof Uint8Array) || (length !== undefined && value.length !== length)) {
    throw new WireError(`${name} must be ${length ?? 'some'} bytes`)
  }
  return value
}

function expectInt (value, name) {
  if (typeof value === 'bigint') {
    if (value > BigInt(Number.MAX_SAFE_INTEGER) || value < 0n) {
      throw new WireError(`${name} ${value} out of range`)
    }
    return Number(value)
  }
  if (!Number.isInteger(value) || value < 0) {
    throw new WireError(`${name} must be an unsigned integer`)
  }
  return value
}

/**
 * A block, `[header, [kind, body fields]]`, decoded and checked on its own:
 * canonical bytes, header shape, body hash, the committer's signature, and for the
 * Problem block that the proposal hashes to the chain id. Returns its header, hash
 * (SHA-256 of the encoded header) and raw header fields.
 */
export function decodeBlock (data) {
  const block = unpackCanonical(data)
  if (!Array.isArray(block) || block.length !== 2) {
    throw new WireError('a block is a 2-item array [header, body]')
  }
  const [headerFields, body] = block
  if (!Array.isArray(headerFields) || headerFields.length !== HEADER_FIELDS.length) {
    throw new WireError(`a header has ${HEADER_FIELDS.length} fields`)
  }
  const header = Object.fromEntries(HEADER_FIELDS.map((name, i) => [name, headerFields[i]]))
  for (const name of ['chain_id', 'parent', 'body_hash', 'state_root']) expectBytes(header[name], name, HASH_SIZE)
  expectBytes(header.committer, 'committer', 32)
  expectBytes(header.signature, 'signature', 64)
  for (const name of ['height', 'kind', 'period', 'timestamp']) header[name] = expectInt(header[name], name)
  if (!Array.isArray(body) || body.length !== 2 || body[0] !== header.kind) {
    throw new WireError('a body is [kind, fields] with the header\'s kind')
  }
  if (!equalBytes(sha256(pack(body)), header.body_hash)) {
    throw new WireError(`body hash mismatch at height ${header.height}`)
  }
  if (!isValidHeaderSignature(headerFields)) {
    throw new WireError(`bad committer signature at height ${header.height}`)
  }
  if (header.kind === KIND_PROBLEM) {
    const proposal = body[1][0]
    if (!equalBytes(sha256(pack(proposal)), header.chain_id)) {
      throw new WireError('the Problem block\'s proposal does not hash to the chain id')
    }
  }
  return { header, hash: sha256(pack(headerFields)), size: data.length }
}

/**
 * What the committer signed (chain/signing.py): one length byte and the domain tag, the
 * chain id, then the encoded array of every header field but the signature.
 */
export function headerSigningBytes (headerFields) {
  const domain = Buffer.from(DOMAIN_HEADER)
  const unsigned = pack(headerFields.slice(0, -1))
  return Buffer.concat([Buffer.from([domain.length]), domain, headerFields[0], unsigned])
}

function isValidHeaderSignature (headerFields) {
  const committer = headerFields[6]
  const signature = headerFields[9]
  const key = createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, committer]), format: 'der', type: 'spki' })
  return verifySignature(null, headerSigningBytes(headerFields), key, signature)
}

/**
 * Check that `blocks` (decoded, heights 0..n-1) form one chain of `chainId`: each at its
 * height, the first with the zero parent, every other naming its predecessor's hash.
 */
export function verifyHashChain (blocks, chainId) {
  blocks.forEach((block, height) => {
    const { header } = block
    if (!equalBytes(header.chain_id, chainId)) throw new WireError(`block ${height} is of another chain`)
    if (header.height !== height) throw new WireError(`block at position ${height} says height ${header.height}`)
    const parent = height === 0 ? ZERO_HASH : blocks[height - 1].hash
    if (!equalBytes(header.parent, parent)) {
      throw new WireError(`block ${height}'s parent ${hex(header.parent)} is not ${hex(parent)}`)
    }
    if ((height === 0) !== (header.kind === KIND_PROBLEM)) {
      throw new WireError(`block ${height} has kind ${header.kind}`)
    }
  })
}
