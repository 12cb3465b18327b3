// The registry's dashboard (served at /ui/ by every node; see api/src/routes/ui.rs).
//
// How it stays current without reloading or polling the whole list:
//   1. it lists GET /v1/services once, noting the list's applied_index;
//   2. it watches GET /v1/events?since=<applied_index> (Server-Sent Events read with fetch(),
//      since an EventSource cannot send the Authorization header), applying each event to its
//      own map of services and redrawing only the row the event is about;
//   3. when a stream ends it resumes from the last event id (or the position of a cut-off
//      notice); a 410 means the node no longer holds those events: it lists again (step 1).
// GET /v1/cluster is polled every few seconds for the cluster panel, and GET /v1/zones is
// fetched again after events (debounced) and at a modest interval.
//
// The token typed by the user is kept in sessionStorage (this tab only) and sent as
// `Authorization: Bearer` on every API call. Every text is written with textContent: nothing
// the API returns is parsed as HTML.
'use strict';

(() => {
  /** sessionStorage key of the token. */
  const TOKEN_KEY = 'registry-dashboard-token';
  /** Rows drawn at once: the filtered list is shown in pages of this many. */
  const PAGE_SIZE = 200;
  /** How often the cluster panel is refreshed. */
  const CLUSTER_EVERY_MS = 3000;
  /** How often the zone cards are refreshed when no event asks for it sooner. */
  const ZONES_EVERY_MS = 15000;
  /** Zones are fetched again this long after the last event that changed counts. */
  const ZONES_AFTER_EVENT_MS = 1000;
  /** The chart gets a point at least this often, so its time axis moves on when idle. */
  const CHART_TICK_MS = 5000;
  /** Points kept per chart (older ones are dropped). */
  const CHART_POINTS = 720;
  /** Single-service re-reads (to refresh report count, reason, times) in flight at once. */
  const REFRESH_CONCURRENCY = 2;
  /** Re-reads waiting at most; beyond it, rows keep what the events said. */
  const REFRESH_QUEUE_MAX = 200;
  /** Line colours of the chart's zones, in the order zones are first seen. */
  const PALETTE = ['#2f6fdf', '#d9822b', '#1c9c6c', '#b8458f', '#7a5cd6', '#c2a300', '#3aa7c4', '#9b4d2f'];

  const $ = (id) => document.getElementById(id);

  /** An error the API answered: its status and the message of its JSON body. */
  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  const st = {
    /** key (`host NUL binary`) → service, as listed and then changed by events. */
    services: new Map(),
    /** Every key, sorted (by host, then binary: the key's own order). */
    sorted: [],
    /** Keys that pass the filters, in order. */
    filtered: [],
    /** Page of `filtered` shown. */
    page: 0,
    /** key → its row, for the rows drawn now. */
    rows: new Map(),
    /** zone → {total, up, down, disabled}, counted from `services`. */
    counts: new Map(),
    /** The last GET /v1/zones answer, or null; `zonesServed` false once a node said 404. */
    zones: null,
    zonesServed: true,
    /** Chart points: {t, up: {zone: n}}. */
    samples: [],
    /** zone → colour. */
    colours: new Map(),
    /** Whether the token may act (an admin, or a cluster without tokens). */
    admin: false,
    /** The position to resume watching from (string, as the node wrote it). */
    position: null,
    /** Bumped by each new listing: loops of an older one stop. */
    generation: 0,
    /** The stream's AbortController. */
    abort: null,
    /** Keys changed since the last frame, and whether the filtered list must be rebuilt. */
    dirty: new Set(),
    refilter: false,
    frame: 0,
    /** Re-reads of single services. */
    refreshQueue: [],
    refreshQueued: new Set(),
    refreshing: 0,
    zonesTimer: 0,
    /** Filters as typed. */
    filter: { host: '', binary: '', zone: '', state: '' },
  };

  // ---- the API ----------------------------------------------------------------------------

  function token() {
    return sessionStorage.getItem(TOKEN_KEY) || '';
  }

  function authHeaders(extra) {
    const headers = Object.assign({}, extra);
    const t = token();
    if (t) headers.Authorization = 'Bearer ' + t;
    return headers;
  }

  /** The ApiError a failed answer stands for (the JSON error.message when it has one). */
  async function errorOf(resp) {
    let message = `${resp.status} ${resp.statusText}`.trim();
    try {
      const body = await resp.json();
      if (body && body.error && body.error.message) message = body.error.message;
    } catch (_) {
      // not JSON: keep the status line
    }
    return new ApiError(resp.status, message);
  }

  /** Calls the API (paths relative to /ui/, so a proxy's prefix is kept). */
  async function api(method, path, body) {
    const init = { method, cache: 'no-store', headers: authHeaders() };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const resp = await fetch('../' + path, init);
    if (!resp.ok) throw await errorOf(resp);
    const text = await resp.text();
    return text ? JSON.parse(text) : null;
  }

  const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // ---- messages ---------------------------------------------------------------------------

  function showError(message) {
    $('error-text').textContent = message;
    $('error').hidden = false;
  }

  let noticeTimer = 0;
  function showNotice(message) {
    const n = $('notice');
    n.textContent = message;
    n.hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => { n.hidden = true; }, 5000);
  }

  /** The stream's state in the header: connecting, live, polling or error. */
  function setLive(state, text) {
    const l = $('live');
    l.dataset.state = state;
    l.textContent = text;
  }

  /** An error of a background read: a missing or refused token is said in the banner. */
  function backgroundError(what, e) {
    if (e instanceof ApiError && (e.status === 401 || e.status === 403)) {
      showError(`${what}: ${e.message} (type a token above)`);
    }
  }

  // ---- the model --------------------------------------------------------------------------

  const keyOf = (host, binary) => host + '\u0000' + binary;

  function countsOf(zone) {
    let c = st.counts.get(zone);
    if (!c) {
      c = { total: 0, up: 0, down: 0, disabled: 0 };
      st.counts.set(zone, c);
      if (!st.colours.has(zone)) st.colours.set(zone, PALETTE[st.colours.size % PALETTE.length]);
    }
    return c;
  }

  /** Adds (sign 1) or takes away (-1) service `s` from its zone's counts. */
  function account(s, sign) {
    const c = countsOf(s.availability_zone);
    c.total += sign;
    if (s.state === 'up') c.up += sign; else c.down += sign;
    if (s.disabled) c.disabled += sign;
  }

  /** Index of `key` in the sorted keys, or where it would go. */
  function sortedIndex(key) {
    let lo = 0;
    let hi = st.sorted.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (st.sorted[mid] < key) lo = mid + 1; else hi = mid;
    }
    return lo;
  }

  /** Replaces the whole model with a listing. */
  function load(services) {
    st.services.clear();
    st.counts.clear();
    for (const s of services) {
      st.services.set(keyOf(s.host, s.binary), s);
      account(s, 1);
    }
    st.sorted = Array.from(st.services.keys()).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  }

  /** Puts a record the API answered (a list row, an action's answer) in the model. */
  function upsert(s) {
    const key = keyOf(s.host, s.binary);
    const old = st.services.get(key);
    change(key, old, () => s);
  }

  /** Applies `mutate` (old service → new one, or null to remove) to `key`, keeping the
   * counts, the sorted keys and the drawn rows in step. */
  function change(key, old, mutate) {
    const before = old ? matches(old) : false;
    if (old) account(old, -1);
    const next = mutate(old ? Object.assign({}, old) : null);
    if (next) {
      st.services.set(key, next);
      account(next, 1);
      if (!old) st.sorted.splice(sortedIndex(key), 0, key);
    } else if (old) {
      st.services.delete(key);
      const i = sortedIndex(key);
      if (st.sorted[i] === key) st.sorted.splice(i, 1);
    }
    if (before !== (next ? matches(next) : false)) st.refilter = true;
    if (next && !old) noteOption(next);
    st.dirty.add(key);
    scheduleFrame();
  }

  // ---- events -----------------------------------------------------------------------------

  /** What a kind of event says about the service's flags. */
  const FLAGS = {
    'forced-down': { forced_down: true },
    'force-cleared': { forced_down: false },
    frozen: { frozen: true },
    thawed: { frozen: false },
    enabled: { disabled: false, disabled_reason: null },
  };

  /** Applies one event of /v1/events. */
  function applyEvent(e) {
    if (e.kind === 'zone') {
      if (st.zones) {
        const z = st.zones.zones.find((x) => x.name === e.zone);
        if (z && e.zone_state) z.state = e.zone_state;
        if (typeof e.suspect === 'boolean') st.zones.suspect = e.suspect;
        renderZones();
      }
      fetchZonesSoon(0);
      return;
    }
    if (!e.host || !e.binary) return;
    const key = keyOf(e.host, e.binary);
    const old = st.services.get(key);
    if (e.kind === 'removed') {
      if (old) change(key, old, () => null);
      fetchZonesSoon(ZONES_AFTER_EVENT_MS);
      return;
    }
    change(key, old, (s) => {
      const next = s || {
        host: e.host,
        binary: e.binary,
        availability_zone: e.zone,
        state: 'up',
        status: 'enabled',
        disabled: false,
        disabled_reason: null,
        forced_down: false,
        frozen: false,
        report_count: null,
        created_at: e.registry_time,
        updated_at: null,
      };
      if (e.zone) next.availability_zone = e.zone;
      if (e.state) next.state = e.state;
      if (e.status) next.status = e.status;
      next.disabled = next.status === 'disabled';
      Object.assign(next, FLAGS[e.kind] || {});
      if (e.kind === 'created' || e.kind === 'up') next.updated_at = e.registry_time;
      return next;
    });
    queueRefresh(key);
    fetchZonesSoon(ZONES_AFTER_EVENT_MS);
  }

  /** Re-reads one service (its report count, reason and times are not in events), a few at
   * a time; with too many waiting the rows keep what the events said. */
  function queueRefresh(key) {
    if (st.refreshQueued.has(key) || st.refreshQueue.length >= REFRESH_QUEUE_MAX) return;
    st.refreshQueued.add(key);
    st.refreshQueue.push(key);
    pumpRefresh();
  }

  async function pumpRefresh() {
    while (st.refreshing < REFRESH_CONCURRENCY && st.refreshQueue.length) {
      const key = st.refreshQueue.shift();
      st.refreshQueued.delete(key);
      const [host, binary] = key.split('\u0000');
      st.refreshing += 1;
      const gen = st.generation;
      api('GET', `v1/services?host=${encodeURIComponent(host)}&binary=${encodeURIComponent(binary)}&consistency=stale`)
        .then((out) => {
          if (gen !== st.generation) return;
          for (const s of out.services) {
            // A stale read may be older than the events applied already: take its counters
            // and texts, not its state.
            const cur = st.services.get(keyOf(s.host, s.binary));
            if (!cur) continue;
            change(keyOf(s.host, s.binary), cur, (c) => Object.assign(c, {
              report_count: s.report_count,
              updated_at: s.updated_at,
              created_at: s.created_at,
              disabled_reason: c.disabled ? s.disabled_reason : null,
            }));
          }
        })
        .catch(() => {})
        .finally(() => {
          st.refreshing -= 1;
          pumpRefresh();
        });
    }
  }

  /** Lists every service and watches for what changes after the list. */
  async function relist() {
    const gen = ++st.generation;
    if (st.abort) st.abort.abort();
    setLive('connecting', 'listing…');
    let out;
    try {
      out = await api('GET', 'v1/services');
    } catch (e) {
      if (gen !== st.generation) return;
      setLive('error', 'cannot list: ' + e.message);
      backgroundError('listing services', e);
      await delay(3000);
      if (gen === st.generation) relist();
      return;
    }
    if (gen !== st.generation) return;
    load(out.services);
    st.position = out.applied_index != null ? String(out.applied_index) : null;
    rebuildOptions();
    st.refilter = true;
    scheduleFrame();
    document.body.dataset.listed = String(Number(document.body.dataset.listed || 0) + 1);
    fetchZonesSoon(0);
    watch(gen);
  }

  /** Watches /v1/events from `st.position` until a newer listing takes over. */
  async function watch(gen) {
    let failures = 0;
    while (gen === st.generation) {
      const abort = new AbortController();
      st.abort = abort;
      const since = st.position ? '?since=' + encodeURIComponent(st.position) : '';
      let resp;
      try {
        resp = await fetch('../v1/events' + since, {
          headers: authHeaders({ Accept: 'text/event-stream' }),
          cache: 'no-store',
          signal: abort.signal,
        });
      } catch (e) {
        if (gen !== st.generation) return;
        failures += 1;
        setLive('error', 'event stream unreachable, retrying');
        await delay(Math.min(500 * 2 ** failures, 10000));
        continue;
      }
      if (gen !== st.generation) {
        abort.abort();
        return;
      }
      if (resp.status === 410) {
        // The node no longer holds the events after our position: list again.
        relist();
        return;
      }
      if (resp.status === 404) {
        poll(gen);
        return;
      }
      if (!resp.ok) {
        const e = await errorOf(resp);
        failures += 1;
        setLive('error', 'event stream: ' + e.message);
        backgroundError('watching events', e);
        await delay(Math.min(500 * 2 ** failures, 10000));
        continue;
      }
      failures = 0;
      setLive('live', 'live');
      try {
        await readEvents(resp.body, gen);
      } catch (e) {
        if (gen !== st.generation) return;
      }
      if (gen !== st.generation) return;
      setLive('connecting', 'reconnecting…');
      await delay(300);
    }
  }

  /** For a node without /v1/events: lists again every few seconds (the only polling of the
   * whole list, and only then). */
  async function poll(gen) {
    setLive('polling', 'polling (no event stream on this node)');
    while (gen === st.generation) {
      await delay(5000);
      if (gen !== st.generation) return;
      try {
        const out = await api('GET', 'v1/services');
        if (gen !== st.generation) return;
        const seen = new Set();
        for (const s of out.services) {
          seen.add(keyOf(s.host, s.binary));
          upsert(s);
        }
        for (const [key, s] of Array.from(st.services)) {
          if (!seen.has(key)) change(key, s, () => null);
        }
        fetchZonesSoon(0);
      } catch (_) {
        // keep polling
      }
    }
  }

  /** Reads a Server-Sent Events body: `id:`, `event:` and `data:` lines, a blank line ending
   * each event, lines starting with `:` comments (keep-alives). */
  async function readEvents(body, gen) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = '';
    let ev = { id: null, event: '', data: [] };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      if (gen !== st.generation) {
        reader.cancel();
        return;
      }
      buffer += value;
      let nl;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        let line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        if (line.endsWith('\r')) line = line.slice(0, -1);
        if (line === '') {
          if (ev.data.length) dispatch(ev);
          ev = { id: null, event: '', data: [] };
          continue;
        }
        if (line.startsWith(':')) continue;
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let val = colon < 0 ? '' : line.slice(colon + 1);
        if (val.startsWith(' ')) val = val.slice(1);
        if (field === 'id') ev.id = val;
        else if (field === 'event') ev.event = val;
        else if (field === 'data') ev.data.push(val);
      }
    }
  }

  function dispatch(ev) {
    let data;
    try {
      data = JSON.parse(ev.data.join('\n'));
    } catch (_) {
      return;
    }
    if (ev.event === 'cut-off') {
      // The node ends the stream after this: resume from where it says.
      if (data.position) st.position = String(data.position);
      setLive('connecting', 'cut off (' + data.reason + '), resuming…');
      return;
    }
    applyEvent(data);
    if (ev.id) st.position = ev.id;
    document.body.dataset.events = String(Number(document.body.dataset.events || 0) + 1);
  }

  // ---- zones ------------------------------------------------------------------------------

  /** Fetches /v1/zones in `ms` (or sooner if already planned). */
  function fetchZonesSoon(ms) {
    if (st.zonesTimer) {
      if (ms > 0) return;
      clearTimeout(st.zonesTimer);
    }
    st.zonesTimer = setTimeout(fetchZones, ms);
  }

  async function fetchZones() {
    st.zonesTimer = 0;
    if (!st.zonesServed) {
      renderZones();
      return;
    }
    try {
      st.zones = await api('GET', 'v1/zones');
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) st.zonesServed = false;
    }
    renderZones();
  }

  /** The zone cards: the node's counts and disruption states, or (a node without
   * /v1/zones) the page's own counts. */
  function renderZones() {
    const box = $('zones');
    const zones = st.zonesServed && st.zones
      ? st.zones.zones
      : Array.from(st.counts, ([name, c]) => Object.assign({ name, state: 'unknown' }, c))
        .filter((z) => z.total > 0)
        .sort((a, b) => (a.name < b.name ? -1 : 1));
    const cards = zones.map((z) => {
      const card = el('div', 'zone-card state-' + z.state);
      card.dataset.zone = z.name;
      card.dataset.state = z.state;
      card.dataset.up = String(z.up);
      card.dataset.down = String(z.down);
      const swatch = el('span', 'swatch');
      swatch.style.background = colourOf(z.name);
      const title = el('div', 'zone-name');
      title.append(swatch, text(z.name));
      const state = el('div', 'zone-state', z.state.replace('-', ' '));
      const nums = el('div', 'zone-counts');
      nums.append(
        count('total', z.total), count('up', z.up), count('down', z.down), count('disabled', z.disabled),
      );
      card.append(title, state, nums);
      return card;
    });
    if (!cards.length) cards.push(el('p', 'muted', 'no services yet'));
    box.replaceChildren(...cards);
    $('suspect-banner').hidden = !(st.zones && st.zones.suspect);
  }

  function count(label, n) {
    const c = el('span', 'n n-' + label);
    c.dataset.count = label;
    c.append(el('b', null, String(n)), text(' ' + label));
    return c;
  }

  function colourOf(zone) {
    if (!st.colours.has(zone)) st.colours.set(zone, PALETTE[st.colours.size % PALETTE.length]);
    return st.colours.get(zone);
  }

  // ---- chart ------------------------------------------------------------------------------

  /** Adds a point to the chart when the per-zone up counts changed (or `force`). */
  function sample(force) {
    const up = {};
    for (const [zone, c] of st.counts) if (c.total > 0 || c.up > 0) up[zone] = c.up;
    const last = st.samples[st.samples.length - 1];
    if (!force && last && sameCounts(last.up, up)) return;
    st.samples.push({ t: Date.now(), up });
    if (st.samples.length > CHART_POINTS) st.samples.splice(0, st.samples.length - CHART_POINTS);
    renderChart();
  }

  function sameCounts(a, b) {
    const ka = Object.keys(a);
    return ka.length === Object.keys(b).length && ka.every((k) => a[k] === b[k]);
  }

  const SVG = 'http://www.w3.org/2000/svg';
  const W = 800;
  const H = 200;
  const PAD = 24;

  function renderChart() {
    const svg = $('chart');
    const pts = st.samples;
    const nodes = [];
    if (pts.length) {
      const t0 = pts[0].t;
      const t1 = Math.max(Date.now(), t0 + 1000);
      let max = 1;
      for (const p of pts) for (const z in p.up) max = Math.max(max, p.up[z]);
      for (const [zone, c] of st.counts) max = Math.max(max, c.total);
      const x = (t) => PAD + ((t - t0) / (t1 - t0)) * (W - 2 * PAD);
      const y = (n) => H - PAD - (n / max) * (H - 2 * PAD);
      nodes.push(line(PAD, H - PAD, W - PAD, H - PAD, 'axis'), line(PAD, PAD, PAD, H - PAD, 'axis'));
      nodes.push(label(2, y(max) + 4, String(max)), label(2, H - PAD + 4, '0'));
      const zones = new Set();
      for (const p of pts) for (const z in p.up) zones.add(z);
      for (const zone of zones) {
        // A step line: a count holds until the next point.
        const coords = [];
        let prev = null;
        for (const p of pts) {
          if (!(zone in p.up)) continue;
          if (prev !== null) coords.push(`${x(p.t).toFixed(1)},${y(prev).toFixed(1)}`);
          coords.push(`${x(p.t).toFixed(1)},${y(p.up[zone]).toFixed(1)}`);
          prev = p.up[zone];
        }
        if (prev !== null) coords.push(`${x(t1).toFixed(1)},${y(prev).toFixed(1)}`);
        const pl = document.createElementNS(SVG, 'polyline');
        pl.setAttribute('points', coords.join(' '));
        pl.setAttribute('stroke', colourOf(zone));
        pl.setAttribute('class', 'series');
        pl.dataset.zone = zone;
        nodes.push(pl);
      }
      nodes.push(label(W - PAD - 60, H - 6, new Date(t1).toISOString().slice(11, 19)));
      nodes.push(label(PAD, H - 6, new Date(t0).toISOString().slice(11, 19)));
    }
    svg.replaceChildren(...nodes);
    const legend = Array.from(st.counts)
      .filter(([, c]) => c.total > 0)
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([zone, c]) => {
        const item = el('span', 'legend-item');
        const sw = el('span', 'swatch');
        sw.style.background = colourOf(zone);
        item.append(sw, text(`${zone}: ${c.up}/${c.total} up`));
        return item;
      });
    $('chart-legend').replaceChildren(...legend);
  }

  function line(x1, y1, x2, y2, cls) {
    const l = document.createElementNS(SVG, 'line');
    for (const [k, v] of Object.entries({ x1, y1, x2, y2, class: cls })) l.setAttribute(k, String(v));
    return l;
  }

  function label(x, y, s) {
    const t = document.createElementNS(SVG, 'text');
    t.setAttribute('x', String(x));
    t.setAttribute('y', String(y));
    t.setAttribute('class', 'tick');
    t.textContent = s;
    return t;
  }

  // ---- cluster ----------------------------------------------------------------------------

  async function refreshCluster() {
    try {
      renderCluster(await api('GET', 'v1/cluster'));
    } catch (e) {
      backgroundError('reading the cluster', e);
      $('cluster').dataset.error = e.message;
    }
  }

  function renderCluster(c) {
    const leads = c.leader_id != null && c.leader_id === c.node_id;
    $('node').textContent = `node ${c.node_id} (${c.role.toLowerCase()})`;
    const facts = [
      ['cluster id', c.cluster_id || '—', 'cluster-id'],
      ['leader', c.leader_id != null ? `node ${c.leader_id}` : 'none', 'leader'],
      ['term', c.term, 'term'],
      ['last log index', c.last_log_index != null ? c.last_log_index : '—', 'last-log-index'],
      ['applied index', c.applied_index != null ? c.applied_index : '—', 'applied-index'],
      ['records', c.records, 'records'],
    ];
    const dl = $('cluster');
    delete dl.dataset.error;
    dl.dataset.leader = c.leader_id != null ? String(c.leader_id) : '';
    dl.replaceChildren(...facts.flatMap(([k, v, id]) => {
      const dd = el('dd', null, String(v));
      dd.dataset.fact = id;
      return [el('dt', null, k), dd];
    }));
    const rows = c.members.map((m) => {
      const tr = el('tr');
      tr.dataset.memberId = String(m.id);
      const known = leads && m.matched_index != null && c.last_log_index != null;
      const lag = known ? Math.max(0, c.last_log_index - m.matched_index) : null;
      const kind = (m.voter ? 'voter' : 'learner') + (m.id === c.leader_id ? ', leader' : '');
      tr.append(
        el('td', null, String(m.id)),
        el('td', null, m.addr),
        el('td', null, kind),
        el('td', null, m.matched_index != null ? String(m.matched_index) : '—'),
        el('td', lag ? 'lagging' : null, lag != null ? String(lag) : '—'),
      );
      if (!known) tr.lastChild.title = 'known on the leader only: open the leader\'s dashboard';
      return tr;
    });
    $('member-rows').replaceChildren(...rows);
  }

  // ---- the table --------------------------------------------------------------------------

  function el(tag, cls, content) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (content !== undefined) e.textContent = content;
    return e;
  }

  const text = (s) => document.createTextNode(s);

  /** Whether service `s` passes the filters. */
  function matches(s) {
    const f = st.filter;
    if (f.host && !s.host.toLowerCase().includes(f.host)) return false;
    if (f.binary && s.binary !== f.binary) return false;
    if (f.zone && s.availability_zone !== f.zone) return false;
    switch (f.state) {
      case 'up': return s.state === 'up';
      case 'down': return s.state !== 'up';
      case 'disabled': return !!s.disabled;
      case 'enabled': return !s.disabled;
      case 'forced-down': return !!s.forced_down;
      default: return true;
    }
  }

  const knownBinaries = new Set();
  const knownZones = new Set();

  /** Adds a new service's binary and zone to the filter menus. */
  function noteOption(s) {
    if (!knownBinaries.has(s.binary)) {
      knownBinaries.add(s.binary);
      addOption($('filter-binary'), s.binary);
    }
    if (!knownZones.has(s.availability_zone)) {
      knownZones.add(s.availability_zone);
      addOption($('filter-zone'), s.availability_zone);
    }
  }

  function addOption(select, value) {
    const opts = Array.from(select.options).slice(1);
    const o = el('option', null, value);
    o.value = value;
    const before = opts.find((x) => x.value > value);
    select.insertBefore(o, before || null);
  }

  function rebuildOptions() {
    for (const s of st.services.values()) noteOption(s);
  }

  function scheduleFrame() {
    if (!st.frame) st.frame = requestAnimationFrame(flush);
  }

  /** Draws what changed since the last frame: the whole page when the filtered list changed,
   * else only the rows of the services that changed. */
  function flush() {
    st.frame = 0;
    if (st.refilter) {
      st.refilter = false;
      st.filtered = st.sorted.filter((k) => matches(st.services.get(k)));
      renderPage();
    } else {
      for (const key of st.dirty) {
        const tr = st.rows.get(key);
        const s = st.services.get(key);
        if (tr && s) fillRow(tr, s);
      }
    }
    st.dirty.clear();
    renderCount();
    sample(false);
    if (!st.zonesServed) renderZones();
  }

  function renderPage() {
    const pages = Math.max(1, Math.ceil(st.filtered.length / PAGE_SIZE));
    st.page = Math.min(st.page, pages - 1);
    const start = st.page * PAGE_SIZE;
    const keys = st.filtered.slice(start, start + PAGE_SIZE);
    st.rows.clear();
    const rows = keys.map((key) => {
      const tr = el('tr');
      fillRow(tr, st.services.get(key));
      st.rows.set(key, tr);
      return tr;
    });
    $('service-rows').replaceChildren(...rows);
    const shown = st.filtered.length;
    $('page-info').textContent = shown
      ? `${start + 1}–${start + keys.length} of ${shown}, page ${st.page + 1} of ${pages}`
      : 'no service matches';
    $('page-prev').disabled = st.page === 0;
    $('page-next').disabled = st.page >= pages - 1;
  }

  function renderCount() {
    const c = $('count');
    c.dataset.total = String(st.services.size);
    c.dataset.shown = String(st.filtered.length);
    c.textContent = st.filtered.length === st.services.size
      ? `(${st.services.size})`
      : `(${st.filtered.length} of ${st.services.size})`;
  }

  function fmtTime(t) {
    return t ? String(t).replace('T', ' ').slice(0, 19) : '—';
  }

  /** Writes service `s` into row `tr` (its cells anew; the row element stays). */
  function fillRow(tr, s) {
    tr.dataset.host = s.host;
    tr.dataset.binary = s.binary;
    tr.dataset.zone = s.availability_zone;
    tr.className = s.state === 'up' ? 'row-up' : 'row-down';
    const status = el('td', 'status ' + (s.disabled ? 'disabled' : 'enabled'), s.disabled ? 'disabled' : 'enabled');
    status.dataset.status = s.disabled ? 'disabled' : 'enabled';
    const state = el('td', 'state');
    state.dataset.state = s.state;
    state.append(el('span', 'pill ' + (s.state === 'up' ? 'up' : 'down'), s.state === 'up' ? '● up' : '▼ down'));
    if (s.forced_down) state.append(el('span', 'tag', 'forced'));
    if (s.frozen) state.append(el('span', 'tag', 'frozen'));
    const reason = el('td', 'reason', s.disabled ? (s.disabled_reason || '') : '');
    reason.dataset.reason = s.disabled ? (s.disabled_reason || '') : '';
    const actions = el('td', 'actions');
    actions.append(
      s.disabled ? button('enable', 'enable') : button('disable', 'disable…'),
      s.forced_down ? button('clear-force-down', 'clear force') : button('force-down', 'force down'),
    );
    tr.replaceChildren(
      el('td', 'host', s.host),
      el('td', 'binary', s.binary),
      el('td', 'zone', s.availability_zone),
      status,
      state,
      el('td', 'time', fmtTime(s.updated_at || s.created_at)),
      el('td', 'num', s.report_count != null ? String(s.report_count) : '…'),
      reason,
      actions,
    );
  }

  function button(action, label) {
    const b = el('button', 'act', label);
    b.type = 'button';
    b.dataset.action = action;
    return b;
  }

  // ---- actions ----------------------------------------------------------------------------

  /** Asks the reason of a disable; null when cancelled. */
  function askReason(host, binary) {
    const dialog = $('reason-dialog');
    const input = $('reason-input');
    $('reason-title').textContent = `Disable ${binary} on ${host}`;
    input.value = '';
    return new Promise((resolve) => {
      const done = (value) => {
        $('reason-ok').onclick = null;
        $('reason-cancel').onclick = null;
        input.onkeydown = null;
        dialog.onclose = null;
        if (dialog.open) dialog.close();
        resolve(value);
      };
      $('reason-ok').onclick = () => done(input.value.trim());
      $('reason-cancel').onclick = () => done(null);
      input.onkeydown = (ev) => { if (ev.key === 'Enter') done(input.value.trim()); };
      dialog.onclose = () => done(null);
      dialog.showModal();
      input.focus();
    });
  }

  async function act(action, host, binary) {
    let reason = null;
    if (action === 'disable') {
      reason = await askReason(host, binary);
      if (reason === null) return;
    }
    const body = { host, binary };
    if (reason) body.reason = reason;
    try {
      const out = await api('PUT', 'v1/services/' + action, body);
      for (const s of (out && out.services) || []) upsert(s);
      $('error').hidden = true;
      showNotice(`${action} ${binary} on ${host}: done`);
    } catch (e) {
      showError(`${action} ${binary} on ${host}: ${e.message}`);
    }
  }

  /** Learns whether the token may act: the node says which role it has (GET /v1/whoami). */
  async function probeAdmin() {
    let admin = false;
    try {
      const me = await api('GET', 'v1/whoami');
      admin = me.role === 'admin';
    } catch (e) {
      // No role that may act (401, 403), or the node did not answer: read only.
    }
    st.admin = admin;
    $('services').classList.toggle('admin', admin);
    const role = $('role');
    role.dataset.role = admin ? 'admin' : 'reader';
    role.textContent = admin ? 'may act' : 'read only';
  }

  // ---- wiring -----------------------------------------------------------------------------

  function start() {
    // Anything the policy blocked is counted where the browser tests read it (none is meant).
    document.addEventListener('securitypolicyviolation', (ev) => {
      document.body.dataset.cspViolations = String(Number(document.body.dataset.cspViolations || 0) + 1);
      console.error('blocked by the Content-Security-Policy:', ev.violatedDirective, ev.blockedURI);
    });
    $('token').value = token();
    const useToken = () => {
      const t = $('token').value.trim();
      if (t) sessionStorage.setItem(TOKEN_KEY, t); else sessionStorage.removeItem(TOKEN_KEY);
      $('error').hidden = true;
      probeAdmin();
      refreshCluster();
      relist();
    };
    $('token-save').addEventListener('click', useToken);
    $('token').addEventListener('keydown', (ev) => { if (ev.key === 'Enter') useToken(); });
    $('token-clear').addEventListener('click', () => {
      $('token').value = '';
      useToken();
    });
    $('error-close').addEventListener('click', () => { $('error').hidden = true; });

    let typing = 0;
    const refilter = () => {
      st.filter = {
        host: $('filter-host').value.trim().toLowerCase(),
        binary: $('filter-binary').value,
        zone: $('filter-zone').value,
        state: $('filter-state').value,
      };
      st.page = 0;
      st.refilter = true;
      scheduleFrame();
    };
    $('filter-host').addEventListener('input', () => {
      clearTimeout(typing);
      typing = setTimeout(refilter, 120);
    });
    for (const id of ['filter-binary', 'filter-zone', 'filter-state']) $(id).addEventListener('change', refilter);
    $('page-prev').addEventListener('click', () => { st.page -= 1; renderPage(); });
    $('page-next').addEventListener('click', () => { st.page += 1; renderPage(); });
    $('service-rows').addEventListener('click', (ev) => {
      const b = ev.target.closest('button[data-action]');
      const tr = b && b.closest('tr');
      if (tr) act(b.dataset.action, tr.dataset.host, tr.dataset.binary);
    });

    probeAdmin();
    refreshCluster();
    setInterval(refreshCluster, CLUSTER_EVERY_MS);
    setInterval(() => fetchZonesSoon(0), ZONES_EVERY_MS);
    setInterval(() => sample(true), CHART_TICK_MS);
    relist();
  }

  start();
})();
