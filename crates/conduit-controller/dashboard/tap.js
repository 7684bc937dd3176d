// `/namespaces/NS/tap`: live requests of a namespace's deployments, started and stopped
// by the user. Path and authority filter at the proxies (only matching requests are
// sent); method and status filter here, as lines arrive. The filters live in the URL, so
// a tap can be shared or reloaded. What the page holds is bounded: the newest
// `MAX_REQUESTS` requests and `MAX_EVENTS` other events.

import { get, stream } from './api.js';
import { h, ms, clock, nsPath, href } from './dom.js';
import { tabs } from './pages.js';

const MAX_REQUESTS = 100;
const MAX_EVENTS = 50;
const METHODS = ['', 'GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS'];

export function tap(main, ctx, namespace) {
  const q = ctx.params();
  const field = (label, input) => h('label', { class: 'field' }, label, input);
  const resource = h('select', { name: 'resource', id: 'tap-resource' }, h('option', { value: '' }, 'every deployment'));
  const path = h('input', { name: 'path', id: 'tap-path', placeholder: '/api', value: q.path ?? '' });
  const authority = h('input', { name: 'authority', id: 'tap-authority', placeholder: 'web-svc', value: q.authority ?? '' });
  const method = h('select', { name: 'method', id: 'tap-method' }, ...METHODS.map((m) => h('option', { value: m, selected: m === (q.method ?? '') }, m || 'any')));
  const status = h('input', { name: 'status', id: 'tap-status', placeholder: '5 (any 5xx)', inputmode: 'numeric', pattern: '[1-5][0-9]{0,2}', value: q.status ?? '' });
  const start = h('button', { type: 'submit', id: 'tap-start' }, 'Start');
  const stop = h('button', { type: 'button', id: 'tap-stop', disabled: true }, 'Stop');
  const state = h('p', { id: 'tap-state', role: 'status' }, 'Stopped.');
  const rows = h('tbody');
  const events = h('ul', { class: 'events' });
  const form = h(
    'form',
    { class: 'tap-form', 'aria-label': 'Tap filters' },
    field('Deployment', resource),
    field('Path prefix', path),
    field('Authority contains', authority),
    field('Method', method),
    field('Status starts with', status),
    h('div', { class: 'actions' }, start, stop),
  );
  main.replaceChildren(
    h('h1', {}, namespace),
    tabs(namespace, 'tap'),
    form,
    state,
    h(
      'div',
      { class: 'table-scroll', id: 'tap-rows', tabindex: 0, 'aria-label': 'Tapped requests' },
      h(
        'table',
        { id: 'tap-requests' },
        h('caption', {}, 'Requests, newest first'),
        h('thead', {}, h('tr', {}, ...['Time', 'Direction', 'From', 'To', 'Method', 'Authority', 'Path', 'Status', 'Latency', 'Duration'].map((c) => h('th', { scope: 'col' }, c)))),
        rows,
      ),
    ),
    h('h2', {}, 'Other events'),
    events,
  );

  /** Requests by id, oldest first (a Map keeps insertion order). */
  const requests = new Map();
  let running = null;
  let drawPending = false;

  const matches = (r) => {
    if (method.value && r.method !== method.value) return false;
    if (status.value && !(r.status !== undefined && String(r.status).startsWith(status.value))) return false;
    return true;
  };
  const draw = () => {
    drawPending = false;
    const shown = [...requests.values()].filter(matches).reverse();
    rows.replaceChildren(
      ...shown.map((r) =>
        h(
          'tr',
          { 'data-id': r.id, 'data-status': r.status ?? '', class: r.status >= 500 || r.proxy_error ? 'failed' : null },
          h('td', {}, clock(r.at)),
          h('td', {}, r.direction),
          h('td', {}, r.src_resource ?? r.src),
          h('td', {}, r.dst_resource ?? r.dst),
          h('td', {}, r.method ?? ''),
          h('td', {}, r.authority ?? ''),
          h('td', { class: 'path' }, r.path ?? ''),
          h('td', { class: 'num' }, r.proxy_error ? `${r.status ?? ''} ${r.proxy_error}` : r.status ?? ''),
          h('td', { class: 'num' }, r.latency_us === undefined ? '' : ms(r.latency_us / 1000)),
          h('td', { class: 'num' }, r.duration_us === undefined ? '' : ms(r.duration_us / 1000)),
        ),
      ),
    );
    rows.dataset.count = String(shown.length);
  };
  const redraw = () => {
    if (!drawPending) {
      drawPending = true;
      window.requestAnimationFrame(draw);
    }
  };
  const onLine = (line) => {
    if (line.type === 'request') {
      requests.set(line.id, { ...line, at: Date.now() });
      if (requests.size > MAX_REQUESTS) requests.delete(requests.keys().next().value);
    } else if (line.type === 'response' || line.type === 'end') {
      const r = requests.get(line.id);
      if (!r) return;
      for (const k of ['status', 'latency_us', 'duration_us', 'grpc_status', 'proxy_error']) if (line[k] !== undefined) r[k] = line[k];
    } else {
      const what = line.error ?? line.proxy_error ?? (line.backoff_ms !== undefined ? `out for ${line.backoff_ms}ms` : '');
      events.prepend(h('li', { 'data-type': line.type }, `${clock(Date.now())} ${line.type} ${line.namespace}/${line.pod} ${line.src ?? ''} ${what}`));
      while (events.childElementCount > MAX_EVENTS) events.lastElementChild.remove();
    }
    redraw();
  };
  const setRunning = (on, message) => {
    start.disabled = on;
    stop.disabled = !on;
    state.textContent = message;
  };
  const halt = () => {
    if (running) running.abort();
    running = null;
  };
  const go = () => {
    halt();
    const chosen = resource.value;
    const params = { namespace, resource: 'deploy', name: chosen || undefined, path: path.value, authority: authority.value };
    const filters = { resource: chosen ? `deploy/${chosen}` : '', path: path.value, authority: authority.value, method: method.value, status: status.value };
    window.history.replaceState(null, '', href(nsPath(namespace, 'tap'), filters));
    const controller = new AbortController();
    running = controller;
    requests.clear();
    redraw();
    setRunning(true, `Tapping ${chosen ? `deploy/${chosen}` : 'every deployment'} in ${namespace}…`);
    stream('tap', params, controller.signal, onLine)
      .then(() => running === controller && setRunning(false, 'The tap ended.'))
      .catch((e) => {
        if (e.name === 'AbortError') return;
        setRunning(false, `The tap stopped: ${e.message}`);
        ctx.fail(e);
      })
      .finally(() => {
        if (running === controller) running = null;
      });
  };
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    go();
  });
  stop.addEventListener('click', () => {
    halt();
    setRunning(false, 'Stopped.');
    start.focus();
  });
  method.addEventListener('change', redraw);
  status.addEventListener('input', redraw);

  const wanted = (q.resource ?? '').replace(/^deploy\//, '');
  let filled = false;
  return {
    title: `${namespace} tap`,
    crumbs: [
      [namespace, nsPath(namespace)],
      ['tap', nsPath(namespace, 'tap')],
    ],
    /** The deployments to choose from (once: the choice must not move under the user). */
    async refresh(signal) {
      if (filled) return;
      const deployments = await get('stat', { resource: 'deploy', namespace, window: ctx.window }, signal);
      for (const d of deployments) resource.append(h('option', { value: d.name, selected: d.name === wanted }, d.name));
      filled = true;
    },
    stop: halt,
  };
}
