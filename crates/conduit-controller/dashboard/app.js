// The dashboard's shell: routes each URL to its page (the same paths the controller
// serves the page at: `PAGES` in `src/dashboard.rs`), follows the dashboard's own links
// without reloading, refreshes the page every `REFRESH_MS` while it is visible, and shows
// what the API refused in a banner until it answers again.

import { get } from './api.js';
import { h, clock } from './dom.js';
import * as pages from './pages.js';
import { tap } from './tap.js';

const REFRESH_MS = 5000;

const ROUTES = [
  [/^\/$/, pages.namespaces],
  [/^\/namespaces\/([^/]+)$/, pages.workloads],
  [/^\/namespaces\/([^/]+)\/deployments\/([^/]+)$/, pages.deployment],
  [/^\/namespaces\/([^/]+)\/topology$/, pages.topology],
  [/^\/namespaces\/([^/]+)\/tap$/, tap],
];

const main = document.getElementById('main');
const crumbs = document.getElementById('crumbs');
const banner = document.getElementById('banner');
const live = document.getElementById('live');

/** The page on screen: what it is, and how to stop it. */
let current = null;

function fail(error) {
  banner.replaceChildren(h('strong', {}, error.status ? `The API answered ${error.status}: ` : 'No answer: '), error.message);
  banner.hidden = false;
  live.textContent = 'not updating';
}

function answered() {
  banner.hidden = true;
  live.textContent = `updated ${clock(Date.now())}`;
}

function go(url, { replace = false } = {}) {
  if (replace) window.history.replaceState(null, '', url);
  else window.history.pushState(null, '', url);
  show(true);
}

function leave() {
  if (!current) return;
  current.stopped = true;
  clearTimeout(current.timer);
  current.abort.abort();
  current.page.stop?.();
  current = null;
}

async function refresh(state) {
  if (state.stopped) return;
  if (!document.hidden && state.page.refresh) {
    try {
      await state.page.refresh(state.abort.signal);
      if (!state.stopped) answered();
    } catch (e) {
      if (e.name !== 'AbortError' && !state.stopped) fail(e);
    }
  }
  if (!state.stopped) state.timer = setTimeout(() => refresh(state), REFRESH_MS);
}

function show(moved) {
  leave();
  banner.hidden = true;
  const path = window.location.pathname;
  const query = new URLSearchParams(window.location.search);
  const ctx = {
    window: query.get('window') || '1m',
    params: () => Object.fromEntries(new URLSearchParams(window.location.search)),
    go,
    fail,
  };
  let page = null;
  for (const [pattern, draw] of ROUTES) {
    const m = pattern.exec(path);
    if (m) {
      page = draw(main, ctx, ...m.slice(1).map(decodeURIComponent));
      break;
    }
  }
  if (!page) {
    main.replaceChildren(h('h1', {}, 'No such page'), h('p', {}, 'The dashboard has no page at ', h('code', {}, path), '. ', h('a', { href: '/' }, 'See every namespace.')));
    page = { title: 'No such page', crumbs: [] };
  }
  document.title = `${page.title} · Conduit`;
  const trail = [['Namespaces', '/'], ...page.crumbs];
  crumbs.replaceChildren(
    h('ol', {}, ...trail.map(([label, url], i) => h('li', {}, h('a', { href: url, 'aria-current': i === trail.length - 1 ? 'page' : null }, label)))),
  );
  current = { page, abort: new AbortController(), stopped: false, timer: null };
  refresh(current);
  // After a click, put keyboard and screen-reader users at the new page's start.
  if (moved) main.focus();
}

document.addEventListener('click', (e) => {
  const a = e.target.closest('a');
  if (!a || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
  const url = a.getAttribute('href');
  if (!url || !url.startsWith('/') || url.startsWith('/api/')) return;
  e.preventDefault();
  go(url);
});
window.addEventListener('popstate', () => show(true));
document.addEventListener('visibilitychange', () => {
  if (!document.hidden && current && !current.stopped) {
    clearTimeout(current.timer);
    refresh(current);
  }
});

get('version')
  .then((v) => {
    document.getElementById('version').textContent = `Conduit ${v.version}`;
  })
  .catch(fail);
show(false);
