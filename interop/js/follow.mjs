#!/usr/bin/env node
// A standard js-libp2p peer following one DaiMoN chain (docs/wire.md).
//
//   node follow.mjs --peer /ip4/127.0.0.1/tcp/4001/p2p/12D3KooW... --chain <64 hex> \
//                   [--blocks 3] [--timeout 120] [--settle 10]
//
// Dials the node (TCP, Noise, Yamux, identify), subscribes to /daimon/<chain>/blocks over
// GossipSub (strict signing, message id = SHA-256 of the data) and checks every block that
// arrives; once `--blocks` blocks came over gossip it asks the node for its head over
// /daimon/sync/1, fetches the chain from genesis, checks that the hashes chain (and every
// block's body hash and committer signature), and that every gossip block is the synced
// block at its height. Progress goes to stderr as JSON lines ({"event": "subscribed"} once
// the node is in our mesh); the summary is one JSON line on stdout. Exit 0 when everything
// matched, 1 on a mismatch or a protocol error, 2 on a bad command line, 3 on the timeout.

import './lib/node20.mjs' // first: a polyfill the dependencies below need on Node 20
import { parseArgs } from 'node:util'
import { createLibp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { gossipsub } from '@chainsafe/libp2p-gossipsub'
import { multiaddr } from '@multiformats/multiaddr'
import { WireError, decodeBlock, equalBytes, hex, sha256, verifyHashChain } from './lib/codec.mjs'
import { fetchRange, requestHead } from './lib/sync.mjs'

const EXIT_MISMATCH = 1
const EXIT_USAGE = 2
const EXIT_TIMEOUT = 3
const POLL_MS = 100 // how often waits look at what has arrived
const STOP_GRACE_MS = 5000 // past --timeout, what stopping libp2p may take before we exit regardless

function parseCommandLine () {
  const { values } = parseArgs({
    options: {
      peer: { type: 'string' },
      chain: { type: 'string' },
      blocks: { type: 'string', default: '3' },
      timeout: { type: 'string', default: '120' },
      settle: { type: 'string', default: '10' }
    }
  })
  const chain = (values.chain ?? '').replace(/^0x/, '')
  if (!values.peer || !/^[0-9a-f]{64}$/.test(chain)) {
    throw new Error('usage: follow.mjs --peer <multiaddr with /p2p/> --chain <64 hex> [--blocks N] [--timeout S] [--settle S]')
  }
  const numbers = Object.fromEntries(['blocks', 'timeout', 'settle'].map((k) => [k, Number(values[k])]))
  if (!Number.isInteger(numbers.blocks) || numbers.blocks < 1 || !(numbers.timeout > 0) || !(numbers.settle >= 0)) {
    throw new Error('--blocks is a positive integer, --timeout a positive and --settle a non-negative number of seconds')
  }
  return { peer: values.peer, chainId: Uint8Array.from(Buffer.from(chain, 'hex')), ...numbers }
}

function progress (event, fields = {}) {
  process.stderr.write(JSON.stringify({ event, ...fields }) + '\n')
}

async function startNode () {
  return createLibp2p({
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: {
      identify: identify(),
      pubsub: gossipsub({
        globalSignaturePolicy: 'StrictSign', // the node drops unsigned messages, and signs its own
        msgIdFn: (msg) => sha256(msg.data), // the node's message id: duplicates collapse by content
        fallbackToFloodsub: false,
        emitSelf: false
      })
    }
  })
}

/** Wait until `ready()` or the signal aborts (then throw its reason). */
async function until (ready, signal) {
  while (!ready()) {
    signal.throwIfAborted()
    await new Promise((resolve) => setTimeout(resolve, POLL_MS))
  }
}

/** Resolve after `ms`, or earlier once `ready()`; never throws. */
async function settle (ready, ms) {
  const deadline = Date.now() + ms
  while (!ready() && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, POLL_MS))
}

