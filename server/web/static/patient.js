// Clinician view of GET /rehab/patients/{id}/progress: one chart and table per comparable series (what
// defines it, points in time order, change, trend and last step), the left/right symmetry of sided series
// (same-day pairs only), the within-session before/after changes and the points that were not counted;
// then the active exercise program, goals, recent sessions and the episodes of care (episode.js).
import { adherenceRows } from "./adherence.js";
import { domainOf, lineChart, mcidEdge } from "./chart.js";
import { renderEpisodes } from "./episode.js";
import { fmtDate, fmtNum, fmtWhen, goalStatus, h, humanName, replace, state, unitLabel } from "./dom.js";
import { api, ApiError } from "./smart.js";

const pick = (obj, ...names) => { for (const n of names) if (obj && obj[n] !== undefined && obj[n] !== null) return obj[n]; return undefined; };
const num = (v) => (v === undefined || v === null || v === "" ? NaN : Number(v));
const signed = (v, digits) => (v > 0 ? "+" : v < 0 ? "−" : "") + fmtNum(Math.abs(v), digits);
const SIDES = ["left", "right"];

/** Normalise one series entry of the progress answer (`measures[]`). */
export function normaliseMeasure(m) {
  const ordinal = m.scale === "ordinal";
  const series = (m.series || []).map((p) => ({
    date: p.date,
    instant: p.instant || p.date,
    value: ordinal ? pick(p, "grade", "value") : num(p.value),
    entered: p.entered || null,
    observation: p.observation,
  })).filter((p) => p.instant && (ordinal || Number.isFinite(p.value)));
  // the server orders by instant; a stable sort on the instant keeps that order whatever the input
  series.sort((a, b) => new Date(a.instant) - new Date(b.instant));
  const baseline = ordinal ? m.baseline : num(m.baseline);
  const percent = m.mcid_kind === "percent";
  const mcid = num(m.mcid);
  return {
    raw: m,
    key: m.measure,
    keys: new Set([m.measure]),
    label: m.display || m.measure || "Measure",
    unit: unitLabel(m.unit || ""),
    side: m.side || null,
    ordinal,
    series,
    baseline,
    latest: ordinal ? m.latest : num(m.latest),
    change: num(m.change),
    pctChange: num(m.percent_change),
    mcid,
    mcidPercent: percent,
    // the MCID in the measure's unit (a percent MCID is a share of the baseline)
    mcidAbs: percent && Number.isFinite(mcid) && Number.isFinite(baseline) ? (mcid * Math.abs(baseline)) / 100 : mcid,
    mcidReached: m.mcid_reached,
    mdc: num(m.mdc),
    direction: m.direction === "lower" ? "lower" : m.direction === "higher" ? "higher" : null,
    trend: m.trend || null,
    trendDetail: m.trend_detail || null,
    lastStep: m.last_step || null,
    symmetry: m.symmetry || null,
  };
}

function measuresOf(progress) {
  return ((progress && progress.measures) || []).map(normaliseMeasure).filter((m) => m.series.length);
}

