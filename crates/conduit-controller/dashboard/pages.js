// The dashboard's pages but tap (`tap.js`): the namespaces overview, a namespace's
// workloads, a deployment's page and a namespace's topology. Each page draws its frame
// once and then `refresh` fills it from the API whenever the shell asks (every few
// seconds while the page is visible).

import { get } from './api.js';
import { h, percent, rps, ms, secured, nsPath, href } from './dom.js';
import { SortableTable } from './table.js';
import { lineChart } from './chart.js';
import { topology as graph } from './topology.js';

/** Windows the pages offer; the API takes any duration. */
const WINDOWS = ['10s', '1m', '5m', '15m'];

/** How far back a deployment's charts go, and the time between their points. */
const CHART_WINDOW = '10m';
const CHART_STEP = '10s';

/** A choice of the window rates cover, kept in the page's URL (`?window=`). */
function windowPicker(ctx) {
  const select = h(
    'select',
    { id: 'window', onchange: () => ctx.go(href(window.location.pathname, { ...ctx.params(), window: select.value }), { replace: true }) },
    ...WINDOWS.map((w) => h('option', { value: w, selected: w === ctx.window }, `last ${w}`)),
  );
  if (!WINDOWS.includes(ctx.window)) select.prepend(h('option', { value: ctx.window, selected: true }, `last ${ctx.window}`));
  return h('label', { class: 'picker' }, 'Window ', select);
}

/** A namespace's pages, as tabs. */
export function tabs(namespace, current) {
  const tab = (id, label, path) =>
    h('a', { href: path, class: 'tab', 'aria-current': id === current ? 'page' : null }, label);
  return h(
    'nav',
    { class: 'tabs', 'aria-label': `Namespace ${namespace}` },
    tab('workloads', 'Workloads', nsPath(namespace)),
    tab('topology', 'Topology', nsPath(namespace, 'topology')),
    tab('tap', 'Tap', nsPath(namespace, 'tap')),
  );
}

/** The golden metrics' columns, read from `stat(row)` (a `StatRow`, or none without one). */
function goldenColumns(stat) {
  const figure = (id, label, read, show) => ({
    id,
    label,
    numeric: true,
    value: (r) => {
      const v = stat(r) && read(stat(r));
      return v === undefined ? null : v;
    },
    cell: (r) => (stat(r) ? show(read(stat(r))) : '-'),
  });
  return [
    figure('success', 'Success', (x) => x.success_rate, (v) => percent(v)),
    figure('rps', 'RPS', (x) => x.request_rate, rps),
    figure('p50', 'P50', (x) => x.latency_ms_p50, ms),
    figure('p95', 'P95', (x) => x.latency_ms_p95, ms),
    figure('p99', 'P99', (x) => x.latency_ms_p99, ms),
    figure('tls', 'TLS', (x) => x.tls_rate, (v) => percent(v, 0)),
  ];
}

/** `meshed` like `1/2` as a share, for sorting. */
function meshedShare(meshed) {
  const [have, all] = meshed.split('/').map(Number);
  return all ? have / all : null;
}

/** `/`: every namespace, how much of it is meshed, and its golden metrics. */
export function namespaces(main, ctx) {
  const table = new SortableTable({
    caption: 'Namespaces',
    key: (r) => r.name,
    columns: [
      { id: 'name', label: 'Namespace', value: (r) => r.name, cell: (r) => h('a', { href: nsPath(r.name) }, r.name) },
      { id: 'meshed', label: 'Meshed', numeric: true, value: (r) => (r.pods ? r.meshed_pods / r.pods : null), cell: (r) => `${r.meshed_pods}/${r.pods}` },
      { id: 'services', label: 'Services', numeric: true, value: (r) => r.services },
      { id: 'inject', label: 'Injection', value: (r) => (r.inject ? 'enabled' : '-') },
      ...goldenColumns((r) => r.stat),
    ],
  });
  main.replaceChildren(h('h1', {}, 'Namespaces'), h('div', { class: 'toolbar' }, windowPicker(ctx)), table.element);
  return {
    title: 'Namespaces',
    crumbs: [],
    async refresh(signal) {
      const [rows, stats] = await Promise.all([
        get('namespaces', {}, signal),
        get('stat', { resource: 'ns', window: ctx.window }, signal),
      ]);
      const byName = new Map(stats.map((x) => [x.name, x]));
      table.update(rows.map((r) => ({ ...r, stat: byName.get(r.name) })));
    },
  };
}