async function follow (args, summary, signal) {
  const node = await startNode()
  summary.own_peer_id = node.peerId.toString()
  try {
    const target = multiaddr(args.peer)
    const peerId = target.getPeerId()
    const connection = await node.dial(target, { signal })
    const topic = `/daimon/${hex(args.chainId)}/blocks`
    const gossip = new Map() // height -> { hash, from }
    let gossipError = null
    node.services.pubsub.addEventListener('message', (evt) => {
      const msg = evt.detail
      if (msg.topic !== topic) return
      try {
        const block = decodeBlock(msg.data)
        if (!equalBytes(block.header.chain_id, args.chainId)) throw new WireError('a block of another chain')
        gossip.set(block.header.height, { hash: block.hash, from: msg.type === 'signed' ? msg.from.toString() : null })
        progress('block', { height: block.header.height, hash: hex(block.hash), bytes: block.size })
      } catch (err) {
        gossipError = gossipError ?? `gossip block: ${err.message}`
      }
    })
    node.services.pubsub.subscribe(topic)
    await until(() => node.services.pubsub.getMeshPeers(topic).includes(peerId), signal)
    summary.subscribed_after_s = summary.elapsed()
    const remote = await node.peerStore.get(connection.remotePeer) // what identify told us
    summary.node_protocols = remote.protocols.filter((p) => p.startsWith('/daimon/') || p.startsWith('/meshsub/') || p.startsWith('/ipfs/kad/'))
    progress('subscribed', { topic, peer: peerId, connection: connection.remoteAddr.toString(),
      encryption: connection.encryption, multiplexer: connection.multiplexer, protocols: summary.node_protocols })

    await until(() => gossip.size >= args.blocks || gossipError !== null, signal)
    if (gossipError) throw new WireError(gossipError)

    // Sync from genesis to the node's head; again if gossip has meanwhile gone past it.
    const synced = []
    for (;;) {
      const head = await requestHead(connection, args.chainId, signal)
      if (head === null) throw new WireError('the node has no block of this chain')
      const blocks = await fetchRange(connection, args.chainId, synced.length, head.height, signal)
      synced.push(...blocks.map(decodeBlock))
      verifyHashChain(synced, args.chainId)
      if (!equalBytes(synced[head.height].hash, head.hash)) throw new WireError('the synced head is not the head announced')
      if (Math.max(...gossip.keys()) <= head.height) break
    }
    const syncHeight = synced.length - 1
    // The node publishes a block once it has it, so its gossip copy reaches us a moment after
    // the head could name it: give gossip up to --settle seconds to deliver every height we
    // synced after the first one it brought.
    const firstGossip = Math.min(...gossip.keys())
    const gossipComplete = () => { for (let h = firstGossip; h <= syncHeight; h++) if (!gossip.has(h)) return false; return true }
    await settle(gossipComplete, args.settle * 1000)
    if (gossipError) throw new WireError(gossipError)
    for (const [height, { hash }] of gossip) {
      if (height > syncHeight || !equalBytes(synced[height].hash, hash)) {
        throw new WireError(`the gossip block at height ${height} is not the synced one`)
      }
    }
    Object.assign(summary, {
      gossip_blocks: gossip.size,
      gossip: [...gossip.entries()].sort((a, b) => a[0] - b[0]).map(([h, b]) => [h, hex(b.hash)]),
      gossip_complete: gossipComplete(),
      sync_height: syncHeight,
      head_hash: hex(synced[syncHeight].hash),
      synced_bytes: synced.reduce((n, b) => n + b.size, 0),
      verified: true
    })
    if (!summary.gossip_complete) throw new WireError(`gossip missed a block between heights ${firstGossip} and ${syncHeight}`)
  } finally {
    await node.stop()
  }
}

async function main () {
  let args
  try {
    args = parseCommandLine()
  } catch (err) {
    process.stderr.write(err.message + '\n')
    return EXIT_USAGE
  }
  const started = performance.now()
  const summary = { ok: false, peer: args.peer, chain: hex(args.chainId), gossip_blocks: 0, sync_height: null,
    head_hash: null, verified: false, elapsed_s: 0, elapsed: () => Math.round(performance.now() - started) / 1000 }
  const signal = AbortSignal.timeout(args.timeout * 1000)
  // Every wait honours `signal`; this backstop bounds the run even if a library call does not.
  setTimeout(() => {
    process.stdout.write(JSON.stringify({ ...summary, elapsed: undefined, elapsed_s: summary.elapsed(),
      error: 'did not stop after the timeout' }) + '\n')
    process.exit(EXIT_TIMEOUT)
  }, args.timeout * 1000 + STOP_GRACE_MS).unref()
  let code = 0
  try {
    await follow(args, summary, signal)
    summary.ok = true
  } catch (err) {
    summary.error = err.message
    code = signal.aborted ? EXIT_TIMEOUT : EXIT_MISMATCH
  }
  summary.elapsed_s = summary.elapsed()
  delete summary.elapsed
  process.stdout.write(JSON.stringify(summary) + '\n')
  return code
}

process.exitCode = await main()
