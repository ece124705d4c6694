// Clinician view: per measure a chart with baseline, goal target and MCID band (left/right side by side),
// the active exercise program, goals and recent sessions; every chart has a table beside it.
import { domainOf, lineChart, mcidEdge } from "./chart.js";
import { fmtDate, fmtNum, h, humanName, replace, state, unitLabel } from "./dom.js";
import { api, ApiError } from "./smart.js";

const pick = (obj, ...names) => { for (const n of names) if (obj && obj[n] !== undefined && obj[n] !== null) return obj[n]; return undefined; };
const num = (v) => (v && typeof v === "object" ? num(pick(v, "value", "score")) : v === undefined || v === null || v === "" ? NaN : Number(v));

function codeKeys(m) {
  const keys = new Set();
  for (const c of [].concat(pick(m, "codes", "coding") || [], pick(m, "code") ? [pick(m, "code")] : [])) {
    if (typeof c === "string") keys.add(c);
    else if (c && c.code) keys.add(c.code);
    else if (c && c.coding) c.coding.forEach((x) => keys.add(x.code));
  }
  for (const n of ["measure", "key", "id", "loinc", "snomed"]) if (typeof m[n] === "string") keys.add(m[n]);
  return keys;
}

/** Normalise one measure from GET /rehab/patients/{id}/progress. */
export function normaliseMeasure(m) {
  const series = (pick(m, "series", "values", "points", "observations") || []).map((p) => ({
    date: pick(p, "date", "effective", "effectiveDateTime", "time", "when"),
    value: num(pick(p, "value", "valueQuantity", "score")),
    observation: pick(p, "observation", "reference", "id"),
  })).filter((p) => p.date && Number.isFinite(p.value)).sort((a, b) => new Date(a.date) - new Date(b.date));
  const direction = String(pick(m, "direction", "improvement", "better", "improves") || "higher").toLowerCase();
  return {
    raw: m,
    keys: codeKeys(m),
    label: pick(m, "display", "label", "name", "text", "measure") || "Measure",
    unit: unitLabel(pick(m, "unit", "ucum", "units") || ""),
    side: (pick(m, "side", "laterality") || "").toString().toLowerCase() || null,
    group: pick(m, "group", "measure", "key", "code") || pick(m, "display", "label"),
    series,
    baseline: num(pick(m, "baseline")),
    latest: num(pick(m, "latest")),
    change: num(pick(m, "change")),
    pctChange: num(pick(m, "percent_change", "pct_change", "change_percent", "percentChange")),
    mcid: num(pick(m, "mcid", "MCID")),
    mcidReached: pick(m, "mcid_reached", "mcidReached", "clinically_important"),
    direction: direction.startsWith("lower") || direction.startsWith("decrease") || direction === "down" ? "lower" : "higher",
    trend: pick(m, "trend", "status", "interpretation") || "",
    asymmetry: num(pick(m, "asymmetry_index", "asymmetry", "lsi", "asymmetryIndex")),
  };
}

function measuresOf(progress) {
  const list = Array.isArray(progress) ? progress : pick(progress || {}, "measures", "series", "results") || [];
  if (!Array.isArray(list)) return Object.entries(list).map(([k, v]) => normaliseMeasure({ measure: k, ...v }));
  return list.map(normaliseMeasure).filter((m) => m.series.length);
}

function goalTarget(goals, measure) {
  for (const goal of goals) {
    for (const t of goal.target || []) {
      const codes = ((t.measure && t.measure.coding) || []).map((c) => c.code);
      if (!codes.some((c) => measure.keys.has(c))) continue;
      const q = t.detailQuantity || (t.detailRange && (measure.direction === "lower" ? t.detailRange.high : t.detailRange.low));
      if (q && Number.isFinite(Number(q.value))) return Number(q.value);
      if (Number.isFinite(Number(t.detailInteger))) return Number(t.detailInteger);
    }
  }
  return NaN;
}

