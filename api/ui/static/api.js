// The API seen from the page: the key (sessionStorage), JSON requests, Server-Sent Event
// streams read with fetch() (EventSource cannot send the Authorization header), downloads.

const KEY = "trainctl.apiKey";
// The API's root: "" unless it is served under a path prefix (the page is at <root>/ui).
export const ROOT = location.pathname.replace(/\/ui\/?$/, "");

export const auth = {
  get key() {
    return sessionStorage.getItem(KEY);
  },
  set(key) {
    sessionStorage.setItem(KEY, key);
  },
  clear() {
    sessionStorage.removeItem(KEY);
  },
};

// Called on any 401: the page goes back to sign-in (set by app.js).
export const hooks = { unauthorized: () => {} };

export class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : `HTTP ${status}`);
    this.status = status;
    this.detail = detail;
  }
}

function headers(extra = {}) {
  const h = { ...extra };
  if (auth.key) h.Authorization = `Bearer ${auth.key}`;
  return h;
}

async function check(response) {
  if (response.ok) return response;
  let detail = null;
  try {
    detail = (await response.json()).detail;
  } catch {
    detail = response.statusText;
  }
  if (response.status === 401) hooks.unauthorized(detail);
  throw new ApiError(response.status, detail);
}

/** JSON of `method path` (body sent as JSON when given); ApiError on a 4xx/5xx. */
export async function api(path, { method = "GET", body, signal } = {}) {
  const init = { method, headers: headers(), signal };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await check(await fetch(ROOT + path, init));
  if (response.status === 204) return null;
  return response.json();
}

/** The response's bytes (an artifact, a projection). */
export async function fetchBytes(path, signal) {
  const response = await check(await fetch(ROOT + path, { headers: headers(), signal }));
  return response.arrayBuffer();
}

/** Save `path` as a file named `filename`: fetched with the key, handed over as a blob. */
export async function download(path, filename) {
  const response = await check(await fetch(ROOT + path, { headers: headers() }));
  const blob = await response.blob();
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
  return blob.size;
}

/**
 * Follow a Server-Sent Events stream: `onEvent(type, data, id)` per event, resuming after the
 * last event id when the connection drops (Last-Event-ID), with backoff, until an `end` event,
 * `signal` aborts, or a 4xx. Resolves when it stops.
 */
export async function followStream(path, { onEvent, signal, lastEventId = null, onState }) {
  let delay = 500;
  let lastId = lastEventId;
  while (!signal?.aborted) {
    try {
      const h = headers({ Accept: "text/event-stream" });
      if (lastId !== null) h["Last-Event-ID"] = String(lastId);
      const response = await check(await fetch(ROOT + path, { headers: h, signal, cache: "no-store" }));
      onState?.("open");
      delay = 500;
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const event = parseEvent(block);
          if (!event) continue;
          if (event.id !== null) lastId = event.id;
          if (event.type === "end") {
            onEvent(event.type, event.data, event.id);
            return;
          }
          onEvent(event.type, event.data, event.id);
        }
      }
    } catch (err) {
      if (signal?.aborted) return;
      if (err instanceof ApiError && err.status < 500) throw err;
    }
    onState?.("reconnecting");
    await sleep(delay, signal);
    delay = Math.min(delay * 2, 10_000);
  }
}

function parseEvent(block) {
  let type = "message";
  let id = null;
  const data = [];
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") type = value;
    else if (field === "data") data.push(value);
    else if (field === "id") id = value;
  }
  if (!data.length && id === null) return null;
  return { type, id, data: data.join("\n") };
}

export function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}