/** What makes a series' values comparable, as a clinician reads it. */
export function definedBy(entry) {
  const d = entry.defined_by || {};
  const bits = [d.context || "longitudinal"];
  if (entry.side) bits.push(entry.side);
  if (entry.body_site) bits.push("site " + String(entry.body_site).replace(/_/g, " "));
  const named = [["method", d.method], ["device", d.assistive_device], ["position", d.position], ["protocol", d.protocol]]
    .filter(([, v]) => v);
  for (const [name, value] of named) bits.push(`${name} ${value}`);
  if (!named.length) bits.push("no method, device, position or protocol recorded");
  return bits.join(" · ");
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

function withUnit(value, unit) { return `${value}${unit ? " " + unit : ""}`; }

function summaryLine(m) {
  const bits = [];
  if (m.ordinal) {
    bits.push(`baseline grade ${m.baseline}`, `latest grade ${m.latest}`);
    if (Number.isFinite(num(m.raw.grade_steps))) bits.push(`${signed(m.raw.grade_steps)} grade steps`);
    return bits.join(" · ");
  }
  bits.push(`baseline ${withUnit(fmtNum(m.baseline), m.unit)}`, `latest ${withUnit(fmtNum(m.latest), m.unit)}`);
  if (Number.isFinite(m.change)) {
    bits.push(`change ${signed(m.change)}${Number.isFinite(m.pctChange) ? ` (${signed(m.pctChange)} %)` : ""}`);
  }
  if (Number.isFinite(m.mcid)) {
    const reached = m.mcidReached === true ? " reached" : m.mcidReached === false ? " not reached" : "";
    bits.push(`MCID ${fmtNum(m.mcid)}${m.mcidPercent ? " % of baseline" : ""}${reached}`);
  }
  if (Number.isFinite(m.mdc)) bits.push(`MDC ${withUnit(fmtNum(m.mdc), m.unit)}`);
  return bits.join(" · ");
}

/** The trend verdict and how it was reached. */
export function trendText(m) {
  const d = m.trendDetail;
  if (m.trend === "baseline only") return "Trend: baseline only (one point)";
  if (!d) return m.trend ? `Trend: ${m.trend}` : "Trend: not rated";
  if (d.reason) return `Trend: not rated (${d.reason})`;
  const verdict = m.trend || "not rated (this measure has no better direction)";
  if (m.ordinal) return `Trend: ${verdict} — Mann-Kendall S ${signed(d.s)} over ${d.pairs} pairs of points`;
  const against = Number.isFinite(num(d.threshold))
    ? `against the ${d.threshold_kind} of ${withUnit(fmtNum(d.threshold, 2), m.unit)}`
    : "(no MDC or MCID known: the slope's sign decides)";
  return `Trend: ${verdict} — least-squares slope ${withUnit(signed(d.slope_per_30_days, 2), m.unit)} per 30 days over all ` +
    `${m.series.length} points; fitted change ${withUnit(signed(d.fitted_change, 2), m.unit)} ${against}`;
}

function span(days) {
  if (!Number.isFinite(days)) return "";
  if (days >= 1) return `${fmtNum(days)} day${days === 1 ? "" : "s"}`;
  return `${fmtNum(days * 1440, 0)} min`;
}

export function lastStepText(m) {
  const s = m.lastStep;
  if (!s) return null;
  const move = m.ordinal
    ? `grade ${s.from} → ${s.to} (${signed(s.grade_steps)} steps)`
    : `${fmtNum(s.from)} → ${withUnit(fmtNum(s.to), m.unit)} (${signed(s.change)})`;
  return `Last step: ${move} in ${span(num(s.days))}, ${s.direction}`;
}

function dataTable(m, target) {
  const entered = m.series.some((p) => p.entered);
  const cols = ["Date (as recorded)", m.ordinal ? "Grade" : `Value${m.unit ? " (" + m.unit + ")" : ""}`];
  if (entered) cols.push("Entered as");
  if (!m.ordinal) cols.push("Change from baseline");
  return h("table", { class: "data compact values" },
    h("caption", null, `${m.label}${m.side ? " (" + m.side + ")" : ""} — values in time order`),
    h("thead", null, h("tr", null, cols.map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", null, m.series.map((p) => h("tr", null,
      h("td", { "data-col": "date", title: "instant " + p.instant }, fmtWhen(p.date)),
      h("td", { class: "num", "data-col": "value" }, m.ordinal ? String(p.value) : fmtNum(p.value)),
      entered ? h("td", { "data-col": "entered" }, p.entered ? `${fmtNum(p.entered.value)} ${unitLabel(p.entered.unit)}` : "") : null,
      m.ordinal ? null : h("td", { class: "num", "data-col": "change" }, signed(p.value - m.baseline))))),
    m.ordinal ? null : h("tfoot", null,
      Number.isFinite(target) ? h("tr", null, h("th", { scope: "row" }, "Goal target"), h("td", { class: "num" }, fmtNum(target))) : null,
      Number.isFinite(m.mcid) ? h("tr", null, h("th", { scope: "row" }, "MCID"),
        h("td", { class: "num" }, fmtNum(m.mcidAbs)),
        h("td", { colspan: entered ? 2 : 1 }, m.direction === "lower" ? "lower is better" : "higher is better")) : null));
}