function summaryLine(m) {
  const bits = [];
  if (Number.isFinite(m.baseline)) bits.push(`baseline ${fmtNum(m.baseline)}`);
  if (Number.isFinite(m.latest)) bits.push(`latest ${fmtNum(m.latest)}`);
  if (Number.isFinite(m.change)) bits.push(`change ${m.change > 0 ? "+" : ""}${fmtNum(m.change)}${Number.isFinite(m.pctChange) ? ` (${m.pctChange > 0 ? "+" : ""}${fmtNum(m.pctChange)} %)` : ""}`);
  if (Number.isFinite(m.mcid)) bits.push(`MCID ${fmtNum(m.mcid)} ${m.mcidReached === true ? "reached" : m.mcidReached === false ? "not reached" : ""}`.trim());
  if (m.trend) bits.push(String(m.trend));
  return bits.join(" · ");
}

function dataTable(m, target) {
  return h("table", { class: "data compact" },
    h("caption", null, `${m.label}${m.side ? " (" + m.side + ")" : ""} — values`),
    h("thead", null, h("tr", null, h("th", { scope: "col" }, "Date"), h("th", { scope: "col" }, `Value${m.unit ? " (" + m.unit + ")" : ""}`),
      h("th", { scope: "col" }, "Change from baseline"))),
    h("tbody", null, m.series.map((p) => h("tr", null,
      h("td", null, fmtDate(p.date)), h("td", { class: "num" }, fmtNum(p.value)),
      h("td", { class: "num" }, Number.isFinite(m.baseline) ? signed(p.value - m.baseline) : "")))),
    h("tfoot", null,
      Number.isFinite(m.baseline) ? h("tr", null, h("th", { scope: "row" }, "Baseline"), h("td", { class: "num" }, fmtNum(m.baseline)), h("td")) : null,
      Number.isFinite(target) ? h("tr", null, h("th", { scope: "row" }, "Goal target"), h("td", { class: "num" }, fmtNum(target)), h("td")) : null,
      Number.isFinite(m.mcid) ? h("tr", null, h("th", { scope: "row" }, "MCID"), h("td", { class: "num" }, fmtNum(m.mcid)),
        h("td", null, m.direction === "lower" ? "lower is better" : "higher is better")) : null));
}

function signed(v) { return (v > 0 ? "+" : "") + fmtNum(v); }

function measureFigure(m, goals, domain) {
  const target = goalTarget(goals, m);
  return h("figure", { class: "measure", "data-measure": m.label, "data-side": m.side || "" },
    h("figcaption", null, h("strong", null, m.label + (m.side ? " — " + m.side : "")), h("span", { class: "summary" }, summaryLine(m))),
    h("div", { class: "chart-and-table" },
      h("div", { class: "chart-box" },
        lineChart({ label: m.label + (m.side ? " " + m.side : ""), unit: m.unit, points: m.series, baseline: m.baseline,
          target, mcid: m.mcid, direction: m.direction, domain }),
        h("ul", { class: "legend", "aria-hidden": "true" },
          h("li", { class: "series" }, "measured"),
          Number.isFinite(m.baseline) ? h("li", { class: "baseline" }, "baseline") : null,
          Number.isFinite(target) ? h("li", { class: "target" }, "goal target") : null,
          Number.isFinite(m.mcid) && Number.isFinite(m.baseline) ? h("li", { class: "band" }, "within MCID of baseline") : null)),
      dataTable(m, target)));
}

