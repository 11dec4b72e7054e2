// The dashboard at `/`: one self-contained page (inline CSS and JS, nothing fetched from
// anywhere but this server). It draws every cluster from the JSON API and follows the event
// stream; each event redraws at once, and a 1 s refresh keeps lag and LSNs current.
// Data goes into the DOM as text only (textContent), never as markup.

const STYLE = `
:root{--bg:#0f1419;--panel:#171e26;--panel2:#1d2630;--line:#2a3541;--text:#e6edf3;--dim:#8b98a5;
--primary:#3fb950;--standby:#58a6ff;--down:#f85149;--unknown:#8b949e;--warn:#d29922;--pool:#bc8cff;
--mono:ui-monospace,SFMono-Regular,"DejaVu Sans Mono",Menlo,Consolas,monospace}
*{box-sizing:border-box}
html{color-scheme:dark}
body{margin:0;background:var(--bg);color:var(--text);font:14px/1.45 system-ui,-apple-system,"Segoe UI",
"DejaVu Sans",Roboto,sans-serif}
header{display:flex;align-items:center;gap:14px;padding:14px 28px;border-bottom:1px solid var(--line);
background:#0b1015;position:sticky;top:0;z-index:2}
header h1{font-size:17px;margin:0;font-weight:650;letter-spacing:.3px}
header .sub{color:var(--dim);font-size:13px}
#live{margin-left:auto;display:flex;align-items:center;gap:7px;color:var(--dim);font-size:12.5px}
#live .dot{width:9px;height:9px;border-radius:50%;background:var(--down)}
#live.on .dot{background:var(--primary);box-shadow:0 0 0 3px #3fb95033}
main{padding:22px 28px;display:flex;flex-direction:column;gap:26px;max-width:1500px;margin:0 auto}
.cluster{background:var(--panel);border:1px solid var(--line);border-radius:12px;overflow:hidden}
.chead{display:flex;flex-wrap:wrap;align-items:baseline;gap:10px 18px;padding:14px 20px;
border-bottom:1px solid var(--line);background:var(--panel2)}
.chead h2{margin:0;font-size:18px}
.kv{color:var(--dim);font-size:13px}.kv b{color:var(--text);font-weight:550}
.badge{display:inline-block;padding:1px 9px;border-radius:999px;font-size:12px;font-weight:600;border:1px solid}
.ph-Healthy{color:var(--primary);border-color:#3fb95066;background:#3fb9501a}
.ph-FailingOver,.ph-Degraded{color:var(--warn);border-color:#d2992266;background:#d299221a}
.ph-other{color:var(--standby);border-color:#58a6ff66;background:#58a6ff1a}
.banner{margin:14px 20px 0;padding:9px 14px;border-radius:8px;background:#d299221f;border:1px solid #d2992266;
color:#f0c560;font-weight:550;display:none}
.banner.show{display:block}
.body{display:grid;grid-template-columns:minmax(0,1.25fr) minmax(0,1fr);gap:0}
@media (max-width:1100px){.body{grid-template-columns:1fr}}
.topo{padding:18px 20px;border-right:1px solid var(--line)}
.section{font-size:11.5px;text-transform:uppercase;letter-spacing:1.1px;color:var(--dim);margin:0 0 10px}
.pool{border:1px solid #bc8cff55;background:#bc8cff12;border-radius:10px;padding:10px 14px;margin-bottom:8px;
display:flex;flex-wrap:wrap;gap:6px 16px;align-items:center}
.pool .name{color:var(--pool);font-weight:650}
.pool .bad{color:var(--down);font-weight:600}
.arrow{text-align:center;color:var(--dim);font-size:12px;margin:2px 0 8px}
.nodes{display:grid;grid-template-columns:repeat(auto-fill,minmax(210px,1fr));gap:12px}
.node{border:1px solid var(--line);border-left:4px solid var(--unknown);border-radius:10px;padding:11px 13px;
background:#131a21;transition:box-shadow .4s}
.node.primary{border-left-color:var(--primary)}.node.standby{border-left-color:var(--standby)}
.node.down{border-left-color:var(--down);opacity:.88}
.node.flash{box-shadow:0 0 0 2px var(--primary),0 0 22px #3fb95055}
.ntop{display:flex;align-items:center;justify-content:space-between;gap:8px}
.nname{font-weight:700;font-size:15.5px}
.role{font-size:11.5px;font-weight:700;text-transform:uppercase;letter-spacing:.8px;padding:2px 8px;border-radius:6px}
.role.primary{background:#3fb95026;color:var(--primary)}.role.standby{background:#58a6ff26;color:var(--standby)}
.role.down{background:#f8514926;color:var(--down)}.role.unknown{background:#8b949e26;color:var(--unknown)}
.meta{display:grid;grid-template-columns:auto 1fr;gap:2px 10px;margin-top:8px;font-size:12.5px}
.meta dt{color:var(--dim)}.meta dd{margin:0;font-family:var(--mono);font-size:12px;overflow-wrap:anywhere}
.lagbar{height:5px;border-radius:3px;background:#26313c;margin-top:8px;overflow:hidden}
.lagbar i{display:block;height:100%;background:var(--standby)}
.chip{white-space:nowrap;font-size:11px;padding:0 6px;border-radius:5px;border:1px solid var(--line);color:var(--dim);margin-left:4px}
.chip.sync,.chip.quorum{color:var(--primary);border-color:#3fb95066}
.msg{margin-top:7px;font-size:12px;color:var(--dim);overflow-wrap:anywhere}
.node.down .msg{color:#ff9b94}
.story{padding:18px 20px;display:flex;flex-direction:column;min-width:0}
.events{list-style:none;margin:0;padding:0;max-height:440px;overflow:auto;border:1px solid var(--line);
border-radius:10px;background:#121920}
.events li{display:grid;grid-template-columns:78px 58px minmax(0,1fr);gap:2px 10px;padding:7px 12px;
border-bottom:1px solid #222c36;font-size:12.5px}
.events li:last-child{border-bottom:0}
.events li.new{animation:hl 2.5s ease-out}
@keyframes hl{from{background:#d2992233}to{background:transparent}}
.events .t{color:var(--dim);font-family:var(--mono);font-size:11.5px}
.events .n{font-weight:600}
.events .rule{font-family:var(--mono);font-size:11.5px;color:var(--pool)}
.events .rule.failover{color:var(--warn)}.events .rule.failed{color:var(--down)}
.events .tr{color:var(--dim);font-family:var(--mono);font-size:11.5px;margin-left:8px}
.events .reason{grid-column:3;color:#c9d4de}
.jobs{margin-top:16px}.empty{color:var(--dim);font-size:13px;padding:6px 0}
.none{color:var(--dim);padding:40px;text-align:center}
.err{color:var(--down);font-size:13px}
`;

