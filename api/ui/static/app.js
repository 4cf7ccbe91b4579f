// The dashboard: views addressed by the URL's # part (#/jobs, #/submit, #/job/ID,
// #/job/ID/map, #/compare?jobs=A,B&metric=M&group=G, #/signin).

import { api, ApiError, auth, download, fetchBytes, followStream, hooks, sleep } from "./api.js";
import { formatNumber, LineChart, PALETTE, Scatter } from "./charts.js";
import { parseCsv, parseNpy } from "./npy.js";

const FINISHED = new Set(["succeeded", "failed", "cancelled"]);
const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"];
const NEXT = "trainctl.next";

// What the browser test and the page-weight bench read: when each epoch's point was drawn.
const perf = (window.trainctlPerf = { pointShown: {}, draws: [], marks: { appStart: performance.now() } });

// --- small DOM helpers -------------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const $view = () => document.getElementById("view");

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
const escapeHtml = (value) => String(value).replace(/[&<>"']/g, (c) => ESCAPES[c]);

function when(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return d.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
}

function duration(job) {
  if (!job.started_at) return "–";
  const end = job.finished_at ? new Date(job.finished_at) : new Date();
  let s = Math.max(0, Math.round((end - new Date(job.started_at)) / 1000));
  const hours = Math.floor(s / 3600);
  const minutes = Math.floor((s % 3600) / 60);
  s %= 60;
  return hours ? `${hours}h ${minutes}m` : minutes ? `${minutes}m ${s}s` : `${s}s`;
}

function bytes(n) {
  if (n < 1024) return `${n} B`;
  const units = ["KB", "MB", "GB", "TB"];
  let v = n, i = -1;
  do { v /= 1024; i++; } while (v >= 1024 && i < units.length - 1);
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

const badge = (status) => h("span", { class: `badge ${status}`, dataset: { status } }, status);
const shortId = (id) => id.slice(0, 8);

function errorText(err) {
  if (err instanceof ApiError) {
    if (Array.isArray(err.detail)) return err.detail.map((d) => `${d.loc || "spec"}: ${d.msg}`).join("; ");
    return `${err.status}: ${err.detail}`;
  }
  return String(err?.message ?? err);
}

function notice(text, kind = "error") {
  return h("p", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
}

// --- routing -----------------------------------------------------------------------------------

let current = null; // the view's AbortController: streams and polls stop when it is left

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, query = ""] = raw.split("?");
  return { parts: path.split("/").filter(Boolean), params: new URLSearchParams(query) };
}

async function route() {
  current?.abort();
  current = new AbortController();
  const { signal } = current;
  const { parts, params } = parseHash();
  document.body.dataset.signedIn = auth.key ? "yes" : "no";
  if (!auth.key && parts[0] !== "signin") {
    sessionStorage.setItem(NEXT, location.hash || "#/jobs");
    location.hash = "#/signin";
    return;
  }
  const view = $view();
  view.replaceChildren();
  for (const a of document.querySelectorAll("nav a[data-view]")) {
    a.classList.toggle("active", a.dataset.view === (parts[0] || "jobs"));
  }
  try {
    switch (parts[0] ?? "jobs") {
      case "signin": return signInView(view);
      case "jobs": return await jobsView(view, signal);
      case "submit": return submitView(view);
      case "job":
        if (parts[2] === "map") return await mapView(view, parts[1], signal);
        return await jobView(view, parts[1], signal);
      case "compare": return await compareView(view, params, signal);
      default: location.hash = "#/jobs";
    }
  } catch (err) {
    if (signal.aborted) return;
    if (err instanceof ApiError && err.status === 401) return; // handled by the hook
    view.append(notice(errorText(err)));
  }
}

hooks.unauthorized = (detail) => {
  const was = auth.key;
  auth.clear();
  if (!was) return;
  sessionStorage.setItem("trainctl.signinMessage", `The API refused the key (${detail}); sign in again.`);
  if (!location.hash.startsWith("#/signin")) sessionStorage.setItem(NEXT, location.hash);
  location.hash = "#/signin";
};

// --- sign in -----------------------------------------------------------------------------------

function signInView(view) {
  const message = sessionStorage.getItem("trainctl.signinMessage");
  sessionStorage.removeItem("trainctl.signinMessage");
  const input = h("input", { id: "api-key", type: "password", autocomplete: "off", placeholder: "tc_…", required: true, size: 48 });
  const status = h("p", { class: "form-status" });
  const form = h("form", { id: "signin-form", class: "card narrow" },
    h("h2", {}, "Sign in"),
    h("p", {}, "Paste an API key (from ", h("code", {}, "trainctl keys create NAME"), "). It is kept in this browser tab only."),
    message ? notice(message) : null,
    h("label", {}, "API key ", input),
    h("button", { type: "submit" }, "Sign in"),
    status,
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    auth.set(input.value.trim());
    status.textContent = "checking…";
    try {
      await api("/jobs?limit=1");
    } catch (err) {
      auth.clear();
      status.replaceChildren(notice(err instanceof ApiError && err.status === 401 ? `Key refused: ${err.detail}` : errorText(err)));
      return;
    }
    const next = sessionStorage.getItem(NEXT);
    sessionStorage.removeItem(NEXT);
    location.hash = next && !next.startsWith("#/signin") ? next : "#/jobs";
  });
  view.append(form);
  input.focus();
}

// --- jobs list ---------------------------------------------------------------------------------

const summaries = new Map(); // job id -> summary (or null): a finished job's never changes

async function bestMetric(job) {
  if (!FINISHED.has(job.status)) return null;
  if (!summaries.has(job.id)) {
    try {
      summaries.set(job.id, await api(`/jobs/${job.id}/summary`));
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) summaries.set(job.id, null);
      else throw err;
    }
  }
  const s = summaries.get(job.id);
  if (!s || s.best_score === null || s.best_score === undefined) return null;
  return `${s.monitor ?? "best"} ${formatNumber(s.best_score)}`;
}