function renderMeasures(measures, goals) {
  const box = document.getElementById("measures");
  if (!measures.length) {
    replace(box, h("p", { class: "state empty" }, "No measurements recorded yet. Assessments sent to /rehab/assessments, or coded Observations from the EHR, appear here."));
    return;
  }
  const groups = new Map();
  for (const m of measures) {
    const key = m.side ? `${m.label}|sided` : `${m.label}|${m.side || ""}|${groups.size}`;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(m);
  }
  replace(box, [...groups.values()].map((group) => {
    if (group.length === 1 && !group[0].side) return measureFigure(group[0], goals);
    group.sort((a, b) => (a.side === "left" ? -1 : b.side === "left" ? 1 : 0));
    const all = group.flatMap((m) => [m.baseline, goalTarget(goals, m), mcidEdge(m.baseline, m.mcid, m.direction)]);
    const domain = domainOf(group.flatMap((m) => m.series), all);
    const asym = group.map((m) => m.asymmetry).find((v) => Number.isFinite(v));
    return h("div", { class: "sided" },
      h("h3", null, group[0].label,
        Number.isFinite(asym) ? h("span", { class: "asymmetry", "data-asymmetry": fmtNum(asym) }, ` Asymmetry index ${fmtNum(asym)} %`) : null),
      h("div", { class: "side-by-side" }, group.map((m) => measureFigure(m, goals, domain))));
  }));
}

const extOf = (node, suffix) => ((node && node.extension) || []).find((x) => x.url && x.url.endsWith("/" + suffix));
const qty = (q) => (q ? `${fmtNum(q.value)} ${q.unit || q.code || ""}`.trim() : "");
const PERIODS = { s: "second", min: "minute", h: "hour", d: "day", wk: "week", mo: "month", a: "year" };

/** Dosing of one CarePlan activity: sets × reps, hold, load, frequency (our exercise-* extensions + Timing). */
export function dosing(activity) {
  const d = activity.detail || {};
  const parts = [];
  const sets = extOf(d, "exercise-sets");
  const reps = extOf(d, "exercise-repetitions");
  if (sets || reps) parts.push(`${sets ? sets.valueInteger : 1} × ${reps ? reps.valueInteger : "?"}`);
  const hold = extOf(d, "exercise-hold");
  if (hold) parts.push("hold " + qty(hold.valueQuantity));
  const load = extOf(d, "exercise-load");
  if (load) parts.push("load " + qty(load.valueQuantity));
  if (d.quantity) parts.push(qty(d.quantity));
  if (d.dailyAmount) parts.push(qty(d.dailyAmount) + " daily");
  const rep = d.scheduledTiming && d.scheduledTiming.repeat;
  if (rep) {
    const unit = PERIODS[rep.periodUnit] || rep.periodUnit || "";
    const per = Number(rep.period || 1) === 1 ? unit : `${fmtNum(rep.period)} ${unit}s`;
    parts.push(`${rep.frequency || 1}× per ${per}`);
  }
  if (d.scheduledString) parts.push(d.scheduledString);
  return parts.join(", ");
}

function renderProgram(plans) {
  const box = document.getElementById("program");
  const activities = plans.flatMap((p) => (p.activity || []).map((a) => ({ plan: p, a })));
  if (!activities.length) {
    replace(box, h("p", { class: "state empty" }, "No active exercise program. Programs sent to /rehab/plans show here with their dosing."));
    return;
  }
  replace(box, h("table", { class: "data", id: "program-table" },
    h("caption", { class: "visually-hidden" }, "Active exercise program"),
    h("thead", null, h("tr", null, ["Exercise", "Dosing", "Instructions", "Progression", "Status"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", null, activities.map(({ a }) => {
      const d = a.detail || {};
      const name = (d.code && (d.code.text || (d.code.coding || [])[0]?.display)) || d.description || "(exercise)";
      const progression = extOf(d, "exercise-progression");
      return h("tr", null, h("td", null, name), h("td", null, dosing(a)), h("td", null, d.description && d.description !== name ? d.description : ""),
        h("td", null, progression ? progression.valueString : ""), h("td", null, d.status || ""));
    }))));
}

