// Auditor console: AuditEvent search with filters, sortable columns, paging, JSON view, CSV/NDJSON export,
// and the hash chain state from AuditEvent/$verify.
import { fmtDate, h, replace, state } from "./dom.js";
import { api } from "./smart.js";

const PAGE_SIZE = 20;
const EXPORT_PAGE = 500;

function ref(who) {
  if (!who) return "";
  return who.reference || (who.identifier && who.identifier.value) || who.display || "";
}

function agents(ev) { return ev.agent || []; }

const codes = (cc) => (cc ? (cc.coding || [cc]).map((c) => c.code) : []);
const hasRole = (a, code) => codes(a.type).includes(code) || (a.role || []).some((r) => codes(r).includes(code));

// BALP: the client app is the "Source Role ID" agent (110153), this server the destination (110152).
function isClient(a) { return hasRole(a, "110153"); }
function isServer(a) { return hasRole(a, "110152"); }

export function userOf(ev) {
  const a = agents(ev).find((x) => !isClient(x) && !isServer(x) && x.who);
  return a ? ref(a.who) || a.name || "" : "";
}

export function clientOf(ev) {
  const a = agents(ev).find(isClient);
  return a ? ref(a.who) || a.name || "" : "";
}

export function addressOf(ev) {
  const a = agents(ev).find(isClient) || agents(ev).find((x) => x.network && !isServer(x));
  return a && a.network ? a.network.address || "" : "";
}

// entity.role is a Coding in R4B (object-role 1 = Patient, 24 = Query).
const entityRole = (e) => (e.role ? e.role.code || codes(e.role)[0] : undefined);

export function patientOf(ev) {
  const e = (ev.entity || []).find((x) => entityRole(x) === "1");
  return e ? ref(e.what) : "";
}

function decodeQuery(b64) {
  try { return decodeURIComponent(escape(atob(b64))); } catch { return "(query)"; }
}

export function entityOf(ev) {
  const e = (ev.entity || []).find((x) => entityRole(x) !== "1" && x.what);
  if (e) return ref(e.what);
  const q = (ev.entity || []).find((x) => x.query);
  return q ? decodeQuery(q.query) : "";
}

export function interactionOf(ev) {
  const st = (ev.subtype || [])[0];
  return st ? st.code || st.display || "" : (ev.type && (ev.type.code || "")) || "";
}

const COLUMNS = [
  { key: "recorded", label: "Time", sort: "date", get: (ev) => ev.recorded || "", show: (ev) => fmtDate(ev.recorded) },
  { key: "action", label: "Action", sort: "action", get: (ev) => ev.action || "" },
  { key: "interaction", label: "Interaction", sort: "subtype", get: interactionOf },
  { key: "outcome", label: "Outcome", sort: "outcome", get: (ev) => ev.outcome || "" },
  { key: "user", label: "User", sort: "agent", get: userOf },
  { key: "client", label: "Client app", sort: null, get: clientOf },
  { key: "patient", label: "Patient", sort: "patient", get: patientOf },
  { key: "entity", label: "Entity", sort: "entity", get: entityOf },
  { key: "address", label: "Address", sort: null, get: addressOf },
];

const view = { sort: "-date", events: [], url: null, page: 1, clientSort: null };

function filters() {
  const data = new FormData(document.getElementById("audit-filters"));
  const p = new URLSearchParams();
  const patient = (data.get("patient") || "").trim();
  if (patient) p.set("patient", patient.includes("/") ? patient : "Patient/" + patient);
  const user = (data.get("user") || "").trim();
  if (user) p.set("agent", user);
  const client = (data.get("client") || "").trim();
  if (client) p.set("client", client);
  if (data.get("from")) p.append("date", "ge" + data.get("from"));
  if (data.get("to")) p.append("date", "le" + data.get("to") + "T23:59:59Z");
  for (const name of ["action", "outcome"]) if (data.get(name)) p.set(name, data.get(name));
  return p;
}

function searchUrl(count) {
  const p = filters();
  p.set("_sort", view.sort);
  p.set("_count", String(count));
  p.set("_total", "accurate");
  return "/AuditEvent?" + p.toString();
}

