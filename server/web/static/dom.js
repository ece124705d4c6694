// Safe DOM helpers: text only ever goes in through text nodes or setAttribute, never as markup.
const SVG_NS = "http://www.w3.org/2000/svg";

function append(node, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function setAttrs(node, attrs) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") node.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  return node;
}

/** Build an HTML element: h("td", {class: "num"}, "42"). */
export function h(tag, attrs, ...children) {
  return append(setAttrs(document.createElement(tag), attrs), children);
}

/** Build an SVG element. */
export function s(tag, attrs, ...children) {
  return append(setAttrs(document.createElementNS(SVG_NS, tag), attrs), children);
}

/** Replace a container's children. */
export function replace(node, ...children) {
  node.replaceChildren();
  return append(node, children);
}

/** Show a designed state message (info, empty, error) in a status element. */
export function state(node, kind, message, ...extra) {
  node.hidden = false;
  node.className = "state " + kind;
  replace(node, h("p", null, message), ...extra);
  return node;
}

export function fmtDate(value) {
  if (!value) return "";
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) return String(value);
  return value.length <= 10 ? d.toISOString().slice(0, 10) : d.toISOString().slice(0, 16).replace("T", " ");
}

/** A recorded date or dateTime as written, with its zone: "2026-11-20 23:00 -05:00", "2026-02-16 09:00 UTC". */
export function fmtWhen(value) {
  const text = String(value || "");
  const m = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2})(?::\d{2}(?:\.\d+)?)?(Z|[+-]\d{2}:\d{2})?$/.exec(text);
  if (!m) return text;
  return `${m[1]} ${m[2]}${m[3] ? " " + (m[3] === "Z" ? "UTC" : m[3]) : ""}`;
}

export function fmtNum(value, digits = 1) {
  if (value === null || value === undefined || value === "") return "";
  const n = Number(value);
  if (!Number.isFinite(n)) return String(value);
  return Number.isInteger(n) ? String(n) : n.toFixed(digits);
}

/** A UCUM unit for people: annotations lose their braces ({score} -> score), [lbf_av] reads lbf. */
export function unitLabel(unit) {
  return String(unit || "").replace(/\{([^}]*)\}/g, "$1").replace(/\[([^\]_]*)(?:_[^\]]*)?\]/g, "$1");
}

export function humanName(patient) {
  const name = (patient && patient.name && patient.name[0]) || null;
  if (!name) return "(no name)";
  if (name.text) return name.text;
  return [...(name.given || []), name.family || ""].join(" ").trim() || "(no name)";
}

// Lifecycle states of a goal no longer pursued (R4B goal-status).
const GOAL_ENDED = new Set(["completed", "cancelled", "entered-in-error", "rejected", "on-hold"]);

/** A goal's status as a clinician should read it: a goal no longer pursued says so first, its last
 * achievement after ("cancelled (improving)", never just "improving"); a pursued one its achievement. */
export function goalStatus(goal) {
  const cc = goal.achievementStatus;
  const achievement = (cc && (cc.text || ((cc.coding || [])[0] || {}).code)) || "";
  const life = goal.lifecycleStatus || "";
  if (GOAL_ENDED.has(life)) return achievement ? `${life} (${achievement})` : life;
  return achievement || life;
}