function renderGoals(goals, measures) {
  const box = document.getElementById("goals");
  if (!goals.length) {
    replace(box, h("p", { class: "state empty" }, "No goals set for this patient."));
    return;
  }
  replace(box, h("table", { class: "data", id: "goal-table" },
    h("caption", { class: "visually-hidden" }, "Goals and progress"),
    h("thead", null, h("tr", null, ["Goal", "Target", "Due", "Latest", "Progress", "Status"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", null, goals.map((g) => {
      const t = (g.target || [])[0] || {};
      const codes = ((t.measure && t.measure.coding) || []).map((c) => c.code);
      const m = measures.find((x) => codes.some((c) => x.keys.has(c)));
      const target = goalTarget([g], m || { keys: new Set(codes), direction: "higher" });
      let progress = "";
      let pct = NaN;
      if (m && Number.isFinite(target) && Number.isFinite(m.baseline) && Number.isFinite(m.latest) && target !== m.baseline) {
        pct = Math.max(0, Math.min(100, ((m.latest - m.baseline) / (target - m.baseline)) * 100));
        progress = `${fmtNum(pct, 0)} %`;
      }
      const tq = t.detailQuantity ? `${fmtNum(t.detailQuantity.value)} ${t.detailQuantity.unit || ""}` : t.detailRange ? "range" : t.detailString || "";
      return h("tr", null,
        h("td", null, (g.description && g.description.text) || "(goal)"),
        h("td", null, tq),
        h("td", null, fmtDate(t.dueDate)),
        h("td", null, m && Number.isFinite(m.latest) ? `${fmtNum(m.latest)} ${m.unit}` : ""),
        h("td", null, Number.isFinite(pct) ? h("meter", { min: 0, max: 100, value: pct.toFixed(0), title: progress }) : null, " ", progress),
        h("td", null, g.achievementStatus ? (g.achievementStatus.text || (g.achievementStatus.coding || [])[0]?.code) : g.lifecycleStatus || ""));
    }))));
}

const isPain = (o) => ((o.code && o.code.coding) || []).some((c) => c.code === "72514-3" || /pain/i.test(c.code || "")) ||
  /pain/i.test((o.code && o.code.text) || "");
const obsValue = (o) => (o.valueQuantity ? o.valueQuantity.value : o.valueInteger);

/** Pain before/after of a session: pain Observations of the Encounter, at its start and at its end. */
export function painOf(observations, encounter) {
  const ref = "Encounter/" + encounter.id;
  const start = encounter.period && encounter.period.start;
  const end = encounter.period && encounter.period.end;
  const pains = observations.filter((o) => o.encounter && o.encounter.reference === ref && isPain(o))
    .sort((a, b) => new Date(a.effectiveDateTime) - new Date(b.effectiveDateTime));
  const at = (when) => pains.find((o) => when && new Date(o.effectiveDateTime).getTime() === new Date(when).getTime());
  let before = at(start);
  let after = at(end);
  if (!before && !after && pains.length) {
    before = pains[0];
    after = pains.length > 1 ? pains[pains.length - 1] : null;
  }
  return { before: before ? fmtNum(obsValue(before)) : "", after: after ? fmtNum(obsValue(after)) : "" };
}

function interventionText(p) {
  const coding = (p.code && p.code.coding) || [];
  const cpt = coding.find((c) => /cpt/i.test(c.system || ""));
  const name = (p.code && p.code.text) || (coding[0] && (coding[0].display || coding[0].code)) || "(intervention)";
  const params = (p.extension || []).filter((e) => e.url && e.url.endsWith("/procedure-parameter")).map((e) => {
    const parts = e.extension || [];
    const param = parts.find((x) => x.url === "parameter");
    const value = parts.find((x) => x.url === "value");
    const label = param && param.valueCoding ? (param.valueCoding.display || String(param.valueCoding.code || "").replace(/^param-/, "")) : "";
    return `${label} ${qty(value && value.valueQuantity)}`.trim();
  });
  const minutes = p.performedPeriod && p.performedPeriod.start && p.performedPeriod.end
    ? Math.round((new Date(p.performedPeriod.end) - new Date(p.performedPeriod.start)) / 60000) : null;
  return [name + (cpt ? ` (CPT ${cpt.code})` : ""), minutes ? `${minutes} min` : null, params.length ? params.join(", ") : null]
    .filter(Boolean).join(" — ");
}

