// etc/status/status.js: the status page's script (index.html; served as /status/status.js). Every
// second it reads GET /metrics (Prometheus text: the counters, summed over the shards) and
// GET /api/v1/queue (the sites: README's "Queue control"), shows the numbers as text and draws
// the charts on <canvas> by hand: received and delivered per second (the counters' change
// between two reads), the queue by site, the suspended sites. No framework, nothing from
// elsewhere (the page's Content-Security-Policy allows only 'self'). Every text from the relay
// goes in through textContent, never as markup.
'use strict';

(function () {
  const period_ms = 1000;
  const history_length = 120;  // samples kept for the rate chart (two minutes)
  const max_site_bars = 20;    // the deepest sites charted
  const max_site_rows = 500;   // the deepest sites in the table (the API lists every site)

  const $ = (id) => document.getElementById(id);
  const history = { received: [], delivered: [] };
  let last = null;  // {t, received, delivered}: the read before
  let refreshes = 0;

  // Prometheus text format 0.0.4: "name{labels} value [timestamp]" per line; '#' lines are
  // comments. The sum of every series of each name.
  function parse_metrics(text) {
    const sums = new Map();
    for (const line of text.split('\n')) {
      if (line === '' || line[0] === '#') continue;
      const brace = line.indexOf('{');
      const space = line.indexOf(' ');
      const name_end = brace >= 0 && brace < space ? brace : space;
      if (name_end <= 0) continue;
      const name = line.slice(0, name_end);
      const after = brace >= 0 && brace < space ? line.slice(line.lastIndexOf('}') + 1) : line.slice(space);
      const value = Number(after.trim().split(' ')[0]);
      if (!Number.isFinite(value)) continue;
      sums.set(name, (sums.get(name) || 0) + value);
    }
    return sums;
  }

  function number_text(n) {
    return n === undefined ? '-' : String(n);
  }

  function rate_text(r) {
    return r === undefined ? '-' : (r >= 100 ? r.toFixed(0) : r.toFixed(1));
  }

  function push(list, value) {
    list.push(value);
    if (list.length > history_length) list.shift();
  }

  function show_counters(metrics) {
    const now = performance.now();
    const received = metrics.get('ringrelay_messages_received_total');
    const delivered = metrics.get('ringrelay_messages_delivered_total');
    $('received-total').textContent = number_text(received);
    $('delivered-total').textContent = number_text(delivered);
    $('spool-messages').textContent = number_text(metrics.get('ringrelay_spool_messages'));
    if (last !== null && received !== undefined && delivered !== undefined) {
      const seconds = (now - last.t) / 1000;
      // A counter that went down is a restarted relay: no rate for that interval.
      const r = received >= last.received ? (received - last.received) / seconds : 0;
      const d = delivered >= last.delivered ? (delivered - last.delivered) / seconds : 0;
      push(history.received, r);
      push(history.delivered, d);
      $('received-rate').textContent = rate_text(r);
      $('delivered-rate').textContent = rate_text(d);
      $('received-peak').textContent = rate_text(Math.max(...history.received));
      $('delivered-peak').textContent = rate_text(Math.max(...history.delivered));
    }
    last = { t: now, received, delivered };
    draw_rates();
  }

  // Two lines, received and delivered, scaled to the highest rate shown.
  function draw_rates() {
    const canvas = $('rates');
    const g = canvas.getContext('2d');
    const w = canvas.width, h = canvas.height, pad = 18;
    g.clearRect(0, 0, w, h);
    const top = Math.max(1, ...history.received, ...history.delivered);
    g.strokeStyle = '#e3e6eb';
    g.fillStyle = '#5a6272';
    g.font = '11px sans-serif';
    g.lineWidth = 1;
    for (const f of [0, 0.5, 1]) {
      const y = h - pad - f * (h - 2 * pad);
      g.beginPath(); g.moveTo(0, y); g.lineTo(w, y); g.stroke();
      g.fillText(rate_text(top * f) + '/s', 4, y - 3);
    }
    const x_step = w / (history_length - 1);
    for (const [list, colour] of [[history.received, '#2f6fde'], [history.delivered, '#2a9d5c']]) {
      g.strokeStyle = colour;
      g.lineWidth = 2;
      g.beginPath();
      list.forEach((v, i) => {
        const x = w - (list.length - 1 - i) * x_step;
        const y = h - pad - (v / top) * (h - 2 * pad);
        if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
      });
      g.stroke();
    }
  }

  function depth(site) {
    return (site.queued || 0) + (site.deferred || 0) + (site.in_flight || 0);
  }

  function cell(row, text, numeric) {
    const td = document.createElement('td');
    td.textContent = text === null || text === undefined ? '' : String(text);
    if (numeric) td.className = 'n';
    row.appendChild(td);
    return td;
  }

  // "5 s ago", "in 59 min": an ISO 8601 time of the API against this browser's clock.
  function relative(iso, now) {
    if (!iso) return '';
    const seconds = Math.round((Date.parse(iso) - now) / 1000);
    const a = Math.abs(seconds);
    const text = a < 120 ? a + ' s' : a < 7200 ? Math.round(a / 60) + ' min' : (a / 3600).toFixed(1) + ' h';
    return seconds < 0 ? text + ' ago' : 'in ' + text;
  }

  function show_queue(doc) {
    const sites = Array.isArray(doc.sites) ? doc.sites : [];
    const now = Date.now();
    const body = $('sites').tBodies[0];
    const deepest = sites.slice().sort((a, b) => depth(b) - depth(a));
    const rows = [];
    for (const s of deepest.slice(0, max_site_rows)) {
      const tr = document.createElement('tr');
      tr.dataset.site = s.site;
      tr.dataset.state = s.state;
      tr.className = String(s.state).replace(/ /g, '-');
      cell(tr, s.site).className = 'site';
      for (const field of ['queued', 'deferred', 'in_flight']) cell(tr, s[field], true).dataset.field = field;
      cell(tr, s.state).dataset.field = 'state';
      for (const field of ['oldest', 'next_attempt']) {
        const td = cell(tr, relative(s[field], now));
        td.title = s[field] || '';  // the exact time (UTC) on hover
      }
      rows.push(tr);
    }
    body.replaceChildren(...rows);
    $('no-sites').hidden = sites.length > 0;
    $('more-sites').textContent = sites.length > max_site_rows ? `and ${sites.length - max_site_rows} more sites` : '';

    const suspended = sites.filter((s) => s.state === 'suspended');
    $('suspended').replaceChildren(...suspended.map((s) => {
      const li = document.createElement('li');
      li.dataset.site = s.site;
      li.textContent = s.site + ' (' + depth(s) + ' waiting)';
      return li;
    }));
    $('no-suspended').hidden = suspended.length > 0;
    draw_queue(deepest);
  }

  // A bar per site (`sites`: the deepest first): queued, deferred and in flight stacked.
  function draw_queue(sites) {
    const canvas = $('queue-chart');
    const shown = sites.slice(0, max_site_bars);
    const bar = 20, label = 200;
    canvas.height = Math.max(1, shown.length) * bar + 4;
    const g = canvas.getContext('2d');
    const w = canvas.width;
    g.clearRect(0, 0, w, canvas.height);
    const top = Math.max(1, ...shown.map(depth));
    g.font = '12px sans-serif';
    shown.forEach((s, i) => {
      const y = 2 + i * bar;
      g.fillStyle = s.state === 'suspended' ? '#b3261e' : '#1d2330';
      g.fillText(s.site.length > 28 ? s.site.slice(0, 27) + '\u2026' : s.site, 4, y + 14);
      let x = label;
      for (const [field, colour] of [['in_flight', '#2a9d5c'], ['queued', '#2f6fde'], ['deferred', '#d08a1e']]) {
        const width = ((s[field] || 0) / top) * (w - label - 60);
        g.fillStyle = colour;
        g.fillRect(x, y + 3, width, bar - 6);
        x += width;
      }
      g.fillStyle = '#1d2330';
      g.fillText(String(depth(s)), x + 4, y + 14);
    });
  }

  async function fetch_ok(path) {
    const r = await fetch(path, { cache: 'no-store' });
    if (!r.ok) throw new Error(path + ': HTTP ' + r.status);
    return r;
  }

  async function refresh() {
    try {
      const [metrics, queue] = await Promise.all([
        fetch_ok('/metrics').then((r) => r.text()),
        fetch_ok('/api/v1/queue').then((r) => r.json()),
      ]);
      show_counters(parse_metrics(metrics));
      show_queue(queue);
      refreshes += 1;
      $('updated').textContent = 'updated ' + new Date().toLocaleTimeString();
      $('updated').dataset.refreshes = String(refreshes);
      $('state').textContent = 'live';
      $('state').className = 'state live';
      $('error').hidden = true;
    } catch (e) {
      $('state').textContent = 'stale';
      $('state').className = 'state stale';
      $('error').textContent = 'cannot read the relay: ' + e.message;
      $('error').hidden = false;
    }
    setTimeout(refresh, period_ms);
  }

  refresh();
})();
