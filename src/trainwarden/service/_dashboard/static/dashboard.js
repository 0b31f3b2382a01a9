"use strict";
// The run page's checks, done here in the browser with WebCrypto so that what the page calls
// "verified" rests on the log's Ed25519 key and SHA-256, not on the server's word about a row:
// each timeline entry's bytes are hashed into an RFC 9162 inclusion proof that must end at the
// root of the latest checkpoint, whose signature is checked against the key this browser pinned.
(function () {
  const enc = new TextEncoder();
  const fromB64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
  const toB64 = (u) => btoa(String.fromCharCode(...u));
  const hex = (u) => Array.from(u, (b) => b.toString(16).padStart(2, "0")).join("");
  const odd = (n) => n % 2 === 1;
  const half = (n) => Math.floor(n / 2);

  async function sha256(...parts) {
    let len = 0;
    for (const p of parts) len += p.length;
    const buf = new Uint8Array(len);
    let o = 0;
    for (const p of parts) { buf.set(p, o); o += p.length; }
    return new Uint8Array(await crypto.subtle.digest("SHA-256", buf));
  }
  const leafHash = (entry) => sha256(Uint8Array.of(0), entry);
  const nodeHash = (l, r) => sha256(Uint8Array.of(1), l, r);
  const same = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

  async function rootFromInclusion(index, size, leaf, proof) {
    if (!(index >= 0 && index < size)) throw new Error("index outside the tree");
    let fn = index, sn = size - 1, r = leaf;
    for (const p of proof) {
      if (sn === 0) throw new Error("proof too long");
      if (odd(fn) || fn === sn) {
        r = await nodeHash(p, r);
        if (!odd(fn)) { while (!odd(fn) && fn !== 0) { fn = half(fn); sn = half(sn); } }
      } else {
        r = await nodeHash(r, p);
      }
      fn = half(fn); sn = half(sn);
    }
    if (sn !== 0) throw new Error("proof too short");
    return r;
  }

  async function verifyConsistency(first, second, r1, r2, proof) {
    if (first > second) throw new Error("the log shrank: " + first + " > " + second);
    if (first === second) {
      if (proof.length || !same(r1, r2)) throw new Error("two roots for size " + first);
      return;
    }
    if (first === 0) return;
    if (!proof.length) throw new Error("empty consistency proof");
    const path = proof.slice();
    if (Number.isInteger(Math.log2(first))) path.unshift(r1);
    let fn = first - 1, sn = second - 1;
    while (odd(fn)) { fn = half(fn); sn = half(sn); }
    let fr = path[0], sr = path[0];
    for (const c of path.slice(1)) {
      if (sn === 0) throw new Error("consistency proof too long");
      if (odd(fn) || fn === sn) {
        fr = await nodeHash(c, fr); sr = await nodeHash(c, sr);
        if (!odd(fn)) { while (!odd(fn) && fn !== 0) { fn = half(fn); sn = half(sn); } }
      } else {
        sr = await nodeHash(sr, c);
      }
      fn = half(fn); sn = half(sn);
    }
    if (sn !== 0) throw new Error("consistency proof too short");
    if (!same(fr, r1) || !same(sr, r2)) throw new Error("consistency proof does not match the roots");
  }

  async function parseVkey(vkey) {
    const v = vkey.trim();
    const i = v.indexOf("+"), j = v.indexOf("+", i + 1);
    if (i < 1 || j < 0) throw new Error("malformed log key");
    const name = v.slice(0, i), h = v.slice(i + 1, j), b64 = v.slice(j + 1);
    const raw = fromB64(b64);
    if (raw.length !== 33 || raw[0] !== 1) throw new Error("log key is not Ed25519");
    const kh = (await sha256(enc.encode(name + "\n"), raw)).slice(0, 4);
    if (hex(kh) !== h.toLowerCase()) throw new Error("log key hash mismatch");
    const key = await crypto.subtle.importKey("raw", raw.slice(1), { name: "Ed25519" }, false, ["verify"]);
    return { name, keyHash: kh, key };
  }

  // Returns {origin, size, root} of a C2SP signed note carrying a valid signature by vk.
  async function openNote(note, vk) {
    const cut = note.indexOf("\n\n");
    if (cut < 0 || !note.endsWith("\n")) throw new Error("note has no signature block");
    const body = note.slice(0, cut + 1);
    const lines = body.split("\n");
    const [origin, sizeS, rootS] = lines;
    if (origin !== vk.name) throw new Error("checkpoint is for another log");
    if (!/^(0|[1-9][0-9]*)$/.test(sizeS)) throw new Error("bad checkpoint size");
    const root = fromB64(rootS);
    if (root.length !== 32) throw new Error("bad checkpoint root");
    let good = false;
    for (const line of note.slice(cut + 2, -1).split("\n")) {
      if (!line.startsWith("\u2014 ")) throw new Error("malformed signature line");
      const sp = line.indexOf(" ", 2);
      if (line.slice(2, sp) !== vk.name) continue;
      const raw = fromB64(line.slice(sp + 1));
      if (raw.length !== 68 || !same(raw.slice(0, 4), vk.keyHash)) continue;
      const ok = await crypto.subtle.verify({ name: "Ed25519" }, vk.key, raw.slice(4), enc.encode(body));
      if (!ok) throw new Error("checkpoint signature does not verify");
      good = true;
    }
    if (!good) throw new Error("checkpoint carries no signature by the pinned key");
    return { origin, size: Number(sizeS), root };
  }

  async function getJSON(url) {
    const r = await fetch(url, { credentials: "same-origin", cache: "no-store" });
    if (!r.ok) throw new Error(url.split("?")[0] + " answered " + r.status);
    return r.json();
  }

  function mark(el, ok, text, why) {
    el.textContent = text;
    el.className = el.className.replace(/\b(pending|ok|bad)\b/g, "").trim() + (ok === null ? " pending" : ok ? " ok" : " bad");
    if (why) el.title = why;
  }

  // A record a sink could not store canonically is kept as {"noncanonical": "<JSON text>"}
  // (see the server's model.unwrap); read the fields the row shows from that text.
  function unwrap(rec) {
    const t = rec.noncanonical;
    if (Object.keys(rec).length !== 1 || typeof t !== "string") return rec;
    const out = {};
    const re = /"(rule_id|step)": ("(?:[^"\\]|\\.)*"|-?\d+)/g;
    let m;
    while ((m = re.exec(t)) !== null) if (!(m[1] in out)) out[m[1]] = JSON.parse(m[2]);
    return out;
  }

  async function checkEntry(row, cp) {
    const el = row.querySelector(".verify");
    const index = Number(row.dataset.index);
    if (index >= cp.size) { mark(el, null, "pending (not yet in a signed checkpoint)"); return; }
    try {
      const p = await getJSON("/ui/api/proof?index=" + index + "&size=" + cp.size);
      const entry = fromB64(p.entry);
      const root = await rootFromInclusion(index, cp.size, await leafHash(entry), p.proof.map(fromB64));
      if (!same(root, cp.root)) throw new Error("inclusion proof does not lead to the signed root");
      // The row shown must be what the verified bytes say.
      const doc = JSON.parse(new TextDecoder().decode(entry));
      const rec = unwrap(doc.record || {});
      const want = [[doc.index, index], [doc.kind, row.dataset.kind]];
      if (doc.kind === "alert") {
        want.push([rec.rule_id, row.dataset.rule]);
        want.push([rec.step === undefined || rec.step === null ? "" : String(rec.step), row.dataset.step]);
      }
      for (const [got, exp] of want) if (String(got) !== String(exp)) throw new Error("entry bytes disagree with the row shown");
      mark(el, true, "verified \u2713", "entry " + index + " is in the signed tree of size " + cp.size);
    } catch (e) {
      mark(el, false, "NOT VERIFIED \u2717", String(e.message || e));
    }
  }

  async function ledgerStatus() {
    const sig = document.getElementById("cp-sig");
    const cons = document.getElementById("cp-consistency");
    let cp;
    try {
      const got = await getJSON("/ui/api/checkpoint");
      const pinKey = "tw.vkey." + got.origin;
      const pinned = localStorage.getItem(pinKey);
      document.getElementById("cp-key").textContent = pinned || got.vkey;
      if (pinned && pinned !== got.vkey) throw new Error("the log's key changed since this browser pinned it");
      const vk = await parseVkey(pinned || got.vkey);
      cp = await openNote(got.note, vk);
      if (!pinned) {
        localStorage.setItem(pinKey, got.vkey);
        document.getElementById("cp-pin").textContent = "(pinned on first use: compare it with the server's ledger.vkey)";
      } else {
        document.getElementById("cp-pin").textContent = "(pinned)";
      }
      document.getElementById("cp-size").textContent = String(cp.size);
      document.getElementById("cp-root").textContent = toB64(cp.root);
      mark(sig, true, "valid Ed25519 signature \u2713");
    } catch (e) {
      mark(sig, false, "INVALID \u2717 " + (e.message || e));
      mark(cons, false, "not checked");
      for (const row of document.querySelectorAll("tr.alert-row")) mark(row.querySelector(".verify"), false, "NOT VERIFIED \u2717", "no trusted checkpoint");
      return null;
    }
    const seenKey = "tw.cp." + cp.origin;
    try {
      const seen = JSON.parse(localStorage.getItem(seenKey) || "null");
      if (!seen) {
        mark(cons, null, "first checkpoint seen by this browser (size " + cp.size + ")");
      } else {
        const first = Number(seen.size), r1 = fromB64(seen.root);
        if (first > cp.size) throw new Error("the log shrank from " + first + " to " + cp.size + " entries");
        const proof = first === cp.size || first === 0 ? { proof: [] } :
          await getJSON("/ui/api/consistency?first=" + first + "&second=" + cp.size);
        await verifyConsistency(first, cp.size, r1, cp.root, proof.proof.map(fromB64));
        mark(cons, true, "consistent with size " + first + " seen earlier \u2713");
      }
      localStorage.setItem(seenKey, JSON.stringify({ size: cp.size, root: toB64(cp.root) }));
    } catch (e) {
      // The old checkpoint stays stored: a forked log must keep failing here.
      mark(cons, false, "INCONSISTENT \u2717 " + (e.message || e));
    }
    return cp;
  }

  const TITLES = { loss: "Loss", grad_norm: "Gradient norm", step_s: "Step time (s)", forward: "Forward phase (s)", backward: "Backward phase (s)", optimizer: "Optimizer phase (s)" };

  function drawCharts() {
    const holder = document.getElementById("charts");
    const data = JSON.parse(document.getElementById("plot-data").textContent);
    const alerts = data.alerts || [];
    for (const metric of Object.keys(TITLES)) {
      const m = data.metrics[metric];
      if (!m) continue;
      const box = document.createElement("div");
      box.className = "chart";
      box.id = "chart-" + metric;
      box.dataset.metric = metric;
      const h = document.createElement("h3");
      h.textContent = TITLES[metric] + " \u2014 " + m.ranks.length + " rank(s), " + m.x.length + " of " + m.points + " steps sent";
      box.appendChild(h);
      holder.appendChild(box);
      const pos = new Map(m.x.map((s, i) => [s, i]));
      const marks = new Array(m.x.length).fill(null);
      const listed = [];
      for (const a of alerts) {
        const i = pos.get(a.step);
        if (i === undefined) continue;
        let j = m.ranks.indexOf(a.rank);
        let y = j >= 0 ? m.y[j][i] : null;
        if (y === null || y === undefined) { for (const col of m.y) if (col[i] !== null) { y = col[i]; break; } }
        if (y === null || y === undefined) continue;
        marks[i] = y;
        listed.push(a.rule + " at step " + a.step + (a.rank === null ? "" : " on rank " + a.rank));
      }
      const series = [{ label: "step" }];
      m.ranks.forEach((r, k) => series.push({ label: "rank " + r, stroke: "hsl(" + (90 + (k * 53) % 200) + ",55%,42%)", width: 1, points: { show: false } }));
      series.push({ label: "alerts", stroke: "#dd0000", fill: "#dd0000", width: 0, paths: () => null, points: { show: true, size: 11, stroke: "#dd0000", fill: "#dd0000" } });
      const opts = {
        width: Math.max(400, holder.clientWidth - 10), height: 240,
        scales: { x: { time: false } },
        legend: { show: m.ranks.length <= 8 },
        series,
        hooks: { draw: [(u) => {
          const px = [];
          for (let i = 0; i < marks.length; i++) {
            if (marks[i] !== null) px.push([Math.round(u.valToPos(m.x[i], "x", true)), Math.round(u.valToPos(marks[i], "y", true))]);
          }
          box.dataset.markers = String(px.length);
          box.dataset.markerPx = JSON.stringify(px);
        }] },
      };
      new uPlot(opts, [m.x, ...m.y, marks], box);
      const ul = document.createElement("p");
      ul.className = "markers";
      ul.textContent = listed.length ? "Alerts marked: " + listed.join("; ") : "";
      box.appendChild(ul);
    }
  }

  async function main() {
    if (!document.getElementById("plot-data")) return;
    try { drawCharts(); } catch (e) { document.getElementById("charts").textContent = "plots failed: " + e; }
    const cp = await ledgerStatus();
    if (cp) {
      const rows = Array.from(document.querySelectorAll("tr.alert-row"));
      for (let i = 0; i < rows.length; i += 8) await Promise.all(rows.slice(i, i + 8).map((r) => checkEntry(r, cp)));
    }
    document.body.dataset.checked = "1";
  }
  document.addEventListener("DOMContentLoaded", main);
})();