function renderSessions(encounters, procedures, observations) {
  const box = document.getElementById("sessions");
  if (!encounters.length) {
    replace(box, h("p", { class: "state empty" }, "No treatment sessions recorded yet."));
    return;
  }
  replace(box, h("table", { class: "data", id: "session-table" },
    h("caption", { class: "visually-hidden" }, "Recent sessions"),
    h("thead", null, h("tr", null, ["Date", "Interventions", "Pain before", "Pain after"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", null, encounters.map((e) => {
      const ref = "Encounter/" + e.id;
      const procs = procedures.filter((p) => p.encounter && p.encounter.reference === ref);
      const pain = painOf(observations, e);
      return h("tr", null,
        h("td", null, fmtDate((e.period && e.period.start) || (e.meta && e.meta.lastUpdated))),
        h("td", null, procs.length ? h("ul", { class: "plain" }, procs.map((p) => h("li", null, interventionText(p)))) : "—"),
        h("td", { class: "num" }, pain.before), h("td", { class: "num" }, pain.after));
    }))));
}

const resources = (bundle, type) => (bundle.entry || []).map((x) => x.resource).filter((r) => r && r.resourceType === type);

async function optional(promise, fallback) {
  try {
    return await promise;
  } catch (err) {
    if (err instanceof ApiError && (err.status === 403 || err.status === 404)) return fallback(err);
    throw err;
  }
}

export async function start() {
  const id = decodeURIComponent(location.pathname.split("/").pop());
  const status = document.getElementById("status");
  let patient;
  try {
    patient = await api("/Patient/" + encodeURIComponent(id));
  } catch (err) {
    if (err.status === 404 || err.status === 410) {
      for (const node of document.querySelectorAll("main section")) node.hidden = true;
      state(status, "empty", err.status === 410 ? "This patient record was deleted." : "No patient with this id, or you may not see them.",
        h("a", { href: "/app/patients" }, "Back to the patient list"));
      return;
    }
    throw err;
  }
  document.getElementById("patient-name").textContent = humanName(patient);
  document.title = humanName(patient) + " · Rehab FHIR";
  document.getElementById("patient-facts").textContent = [patient.gender, patient.birthDate && "born " + patient.birthDate, "id " + patient.id]
    .filter(Boolean).join(" · ");
  const q = encodeURIComponent(id);
  const none = () => ({ entry: [] });
  const settle = (p) => p.then((ok) => ({ ok }), (err) => ({ err }));
  const [progress, plans, goals, encounters] = await Promise.all([
    settle(api(`/rehab/patients/${q}/progress`)),
    settle(optional(api(`/CarePlan?patient=${q}&status=active&_count=50`), none)),
    settle(optional(api(`/Goal?patient=${q}&_count=50`), none)),
    settle(optional(api(`/Encounter?patient=${q}&_sort=-date&_count=5`), none)),
  ]);
  if (progress.err) {
    const why = progress.err.status === 404 && /requested URL was not found/.test(progress.err.message)
      ? "this server does not offer the /rehab progress service." : progress.err.message;
    replace(document.getElementById("measures"), h("p", { class: "state error" }, "Progress could not be loaded: " + why));
  }
  const firstError = [plans, goals, encounters].find((r) => r.err);
  if (firstError) throw firstError.err;
  const encounterList = resources(encounters.ok, "Encounter");
  let procedures = [];
  let observations = [];
  if (encounterList.length) {
    const refs = encodeURIComponent(encounterList.map((x) => "Encounter/" + x.id).join(","));
    const [procs, obs] = await Promise.all([
      optional(api(`/Procedure?encounter=${refs}&_count=200`), none),
      optional(api(`/Observation?encounter=${refs}&_count=200`), none),
    ]);
    procedures = resources(procs, "Procedure");
    observations = resources(obs, "Observation");
  }
  const goalList = resources(goals.ok, "Goal");
  const measures = progress.ok ? measuresOf(progress.ok) : [];
  if (progress.ok) renderMeasures(measures, goalList);
  renderProgram(resources(plans.ok, "CarePlan"));
  renderGoals(goalList, measures);
  renderSessions(encounterList, procedures, observations);
  status.hidden = true;
}