async function jobsView(view, signal) {
  const { params } = parseHash();
  const statusSel = h("select", { id: "filter-status" }, h("option", { value: "" }, "any status"), STATUSES.map((s) => h("option", { value: s }, s)));
  statusSel.value = params.get("status") ?? "";
  const familyInput = h("input", { id: "filter-family", placeholder: "family", list: "families", value: params.get("family") ?? "" });
  const families = h("datalist", { id: "families" });
  const nameInput = h("input", { id: "filter-name", placeholder: "name contains", value: params.get("name") ?? "" });
  const tbody = h("tbody");
  const info = h("span", { class: "muted", id: "jobs-info" });
  const compareBtn = h("button", { id: "compare-selected", disabled: true }, "Compare selected");
  const selected = new Set();
  compareBtn.addEventListener("click", () => {
    location.hash = `#/compare?jobs=${[...selected].join(",")}`;
  });
  view.append(
    h("section", { class: "card" },
      h("div", { class: "toolbar" }, h("h2", {}, "Jobs"), statusSel, familyInput, families, nameInput, compareBtn, info),
      h("table", { id: "jobs-table", class: "grid" },
        h("thead", {}, h("tr", {}, h("th", {}, ""), ["name", "id", "family", "status", "created", "duration", "best metric"].map((c) => h("th", {}, c)))),
        tbody,
      ),
    ),
  );
  let last = "";
  let interval = 2000;
  let wake = null;
  const refresh = () => { last = ""; interval = 2000; wake?.abort(); };
  for (const el of [statusSel, familyInput, nameInput]) {
    el.addEventListener("change", () => {
      const q = new URLSearchParams();
      if (statusSel.value) q.set("status", statusSel.value);
      if (familyInput.value) q.set("family", familyInput.value);
      if (nameInput.value) q.set("name", nameInput.value);
      history.replaceState(null, "", `#/jobs${q.size ? "?" + q : ""}`);
      refresh();
    });
  }
  nameInput.addEventListener("input", refresh);
  const seenFamilies = new Set();
  api("/families", { signal }).then((f) => {
    for (const name of f.data) { seenFamilies.add(name); families.append(h("option", { value: name })); }
  }).catch(() => {});
  while (!signal.aborted) {
    const q = new URLSearchParams({ limit: "100" });
    if (statusSel.value) q.set("status", statusSel.value);
    if (familyInput.value.trim()) q.set("family", familyInput.value.trim());
    let page;
    try {
      page = await api(`/jobs?${q}`, { signal });
    } catch (err) {
      if (signal.aborted || (err instanceof ApiError && err.status === 401)) return;
      info.textContent = `update failed (${errorText(err)}); retrying`;
      interval = Math.min(interval * 2, 30_000);
      await sleep(interval, signal);
      continue;
    }
    const needle = nameInput.value.trim().toLowerCase();
    const jobs = page.data.filter((j) => !needle || j.name.toLowerCase().includes(needle));
    const snapshot = JSON.stringify([jobs, needle]);
    if (snapshot !== last) {
      last = snapshot;
      interval = 2000;
      for (const j of page.data) if (!seenFamilies.has(j.family)) { seenFamilies.add(j.family); families.append(h("option", { value: j.family })); }
      tbody.replaceChildren(...jobs.map((job) => {
        const best = h("td", { class: "best" }, "");
        bestMetric(job).then((b) => { best.textContent = b ?? "–"; }).catch(() => { best.textContent = "?"; });
        const box = h("input", { type: "checkbox", checked: selected.has(job.id), "aria-label": `select ${job.name}` });
        box.addEventListener("change", () => {
          if (box.checked) selected.add(job.id); else selected.delete(job.id);
          compareBtn.disabled = selected.size < 1;
        });
        return h("tr", { dataset: { jobId: job.id, status: job.status } },
          h("td", {}, box),
          h("td", {}, h("a", { href: `#/job/${job.id}` }, job.name)),
          h("td", { class: "mono" }, shortId(job.id)),
          h("td", {}, job.family),
          h("td", {}, badge(job.status), job.status === "running" ? ` ${Math.round(job.progress * 100)}%` : ""),
          h("td", {}, when(job.created_at)),
          h("td", {}, duration(job)),
          best,
        );
      }));
      if (!jobs.length) tbody.append(h("tr", {}, h("td", { colspan: 8, class: "muted" }, page.count ? "no job matches the name" : "no jobs yet: submit one")));
    } else {
      interval = Math.min(interval * 1.5, 15_000); // nothing changed: poll less often
    }
    info.textContent = `${jobs.length} shown of ${page.count} · updated ${new Date().toLocaleTimeString()}`;
    wake = new AbortController();
    const both = AbortSignal.any([signal, wake.signal]);
    await sleep(document.hidden ? Math.max(interval, 10_000) : interval, both);
  }
}