function measureFigure(m, goals, domain) {
  const target = m.ordinal ? NaN : goalTarget(goals, m);
  const chartPoints = m.series.map((p) => ({ date: p.instant, value: p.value }));
  return h("figure", { class: "measure", "data-measure": m.key, "data-side": m.side || "" },
    h("figcaption", null,
      h("strong", null, m.label + (m.side ? " — " + m.side : "")),
      h("span", { class: "defined-by" }, "Series: " + definedBy(m.raw)),
      h("span", { class: "summary" }, summaryLine(m)),
      h("span", { class: "trend", "data-trend": m.trend || "" }, trendText(m)),
      m.lastStep ? h("span", { class: "last-step" }, lastStepText(m)) : null),
    h("div", { class: "chart-and-table" },
      m.ordinal ? h("p", { class: "note" }, "Ordinal grades: compared in grade steps, not drawn or subtracted as numbers.") :
        h("div", { class: "chart-box" },
          lineChart({ label: m.label + (m.side ? " " + m.side : ""), unit: m.unit, points: chartPoints, baseline: m.baseline,
            target, mcid: m.mcidAbs, direction: m.direction, domain }),
          h("ul", { class: "legend", "aria-hidden": "true" },
            h("li", { class: "series" }, "measured"),
            h("li", { class: "baseline" }, "baseline"),
            Number.isFinite(target) ? h("li", { class: "target" }, "goal target") : null,
            Number.isFinite(m.mcidAbs) ? h("li", { class: "band" }, "within MCID of baseline") : null)),
      dataTable(m, target)));
}

/** The left/right comparison of a sided series pair: same-day pairs only, each with its date. */
export function symmetryBlock(sym, unit) {
  if (!sym) return null;
  const latest = sym.latest;
  const inv = sym.involved;
  const other = inv === "left" ? "right" : "left";
  let headline;
  if (!latest) headline = "No same-day left/right pair: values from different days are not compared.";
  else if (latest.grade_steps_left_minus_right !== undefined) {
    headline = `Left − right ${signed(latest.grade_steps_left_minus_right)} grade steps (grades ${latest.left} and ${latest.right}, same-day pair of ${latest.date})`;
  } else if (inv && Number.isFinite(num(latest.lsi))) {
    headline = `Limb symmetry index ${fmtNum(latest.lsi)} % (${inv} ÷ ${other}: ${fmtNum(latest[inv])} ÷ ${withUnit(fmtNum(latest[other]), unit)}` +
      `, same-day pair of ${latest.date}); deficit ${withUnit(signed(latest.deficit), unit)}`;
  } else if (inv) {
    headline = `Deficit ${withUnit(signed(latest.deficit), unit)} (${inv} − ${other}: ${fmtNum(latest[inv])} − ${withUnit(fmtNum(latest[other]), unit)}` +
      `, same-day pair of ${latest.date}); no ratio for signed values`;
  } else {
    headline = `Left − right ${withUnit(signed(latest.left_minus_right), unit)} (${fmtNum(latest.left)} vs ${withUnit(fmtNum(latest.right), unit)}` +
      `, same-day pair of ${latest.date})`;
  }
  const first = (sym.pairs || [])[0] || {};
  const extra = first.grade_steps_left_minus_right !== undefined ? [["Left − right (grade steps)", (p) => signed(p.grade_steps_left_minus_right)]]
    : inv ? [["LSI %", (p) => (Number.isFinite(num(p.lsi)) ? fmtNum(p.lsi) : "—")], [`Deficit (${inv} − ${other})`, (p) => signed(p.deficit)]]
      : [["Left − right", (p) => signed(p.left_minus_right)]];
  return h("div", { class: "symmetry", "data-involved": inv || "" },
    h("p", { class: "symmetry-latest" }, headline),
    sym.note ? h("p", { class: "note" }, sym.note) : null,
    (sym.pairs || []).length ? h("table", { class: "data compact pairs" },
      h("caption", null, `Same-day left/right pairs${unit ? " (" + unit + ")" : ""}`),
      h("thead", null, h("tr", null, ["Date", "Left", "Right", ...extra.map(([t]) => t)].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", null, sym.pairs.map((p) => h("tr", null,
        h("td", null, p.date), h("td", { class: "num" }, fmtNum(p.left)), h("td", { class: "num" }, fmtNum(p.right)),
        extra.map(([, f]) => h("td", { class: "num" }, f(p))))))) : null);
}

