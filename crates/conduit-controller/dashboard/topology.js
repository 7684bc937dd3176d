// The graph of who calls whom: deployments in columns by their distance from the callers
// nobody calls, arrows from caller to callee labelled with the request rate and success
// rate, solid when mutual TLS secures all of the traffic and dashed when it does not.
// Each deployment links to its page.

import { s } from './dom.js';

const NODE_W = 170;
const NODE_H = 46;
const GAP_X = 120;
const GAP_Y = 36;
const MARGIN = 16;

/**
 * `nodes`: `{ id, label, detail, href }`; `edges`: `{ from, to, label, secure }` between
 * node ids.
 */
export function topology({ nodes, edges }) {
  // Each node's column: the longest chain of callers before it (cycles stop growing at
  // the number of nodes).
  const depth = new Map(nodes.map((n) => [n.id, 0]));
  for (let round = 0; round < nodes.length; round++) {
    let moved = false;
    for (const e of edges) {
      if (e.from === e.to || !depth.has(e.from) || !depth.has(e.to)) continue;
      const want = depth.get(e.from) + 1;
      if (want > depth.get(e.to) && want < nodes.length) {
        depth.set(e.to, want);
        moved = true;
      }
    }
    if (!moved) break;
  }
  const columns = [];
  for (const n of [...nodes].sort((a, b) => a.id.localeCompare(b.id))) {
    const d = depth.get(n.id);
    (columns[d] ??= []).push(n);
  }
  const place = new Map();
  columns.forEach((column, c) =>
    (column ?? []).forEach((n, r) =>
      place.set(n.id, { x: MARGIN + c * (NODE_W + GAP_X), y: MARGIN + r * (NODE_H + GAP_Y) }),
    ),
  );
  const width = MARGIN * 2 + Math.max(1, columns.length) * (NODE_W + GAP_X) - GAP_X;
  const height = MARGIN * 2 + Math.max(1, ...columns.map((c) => (c ?? []).length)) * (NODE_H + GAP_Y) - GAP_Y;

  const arrows = edges
    .filter((e) => place.has(e.from) && place.has(e.to))
    .map((e) => {
      const a = place.get(e.from);
      const b = place.get(e.to);
      let d;
      let label;
      if (b.x > a.x) {
        const [sx, sy, tx, ty] = [a.x + NODE_W, a.y + NODE_H / 2, b.x - 2, b.y + NODE_H / 2];
        const bend = (tx - sx) / 2;
        d = `M${sx},${sy} C${sx + bend},${sy} ${tx - bend},${ty} ${tx},${ty}`;
        label = { x: (sx + tx) / 2, y: (sy + ty) / 2 - 6 };
      } else {
        // Back (or same-column) calls loop under the nodes.
        const [sx, sy, tx, ty] = [a.x + NODE_W / 2 + 10, a.y + NODE_H, b.x + NODE_W / 2 - 10, b.y + NODE_H + 2];
        const low = Math.max(sy, ty) + GAP_Y;
        d = `M${sx},${sy} C${sx},${low} ${tx},${low} ${tx},${ty}`;
        label = { x: (sx + tx) / 2, y: low - 4 };
      }
      return s(
        'g',
        { class: `edge ${e.secure ? 'secure' : 'plain'}`, 'data-src': e.from, 'data-dst': e.to },
        s('path', { d, 'marker-end': 'url(#arrow)' }),
        s('text', { x: label.x, y: label.y, 'text-anchor': 'middle' }, e.label),
      );
    });
  const boxes = nodes.map((n) => {
    const p = place.get(n.id);
    return s(
      'a',
      { href: n.href, class: 'node', 'data-node': n.id },
      s('rect', { x: p.x, y: p.y, width: NODE_W, height: NODE_H, rx: 6 }),
      s('text', { class: 'name', x: p.x + 10, y: p.y + 19 }, n.label),
      s('text', { class: 'detail', x: p.x + 10, y: p.y + 36 }, n.detail),
    );
  });
  return s(
    'svg',
    { class: 'topology', viewBox: `0 0 ${width} ${height + GAP_Y}`, role: 'group', 'aria-label': `${nodes.length} deployments, ${edges.length} edges` },
    s('defs', {}, s('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' }, s('path', { d: 'M0,0 L10,5 L0,10 z' }))),
    ...arrows,
    ...boxes,
  );
}