// --- submit ------------------------------------------------------------------------------------

const EXAMPLE = `family: graphsage_skipgram
name: cora-demo
data:
  format: planetoid
  name: Cora
training:
  epochs: 5
`;

function submitView(view) {
  const specText = h("textarea", { id: "spec-text", spellcheck: false, rows: 22, wrap: "off" }, sessionStorage.getItem("trainctl.draft") ?? EXAMPLE);
  const specGutter = h("div", { class: "gutter", id: "spec-errors" });
  const overrides = h("textarea", { id: "overrides", spellcheck: false, rows: 5, wrap: "off", placeholder: "training.epochs=10\nmodel.hidden_dim=64" });
  const overridesGutter = h("div", { class: "gutter", id: "override-errors" });
  const file = h("input", { type: "file", id: "spec-file", accept: ".yaml,.yml,.json,application/json,application/yaml,text/yaml" });
  const status = h("div", { id: "submit-status", class: "form-status" });
  const button = h("button", { type: "submit", id: "submit-button" }, "Submit");
  file.addEventListener("change", async () => {
    if (file.files[0]) specText.value = await file.files[0].text();
  });
  specText.addEventListener("input", () => sessionStorage.setItem("trainctl.draft", specText.value));
  const form = h("form", { id: "submit-form", class: "card" },
    h("h2", {}, "Submit a job"),
    h("p", { class: "muted" }, "A spec in YAML or JSON (paste it, or open a file: ", file, "). Override lines are ", h("code", {}, "key=value"), " as with ", h("code", {}, "trainctl submit --set"), ". Nothing is stored until the whole spec is valid."),
    h("label", { for: "spec-text" }, "Spec"),
    h("div", { class: "editor" }, specText, specGutter),
    h("label", { for: "overrides" }, "Overrides (--set), one per line"),
    h("div", { class: "editor" }, overrides, overridesGutter),
    h("div", { class: "toolbar" }, button, status),
  );
  const editors = [[specText, specGutter], [overrides, overridesGutter]];
  for (const [area, gutter] of editors) area.addEventListener("scroll", () => layoutGutter(area, gutter));

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    for (const [, gutter] of editors) gutter.replaceChildren();
    status.replaceChildren("checking…");
    button.disabled = true;
    const overrideLines = overrides.value.split("\n");
    let lines = {};
    try {
      const resolved = await api("/ui/api/resolve", { method: "POST", body: { text: specText.value, overrides: overrideLines } });
      lines = resolved.lines;
      const job = await api("/jobs", { method: "POST", body: resolved.spec });
      sessionStorage.removeItem("trainctl.draft");
      location.hash = `#/job/${job.id}`;
    } catch (err) {
      if (err instanceof ApiError && err.status === 422 && Array.isArray(err.detail)) {
        showFieldErrors(err.detail, lines, overrideLines, editors);
        status.replaceChildren(notice(`${err.detail.length} problem${err.detail.length > 1 ? "s" : ""} in the spec (shown beside each field); nothing was stored.`));
      } else {
        status.replaceChildren(notice(errorText(err)));
      }
    } finally {
      button.disabled = false;
    }
  });
  view.append(form);
}

/** Place each `{loc, msg, allowed?}` beside the override or the spec line it names. */
function showFieldErrors(errors, lines, overrideLines, [[specText, specGutter], [overrides, overridesGutter]]) {
  const keys = overrideLines.map((l) => l.split("=")[0].trim());
  for (const e of errors) {
    const loc = e.loc ?? "";
    const text = `${loc || "spec"}: ${e.msg}${e.allowed && !/allowed/.test(e.msg) ? ` (allowed: ${e.allowed.join(", ")})` : ""}`;
    const o = overrideLines.findIndex((line, i) => {
      const k = keys[i];
      return line.trim() && (line.trim() === loc || (k && (k === loc || loc.startsWith(`${k}.`))));
    });
    if (o >= 0) {
      overridesGutter.append(h("div", { class: "field-error", dataset: { loc, line: o + 1 } }, `◀ line ${o + 1} · ${text}`));
      continue;
    }
    let line = null;
    const parts = loc ? loc.split(".") : [];
    for (let n = parts.length; n > 0 && line === null; n--) line = lines[parts.slice(0, n).join(".")] ?? null;
    line ??= Number(/line (\d+)/.exec(e.msg)?.[1]) || null;
    specGutter.append(h("div", { class: "field-error", dataset: { loc, line: line ?? "" } }, `◀ ${line ? `line ${line} · ` : ""}${text}`));
  }
  layoutGutter(specText, specGutter);
  layoutGutter(overrides, overridesGutter);
}

function layoutGutter(area, gutter) {
  const style = getComputedStyle(area);
  const lineHeight = parseFloat(style.lineHeight) || 18;
  const top = parseFloat(style.paddingTop) || 0;
  let bottom = 0;
  for (const el of gutter.children) {
    const line = Number(el.dataset.line) || 1;
    const want = top + (line - 1) * lineHeight - area.scrollTop;
    const y = Math.max(want, bottom);
    el.style.top = `${y}px`;
    bottom = y + el.offsetHeight + 2;
  }
}

