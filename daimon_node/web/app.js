// The node's web page: plain JS, no build step, no network beyond this node.
"use strict";
const $ = (id) => document.getElementById(id);
let rpcId = 0, chain = null, ws = null, data = null, refreshTimer = null;

async function rpc(method, params = []) {
  const r = await fetch("/", {method: "POST", headers: {"content-type": "application/json"},
    body: JSON.stringify({jsonrpc: "2.0", id: ++rpcId, method, params})});
  const j = await r.json();
  if (j.error) throw new Error(method + ": " + j.error.message);
  return j.result;
}

const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));
const short = (h) => h ? `<span class="mono" title="${esc(h)}">${esc(h.slice(0, 10))}…</span>` : "—";
function amount(s) {
  const d = (data && data.problem.decimals) || 0;
  const v = BigInt(s), base = 10n ** BigInt(d);
  const frac = (v % base).toString().padStart(d, "0").slice(0, 4).replace(/0+$/, "");
  if (v > 0n && v / base === 0n && !frac) return v.toString() + " base units";
  return (v / base).toString() + (frac ? "." + frac : "");
}
const dist = (ppb) => (ppb / 1e9).toFixed(4);
function table(el, head, rows, empty) {
  el.innerHTML = "<tr>" + head.map((h) => `<th>${h}</th>`).join("") + "</tr>" +
    (rows.length ? rows.map((r) => "<tr>" + r.map((c) => `<td>${c}</td>`).join("") + "</tr>").join("")
                 : `<tr><td colspan="${head.length}">${empty}</td></tr>`);
}

function chart(history) {
  const W = 900, H = 260, L = 60, R = 20, T = 15, B = 35;
  if (!history.length) { $("chart").textContent = "No settled improvement yet."; return; }
  const xs = history.map((p) => p.height), ys = history.map((p) => p.distance_ppb / 1e9);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
  const y0 = Math.max(0, Math.min(...ys) - 0.05), y1 = Math.min(1, Math.max(...ys) + 0.02);
  const X = (x) => L + (x - x0) / (x1 - x0) * (W - L - R), Y = (y) => T + (y1 - y) / ((y1 - y0) || 1) * (H - T - B);
  let path = "", pts = "";
  history.forEach((p, i) => {
    const x = X(p.height), y = Y(p.distance_ppb / 1e9);
    if (i) path += ` H${x.toFixed(1)}`;
    path += `${i ? " V" : "M" + x.toFixed(1) + " "}${y.toFixed(1)}`;
    pts += `<circle cx="${x.toFixed(1)}" cy="${y.toFixed(1)}" r="4" fill="#2a6ad4"><title>height ${p.height}, period ${p.period}: d = ${dist(p.distance_ppb)}</title></circle>`;
  });
  path += ` H${X(x1).toFixed(1)}`;
  let axes = `<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="#999"/><line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="#999"/>`;
  for (let k = 0; k <= 4; k++) {
    const v = y0 + (y1 - y0) * k / 4;
    axes += `<text x="${L - 6}" y="${Y(v) + 4}" text-anchor="end">${v.toFixed(3)}</text><line x1="${L}" x2="${W - R}" y1="${Y(v)}" y2="${Y(v)}" stroke="#eee"/>`;
  }
  const ticks = [...new Set([x0, Math.round((x0 + x1) / 2), x1])];
  ticks.forEach((t) => { axes += `<text x="${X(t)}" y="${H - B + 16}" text-anchor="middle">${t}</text>`; });
  axes += `<text x="${(L + W - R) / 2}" y="${H - 4}" text-anchor="middle">block height</text>`;
  axes += `<text x="14" y="${(T + H - B) / 2}" transform="rotate(-90 14 ${(T + H - B) / 2})" text-anchor="middle">best distance d_c</text>`;
  $("chart").innerHTML = `<svg id="chart-svg" viewBox="0 0 ${W} ${H}" width="100%" height="${H}">${axes}<path d="${path}" fill="none" stroke="#2a6ad4" stroke-width="2"/>${pts}</svg>`;
}

