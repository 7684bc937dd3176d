// Builds the page's elements (HTML and SVG) and formats the API's numbers the way
// `conduit stat` prints them.

const SVG_NS = 'http://www.w3.org/2000/svg';

function build(el, attrs, children) {
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** An HTML element: `h('a', {href: '/'}, 'home')`. */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** An SVG element, likewise. */
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

/** A rate of 0..1 as a percentage, `-` without one. */
export function percent(rate, decimals = 2) {
  return rate === null || rate === undefined ? '-' : `${(rate * 100).toFixed(decimals)}%`;
}

/** Requests per second. */
export function rps(rate) {
  return `${rate.toFixed(1)}rps`;
}

/** Milliseconds, with a decimal below 10. */
export function ms(v) {
  if (v === null || v === undefined) return '-';
  return v < 10 ? `${v.toFixed(1)}ms` : `${v.toFixed(0)}ms`;
}

/** Whether traffic went over mutual TLS: all of it, some of it, none. */
export function secured(tlsRate) {
  if (tlsRate === null || tlsRate === undefined) return '-';
  if (tlsRate >= 1) return 'mTLS';
  if (tlsRate <= 0) return 'no';
  return `partly (${percent(tlsRate, 0)})`;
}

/** A time of day from Unix milliseconds, like 14:03:07. */
export function clock(unixMs) {
  return new Date(unixMs).toLocaleTimeString([], { hour12: false });
}

/** The URL of a page of the dashboard: a path and its query. */
export function href(path, query = {}) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) if (v) q.set(k, v);
  const qs = q.toString();
  return qs ? `${path}?${qs}` : path;
}

/** The path of a namespace's page, or of one of its pages. */
export function nsPath(namespace, ...rest) {
  return `/namespaces/${[namespace, ...rest].map(encodeURIComponent).join('/')}`;
}