// --- job page ----------------------------------------------------------------------------------

function metricGroups(names) {
  const groups = new Map();
  for (const name of names) {
    const base = name.replace(/^(train|val|valid|validation|test)_/, "");
    if (!groups.has(base)) groups.set(base, []);
    groups.get(base).push(name);
  }
  return groups;
}

async function jobView(view, jobId, signal) {
  // The metrics stream opens at once, beside the job's own request (one round trip less before
  // the first curve): its rows wait in `rows`, other events in `early`, until the page is built.
  const rows = [];
  const early = [];
  let handle = (type, data) => {
    if (type !== "metric") return early.push([type, data]);
    perf.marks.firstRow ??= performance.now();
    perf.marks.lastRow = performance.now();
    rows.push(JSON.parse(data));
  };
  let streamStatus = null;
  let showStreamState = () => {};
  const metricStream = followStream(`/jobs/${jobId}/metrics/stream?state=true`, {
    signal,
    onState: (s) => showStreamState((streamStatus = s)),
    onEvent: (type, data) => handle(type, data),
  });
  metricStream.catch(() => {}); // a 404 is reported below, from the job's request
  let job;
  try {
    job = await api(`/jobs/${jobId}`, { signal });
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) {
      view.append(notice(`job ${jobId} not found`));
      return;
    }
    throw err;
  }
  perf.marks.jobLoaded = performance.now();
  const header = h("section", { class: "card", id: "job-header" });
  const errorBox = h("section", { class: "card error-box", id: "job-error", hidden: true });
  const metricSel = h("select", { id: "metric-select" });
  const logY = h("input", { type: "checkbox", id: "log-scale" });
  const streamState = h("span", { class: "muted", id: "stream-state" });
  const canvas = h("canvas", { id: "curve", class: "chart" });
  const chart = new LineChart(canvas);
  const tableHead = h("thead");
  const tableBody = h("tbody");
  const tableBox = h("details", { id: "metric-table-box", open: true }, h("summary", {}, "Metric table"),
    h("div", { class: "scroll" }, h("table", { class: "grid", id: "metric-table" }, tableHead, tableBody)));
  const logPre = h("pre", { id: "log", class: "log" });
  const follow = h("input", { type: "checkbox", id: "log-follow", checked: true });
  const logState = h("span", { class: "muted", id: "log-state" });
  const artifactsBody = h("tbody");
  const artifactsExtra = h("div", { class: "toolbar" });
  const attemptsBody = h("tbody");
  view.append(
    header,
    errorBox,
    h("section", { class: "card" },
      h("div", { class: "toolbar" }, h("h3", {}, "Metrics"), h("label", {}, "metric ", metricSel), h("label", {}, logY, " log scale"), streamState),
      canvas,
      tableBox,
    ),
    h("section", { class: "card" },
      h("div", { class: "toolbar" }, h("h3", {}, "Log"), h("label", {}, follow, " follow"), logState),
      logPre,
    ),
    h("section", { class: "card" },
      h("h3", {}, "Artifacts"), artifactsExtra,
      h("table", { class: "grid", id: "artifacts" },
        h("thead", {}, h("tr", {}, ["name", "kind", "size", "epoch", "tag", ""].map((c) => h("th", {}, c)))), artifactsBody),
    ),
    h("section", { class: "card" },
      h("h3", {}, "Attempts"),
      h("table", { class: "grid", id: "attempts" },
        h("thead", {}, h("tr", {}, ["attempt", "epochs recorded", "last epoch", "state"].map((c) => h("th", {}, c)))), attemptsBody),
    ),
    h("section", { class: "card" }, h("h3", {}, "Spec as stored"), h("pre", { id: "spec", class: "spec" }, JSON.stringify(job.spec, null, 2))),
  );

  const renderHeader = () => {
    const cancel = h("button", { id: "cancel-job", class: "danger", hidden: FINISHED.has(job.status) || job.cancel_requested }, "Cancel");
    cancel.addEventListener("click", async () => {
      if (!confirm(`Cancel job ${job.name}?`)) return;
      cancel.disabled = true;
      try {
        job = await api(`/jobs/${job.id}/cancel`, { method: "POST" });
        renderHeader();
      } catch (err) {
        header.append(notice(errorText(err)));
      }
    });
    const retry = h("button", { id: "retry-job", hidden: !["failed", "cancelled"].includes(job.status) }, "Retry");
    retry.addEventListener("click", async () => {
      retry.disabled = true;
      try {
        await api(`/jobs/${job.id}/retry`, { method: "POST" });
        route();
      } catch (err) {
        header.append(notice(errorText(err)));
      }
    });
    const progress = job.status === "running" ? h("progress", { max: 1, value: job.progress }) : null;
    header.replaceChildren(
      h("div", { class: "toolbar" },
        h("h2", { id: "job-name" }, job.name), badge(job.status),
        job.phase ? h("span", { class: "muted", id: "job-phase" }, job.phase) : null, progress,
        job.cancel_requested && !FINISHED.has(job.status) ? h("span", { class: "muted" }, "cancel requested") : null,
        h("span", { class: "spacer" }), cancel, retry,
        h("a", { href: `#/job/${job.id}/map`, id: "map-link" }, "Embedding map"),
        h("a", { href: `#/compare?jobs=${job.id}` }, "Compare"),
      ),
      h("dl", { class: "facts" }, [
        ["id", h("span", { class: "mono" }, job.id)], ["family", job.family], ["attempt", job.attempt],
        ["queue position", job.queue_position ?? "–"], ["created", when(job.created_at)],
        ["started", when(job.started_at)], ["finished", when(job.finished_at)], ["duration", duration(job)],
        ["worker", job.worker ?? "–"],
      ].map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v)))),
    );
    errorBox.hidden = !job.error;
    if (job.error) {
      const [first, ...rest] = job.error.split("\n");
      errorBox.replaceChildren(h("h3", {}, "Root cause"), h("p", { class: "root-cause" }, first));
      if (rest.length) errorBox.append(h("details", {}, h("summary", {}, "details"), h("pre", {}, rest.join("\n"))));
    }
  };
  renderHeader();

  // metrics: the SSE stream (rows, then the job's state on every change)
  let names = [];
  let tableCols = [];
  let drawnRows = 0;
  const redrawChart = () => {
    const group = metricGroups(names).get(metricSel.value) ?? [];
    chart.set(group.map((name, i) => ({
      name,
      color: PALETTE[i % PALETTE.length],
      points: rows.filter((r) => typeof r.values[name] === "number").map((r) => [r.epoch, r.values[name]]),
    })), { logY: logY.checked });
  };
  chart.onDraw = () => {
    const now = Date.now();
    for (const r of rows) if (!(r.epoch in perf.pointShown)) perf.pointShown[r.epoch] = now;
    perf.draws.push({ t: performance.now(), points: chart.pointCount(), rows: rows.length });
  };
  const updateNames = () => {
    const all = new Set(names);
    for (const r of rows) for (const k of Object.keys(r.values)) all.add(k);
    if (all.size === names.length) return false;
    names = [...all].sort();
    const groups = metricGroups(names);
    const keep = metricSel.value;
    metricSel.replaceChildren(...[...groups].map(([base, members]) => h("option", { value: base }, members.length > 1 ? `${base} (${members.join(", ")})` : members[0])));
    metricSel.value = groups.has(keep) ? keep : groups.has("loss") ? "loss" : names.length ? [...groups.keys()][0] : "";
    return true;
  };
  // The newest TABLE_ROWS epochs (a long run's page stays light to lay out); all on request.
  const TABLE_ROWS = 100;
  let showAll = false;
  const rowHtml = (r) => {
    let html = `<tr data-epoch="${escapeHtml(r.epoch)}"><td>${escapeHtml(r.epoch)}</td>`;
    for (const n of tableCols) html += `<td>${escapeHtml(formatNumber(r.values[n]))}</td>`;
    return html + "</tr>";
  };
  const updateTable = () => {
    if (tableCols.length !== names.length) {
      tableCols = names.slice();
      tableHead.replaceChildren(h("tr", {}, h("th", {}, "epoch"), tableCols.map((n) => h("th", {}, n))));
      drawnRows = 0;
      tableBody.replaceChildren();
    }
    if (showAll || rows.length <= TABLE_ROWS) {
      tableBody.insertAdjacentHTML("beforeend", rows.slice(drawnRows).map(rowHtml).join(""));
    } else {
      tableBody.innerHTML = rows.slice(-TABLE_ROWS).map(rowHtml).join("");
    }
    drawnRows = rows.length;
    tableNote.hidden = showAll || rows.length <= TABLE_ROWS;
    tableNote.firstChild.textContent = `the newest ${TABLE_ROWS} of ${rows.length} epochs · `;
    tableBox.dataset.rows = String(rows.length);
  };
  const tableNote = h("p", { class: "muted", hidden: true }, "", h("button", { class: "link", id: "table-all" }, "show all"));
  tableNote.querySelector("button").addEventListener("click", () => {
    showAll = true;
    drawnRows = 0;
    tableBody.replaceChildren();
    updateTable();
  });
  tableBox.append(tableNote);
  let scheduled = false;
  const onRows = () => {
    if (scheduled) return;
    scheduled = true;
    queueMicrotask(() => {
      scheduled = false;
      const t0 = performance.now();
      updateNames();
      redrawChart();
      updateTable();
      renderAttempts();
      perf.marks.batches = (perf.marks.batches ?? 0) + 1;
      perf.marks.batchMs = (perf.marks.batchMs ?? 0) + performance.now() - t0;
      perf.marks.lastBatch = performance.now();
    });
  };
  metricSel.addEventListener("change", redrawChart);
  logY.addEventListener("change", redrawChart);

  const priorAttempts = [];
  const renderAttempts = () => {
    const current = h("tr", { dataset: { attempt: job.attempt } }, h("td", {}, job.attempt), h("td", {}, rows.length), h("td", {}, rows.at(-1)?.epoch ?? "–"), h("td", {}, badge(job.status)));
    attemptsBody.replaceChildren(...priorAttempts.map((a) => h("tr", { dataset: { attempt: a.attempt } }, h("td", {}, a.attempt), h("td", {}, a.count), h("td", {}, a.last ?? "–"), h("td", {}, "ended (a later attempt followed)"))), job.attempt ? current : null);
  };
  for (let a = 1; a < job.attempt; a++) {
    api(`/jobs/${job.id}/metrics?attempt=${a}`, { signal }).then((page) => {
      priorAttempts.push({ attempt: a, count: page.count, last: page.data.at(-1)?.epoch });
      priorAttempts.sort((x, y) => x.attempt - y.attempt);
      renderAttempts();
    }).catch(() => {});
  }
  renderAttempts();

  const refreshArtifacts = async () => {
    const page = await api(`/jobs/${job.id}/artifacts`, { signal });
    artifactsBody.replaceChildren(...page.data.map((a) => {
      const button = h("button", { class: "link", dataset: { artifact: a.name } }, "download");
      button.addEventListener("click", () => download(`/jobs/${job.id}/artifacts/${a.name.split("/").map(encodeURIComponent).join("/")}`, a.name.split("/").at(-1)).catch((err) => alert(errorText(err))));
      return h("tr", { dataset: { kind: a.kind } }, h("td", { class: "mono" }, a.name), h("td", {}, a.kind), h("td", { class: "num", title: `${a.size} bytes` }, bytes(a.size)), h("td", {}, a.epoch ?? "–"), h("td", {}, a.tag ?? ""), h("td", {}, button));
    }));
    if (!page.count) artifactsBody.append(h("tr", {}, h("td", { colspan: 6, class: "muted" }, "none yet")));
    artifactsExtra.replaceChildren();
    if (page.data.some((a) => a.kind === "embeddings")) {
      for (const format of ["npy", "csv", "parquet"]) {
        const b = h("button", { id: `download-embeddings-${format}` }, `embeddings .${format}`);
        b.addEventListener("click", async () => {
          b.disabled = true;
          try {
            const size = await download(`/jobs/${job.id}/embeddings?format=${format}`, `embeddings-${shortId(job.id)}.${format}`);
            b.title = `${bytes(size)} downloaded`;
          } catch (err) {
            alert(errorText(err));
          } finally {
            b.disabled = false;
          }
        });
        artifactsExtra.append(b);
      }
    }
  };
  refreshArtifacts().catch(() => {});

  const refreshJob = async () => {
    job = await api(`/jobs/${job.id}`, { signal });
    renderHeader();
    renderAttempts();
  };

  // The log: whole lines as the run writes them, resumed at the last byte offset.
  let logLines = 0;
  followStream(`/jobs/${job.id}/logs/stream?tail=1000`, {
    signal,
    onState: (s) => { logState.textContent = s === "open" ? "following" : "reconnecting…"; },
    onEvent: (type, data) => {
      if (type === "end") { logState.textContent = "complete"; return; }
      if (type !== "log") return;
      logPre.append(data + "\n");
      logLines += data.split("\n").length;
      if (logLines > 20_000) { // keep the page light: the newest lines only
        logPre.textContent = logPre.textContent.split("\n").slice(-10_000).join("\n");
        logLines = 10_000;
      }
      if (follow.checked) logPre.scrollTop = logPre.scrollHeight;
    },
  }).catch((err) => { logState.textContent = errorText(err); });

  let attempt = job.attempt;
  showStreamState = (s) => { streamState.textContent = s === "open" ? "live" : "reconnecting…"; };
  if (streamStatus) showStreamState(streamStatus);
  handle = (type, data) => {
    if (type === "metric") {
      perf.marks.firstRow ??= performance.now();
      perf.marks.lastRow = performance.now();
      rows.push(JSON.parse(data));
      onRows();
    } else if (type === "state") {
      const state = JSON.parse(data);
      if (state.attempt !== attempt && attempt > 0) { // a retry: the new attempt's rows, anew
        route();
        return;
      }
      attempt = state.attempt;
      const changed = state.status !== job.status;
      Object.assign(job, state);
      renderHeader();
      renderAttempts();
      if (changed) { refreshJob().catch(() => {}); refreshArtifacts().catch(() => {}); }
    } else if (type === "end") {
      streamState.textContent = `ended (${JSON.parse(data).status})`;
      refreshJob().catch(() => {});
      refreshArtifacts().catch(() => {});
      onRows();
    }
  };
  for (const [type, data] of early.splice(0)) handle(type, data);
  metricStream.catch((err) => { streamState.textContent = errorText(err); });
  onRows();
}