function renderMeasures(measures, goals) {
  const box = document.getElementById("measures");
  document.getElementById("involved-box").hidden = !measures.some((m) => m.symmetry);
  if (!measures.length) {
    replace(box, h("p", { class: "state empty" }, "No measurements recorded yet. Assessments sent to /rehab/assessments, or coded Observations from the EHR, appear here."));
    return;
  }
  // left and right of one series definition side by side, with their symmetry; everything else on its own
  const groups = new Map();
  measures.forEach((m, i) => {
    const d = m.raw.defined_by || {};
    const key = m.symmetry && SIDES.includes(m.side) ? JSON.stringify([m.key, m.raw.body_site, d]) : i;
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(m);
  });
  replace(box, [...groups.values()].map((group) => {
    if (group.length === 1 && !group[0].symmetry) return measureFigure(group[0], goals);
    group.sort((a, b) => SIDES.indexOf(a.side) - SIDES.indexOf(b.side));
    const all = group.flatMap((m) => [m.baseline, goalTarget(goals, m), mcidEdge(m.baseline, m.mcidAbs, m.direction)]);
    const domain = group[0].ordinal ? undefined : domainOf(group.flatMap((m) => m.series), all);
    return h("div", { class: "sided", "data-measure": group[0].key },
      h("h3", null, group[0].label),
      symmetryBlock(group[0].symmetry, group[0].unit),
      h("div", { class: "side-by-side" }, group.map((m) => measureFigure(m, goals, domain))));
  }));
}

function pointCell(p) {
  return p ? fmtNum(p.value) : "—";
}

function renderWithin(blocks) {
  const box = document.getElementById("within-session");
  const rows = blocks.flatMap((b) => (b.sessions || []).map((s) => ({ b, s })));
  if (!rows.length) {
    replace(box, h("p", { class: "state empty" }, "No values recorded before and after treatment within a session."));
    return;
  }
  replace(box, h("table", { class: "data", id: "within-table" },
    h("caption", { class: "visually-hidden" }, "Within-session change"),
    h("thead", null, h("tr", null, ["Measure", "Session", "Before", "After", "Change", "Time apart"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", null, rows.map(({ b, s }) => {
      const unit = unitLabel(b.unit || "");
      const when = (s.pre || s.post || {}).date;
      return h("tr", { "data-measure": b.measure },
        h("td", null, h("span", null, b.display || b.measure), h("br"), h("small", { class: "defined-by" }, definedBy(b))),
        h("td", { "data-col": "session" }, fmtWhen(when)),
        h("td", { class: "num", "data-col": "pre" }, pointCell(s.pre)),
        h("td", { class: "num", "data-col": "post" }, pointCell(s.post)),
        h("td", { "data-col": "change" }, Number.isFinite(num(s.change)) ? `${withUnit(signed(s.change), unit)}, ${s.direction}` : "no before/after pair"),
        h("td", { "data-col": "apart" }, Number.isFinite(num(s.minutes_apart)) ? `${fmtNum(s.minutes_apart)} min` : ""));
    }))));
}