function render() {
  const d = data, p = d.problem;
  $("title").textContent = `${d.name} — ${p.token_symbol}`;
  const per = d.period || {period: 0, remaining: 0};
  const facts = [
    ["Chain", short(d.chain)], ["Height", d.height], ["Period", per.period],
    ["Time left", `<span id="left">${Math.round(per.remaining)}</span> s`],
    ["Best distance", d.best ? dist(d.best.distance_ppb) : "none yet"],
    ["Best model", d.best ? short(d.best.model_digest) : "—"],
    ["Minted", amount(d.minted) + " " + esc(p.token_symbol)], ["Burned", amount(d.burned)],
    ["Period length", p.t_b + " s"], ["Input", esc(p.input_dtype) + "[" + p.input_shape.join("×") + "]"],
  ];
  $("facts").innerHTML = `<div class="facts">${facts.map(([k, v]) => `<div class="fact">${k}<b>${v}</b></div>`).join("")}</div>`;
  chart(d.history);
  table($("improvers"), ["Improver", "Improvements", "Rewards"],
    d.improvers.map((i) => [short(i.address), i.improvements, amount(i.rewards)]), "none yet");
  table($("validators"), ["Validator", "Paid votes", "Rewards"],
    d.validators.map((v) => [short(v.address), v.votes, amount(v.rewards)]), "none yet");
  table($("offers"), ["Runner", "Price / call", "Model", "Current", "Reputation", "Peer"],
    d.offers.map((o) => [short(o.provider), amount(o.price), short(o.model_digest), o.current ? "yes" : "<b>stale</b>",
                         `${o.reputation} (${o.ratings})`, short(o.peer_id)]), "no runner offers inference yet");
  table($("reputation"), ["Participant", "Score", "Up", "Down"],
    d.reputation.map((r) => [short(r.address), r.score, r.up, r.down]), "no ratings yet");
  table($("blocks"), ["Height", "Period", "Kind", "Committer", "Txs", "Proof anchored (votes)", "Settlement", "Rewards paid"],
    d.blocks.map((b) => {
      const a = b.anchor, s = b.settlement;
      const anchor = a ? `PoI ${short(a.poi)} by ${short(a.prover)}, model ${short(a.model_digest)}<br>${a.votes.length} votes: ${a.votes.map(short).join(" ")}` : "—";
      const settle = s && typeof s === "object" ? `<span class="${esc(s.outcome)}">${esc(s.outcome)}</span> ${short(s.poi)}` +
        (s.distances_ppb.length ? ` d=${s.distances_ppb.map(dist).join(",")}` : "") + (s.reason ? ` (${esc(s.reason)})` : "") : "—";
      const paid = s && typeof s === "object" && s.outcome === "settled" ?
        `improver ${amount(s.reward)}; ${s.validator_rewards.length} validators ${amount(s.validator_rewards.reduce((t, [, r]) => t + BigInt(r), 0n).toString())}` : "—";
      return [b.height, b.period, b.kind, short(b.committer), (b.transactions || []).length, anchor, settle, paid];
    }), "no blocks yet");
  document.body.dataset.ready = "1";
}