// --- embedding map -----------------------------------------------------------------------------

async function mapView(view, jobId, signal) {
  const [job, page] = await Promise.all([api(`/jobs/${jobId}`, { signal }), api(`/jobs/${jobId}/artifacts`, { signal })]);
  const projections = page.data.filter((a) => a.kind === "projection");
  const title = h("div", { class: "toolbar" }, h("h2", {}, "Embedding map · ", h("a", { href: `#/job/${job.id}` }, job.name)));
  if (!projections.length) {
    view.append(h("section", { class: "card" }, title, notice("This job has no projection artifact yet (a job that writes embeddings gets a 2-D PCA map when it finishes).", "info")));
    return;
  }
  const projSel = h("select", { id: "projection-select" }, projections.map((p) => h("option", { value: p.name }, `${p.name} (${p.meta?.method ?? "projection"} of ${p.meta?.of ?? "?"})`)));
  const colourSel = h("select", { id: "colour-select" });
  const info = h("span", { class: "muted", id: "map-info" });
  const canvas = h("canvas", { id: "map", class: "chart map" });
  const tooltip = h("div", { class: "tooltip", id: "map-tooltip", hidden: true });
  const legend = h("div", { class: "legend", id: "map-legend" });
  view.append(h("section", { class: "card" }, title,
    h("div", { class: "toolbar" }, h("label", {}, "projection ", projSel), h("label", {}, "colour by ", colourSel), info),
    h("div", { class: "map-box" }, canvas, tooltip), legend));
  const scatter = new Scatter(canvas, tooltip);
  window.trainctlMap = scatter;

  const load = async () => {
    const proj = projections.find((p) => p.name === projSel.value);
    const { shape, data } = parseNpy(await fetchBytes(`/jobs/${jobId}/artifacts/${proj.name}`, signal));
    const n = shape[0];
    const xy = shape[1] === 2 ? data : Float32Array.from({ length: n * 2 }, (_, k) => data[Math.floor(k / 2) * shape[1] + (k % 2)]);
    let header = [], records = [], idCol = -1;
    const idsArtifact = page.data.find((a) => a.name === proj.meta?.ids);
    if (idsArtifact) {
      const text = new TextDecoder().decode(await fetchBytes(`/jobs/${jobId}/artifacts/${idsArtifact.name}`, signal));
      [header = [], ...records] = parseCsv(text);
      idCol = header.indexOf(idsArtifact.meta?.id_column);
      if (idCol < 0) idCol = header.length - 1;
    }
    const idName = idCol >= 0 ? header[idCol] : "row";
    const candidates = header.map((name, c) => ({ name, c })).filter(({ name, c }) => {
      if (c === idCol || name === "row") return false;
      const distinct = new Set(records.map((r) => r[c]));
      return distinct.size >= 1 && distinct.size <= 20;
    });
    candidates.sort((a, b) => ["label", "split"].indexOf(b.name) - ["label", "split"].indexOf(a.name));
    colourSel.replaceChildren(h("option", { value: "" }, "nothing"), ...candidates.map(({ name, c }) => h("option", { value: c }, name)));
    const preferred = candidates.find((x) => ["label", "split", "y", "class"].includes(x.name));
    colourSel.value = preferred ? String(preferred.c) : "";
    const paint = () => {
      const c = colourSel.value === "" ? -1 : Number(colourSel.value);
      let groups = null;
      const names = [];
      if (c >= 0) {
        const index = new Map();
        groups = new Int32Array(n).fill(-1);
        for (let i = 0; i < n && i < records.length; i++) {
          const v = records[i][c];
          if (!index.has(v)) { index.set(v, index.size); names.push(v); }
          groups[i] = index.get(v);
        }
      }
      legend.replaceChildren(...names.map((name, g) => h("span", { class: "key" }, h("i", { style: `background:${PALETTE[g % PALETTE.length]}` }), name)));
      scatter.set(xy, groups, (i) => {
        const id = records[i]?.[idCol] ?? String(i);
        return `${idName} ${id}${c >= 0 ? ` · ${header[c]} ${records[i]?.[c] ?? "?"}` : ""}`;
      });
    };
    colourSel.onchange = paint;
    paint();
    const ratio = proj.meta?.explained_variance_ratio;
    info.textContent = `${n} points${ratio ? ` · explained variance ${ratio.map((r) => (r * 100).toFixed(1) + "%").join(" + ")}` : ""}${idsArtifact ? "" : " · no ids artifact: rows by index"}`;
  };
  projSel.addEventListener("change", () => load().catch((err) => view.append(notice(errorText(err)))));
  await load();
}