/** `/namespaces/NS`: the namespace's deployments, as `conduit stat deploy -n NS` shows them. */
export function workloads(main, ctx, namespace) {
  const table = new SortableTable({
    caption: `Deployments in ${namespace}`,
    key: (r) => r.name,
    empty: 'No deployments in this namespace.',
    columns: [
      { id: 'name', label: 'Deployment', value: (r) => r.name, cell: (r) => h('a', { href: nsPath(namespace, 'deployments', r.name) }, r.name) },
      { id: 'meshed', label: 'Meshed', numeric: true, value: (r) => meshedShare(r.meshed), cell: (r) => r.meshed },
      ...goldenColumns((r) => r),
      { id: 'tcp', label: 'TCP', numeric: true, value: (r) => r.tcp_connections },
    ],
  });
  main.replaceChildren(h('h1', {}, namespace), tabs(namespace, 'workloads'), h('div', { class: 'toolbar' }, windowPicker(ctx)), table.element);
  return {
    title: namespace,
    crumbs: [[namespace, nsPath(namespace)]],
    async refresh(signal) {
      table.update(await get('stat', { resource: 'deploy', namespace, window: ctx.window }, signal));
    },
  };
}

/** An identity list for a cell. */
function identities(ids) {
  return ids.length ? h('ul', { class: 'ids' }, ...ids.map((id) => h('li', {}, h('code', {}, id)))) : '-';
}

/** `/namespaces/NS/deployments/NAME`: its figures, charts, pods, edges and routes. */
export function deployment(main, ctx, namespace, name) {
  const deployHref = (ns, n) => nsPath(ns, 'deployments', n);
  const summary = h('dl', { class: 'summary' });
  const charts = h('div', { class: 'charts' });
  const pods = new SortableTable({
    caption: 'Pods',
    key: (r) => r.name,
    columns: [
      { id: 'name', label: 'Pod', value: (r) => r.name },
      { id: 'ready', label: 'Ready', value: (r) => (r.ready ? 'yes' : 'no') },
      { id: 'meshed', label: 'Meshed', value: (r) => (r.meshed ? 'yes' : 'no') },
      { id: 'ip', label: 'IP', value: (r) => r.ip },
      { id: 'account', label: 'ServiceAccount', value: (r) => r.service_account },
      ...goldenColumns((r) => r.stat),
    ],
  });
  const edgeColumns = (peer, peerLabel, ids, idsLabel) => [
    { id: 'peer', label: peerLabel, value: (e) => peer(e).join('/'), cell: (e) => h('a', { href: deployHref(...peer(e)) }, peer(e)[0] === namespace ? peer(e)[1] : peer(e).join('/')) },
    { id: 'success', label: 'Success', numeric: true, value: (e) => e.success_rate, cell: (e) => percent(e.success_rate) },
    { id: 'rps', label: 'RPS', numeric: true, value: (e) => e.request_rate, cell: (e) => rps(e.request_rate) },
    { id: 'identity', label: idsLabel, value: (e) => ids(e).join(' '), cell: (e) => identities(ids(e)) },
    { id: 'secured', label: 'Secured', value: (e) => e.tls_rate, cell: (e) => secured(e.tls_rate) },
  ];
  const inbound = new SortableTable({
    caption: 'Inbound: who calls it',
    key: (e) => `${e.src_namespace}/${e.src}`,
    empty: 'No meshed client called it in the window.',
    columns: edgeColumns((e) => [e.src_namespace, e.src], 'From', (e) => (e.client_id ? [e.client_id] : []), 'Client identity'),
  });
  const outbound = new SortableTable({
    caption: 'Outbound: whom it calls',
    key: (e) => `${e.dst_namespace}/${e.dst}`,
    empty: 'It called no meshed workload in the window.',
    columns: edgeColumns((e) => [e.dst_namespace, e.dst], 'To', (e) => e.server_ids, 'Server identities'),
  });
  const routes = new SortableTable({
    caption: 'Routes (inbound, by its Services’ profiles)',
    key: (r) => `${r.service}/${r.route}`,
    columns: [
      { id: 'route', label: 'Route', value: (r) => r.route },
      { id: 'service', label: 'Service', value: (r) => r.service ?? '-' },
      ...goldenColumns((r) => r).filter((c) => c.id !== 'tls'),
    ],
  });
  main.replaceChildren(
    h('h1', {}, h('span', { class: 'kind' }, 'deploy/'), name),
    h(
      'div',
      { class: 'toolbar' },
      windowPicker(ctx),
      h('a', { class: 'button', href: href(nsPath(namespace, 'tap'), { resource: `deploy/${name}` }) }, 'Tap its traffic'),
    ),
    summary,
    h('h2', {}, `The last ${CHART_WINDOW}`),
    charts,
    h('h2', {}, 'Pods'),
    pods.element,
    h('h2', {}, 'Edges'),
    inbound.element,
    outbound.element,
    h('h2', {}, 'Routes'),
    routes.element,
  );
  return {
    title: `deploy/${name}`,
    crumbs: [
      [namespace, nsPath(namespace)],
      [name, deployHref(namespace, name)],
    ],
    async refresh(signal) {
      const w = ctx.window;
      const [stat, series, podStats, known, edges, routeRows] = await Promise.all([
        get('stat', { resource: 'deploy', namespace, name, window: w }, signal),
        get('series', { resource: 'deploy', namespace, name, window: CHART_WINDOW, step: CHART_STEP }, signal),
        get('stat', { resource: 'pod', namespace, window: w }, signal),
        get('workloads', {}, signal),
        get('edges', { namespace, window: w }, signal),
        get('routes', { deployment: name, namespace, window: w }, signal),
      ]);
      const row = stat[0];
      const figures = [
        ['Meshed', row?.meshed ?? '-'],
        ['Success', percent(row?.success_rate)],
        ['Effective success', percent(row?.effective_success_rate)],
        ['RPS', row ? rps(row.request_rate) : '-'],
        ['P99', ms(row?.latency_ms_p99)],
        ['TLS', percent(row?.tls_rate, 0)],
      ];
      summary.replaceChildren(...figures.map(([k, v]) => h('div', { 'data-figure': k }, h('dt', {}, k), h('dd', {}, v))));
      const points = series.points;
      charts.replaceChildren(
        lineChart({ id: 'success', title: 'Success rate', points, lines: [{ label: 'success', value: (p) => p.success_rate }], format: (v) => percent(v, 0), max: 1 }),
        lineChart({ id: 'rps', title: 'Request rate', points, lines: [{ label: 'requests/s', value: (p) => p.request_rate }], format: (v) => rps(v) }),
        lineChart({
          id: 'latency',
          title: 'Latency',
          points,
          lines: [
            { label: 'p50', value: (p) => p.latency_ms_p50 },
            { label: 'p95', value: (p) => p.latency_ms_p95 },
            { label: 'p99', value: (p) => p.latency_ms_p99 },
          ],
          format: ms,
        }),
      );
      const statOf = new Map(podStats.map((x) => [x.name, x]));
      pods.update(
        known.pods
          .filter((p) => p.namespace === namespace && p.deployment === name)
          .map((p) => ({ ...p, stat: statOf.get(p.name) })),
      );
      inbound.update(edges.filter((e) => e.dst_namespace === namespace && e.dst === name));
      outbound.update(edges.filter((e) => e.src_namespace === namespace && e.src === name));
      routes.update(routeRows);
    },
  };
}

