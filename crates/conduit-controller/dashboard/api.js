// Talks to the controller's public API v1, the one the CLI uses: JSON answers, refusals
// as errors that carry the API's own message, and tap's stream of JSON lines.

/** Where the API lives. */
export const V1 = '/api/v1';

/** A request the API refused, or could not be sent. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
  }
}

function url(endpoint, params) {
  const u = new URL(`${V1}/${endpoint}`, window.location.origin);
  for (const [k, v] of Object.entries(params ?? {})) {
    if (v !== undefined && v !== null && v !== '') u.searchParams.set(k, v);
  }
  return u;
}

async function send(u, signal) {
  try {
    return await fetch(u, { signal, headers: { accept: 'application/json' } });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, `cannot reach the dashboard's server (${e.message}): is conduit dashboard still running?`);
  }
}

async function refusal(u, rsp) {
  const text = await rsp.text();
  try {
    const body = JSON.parse(text);
    if (typeof body.error === 'string') return new ApiError(rsp.status, body.error);
  } catch {
    // Not the API's JSON: say what came back instead.
  }
  return new ApiError(rsp.status, `${u.pathname} answered ${rsp.status} ${rsp.statusText}`);
}

/** GETs `endpoint` with `params` (absent ones left out) and reads its JSON. */
export async function get(endpoint, params, signal) {
  const u = url(endpoint, params);
  const rsp = await send(u, signal);
  if (!rsp.ok) throw await refusal(u, rsp);
  return rsp.json();
}

/** GETs a stream of JSON lines and calls `onLine` with each, until it ends or `signal` aborts. */
export async function stream(endpoint, params, signal, onLine) {
  const u = url(endpoint, params);
  const rsp = await send(u, signal);
  if (!rsp.ok) throw await refusal(u, rsp);
  const reader = rsp.body.getReader();
  const decoder = new TextDecoder();
  let pending = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    pending += decoder.decode(value, { stream: true });
    let newline;
    while ((newline = pending.indexOf('\n')) >= 0) {
      const line = pending.slice(0, newline).trim();
      pending = pending.slice(newline + 1);
      if (line) onLine(JSON.parse(line));
    }
  }
}