// --- compare -----------------------------------------------------------------------------------

async function compareView(view, params, signal) {
  const ids = (params.get("jobs") ?? "").split(",").map((s) => s.trim()).filter(Boolean);
  const groupId = params.get("group");
  if (groupId && !ids.length) { // a group alone: overlay its members
    try {
      const group = await api(`/groups/${groupId}`, { signal });
      ids.push(...(group.members ?? []).map((m) => m.id));
      if (!params.get("metric") && group.summary?.metric) params.set("metric", group.summary.metric);
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) throw err;
    }
  }
  const idsInput = h("input", { id: "compare-jobs", size: 60, placeholder: "job ids, comma-separated", value: ids.join(",") });
  const metricSel = h("select", { id: "compare-metric" });
  const logY = h("input", { type: "checkbox", id: "compare-log" });
  const canvas = h("canvas", { id: "compare-chart", class: "chart" });
  const chart = new LineChart(canvas);
  const legendInfo = h("div", { class: "muted", id: "compare-info" });
  const groupPanel = h("section", { class: "card", id: "group-panel", hidden: true });
  const form = h("form", { class: "toolbar" }, h("h2", {}, "Compare"), idsInput, h("button", { type: "submit" }, "Show"));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const q = new URLSearchParams({ jobs: idsInput.value.replace(/\s+/g, "") });
    if (metricSel.value) q.set("metric", metricSel.value);
    if (groupId) q.set("group", groupId);
    location.hash = `#/compare?${q}`;
  });
  view.append(h("section", { class: "card" }, form,
    h("div", { class: "toolbar" }, h("label", {}, "metric ", metricSel), h("label", {}, logY, " log scale")),
    canvas, legendInfo), groupPanel);

  const runs = new Map(); // id -> {job, rows}
  const load = async (id) => {
    const run = runs.get(id) ?? { job: null, rows: [] };
    runs.set(id, run);
    run.job = await api(`/jobs/${id}`, { signal });
    const after = run.rows.at(-1)?.epoch;
    const page = await api(`/jobs/${id}/metrics${after !== undefined ? `?after_epoch=${after}` : ""}`, { signal });
    if (page.attempt !== run.attempt) { run.rows = []; run.attempt = page.attempt; }
    run.rows.push(...page.data);
    return run;
  };
  const errors = [];
  await Promise.all(ids.map((id) => load(id).catch((err) => { runs.delete(id); errors.push(`${shortId(id)}: ${errorText(err)}`); })));
  const draw = () => {
    const names = new Set();
    for (const r of runs.values()) for (const row of r.rows) for (const k of Object.keys(row.values)) names.add(k);
    const sorted = [...names].sort();
    const keep = metricSel.value || params.get("metric");
    if (metricSel.options.length !== sorted.length) {
      metricSel.replaceChildren(...sorted.map((n) => h("option", { value: n }, n)));
    }
    metricSel.value = sorted.includes(keep) ? keep : sorted.includes("val_loss") ? "val_loss" : sorted[0] ?? "";
    const m = metricSel.value;
    chart.set([...runs.values()].map((r, i) => ({
      name: `${r.job.name} ${shortId(r.job.id)}`,
      color: PALETTE[i % PALETTE.length],
      points: r.rows.filter((row) => typeof row.values[m] === "number").map((row) => [row.epoch, row.values[m]]),
    })), { logY: logY.checked });
    legendInfo.textContent = errors.length ? `not shown: ${errors.join("; ")}` : `${runs.size} job${runs.size === 1 ? "" : "s"}`;
  };
  metricSel.addEventListener("change", draw);
  logY.addEventListener("change", draw);
  draw();

  const groups = new Set(groupId ? [groupId] : []);
  for (const r of runs.values()) if (r.job.group_id) groups.add(r.job.group_id);
  for (const g of groups) showGroup(groupPanel, g, signal).catch(() => { groupPanel.hidden = true; });

  while (!signal.aborted && [...runs.values()].some((r) => !FINISHED.has(r.job.status))) {
    await sleep(3000, signal);
    if (signal.aborted) return;
    await Promise.all([...runs.keys()].map((id) => load(id).catch(() => {})));
    draw();
  }
}