function linkOf(bundle, rel) {
  const link = (bundle.link || []).find((l) => l.relation === rel);
  return link ? link.url : null;
}

function cell(col, ev) {
  return h("td", { "data-col": col.key }, col.show ? col.show(ev) : col.get(ev));
}

function renderHead() {
  const row = document.querySelector("#audit-table thead tr");
  replace(row, COLUMNS.map((col) => {
    const active = view.clientSort && view.clientSort.key === col.key ? view.clientSort.dir
      : col.sort && (view.sort === col.sort ? "ascending" : view.sort === "-" + col.sort ? "descending" : null);
    return h("th", { scope: "col", "aria-sort": active || "none" },
      h("button", { type: "button", class: "sort", "data-sort": col.key, onclick: () => sortBy(col) },
        col.label, h("span", { class: "arrow", "aria-hidden": "true" }, active === "ascending" ? " ▲" : active === "descending" ? " ▼" : "")));
  }));
}

function renderRows() {
  const table = document.getElementById("audit-table");
  let events = view.events;
  if (view.clientSort) {
    const col = COLUMNS.find((c) => c.key === view.clientSort.key);
    const dir = view.clientSort.dir === "ascending" ? 1 : -1;
    events = [...events].sort((a, b) => dir * String(col.get(a)).localeCompare(String(col.get(b)), undefined, { numeric: true }));
  }
  replace(table.tBodies[0], events.map((ev) => h("tr", {
    tabindex: "0", class: "event-row", "data-id": ev.id,
    onclick: () => openEvent(ev),
    onkeydown: (e) => { if (e.key === "Enter") openEvent(ev); },
  }, COLUMNS.map((col) => cell(col, ev)))));
  table.hidden = false;
  renderHead();
}

function sortBy(col) {
  if (col.sort) {
    view.clientSort = null;
    view.sort = view.sort === col.sort ? "-" + col.sort : col.sort;
    load(searchUrl(PAGE_SIZE), 1).catch(showError);
  } else {
    // No search parameter sorts this column: sort the rows on this page, and say so.
    const dir = view.clientSort && view.clientSort.key === col.key && view.clientSort.dir === "ascending" ? "descending" : "ascending";
    view.clientSort = { key: col.key, dir };
    renderRows();
    document.getElementById("count").textContent += " (sorted by " + col.label + " within this page)";
  }
}

function openEvent(ev) {
  const dialog = document.getElementById("event-dialog");
  document.getElementById("event-title").textContent = "Audit event " + (ev.id || "");
  document.getElementById("event-json").textContent = JSON.stringify(ev, null, 2);
  dialog.showModal();
}

async function load(url, page) {
  const status = document.getElementById("status");
  const pager = document.getElementById("pager");
  state(status, "info", "Loading audit events…");
  const bundle = await api(url);
  view.url = url;
  view.page = page;
  view.events = (bundle.entry || []).map((e) => e.resource).filter((r) => r && r.resourceType === "AuditEvent");
  const total = Number.isFinite(bundle.total) ? bundle.total : null;
  document.getElementById("count").textContent = total !== null
    ? `${total} event${total === 1 ? "" : "s"} match` : `${view.events.length} events on this page`;
  if (!view.events.length) {
    document.getElementById("audit-table").hidden = true;
    pager.hidden = page === 1;
    state(status, "empty", "No audit events match these filters. Widen the date range or clear a filter.");
  } else {
    status.hidden = true;
    renderRows();
  }
  const prev = linkOf(bundle, "previous") || linkOf(bundle, "prev");
  const next = linkOf(bundle, "next");
  pager.hidden = !prev && !next;
  document.getElementById("page-no").textContent = "Page " + page;
  for (const button of pager.querySelectorAll("button")) {
    const target = button.dataset.rel === "next" ? next : prev;
    button.disabled = !target;
    button.onclick = target ? () => load(target, page + (button.dataset.rel === "next" ? 1 : -1)).catch(showError) : null;
  }
}

function showError(err) {
  state(document.getElementById("status"), "error", err.status === 403
    ? "Your account may not read audit events (an auditor's scope user/AuditEvent.rs is needed)."
    : "Could not load audit events: " + err.message);
}