function renderExcluded(excluded, names) {
  const box = document.getElementById("excluded");
  if (!excluded.length) {
    replace(box, h("p", { class: "state empty" }, "Every recorded point counts: none was left out."));
    return;
  }
  replace(box, h("table", { class: "data", id: "excluded-table" },
    h("caption", { class: "visually-hidden" }, "Points not counted, with the reason"),
    h("thead", null, h("tr", null, ["Measure", "Date", "Value", "Status", "Why it does not count"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", null, excluded.map((e) => h("tr", { "data-observation": e.observation || "" },
      h("td", null, names.get(e.measure) || e.measure),
      h("td", { "data-col": "date" }, e.date ? fmtWhen(e.date) : "—"),
      h("td", { "data-col": "value" }, e.value === null || e.value === undefined ? "—" : `${fmtNum(e.value)} ${unitLabel(e.unit || "")}`.trim()),
      h("td", { "data-col": "status" }, e.status || ""),
      h("td", { "data-col": "reason" }, e.reason))))));
}

/** Draw the whole progress answer; returns the normalised series (the goals table reads them). */
function renderProgress(progress, goals) {
  const measures = measuresOf(progress);
  const names = new Map([...(progress.measures || []), ...(progress.within_session || [])].map((m) => [m.measure, m.display]));
  renderMeasures(measures, goals);
  renderAdherence(progress.adherence || []);
  renderWithin(progress.within_session || []);
  renderExcluded(progress.excluded || [], names);
  return measures;
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

/** Home program adherence (progress `adherence[]`): per exercise overall and per plan week. */
function renderAdherence(reports) {
  const box = document.getElementById("adherence");
  const rows = adherenceRows(reports);
  if (!rows.length) {
    replace(box, h("p", { class: "state empty" }, "No home program days recorded. A patient app sends them to /rehab/adherence."));
    return;
  }
  replace(box, h("table", { class: "data", id: "adherence-table" },
    h("caption", { class: "visually-hidden" }, "Home program adherence"),
    h("thead", null, h("tr", null, ["Exercise", "Expected", "Adherence", "By week", "Plan"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", null, rows.map((r) => h("tr", { "data-exercise": r.exercise },
      h("td", null, r.exercise),
      h("td", null, r.expected),
      h("td", { class: "num" }, r.percent === null ? null : h("meter", { min: 0, max: 100, value: r.percent.toFixed(0) }), " ", r.overall),
      h("td", null, h("ul", { class: "weeks" }, r.weeks.map((w) => h("li", { title: w.detail }, `${w.label}: ${w.percent}`)))),
      h("td", { title: r.plan }, r.planLabel))))));
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
        h("td", null, goalStatus(g)));
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
  const select = document.getElementById("involved");
  const asked = new URLSearchParams(location.search).get("involved");
  select.value = SIDES.includes(asked) ? asked : "";
  const progressOf = () => api(`/rehab/patients/${q}/progress${select.value ? "?involved=" + select.value : ""}`);
  const [progress, plans, goals, encounters] = await Promise.all([
    settle(progressOf()),
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
  const measures = progress.ok ? renderProgress(progress.ok, goalList) : [];
  // the involved side turns left - right into the limb symmetry index (involved / uninvolved)
  select.addEventListener("change", async () => {
    const url = new URL(location.href);
    if (select.value) url.searchParams.set("involved", select.value);
    else url.searchParams.delete("involved");
    history.replaceState(null, "", url);
    const box = document.getElementById("measures");
    box.setAttribute("aria-busy", "true");
    try {
      renderProgress(await progressOf(), goalList);
    } catch (err) {
      replace(box, h("p", { class: "state error" }, "Progress could not be loaded: " + err.message));
    } finally {
      box.removeAttribute("aria-busy");
    }
  });
  renderProgram(resources(plans.ok, "CarePlan"));
  renderGoals(goalList, measures);
  renderSessions(encounterList, procedures, observations);
  await renderEpisodes(id, goalList);
  status.hidden = true;
}
