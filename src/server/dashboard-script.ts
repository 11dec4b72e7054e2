// The dashboard's script (inlined into the page by dashboard.ts), plain browser JavaScript:
// draws the clusters from the JSON API, follows the event stream (fetch, so a bearer token can
// go along), redraws on each event and every second. Data reaches the DOM as text only.

export const DASHBOARD_SCRIPT = `
'use strict';
const $ = (s, r = document) => r.querySelector(s);
function h(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('data-')) e.setAttribute(k, String(v));
    else e[k] = v;
  }
  for (const k of kids.flat())
    if (k !== null && k !== undefined && k !== false) e.append(k instanceof Node ? k : String(k));
  return e;
}
let token = sessionStorage.getItem('pgop-token');
const m = /[#&]token=([^&]+)/.exec(location.hash);
if (m) {
  token = decodeURIComponent(m[1]);
  sessionStorage.setItem('pgop-token', token);
  history.replaceState(null, '', location.pathname);
}
const headers = () => (token ? { authorization: 'Bearer ' + token } : {});
const api = async (p) => {
  const r = await fetch(p, { headers: headers(), cache: 'no-store' });
  if (!r.ok) throw new Error(p + ': ' + r.status);
  return r.json();
};

const state = {
  clusters: [],
  nodes: [],
  topology: [],
  jobs: [],
  events: [],
  primaries: {},
  failover: {},
  fresh: new Set(),
};
const bytes = (n) =>
  n === null || n === undefined
    ? '-'
    : n < 1024
      ? n + '\\u00a0B'
      : n < 1048576
        ? (n / 1024).toFixed(1) + '\\u00a0KiB'
        : n < 1073741824
          ? (n / 1048576).toFixed(1) + '\\u00a0MiB'
          : (n / 1073741824).toFixed(2) + '\\u00a0GiB';
const clock = (iso) =>
  new Date(iso).toLocaleTimeString([], { hour12: false }) +
  '.' +
  String(new Date(iso).getMilliseconds()).padStart(3, '0').slice(0, 1);

function nodeCard(n, topo, cluster) {
  const rep = topo && topo.replicas.find((r) => r.name === n.name);
  const sync = rep ? rep.sync_state : null;
  const maxLag = 16 * 1048576;
  const lagPct = n.lag_bytes ? Math.min(100, Math.max(3, (100 * n.lag_bytes) / maxLag)) : 0;
  const flash =
    state.failover[cluster] &&
    state.failover[cluster].to === n.name &&
    Date.now() - state.failover[cluster].at < 8000;
  return h(
    'div',
    { class: 'node ' + n.role + (flash ? ' flash' : ''), 'data-node': n.name, 'data-role': n.role },
    h(
      'div',
      { class: 'ntop' },
      h('span', { class: 'nname' }, n.name),
      h('span', { class: 'role ' + n.role }, n.role),
    ),
    h(
      'dl',
      { class: 'meta' },
      h('dt', {}, 'state'),
      h('dd', {}, n.state + (n.goal && n.goal !== n.state ? ' → ' + n.goal : '')),
      h('dt', {}, 'address'),
      h('dd', {}, n.address),
      h('dt', {}, 'timeline'),
      h('dd', { 'data-field': 'timeline' }, n.timeline ?? '-'),
      h('dt', {}, 'LSN'),
      h('dd', { 'data-field': 'lsn' }, n.lsn ?? '-'),
      n.role === 'standby'
        ? [
            h('dt', {}, 'lag'),
            h(
              'dd',
              {},
              bytes(n.lag_bytes),
              sync ? h('span', { class: 'chip ' + sync }, sync) : null,
              n.streaming === false ? h('span', { class: 'chip' }, 'not streaming') : null,
            ),
          ]
        : null,
      n.role === 'standby' && n.upstream ? [h('dt', {}, 'upstream'), h('dd', {}, n.upstream)] : null,
    ),
    n.role === 'standby'
      ? h('div', { class: 'lagbar', title: 'replay lag' }, h('i', { style: 'width:' + lagPct + '%' }))
      : null,
    n.message && n.role !== 'primary' && n.role !== 'standby'
      ? h('div', { class: 'msg' }, n.message)
      : null,
  );
}

function eventLine(e) {
  const fam = /^failover\\.|^primary\\.|^switchover\\./.test(e.rule)
    ? ' failover'
    : /\\.failed$/.test(e.rule)
      ? ' failed'
      : '';
  return h(
    'li',
    { class: state.fresh.has(e.id) ? 'new' : '', 'data-rule': e.rule, 'data-id': e.id },
    h('span', { class: 't', title: e.time }, clock(e.time)),
    h('span', { class: 'n' }, e.node ?? '—'),
    h(
      'span',
      {},
      h('span', { class: 'rule' + fam }, e.rule),
      e.from || e.to ? h('span', { class: 'tr' }, (e.from ?? '-') + ' → ' + (e.to ?? '-')) : null,
    ),
    h('span', { class: 'reason' }, e.reason),
  );
}

function clusterView(c) {
  const nodes = state.nodes.filter((n) => n.cluster === c.name);
  const topo = state.topology.find((t) => t.cluster === c.name);
  const events = state.events
    .filter((e) => e.cluster === c.name)
    .slice(-60)
    .reverse();
  const jobs = state.jobs.filter((j) => j.cluster === c.name && j.state === 'running');
  const phaseClass = ['Healthy', 'FailingOver', 'Degraded'].includes(c.phase)
    ? 'ph-' + c.phase
    : 'ph-other';
  const fo = state.failover[c.name];
  const pool = topo && topo.pool;
  const order = { primary: 0, standby: 1, down: 2, unknown: 3 };
  return h(
    'section',
    { class: 'cluster', 'data-cluster': c.name, 'data-primary': c.primary ?? '' },
    h(
      'div',
      { class: 'chead' },
      h('h2', {}, c.name),
      h('span', { class: 'badge ' + phaseClass, 'data-field': 'phase' }, c.phase),
      h('span', { class: 'kv' }, 'primary ', h('b', { 'data-field': 'primary' }, c.primary ?? '—')),
      h('span', { class: 'kv' }, 'endpoint ', h('b', {}, c.endpoint ?? '—')),
      h('span', { class: 'kv' }, 'replication ', h('b', {}, c.replication)),
      h(
        'span',
        { class: 'kv' },
        'generation ',
        h(
          'b',
          {},
          c.observed_generation === c.generation
            ? c.generation
            : c.observed_generation + '/' + c.generation,
        ),
      ),
      h('span', { class: 'kv' }, c.provider),
    ),
    h(
      'div',
      { class: 'banner' + (fo && Date.now() - fo.at < 60000 ? ' show' : ''), 'data-field': 'failover' },
      fo
        ? 'Primary changed: ' +
            fo.from +
            ' → ' +
            fo.to +
            ' at ' +
            new Date(fo.at).toLocaleTimeString([], { hour12: false })
        : '',
    ),
    h(
      'div',
      { class: 'body' },
      h(
        'div',
        { class: 'topo' },
        h('div', { class: 'section' }, 'Topology'),
        pool
          ? h(
              'div',
              { class: 'pool', 'data-field': 'pool' },
              h('span', { class: 'name' }, 'pgpool'),
              h('span', { class: 'kv' }, c.endpoint ?? ''),
              pool.reachable
                ? h('span', { class: 'kv' }, 'writes → ', h('b', {}, pool.primary ?? 'nobody'))
                : h('span', { class: 'bad' }, 'not answering'),
              h('span', { class: 'kv' }, pool.backends.map((b) => b.name + ' ' + b.status).join(' · ')),
            )
          : null,
        pool ? h('div', { class: 'arrow' }, '▼') : null,
        h(
          'div',
          { class: 'nodes' },
          nodes
            .sort((a, b) => order[a.role] - order[b.role] || a.name.localeCompare(b.name))
            .map((n) => nodeCard(n, topo, c.name)),
        ),
        topo && topo.sync && topo.sync.names.length
          ? h(
              'div',
              { class: 'msg' },
              'sync set: ANY ' + topo.sync.quorum + ' (' + topo.sync.names.join(', ') + ')',
            )
          : null,
        h(
          'div',
          { class: 'jobs' },
          h('div', { class: 'section' }, 'Jobs'),
          jobs.length
            ? h(
                'ul',
                { class: 'events' },
                jobs.map((j) =>
                  h(
                    'li',
                    {},
                    h('span', { class: 't' }, j.kind),
                    h('span', { class: 'n' }, j.node ?? '—'),
                    h('span', {}, j.percent === null ? j.state : j.percent + '%'),
                  ),
                ),
              )
            : h('div', { class: 'empty' }, 'No jobs running'),
        ),
      ),
      h(
        'div',
        { class: 'story' },
        h('div', { class: 'section' }, 'Event story (newest first)'),
        events.length
          ? h('ul', { class: 'events', 'data-field': 'events' }, events.map(eventLine))
          : h('div', { class: 'empty' }, 'No events yet'),
      ),
    ),
  );
}

function render() {
  const root = $('main');
  const scroll = [...root.querySelectorAll('.events')].map((e) => e.scrollTop);
  root.replaceChildren(
    ...(state.clusters.length
      ? state.clusters.map(clusterView)
      : [h('div', { class: 'none' }, 'No clusters in this store yet: pgop apply -f SPEC')]),
  );
  [...root.querySelectorAll('.events')].forEach((e, i) => (e.scrollTop = scroll[i] || 0));
  $('#updated').textContent = 'updated ' + new Date().toLocaleTimeString([], { hour12: false });
}

async function refresh() {
  try {
    const [c, n, t, j] = await Promise.all([
      api('/api/v1/clusters'),
      api('/api/v1/nodes'),
      api('/api/v1/topology'),
      api('/api/v1/jobs'),
    ]);
    for (const cl of c.items) {
      const was = state.primaries[cl.name];
      if (was && cl.primary && was !== cl.primary)
        state.failover[cl.name] = { from: was, to: cl.primary, at: Date.now() };
      if (cl.primary) state.primaries[cl.name] = cl.primary;
    }
    Object.assign(state, { clusters: c.items, nodes: n.items, topology: t.items, jobs: j.items });
    render();
  } catch (err) {
    $('#updated').textContent = String(err.message || err);
  }
}

let pending = null;
const soon = () => {
  if (!pending)
    pending = setTimeout(() => {
      pending = null;
      refresh();
    }, 30);
};

async function follow() {
  let last = state.events.length ? state.events[state.events.length - 1].id : 0;
  for (;;) {
    try {
      const r = await fetch('/api/v1/events/stream?after=' + last, {
        headers: headers(),
        cache: 'no-store',
      });
      if (!r.ok || !r.body) throw new Error('stream ' + r.status);
      $('#live').className = 'on';
      $('#livetext').textContent = 'live';
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let i;
        while ((i = buf.indexOf('\\n\\n')) >= 0) {
          const frame = buf.slice(0, i);
          buf = buf.slice(i + 2);
          const data = frame
            .split('\\n')
            .filter((l) => l.startsWith('data: '))
            .map((l) => l.slice(6))
            .join('\\n');
          if (!data || !/^event: event$/m.test(frame)) continue;
          const e = JSON.parse(data);
          if (e.id <= last) continue;
          last = e.id;
          state.events.push(e);
          state.fresh.add(e.id);
          if (state.events.length > 2000) state.events.splice(0, state.events.length - 2000);
          setTimeout(() => state.fresh.delete(e.id), 3000);
          render();
          soon();
        }
      }
    } catch (err) {
      /* reconnect below */
    }
    $('#live').className = '';
    $('#livetext').textContent = 'reconnecting';
    await new Promise((r) => setTimeout(r, 1000));
  }
}

(async () => {
  try {
    state.events = (await api('/api/v1/events')).items;
  } catch (err) {
    $('#updated').textContent = String(err.message || err);
  }
  await refresh();
  follow();
  setInterval(refresh, 1000);
})();
`;
