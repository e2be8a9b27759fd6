// Node 20 lacks Promise.withResolvers (ES2024, Node >= 22), which some small dependencies of
// js-libp2p 2.x call (abort-error, it-queue, mortice: every published version of abort-error
// does). It is three lines of standard behaviour; define it before any of them loads, which
// follow.mjs ensures by importing this module first (ES modules evaluate in import order).
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers () {
    let resolve, reject
    const promise = new this((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}