/** The sweep group's members with mean ± std (GET /groups/{id}); hidden if that 404s. */
async function showGroup(panel, groupId, signal) {
  let group;
  try {
    group = await api(`/groups/${groupId}`, { signal });
  } catch (err) {
    panel.hidden = true; // no such group, or a server without groups
    return;
  }
  const members = group.members ?? group.jobs ?? group.data ?? [];
  const summary = group.summary ?? {};
  const mean = summary.mean ?? summary.metric_mean;
  const std = summary.std ?? summary.metric_std;
  const metric = summary.metric ?? group.metric ?? "metric";
  const valueOf = (m) => m.value ?? m.metric_value ?? m.score ?? (m.metrics ?? {})[metric];
  const memberIds = members.map((m) => m.id ?? m.job_id).filter(Boolean);
  panel.replaceChildren(
    h("div", { class: "toolbar" }, h("h3", {}, `Group ${group.name ?? shortId(groupId)}`),
      h("span", { id: "group-stat" }, mean !== undefined && mean !== null ? `${metric}: ${formatNumber(mean)} ± ${formatNumber(std ?? 0)}${summary.n ? ` (n = ${summary.n}${summary.reduce ? `, ${summary.reduce} per member` : ""})` : ""}` : `${metric}: no values yet`),
      group.counts ? h("span", { class: "muted" }, Object.entries(group.counts).filter(([, n]) => n).map(([k, n]) => `${n} ${k}`).join(" · ")) : null,
      memberIds.length ? h("a", { href: `#/compare?jobs=${memberIds.join(",")}&group=${groupId}` }, "overlay all members") : null),
    h("table", { class: "grid", id: "group-members" },
      h("thead", {}, h("tr", {}, ["#", "job", "status", "values set", metric].map((c) => h("th", {}, c)))),
      h("tbody", {}, members.map((m, i) => h("tr", {},
        h("td", {}, m.group_index ?? m.index ?? i),
        h("td", {}, m.id || m.job_id ? h("a", { href: `#/job/${m.id ?? m.job_id}` }, m.name ?? shortId(m.id ?? m.job_id)) : "–"),
        h("td", {}, m.status ? badge(m.status) : "–"),
        h("td", { class: "mono" }, (m.values ?? m.sweep_values) ? Object.entries(m.values ?? m.sweep_values).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(" ") : ""),
        h("td", {}, formatNumber(valueOf(m))),
      )))),
  );
  panel.hidden = false;
}

// --- start -------------------------------------------------------------------------------------

document.getElementById("sign-out").addEventListener("click", (e) => {
  e.preventDefault();
  auth.clear();
  location.hash = "#/signin";
});
window.addEventListener("hashchange", route);
route();