/** `/namespaces/NS/topology`: who calls whom among the namespace's deployments. */
export function topology(main, ctx, namespace) {
  const picture = h('div', { class: 'graph' });
  const table = new SortableTable({
    caption: 'Edges',
    key: (e) => `${e.src_namespace}/${e.src}->${e.dst_namespace}/${e.dst}`,
    empty: 'No meshed calls in the window.',
    columns: [
      { id: 'from', label: 'From', value: (e) => `${e.src_namespace}/${e.src}` },
      { id: 'to', label: 'To', value: (e) => `${e.dst_namespace}/${e.dst}` },
      { id: 'success', label: 'Success', numeric: true, value: (e) => e.success_rate, cell: (e) => percent(e.success_rate) },
      { id: 'rps', label: 'RPS', numeric: true, value: (e) => e.request_rate, cell: (e) => rps(e.request_rate) },
      { id: 'secured', label: 'Secured', value: (e) => e.tls_rate, cell: (e) => secured(e.tls_rate) },
    ],
  });
  main.replaceChildren(
    h('h1', {}, namespace),
    tabs(namespace, 'topology'),
    h('div', { class: 'toolbar' }, windowPicker(ctx), h('span', { class: 'key' }, 'solid: mutual TLS · dashed: not secured')),
    picture,
    table.element,
  );
  const id = (ns, name) => (ns === namespace ? name : `${ns}/${name}`);
  return {
    title: `${namespace} topology`,
    crumbs: [
      [namespace, nsPath(namespace)],
      ['topology', nsPath(namespace, 'topology')],
    ],
    async refresh(signal) {
      const [edges, stats] = await Promise.all([
        get('edges', { namespace, window: ctx.window }, signal),
        get('stat', { resource: 'deploy', namespace, window: ctx.window }, signal),
      ]);
      const nodes = new Map();
      const node = (ns, name, stat) => {
        const key = id(ns, name);
        if (!nodes.has(key) || stat) {
          const detail = !stat ? ns : stat.request_rate > 0 ? `${percent(stat.success_rate)} · ${rps(stat.request_rate)}` : 'no requests in';
          nodes.set(key, { id: key, label: key, detail, href: nsPath(ns, 'deployments', name) });
        }
      };
      for (const x of stats) node(namespace, x.name, x);
      for (const e of edges) {
        node(e.src_namespace, e.src);
        node(e.dst_namespace, e.dst);
      }
      picture.replaceChildren(
        graph({
          nodes: [...nodes.values()],
          edges: edges.map((e) => ({
            from: id(e.src_namespace, e.src),
            to: id(e.dst_namespace, e.dst),
            label: `${rps(e.request_rate)} · ${percent(e.success_rate, 1)}`,
            secure: e.tls_rate >= 1,
          })),
        }),
      );
      table.update(edges);
    },
  };
}