const SCRIPT = `
'use strict';
const $ = (s, r = document) => r.querySelector(s);
function h(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') e.className = v; else if (k.startsWith('data-')) e.setAttribute(k, String(v)); else e[k] = v;
  }
  for (const k of kids.flat()) if (k !== null && k !== undefined && k !== false) e.append(k instanceof Node ? k : String(k));
  return e;
}
let token = sessionStorage.getItem('pgop-token');
const m = /[#&]token=([^&]+)/.exec(location.hash);
if (m) { token = decodeURIComponent(m[1]); sessionStorage.setItem('pgop-token', token); history.replaceState(null, '', location.pathname); }
const headers = () => (token ? { authorization: 'Bearer ' + token } : {});
const api = async (p) => { const r = await fetch(p, { headers: headers(), cache: 'no-store' }); if (!r.ok) throw new Error(p + ': ' + r.status); return r.json(); };

const state = { clusters: [], nodes: [], topology: [], jobs: [], events: [], primaries: {}, failover: {}, fresh: new Set() };
const bytes = (n) => n === null || n === undefined ? '-' : n < 1024 ? n + ' B' : n < 1048576 ? (n / 1024).toFixed(1) + ' KiB' : n < 1073741824 ? (n / 1048576).toFixed(1) + ' MiB' : (n / 1073741824).toFixed(2) + ' GiB';
const clock = (iso) => new Date(iso).toLocaleTimeString([], { hour12: false }) + '.' + String(new Date(iso).getMilliseconds()).padStart(3, '0').slice(0, 1);

function nodeCard(n, topo, cluster) {
  const rep = topo && topo.replicas.find((r) => r.name === n.name);
  const sync = rep ? rep.sync_state : null;
  const maxLag = 16 * 1048576;
  const lagPct = n.lag_bytes ? Math.min(100, Math.max(3, 100 * n.lag_bytes / maxLag)) : 0;
  const flash = state.failover[cluster] && state.failover[cluster].to === n.name && Date.now() - state.failover[cluster].at < 8000;
  return h('div', { class: 'node ' + n.role + (flash ? ' flash' : ''), 'data-node': n.name, 'data-role': n.role },
    h('div', { class: 'ntop' }, h('span', { class: 'nname' }, n.name), h('span', { class: 'role ' + n.role }, n.role)),
    h('dl', { class: 'meta' },
      h('dt', {}, 'state'), h('dd', {}, n.state + (n.goal && n.goal !== n.state ? ' → ' + n.goal : '')),
      h('dt', {}, 'address'), h('dd', {}, n.address),
      h('dt', {}, 'timeline'), h('dd', { 'data-field': 'timeline' }, n.timeline ?? '-'),
      h('dt', {}, 'LSN'), h('dd', { 'data-field': 'lsn' }, n.lsn ?? '-'),
      n.role === 'standby' ? [h('dt', {}, 'lag'), h('dd', {}, bytes(n.lag_bytes), sync ? h('span', { class: 'chip ' + sync }, sync) : null,
        n.streaming === false ? h('span', { class: 'chip' }, 'not streaming') : null)] : null,
      n.role === 'standby' && n.upstream ? [h('dt', {}, 'upstream'), h('dd', {}, n.upstream)] : null),
    n.role === 'standby' ? h('div', { class: 'lagbar', title: 'replay lag' }, h('i', { style: 'width:' + lagPct + '%' })) : null,
    n.message && n.role !== 'primary' && n.role !== 'standby' ? h('div', { class: 'msg' }, n.message) : null);
}

function eventLine(e) {
  const fam = /^failover\\.|^primary\\.|^switchover\\./.test(e.rule) ? ' failover' : /\\.failed$/.test(e.rule) ? ' failed' : '';
  return h('li', { class: state.fresh.has(e.id) ? 'new' : '', 'data-rule': e.rule, 'data-id': e.id },
    h('span', { class: 't', title: e.time }, clock(e.time)),
    h('span', { class: 'n' }, e.node ?? '—'),
    h('span', {}, h('span', { class: 'rule' + fam }, e.rule), e.from || e.to ? h('span', { class: 'tr' }, (e.from ?? '-') + ' → ' + (e.to ?? '-')) : null),
    h('span', { class: 'reason' }, e.reason));
}

function clusterView(c) {
  const nodes = state.nodes.filter((n) => n.cluster === c.name);
  const topo = state.topology.find((t) => t.cluster === c.name);
  const events = state.events.filter((e) => e.cluster === c.name).slice(-60).reverse();
  const jobs = state.jobs.filter((j) => j.cluster === c.name);
  const phaseClass = ['Healthy', 'FailingOver', 'Degraded'].includes(c.phase) ? 'ph-' + c.phase : 'ph-other';
  const fo = state.failover[c.name];
  const pool = topo && topo.pool;
  const order = { primary: 0, standby: 1, down: 2, unknown: 3 };
  return h('section', { class: 'cluster', 'data-cluster': c.name, 'data-primary': c.primary ?? '' },
    h('div', { class: 'chead' }, h('h2', {}, c.name), h('span', { class: 'badge ' + phaseClass, 'data-field': 'phase' }, c.phase),
      h('span', { class: 'kv' }, 'primary ', h('b', { 'data-field': 'primary' }, c.primary ?? '—')),
      h('span', { class: 'kv' }, 'endpoint ', h('b', {}, c.endpoint ?? '—')),
      h('span', { class: 'kv' }, 'replication ', h('b', {}, c.replication)),
      h('span', { class: 'kv' }, 'generation ', h('b', {}, c.observed_generation === c.generation ? c.generation : c.observed_generation + '/' + c.generation)),
      h('span', { class: 'kv' }, c.provider)),
    h('div', { class: 'banner' + (fo && Date.now() - fo.at < 60000 ? ' show' : ''), 'data-field': 'failover' },
      fo ? 'Primary changed: ' + fo.from + ' → ' + fo.to + ' at ' + new Date(fo.at).toLocaleTimeString([], { hour12: false }) : ''),
    h('div', { class: 'body' },
      h('div', { class: 'topo' }, h('div', { class: 'section' }, 'Topology'),
        pool ? h('div', { class: 'pool', 'data-field': 'pool' }, h('span', { class: 'name' }, 'pgpool'), h('span', { class: 'kv' }, c.endpoint ?? ''),
          pool.reachable ? h('span', { class: 'kv' }, 'writes → ', h('b', {}, pool.primary ?? 'nobody')) : h('span', { class: 'bad' }, 'not answering'),
          h('span', { class: 'kv' }, pool.backends.map((b) => b.name + ' ' + b.status).join(' · '))) : null,
        pool ? h('div', { class: 'arrow' }, '▼') : null,
        h('div', { class: 'nodes' }, nodes.sort((a, b) => order[a.role] - order[b.role] || a.name.localeCompare(b.name)).map((n) => nodeCard(n, topo, c.name))),
        topo && topo.sync && topo.sync.names.length ? h('div', { class: 'msg' }, 'sync set: ANY ' + topo.sync.quorum + ' (' + topo.sync.names.join(', ') + ')') : null,
        h('div', { class: 'jobs' }, h('div', { class: 'section' }, 'Jobs'),
          jobs.length ? h('ul', { class: 'events' }, jobs.map((j) => h('li', {}, h('span', { class: 't' }, j.kind), h('span', { class: 'n' }, j.node ?? '—'),
            h('span', {}, j.progress === null ? 'running' : Math.round(100 * j.progress) + '%')))) : h('div', { class: 'empty' }, 'No jobs running'))),
      h('div', { class: 'story' }, h('div', { class: 'section' }, 'Event story (newest first)'),
        events.length ? h('ul', { class: 'events', 'data-field': 'events' }, events.map(eventLine)) : h('div', { class: 'empty' }, 'No events yet'))));
}

function render() {
  const root = $('main');
  const scroll = [...root.querySelectorAll('.events')].map((e) => e.scrollTop);
  root.replaceChildren(...(state.clusters.length ? state.clusters.map(clusterView) : [h('div', { class: 'none' }, 'No clusters in this store yet: pgop apply -f SPEC')]));
  [...root.querySelectorAll('.events')].forEach((e, i) => (e.scrollTop = scroll[i] || 0));
  $('#updated').textContent = 'updated ' + new Date().toLocaleTimeString([], { hour12: false });
}

async function refresh() {
  try {
    const [c, n, t, j] = await Promise.all([api('/api/v1/clusters'), api('/api/v1/nodes'), api('/api/v1/topology'), api('/api/v1/jobs')]);
    for (const cl of c.items) {
      const was = state.primaries[cl.name];
      if (was && cl.primary && was !== cl.primary) state.failover[cl.name] = { from: was, to: cl.primary, at: Date.now() };
      if (cl.primary) state.primaries[cl.name] = cl.primary;
    }
    Object.assign(state, { clusters: c.items, nodes: n.items, topology: t.items, jobs: j.items });
    render();
  } catch (err) { $('#updated').textContent = String(err.message || err); }
}

let pending = null;
const soon = () => { if (!pending) pending = setTimeout(() => { pending = null; refresh(); }, 30); };

async function follow() {
  let last = state.events.length ? state.events[state.events.length - 1].id : 0;
  for (;;) {
    try {
      const r = await fetch('/api/v1/events/stream?after=' + last, { headers: headers(), cache: 'no-store' });
      if (!r.ok || !r.body) throw new Error('stream ' + r.status);
      $('#live').className = 'on'; $('#livetext').textContent = 'live';
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let i;
        while ((i = buf.indexOf('\\n\\n')) >= 0) {
          const frame = buf.slice(0, i); buf = buf.slice(i + 2);
          const data = frame.split('\\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\\n');
          if (!data || !/^event: event$/m.test(frame)) continue;
          const e = JSON.parse(data);
          if (e.id <= last) continue;
          last = e.id; state.events.push(e); state.fresh.add(e.id);
          if (state.events.length > 2000) state.events.splice(0, state.events.length - 2000);
          setTimeout(() => state.fresh.delete(e.id), 3000);
          render(); soon();
        }
      }
    } catch (err) { /* reconnect below */ }
    $('#live').className = ''; $('#livetext').textContent = 'reconnecting';
    await new Promise((r) => setTimeout(r, 1000));
  }
}

(async () => {
  try { state.events = (await api('/api/v1/events')).items; } catch (err) { $('#updated').textContent = String(err.message || err); }
  await refresh();
  follow();
  setInterval(refresh, 1000);
})();
`;

export const DASHBOARD_HTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>pgop</title><style>${STYLE}</style></head>
<body><header><h1>pgop</h1><span class="sub">PostgreSQL clusters</span><span class="sub" id="updated"></span>
<span id="live"><span class="dot"></span><span id="livetext">connecting</span></span></header>
<main><div class="none">Loading…</div></main>
<script>${SCRIPT}</script></body></html>
`;