async function verifyChain() {
  const banner = document.getElementById("chain");
  try {
    const result = await api("/AuditEvent/$verify");
    const v = readVerify(result);
    banner.className = "banner " + (v.intact ? "ok" : "broken");
    banner.textContent = v.message;
  } catch (err) {
    banner.className = "banner unknown";
    banner.textContent = "Hash chain state unknown: " + err.message;
  }
}

/** Read $verify's answer (Parameters or OperationOutcome) into {intact, message}. */
export function readVerify(body) {
  const params = {};
  if (body && body.resourceType === "Parameters") {
    for (const p of body.parameter || []) {
      params[p.name] = p.valueBoolean ?? p.valueInteger ?? p.valueString ?? p.valueDateTime ?? p.valueCode ??
        (p.valueReference && p.valueReference.reference) ?? p.valueUnsignedInt ?? p.valueDecimal;
    }
  } else if (body && body.resourceType === "OperationOutcome") {
    const issue = (body.issue || [])[0] || {};
    const ok = issue.severity === "information";
    return { intact: ok, message: (ok ? "Hash chain intact: " : "Hash chain BROKEN: ") + (issue.diagnostics || "") };
  } else if (body && typeof body === "object") {
    Object.assign(params, body);
  }
  const result = params.result ?? params.intact ?? params.status;
  const intact = result === true || result === "intact";
  const count = params.checked ?? params.count;
  if (intact) {
    return { intact: true, message: "Hash chain intact" + (count !== undefined ? ` through event ${count}` : "") +
      (params.checkpoints !== undefined ? `, ${params.checkpoints} signed checkpoint${params.checkpoints === 1 ? "" : "s"} verified` : "") + "." };
  }
  const first = params.record ?? params.firstBroken;
  const why = params.reason ?? "";
  return { intact: false, message: "Hash chain BROKEN" + (first !== undefined ? ` at record ${first}` : "") + (why ? `: ${why}` : "") + "." };
}

async function fetchAll() {
  const out = [];
  let url = searchUrl(EXPORT_PAGE);
  while (url) {
    const bundle = await api(url);
    for (const e of bundle.entry || []) if (e.resource && e.resource.resourceType === "AuditEvent") out.push(e.resource);
    url = linkOf(bundle, "next");
  }
  return out;
}

function csvCell(value) {
  let v = String(value ?? "");
  if (/^[=+\-@\t\r]/.test(v)) v = "'" + v; // keep spreadsheets from running a cell as a formula
  return /[",\r\n]/.test(v) ? '"' + v.replace(/"/g, '""') + '"' : v;
}

export function toCsv(events) {
  const head = ["id", ...COLUMNS.map((c) => c.key)];
  const lines = [head.join(",")];
  for (const ev of events) lines.push([ev.id, ...COLUMNS.map((c) => c.get(ev))].map(csvCell).join(","));
  return lines.join("\r\n") + "\r\n";
}

function download(name, type, text) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = h("a", { href: url, download: name, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

async function exportAs(kind) {
  const status = document.getElementById("status");
  const button = document.getElementById("export-" + kind);
  button.disabled = true;
  try {
    const events = await fetchAll();
    const stamp = new Date().toISOString().slice(0, 19).replace(/:/g, "");
    if (kind === "csv") download(`audit-${stamp}.csv`, "text/csv", toCsv(events));
    else download(`audit-${stamp}.ndjson`, "application/fhir+ndjson", events.map((e) => JSON.stringify(e)).join("\n") + (events.length ? "\n" : ""));
    document.getElementById("count").textContent = `Exported ${events.length} events as ${kind.toUpperCase()}.`;
  } catch (err) {
    state(status, "error", "Export failed: " + err.message);
  } finally {
    button.disabled = false;
  }
}

export async function start() {
  const form = document.getElementById("audit-filters");
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    load(searchUrl(PAGE_SIZE), 1).catch(showError);
  });
  form.addEventListener("reset", () => setTimeout(() => load(searchUrl(PAGE_SIZE), 1).catch(showError), 0));
  document.getElementById("export-csv").addEventListener("click", () => exportAs("csv"));
  document.getElementById("export-ndjson").addEventListener("click", () => exportAs("ndjson"));
  renderHead();
  verifyChain();
  await load(searchUrl(PAGE_SIZE), 1);
}