// Locked funds of one address (daimon_getLocks): the facts of `daimon-node status --address`.
let lockAddress = null;
function lockReason(part) {
  const s = part.season;
  switch (part.kind) {
    case "validator_bond": return "validator bond, active";
    case "unbonding": return "validator bond, unbonding";
    case "channel_deposit": return "channel deposit to runner " + short(part.ref);
    case "season_reward": return `reward locked in season ${s}: vests or burns at its holdout reveal`;
    case "improver_bond": return "improver bond, held until " + (s === null ? "the settlement" : `season ${s}'s holdout reveal`) +
      "; burned if the proof fails";
    case "contributor_bond": return `contributor bond behind season ${s}'s sealed holdout`;
    default: return esc(part.kind);
  }
}
function lockFreeFrom(part, period, unbonding) {
  if (part.free_from === null) return `${unbonding} periods after <code>validator unbond</code>`;
  return part.free_from <= period ? `now (from period ${part.free_from})` : `from period ${part.free_from}`;
}
function lockAction(part) {
  if (part.kind === "validator_bond") return "<code>daimon-node validator unbond</code>, then <code>validator withdraw</code>";
  if (!part.action) return "the chain, by itself";
  return `<code>daimon-node ${esc(part.action)}${part.kind === "channel_deposit" ? " --runner " + esc(part.ref) : ""}</code>`;
}
async function showLocks() {
  if (!chain || !lockAddress) return;
  try {
    const l = await rpc("daimon_getLocks", [chain, lockAddress]), sym = esc(data.problem.token_symbol);
    const unbonding = (await rpc("daimon_getProblem", [chain])).params.unbonding_periods;
    $("locks-summary").innerHTML = `<p id="locks-account">${short(l.address)} at period ${l.period}: spendable ` +
      `<b>${amount(l.spendable)} ${sym}</b>, locked <b>${amount(l.locked)} ${sym}</b></p>`;
    table($("locks"), ["Amount", "Locked as", "Can come back", "Returned by"],
      l.parts.map((p) => [`<span class="lock-amount" data-units="${esc(p.amount)}">${amount(p.amount)} ${sym}</span>`,
                          lockReason(p), lockFreeFrom(p, l.period, unbonding), lockAction(p)]), "nothing locked");
  } catch (e) { $("locks-summary").textContent = "Error: " + e.message; $("locks").innerHTML = ""; }
  document.body.dataset.locks = lockAddress;
}

async function refresh() {
  if (!chain) return;
  try { data = await rpc("daimon_dashboard", [chain]); render(); await showLocks(); }
  catch (e) { $("title").textContent = "Error: " + e.message; }
}

function subscribe() {
  if (ws) ws.close();
  ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
  ws.onopen = () => { $("live").textContent = "live"; $("live").className = "pill on";
    ws.send(JSON.stringify({jsonrpc: "2.0", id: 1, method: "daimon_subscribe", params: ["newHeads", chain]})); };
  ws.onmessage = (ev) => { const m = JSON.parse(ev.data);
    if (m.method === "daimon_subscription") { clearTimeout(refreshTimer); refreshTimer = setTimeout(refresh, 200); } };
  ws.onclose = () => { $("live").textContent = "offline"; $("live").className = "pill off"; setTimeout(subscribe, 3000); };
}

async function main() {
  try { const info = await rpc("daimon_nodeInfo"); $("node").textContent = info.peer_id.slice(0, 16) + "… · " + info.peers + " peers"; } catch (e) {}
  const problems = (await rpc("daimon_listProblems")).filter((p) => p.followed !== false);
  $("problems").innerHTML = problems.map((p) => `<option value="${p.chain}">${esc(p.name)} (${p.chain.slice(0, 10)}…)</option>`).join("");
  const query = new URLSearchParams(location.search), want = query.get("chain");
  lockAddress = query.get("address");
  if (lockAddress) $("lock-address").value = lockAddress;
  $("locks-form").onsubmit = (ev) => { ev.preventDefault(); lockAddress = $("lock-address").value.trim(); showLocks(); };
  chain = want || (problems[0] && problems[0].chain);
  if (chain) $("problems").value = chain;
  $("problems").onchange = () => { chain = $("problems").value; refresh(); subscribe(); };
  if (!chain) { $("title").textContent = "No problem followed yet"; return; }
  await refresh();
  subscribe();
  setInterval(() => { const el = $("left"); if (el && +el.textContent > 0) el.textContent = +el.textContent - 1; }, 1000);
}
main();
