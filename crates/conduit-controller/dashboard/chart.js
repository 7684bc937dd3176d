// Line charts of a series in SVG: time across, values up from zero, one line per figure
// with a dot per point (a gap where a point has no value: there was no traffic then),
// grid lines with their values, the times of the first, middle and last points, and a
// legend that names each line's latest value.

import { h, s, clock } from './dom.js';

const W = 420;
const H = 190;
const PAD = { left: 50, right: 10, top: 10, bottom: 24 };

/** The smallest of 1, 2, 2.5 or 5 times a power of ten at or above `v`. */
function niceCeil(v) {
  if (!(v > 0)) return 0;
  const p = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 2.5, 5, 10].map((m) => m * p).find((c) => c >= v * (1 - 1e-9));
}

const known = (v) => v !== null && v !== undefined && Number.isFinite(v);

/**
 * A chart of `points` (a series' points); `lines`: `{ label, value(point) }`;
 * `format(v)` writes a value; `max` fixes the top (1 for rates of 0..1).
 */
export function lineChart({ id, title, points, lines, format, max }) {
  const figure = h('figure', { class: 'chart', 'data-chart': id }, h('figcaption', {}, title));
  if (points.length === 0) {
    figure.append(h('p', { class: 'empty' }, 'No points yet: the controller has not scraped this workload twice.'));
    return figure;
  }
  const t0 = points[0].time_unix_ms;
  const t1 = points[points.length - 1].time_unix_ms;
  const values = lines.flatMap((l) => points.map(l.value)).filter(known);
  const top = max ?? (niceCeil(Math.max(0, ...values)) || 1);
  const x = (t) => PAD.left + (t1 > t0 ? (t - t0) / (t1 - t0) : 0.5) * (W - PAD.left - PAD.right);
  const y = (v) => H - PAD.bottom - (Math.min(v, top) / top) * (H - PAD.top - PAD.bottom);

  const grid = [0, 0.25, 0.5, 0.75, 1].map((f) => {
    const v = top * f;
    return s(
      'g',
      { class: 'grid' },
      s('line', { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v) }),
      s('text', { x: PAD.left - 6, y: y(v) + 4, 'text-anchor': 'end' }, format(v)),
    );
  });
  const middle = points[Math.floor(points.length / 2)];
  const ticks = [...new Set([points[0], middle, points[points.length - 1]])].map((p, i, all) =>
    s(
      'text',
      { class: 'tick', x: x(p.time_unix_ms), y: H - 6, 'text-anchor': i === 0 ? 'start' : i === all.length - 1 ? 'end' : 'middle' },
      clock(p.time_unix_ms),
    ),
  );
  const drawn = lines.map((line, i) => {
    let d = '';
    let joined = false;
    const dots = [];
    for (const p of points) {
      const v = line.value(p);
      if (!known(v)) {
        joined = false;
        continue;
      }
      d += `${joined ? 'L' : 'M'}${x(p.time_unix_ms).toFixed(1)},${y(v).toFixed(1)}`;
      joined = true;
      dots.push(
        s('circle', { cx: x(p.time_unix_ms).toFixed(1), cy: y(v).toFixed(1), r: 2 }, s('title', {}, `${clock(p.time_unix_ms)} ${line.label}: ${format(v)}`)),
      );
    }
    return s('g', { class: `line series-${i}`, 'data-line': line.label, 'data-points': dots.length }, s('path', { d }), ...dots);
  });
  const latest = (line) => {
    const v = [...points].reverse().map(line.value).find(known);
    return known(v) ? format(v) : '-';
  };
  figure.append(
    s('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': `${title}: ${lines.map((l) => `${l.label} ${latest(l)}`).join(', ')}` }, ...grid, ...ticks, ...drawn),
    h('ul', { class: 'legend' }, ...lines.map((l, i) => h('li', {}, h('span', { class: `swatch series-${i}`, 'aria-hidden': 'true' }), `${l.label} ${latest(l)}`))),
  );
  return figure;
}
