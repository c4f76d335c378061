"""The report page template (HTML + inline CSS + inline JS); ``html.write_html`` fills ``__TITLE__`` and
``__DATA__``. No external resources: the page works from a file:// URL with no network."""

PAGE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>__TITLE__</title>
<style>
:root {
  --bg: #f6f7fb; --card: #ffffff; --ink: #1f2937; --muted: #6b7280; --line: #e5e7eb;
  --mta: #7c3aed; --mta-bg: #f5f3ff; --mta-line: #ddd6fe;
  --ra: #0f766e; --ra-bg: #effcf9; --ra-line: #bdeee5;
  --ok: #15803d; --ok-bg: #dcfce7; --bad: #b91c1c; --bad-bg: #fee2e2; --accent: #2563eb;
}
* { box-sizing: border-box; }
html, body { margin: 0; background: var(--bg); color: var(--ink);
  font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace; font-size: 12.5px; }
header.top { background: #111827; color: #f9fafb; padding: 14px 24px 0; }
header.top h1 { margin: 0; font-size: 19px; font-weight: 650; letter-spacing: .2px; }
header.top .sub { color: #9ca3af; font-size: 12.5px; margin-top: 2px; }
.headrow { display: flex; justify-content: space-between; align-items: flex-end; gap: 16px; flex-wrap: wrap; }
.chips { display: flex; gap: 8px; flex-wrap: wrap; }
.chip { background: #1f2937; border: 1px solid #374151; border-radius: 8px; padding: 4px 10px; min-width: 74px; }
.chip .v { font-size: 15px; font-weight: 650; }
.chip .l { font-size: 10.5px; color: #9ca3af; text-transform: uppercase; letter-spacing: .5px; }
.chip .n { font-size: 10.5px; color: #6b7280; }
nav.tabs { display: flex; gap: 4px; margin-top: 12px; }
nav.tabs button { background: transparent; color: #d1d5db; border: 0; padding: 8px 14px; font: inherit;
  border-radius: 8px 8px 0 0; cursor: pointer; }
nav.tabs button.on { background: var(--bg); color: var(--ink); font-weight: 600; }
main { padding: 16px 24px 32px; }
.tab { display: none; } .tab.on { display: block; }
.filters { display: flex; gap: 10px; align-items: center; flex-wrap: wrap; background: var(--card);
  border: 1px solid var(--line); border-radius: 10px; padding: 10px 12px; margin-bottom: 12px; }
.filters label { font-size: 11.5px; color: var(--muted); display: flex; flex-direction: column; gap: 2px; }
.filters input[type=search] { width: 260px; }
.filters input, .filters select, .filters button { font: inherit; font-size: 13px; padding: 5px 8px;
  border: 1px solid #d1d5db; border-radius: 7px; background: #fff; color: var(--ink); }
.filters button { cursor: pointer; }
.filters .count { margin-left: auto; color: var(--muted); font-size: 12.5px; }
.stepnav { display: flex; gap: 4px; align-items: center; }
.browser { display: grid; grid-template-columns: 330px minmax(0, 1fr); gap: 14px; align-items: start; }
aside.list { background: var(--card); border: 1px solid var(--line); border-radius: 10px; overflow: auto;
  max-height: calc(100vh - 210px); position: sticky; top: 12px; }
.item { display: flex; gap: 9px; padding: 9px 11px; border-bottom: 1px solid var(--line); cursor: pointer; }
.item:hover { background: #f9fafb; } .item.sel { background: #eff6ff; box-shadow: inset 3px 0 0 var(--accent); }
.item .mark { flex: none; width: 20px; height: 20px; border-radius: 50%; display: grid; place-items: center;
  font-size: 12px; font-weight: 700; margin-top: 1px; }
.mark.ok { background: var(--ok-bg); color: var(--ok); } .mark.bad { background: var(--bad-bg); color: var(--bad); }
.item .iq { font-size: 13px; overflow: hidden; display: -webkit-box; -webkit-line-clamp: 2; -webkit-box-orient: vertical; }
.item .im { font-size: 11.5px; color: var(--muted); margin-top: 2px; }
.more { display: block; width: 100%; padding: 9px; border: 0; background: #f9fafb; cursor: pointer; font: inherit; color: var(--accent); }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 12px; padding: 14px 16px; margin-bottom: 12px; }
.crumbs { font-size: 12px; color: var(--muted); margin-bottom: 6px; }
.crumbs b { color: var(--ink); font-weight: 600; }
h2 { font-size: 12px; text-transform: uppercase; letter-spacing: .6px; color: var(--muted); margin: 0 0 4px; font-weight: 600; }
.qtext { white-space: pre-wrap; word-wrap: break-word; font-size: 14.5px; }
.facts { display: flex; flex-wrap: wrap; gap: 8px; margin-top: 12px; }
.fact { border: 1px solid var(--line); border-radius: 8px; padding: 4px 10px; font-size: 13px; background: #fafafa; }
.fact .k { color: var(--muted); font-size: 11px; text-transform: uppercase; letter-spacing: .5px; margin-right: 6px; }
.fact.ok { background: var(--ok-bg); border-color: #86efac; color: var(--ok); font-weight: 600; }
.fact.bad { background: var(--bad-bg); border-color: #fca5a5; color: var(--bad); font-weight: 600; }
.end-finished { color: var(--ok); } .end-max_turns { color: #b45309; } .end-context_exceeded { color: var(--bad); } .end-truncated { color: #4b5563; }
table.kv { border-collapse: collapse; width: 100%; margin-top: 10px; font-size: 12.5px; }
table.kv th, table.kv td { text-align: left; padding: 4px 8px; border-top: 1px solid var(--line); vertical-align: top; }
table.kv th { color: var(--muted); font-weight: 600; width: 1%; white-space: nowrap; }
.part { display: inline-block; margin: 1px 6px 1px 0; padding: 0 6px; border-radius: 5px; background: #f3f4f6; }
.legend { display: flex; gap: 18px; font-size: 12.5px; color: var(--muted); margin: 2px 4px 8px; }
.dot { display: inline-block; width: 10px; height: 10px; border-radius: 3px; margin-right: 6px; vertical-align: -1px; }
.dot.mta { background: var(--mta); } .dot.ra { background: var(--ra); }
.dialogue { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 10px 16px; }
.dialogue.single { grid-template-columns: minmax(0, 1fr); }
.msg { border-radius: 12px; border: 1px solid; padding: 10px 13px 11px; }
.msg.mta { grid-column: 1; background: var(--mta-bg); border-color: var(--mta-line); border-top-left-radius: 3px; }
.msg.ra { grid-column: 2; background: var(--ra-bg); border-color: var(--ra-line); border-top-right-radius: 3px; }
.dialogue.single .msg.ra { grid-column: 1; }
.mhead { display: flex; gap: 8px; align-items: baseline; font-size: 12px; color: var(--muted); margin-bottom: 5px; flex-wrap: wrap; }
.mhead .who { font-weight: 700; font-size: 12.5px; }
.msg.mta .who { color: var(--mta); } .msg.ra .who { color: var(--ra); }
.tag { font-size: 11px; padding: 0 6px; border-radius: 5px; background: #fff; border: 1px solid var(--line); }
.tag.warn { color: #b45309; border-color: #fcd34d; background: #fffbeb; }
.tag.act { color: #1d4ed8; border-color: #bfdbfe; background: #eff6ff; font-weight: 600; }
.mbody { white-space: pre-wrap; word-wrap: break-word; font-size: 13.5px; }
.boxed { background: #fef3c7; border: 1px solid #fcd34d; border-radius: 4px; padding: 0 3px; font-weight: 600; }
.finish { background: var(--mta); color: #fff; border-radius: 4px; padding: 0 4px; font-size: 11.5px; font-weight: 700; }
mark { background: #fde68a; color: inherit; border-radius: 2px; }
.empty { color: var(--muted); padding: 40px; text-align: center; }
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); grid-auto-flow: dense; gap: 14px; }
figure { margin: 0; background: var(--card); border: 1px solid var(--line); border-radius: 12px; padding: 10px 12px; }
figure img { width: 100%; height: auto; cursor: zoom-in; display: block; }
figcaption { color: var(--muted); font-size: 11.5px; margin-bottom: 2px; text-align: right; }
figure.wide { grid-column: 1 / -1; }
.events { margin-bottom: 14px; border-left: 4px solid #dc2626; }
#lightbox { position: fixed; inset: 0; background: rgba(17, 24, 39, .82); display: none; place-items: center; z-index: 10; cursor: zoom-out; }
#lightbox.on { display: grid; } #lightbox img { max-width: 94vw; max-height: 92vh; background: #fff; border-radius: 8px; }
.runcols { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 14px; }
pre.meta { white-space: pre-wrap; word-wrap: break-word; margin: 0; font-size: 12px; }
.note { color: var(--muted); font-size: 12px; margin-top: 8px; }
@media (max-width: 900px) { .browser, .runcols { grid-template-columns: 1fr; } aside.list { position: static; max-height: 320px; } }
</style>
</head>
<body>
<header class="top">
  <div class="headrow">
    <div><h1 id="title"></h1><div class="sub" id="subtitle"></div></div>
    <div class="chips" id="chips"></div>
  </div>
  <nav class="tabs" id="tabs">
    <button data-tab="dialogues" class="on">Dialogues</button>
    <button data-tab="plots">Plots</button>
    <button data-tab="run">Run</button>
  </nav>
</header>
<main>
  <section class="tab on" id="tab-dialogues">
    <div class="filters">
      <label>Search<input type="search" id="f-search" placeholder="question, answer, messages…"></label>
      <label>Outcome<select id="f-correct"><option value="">all</option><option value="1">correct</option><option value="0">incorrect</option></select></label>
      <label>End code<select id="f-end"><option value="">all</option></select></label>
      <label>Split<select id="f-split"><option value="">all</option></select></label>
      <label>Step<span class="stepnav"><button id="f-prev" title="previous step">&#9664;</button><select id="f-step"><option value="">all steps</option></select><button id="f-next" title="next step">&#9654;</button></span></label>
      <span class="count" id="count"></span>
    </div>
    <div class="browser">
      <aside class="list" id="list"></aside>
      <article id="detail"></article>
    </div>
  </section>
  <section class="tab" id="tab-plots"><div class="card events" id="events"><h2>Health events</h2><table class="kv" id="event-list"></table></div><div class="plots" id="plot-grid"></div></section>
  <section class="tab" id="tab-run"><div class="runcols">
    <div class="card"><h2>Config</h2><table class="kv" id="config"></table></div>
    <div><div class="card"><h2>Latest metrics</h2><table class="kv" id="lastm"></table></div>
      <div class="card"><h2>Run metadata</h2><pre class="meta" id="meta"></pre></div></div>
  </div></section>
</main>
<div id="lightbox"><img alt=""></div>
<script id="rema-data" type="application/json">__DATA__</script>
<script>
(function () {
  "use strict";
  const D = JSON.parse(document.getElementById("rema-data").textContent);
  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => { const e = document.createElement(tag); if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text); return e; };
  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
  const NAMES = {mta: "Meta-thinker", ra: "Reasoner"};
  const plural = (n, w) => n + " " + w + (n === 1 ? "" : "s");
  const S = D.samples || [];
  S.forEach((s, i) => { s._i = i; s._hay = [s.question, s.gold, s.extracted || "", s.id]
    .concat(s.turns.map((t) => t.text)).join("\n").toLowerCase(); });

  // ---- header
  $("title").textContent = "ReMA run · " + D.name;
  $("subtitle").textContent = D.subtitle || "";
  (D.chips || []).forEach((c) => { const b = el("div", "chip"); b.append(el("div", "l", c.label), el("div", "v", c.value));
    if (c.note) b.append(el("div", "n", c.note)); $("chips").append(b); });

  // ---- tabs
  function showTab(name) {
    document.querySelectorAll("#tabs button").forEach((b) => b.classList.toggle("on", b.dataset.tab === name));
    document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("on", t.id === "tab-" + name));
  }
  document.querySelectorAll("#tabs button").forEach((b) => b.addEventListener("click", () => { showTab(b.dataset.tab); history.replaceState(null, "", "#" + b.dataset.tab); }));
  if (["#plots", "#run"].includes(location.hash)) showTab(location.hash.slice(1));

  // ---- filters
  const uniq = (xs) => Array.from(new Set(xs));
  const steps = uniq(S.map((s) => s.step)).sort((a, b) => a - b);
  const addOpts = (sel, vals, fmt) => vals.forEach((v) => { const o = el("option", null, fmt ? fmt(v) : v); o.value = v; sel.append(o); });
  addOpts($("f-end"), uniq(S.map((s) => s.end)).sort());
  addOpts($("f-split"), uniq(S.map((s) => s.split)).sort());
  addOpts($("f-step"), steps, (v) => "step " + v);
  const F = {q: "", correct: "", end: "", split: "", step: ""};
  let shown = [], limit = 300, selected = null;

  function matches(s) {
    if (F.correct !== "" && String(Number(s.correct)) !== F.correct) return false;
    if (F.end && s.end !== F.end) return false;
    if (F.split && s.split !== F.split) return false;
    if (F.step !== "" && String(s.step) !== F.step) return false;
    if (F.q && !s._hay.includes(F.q)) return false;
    return true;
  }
  function refresh(keepSel) {
    shown = S.filter(matches);
    $("count").textContent = shown.length + " of " + S.length + " dialogues" + (D.dropped ? " (" + D.dropped + " more not embedded)" : "");
    if (!keepSel || !shown.includes(selected)) selected = shown[0] || null;
    renderList(); renderDetail();
  }
  function bind(id, key, ev) { $(id).addEventListener(ev || "change", () => { F[key] = key === "q" ? $(id).value.trim().toLowerCase() : $(id).value; limit = 300; refresh(true); }); }
  bind("f-search", "q", "input"); bind("f-correct", "correct"); bind("f-end", "end"); bind("f-split", "split"); bind("f-step", "step");
  function stepBy(d) { const sel = $("f-step"); const i = Math.min(Math.max(sel.selectedIndex + d, 1), sel.options.length - 1);
    if (sel.options.length > 1) { sel.selectedIndex = i; F.step = sel.value; refresh(false); } }
  $("f-prev").addEventListener("click", () => stepBy(-1)); $("f-next").addEventListener("click", () => stepBy(1));

  // ---- list
  function renderList() {
    const list = $("list"); list.textContent = "";
    if (!shown.length) { list.append(el("div", "empty", S.length ? "No dialogue matches the filters." : "No dialogues in samples.jsonl.")); return; }
    shown.slice(0, limit).forEach((s) => {
      const it = el("div", "item" + (s === selected ? " sel" : ""));
      it.append(el("span", "mark " + (s.correct ? "ok" : "bad"), s.correct ? "\u2713" : "\u2717"));
      const body = el("div"); body.append(el("div", "iq", s.question));
      body.append(el("div", "im", "step " + s.step + " \u00b7 " + s.split + " \u00b7 " + s.end + " \u00b7 " + plural(s.turns.filter((t) => t.agent === "ra").length, "round")));
      it.append(body);
      it.addEventListener("click", () => { selected = s; renderList(); renderDetail(); });
      list.append(it);
    });
    if (shown.length > limit) { const m = el("button", "more", "show " + Math.min(300, shown.length - limit) + " more");
      m.addEventListener("click", () => { limit += 300; renderList(); }); list.append(m); }
  }

  // ---- message text: escape, then highlight \boxed{...}, [FINISH] and the search term
  function rich(text) {
    let h = esc(text || "");
    h = h.replace(/\\boxed\s*\{(?:[^{}]|\{(?:[^{}]|\{[^{}]*\})*\})*\}/g, (m) => '<span class="boxed">' + m + "</span>");
    h = h.replace(/\[FINISH\]/g, '<span class="finish">[FINISH]</span>');
    if (F.q) { const q = esc(F.q).replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
      h = h.replace(new RegExp("(?![^<]*>)(" + q + ")", "gi"), "<mark>$1</mark>"); }
    return h;
  }
  function fact(k, v, cls) { const f = el("div", "fact" + (cls ? " " + cls : "")); if (k) f.append(el("span", "k", k));
    const vv = el("code", null, v); f.append(vv); return f; }
  const fmt = (x) => (typeof x === "number" ? (Number.isInteger(x) ? String(x) : x.toFixed(3)) : String(x));

  function renderDetail() {
    const box = $("detail"); box.textContent = "";
    const s = selected;
    if (!s) { box.append(el("div", "card empty", "Select a dialogue.")); return; }
    const head = el("div", "card");
    const crumbs = el("div", "crumbs");
    crumbs.innerHTML = "<b>step " + esc(s.step) + "</b> \u00b7 " + esc(s.split) + " \u00b7 " + esc(s.id) +
      (s.sample ? " \u00b7 sample " + esc(s.sample) : "") + (s.level != null ? " \u00b7 level " + esc(s.level) : "") + " \u00b7 " + esc(s.method);
    head.append(crumbs, el("h2", null, "Question"));
    const q = el("div", "qtext"); q.innerHTML = rich(s.question); head.append(q);
    const facts = el("div", "facts");
    facts.append(el("div", "fact " + (s.correct ? "ok" : "bad"), s.correct ? "\u2713 correct" : "\u2717 incorrect"));
    facts.append(fact("gold", s.gold), fact("extracted", s.extracted == null ? "none" : s.extracted));
    const end = fact("end", s.end); end.querySelector("code").className = "end-" + s.end; facts.append(end);
    const tok = {}; s.turns.forEach((t) => { tok[t.agent] = (tok[t.agent] || 0) + t.tokens; });
    facts.append(fact("rounds", s.turns.filter((t) => t.agent === "ra").length));
    facts.append(fact("tokens", Object.keys(tok).map((a) => a.toUpperCase() + " " + tok[a]).join(" \u00b7 ") || "0"));
    head.append(facts);
    const agents = Object.keys(s.reward || {});
    if (agents.length) {
      const t = el("table", "kv");
      agents.forEach((a) => { const tr = el("tr"); tr.append(el("th", null, (NAMES[a] || a) + " reward"));
        const td = el("td"); td.append(el("b", null, fmt(s.reward[a])), document.createTextNode("  "));
        Object.entries((s.parts || {})[a] || {}).forEach(([k, v]) => td.append(el("span", "part mono", k + " " + fmt(v))));
        tr.append(td); t.append(tr); });
      head.append(t);
    }
    box.append(head);
    const two = s.turns.some((t) => t.agent === "mta");
    if (two) { const lg = el("div", "legend"); lg.innerHTML = '<span><span class="dot mta"></span>Meta-thinker (MTA): plans, never solves</span><span><span class="dot ra"></span>Reasoner (RA): follows, answers in \\boxed{}</span>'; box.append(lg); }
    const dlg = el("div", "dialogue" + (two ? "" : " single"));
    s.turns.forEach((t, i) => {
      const m = el("div", "msg " + (t.agent === "mta" ? "mta" : "ra"));
      m.style.gridRow = String(i + 1);
      const h = el("div", "mhead");
      h.append(el("span", "who", two ? (NAMES[t.agent] || t.agent) : "Solver"), el("span", null, "turn " + (t.index + 1)), el("span", "tag", t.tokens + " tokens"));
      if (t.action !== null && t.action !== undefined) h.append(el("span", "tag act", t.action));
      else if (t.format_ok === false) h.append(el("span", "tag warn", "invalid JSON"));
      if (t.truncated) h.append(el("span", "tag warn", "hit token limit"));
      const b = el("div", "mbody"); b.innerHTML = t.text ? rich(t.text) : "<i>(empty)</i>";
      m.append(h, b); dlg.append(m);
    });
    if (!s.turns.length) dlg.append(el("div", "empty", "No messages (the episode ended before the first turn)."));
    box.append(dlg);
  }

  document.addEventListener("keydown", (e) => {
    if (["INPUT", "SELECT", "TEXTAREA"].includes(document.activeElement.tagName) || !shown.length) return;
    const i = shown.indexOf(selected);
    if (e.key === "ArrowDown" || e.key === "j") { selected = shown[Math.min(i + 1, shown.length - 1)]; }
    else if (e.key === "ArrowUp" || e.key === "k") { selected = shown[Math.max(i - 1, 0)]; }
    else return;
    e.preventDefault(); if (shown.indexOf(selected) >= limit) limit += 300; renderList(); renderDetail();
    const sel = document.querySelector(".item.sel"); if (sel) sel.scrollIntoView({block: "nearest"});
  });

  // ---- plots
  (D.plots || []).forEach((p) => { const f = el("figure"); if (p.wide) f.className = "wide"; f.append(el("figcaption", "mono", p.file));
    const img = el("img"); img.alt = p.title; img.src = "data:image/png;base64," + p.png;
    img.addEventListener("click", () => { const lb = $("lightbox"); lb.querySelector("img").src = img.src; lb.classList.add("on"); });
    f.append(img); $("plot-grid").append(f); });
  if (!(D.plots || []).length) $("plot-grid").append(el("div", "empty", "No metrics to plot."));
  // ---- health events (train.health): also marked on the plots
  (D.events || []).forEach((e) => { const tr = el("tr"); tr.append(el("th", "mono", "step " + e.step + " · " + e.action +
      (e.to_step !== null && e.to_step !== undefined ? " → step " + e.to_step : "")), el("td", "", e.message)); $("event-list").append(tr); });
  if (!(D.events || []).length) $("events").style.display = "none";
  $("lightbox").addEventListener("click", () => $("lightbox").classList.remove("on"));

  // ---- run
  (D.config || []).forEach(([k, v]) => { const tr = el("tr"); tr.append(el("th", "mono", k), el("td", "mono", v)); $("config").append(tr); });
  ["train", "eval"].forEach((split) => { const row = (D.last || {})[split] || {};
    Object.keys(row).filter((k) => k !== "step").sort().forEach((k) => { const tr = el("tr");
      tr.append(el("th", "mono", k), el("td", "mono", fmt(row[k]) + "  (step " + row.step + ")")); $("lastm").append(tr); }); });
  $("meta").textContent = JSON.stringify(D.meta || {}, null, 2);

  refresh(false);
})();
</script>
</body>
</html>
"""
