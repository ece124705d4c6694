// SVG line charts drawn here (no library): series over time, baseline, goal target, MCID band.
import { fmtDate, fmtNum, s } from "./dom.js";

const W = 440;
const H = 220;
const PAD = { left: 48, right: 22, top: 18, bottom: 36 };

function niceTicks(lo, hi, count = 5) {
  const span = hi - lo || 1;
  const step0 = span / count;
  const mag = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((st) => span / st <= count) || mag * 10;
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step / 1e6; v += step) ticks.push(+v.toFixed(10));
  return ticks;
}

/** Return the y-range [lo, hi] that shows every value, the baseline, the target and the MCID band. */
export function domainOf(points, extras = []) {
  const values = [...points.map((p) => p.value), ...extras].filter((v) => Number.isFinite(v));
  if (!values.length) return [0, 1];
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  const pad = (hi - lo) * 0.1 || Math.abs(hi) * 0.1 || 1;
  lo -= pad;
  hi += pad;
  if (lo < 0 && Math.min(...values) >= 0) lo = 0;
  return [lo, hi];
}

/**
 * Draw one measure's series.
 * opts: {label, unit, points: [{date, value}], baseline, target, mcid, direction: "higher"|"lower", domain}
 */
export function lineChart(opts) {
  const { label, unit, points, baseline, target, mcid, direction } = opts;
  const domain = opts.domain || domainOf(points, [baseline, target, mcidEdge(baseline, mcid, direction)]);
  const times = points.map((p) => new Date(p.date).getTime());
  let t0 = Math.min(...times);
  let t1 = Math.max(...times);
  if (t0 === t1) { t0 -= 86400000; t1 += 86400000; }
  const x = (t) => PAD.left + ((t - t0) / (t1 - t0)) * (W - PAD.left - PAD.right);
  const y = (v) => H - PAD.bottom - ((v - domain[0]) / (domain[1] - domain[0])) * (H - PAD.top - PAD.bottom);
  const titleId = "t" + Math.random().toString(36).slice(2);
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-labelledby": titleId });
  svg.append(s("title", { id: titleId }, `${label}: ${points.length} measurements` +
    (points.length ? `, from ${fmtNum(points[0].value)} to ${fmtNum(points[points.length - 1].value)} ${unit || ""}` : "")));

  const plotLeft = PAD.left;
  const plotRight = W - PAD.right;
  const yTicks = niceTicks(domain[0], domain[1]);
  for (const v of yTicks) {
    svg.append(s("line", { x1: plotLeft, x2: plotRight, y1: y(v), y2: y(v), class: "grid" }));
    svg.append(s("text", { x: plotLeft - 6, y: y(v) + 4, class: "tick", "text-anchor": "end" }, fmtNum(v)));
  }
  if (Number.isFinite(baseline) && Number.isFinite(mcid) && mcid > 0) {
    const edge = mcidEdge(baseline, mcid, direction);
    const top = Math.max(baseline, edge);
    const bottom = Math.min(baseline, edge);
    svg.append(s("rect", {
      x: plotLeft, width: plotRight - plotLeft, y: y(top), height: Math.max(1, y(bottom) - y(top)), class: "mcid-band",
    }, s("title", null, `MCID band: change smaller than ${fmtNum(mcid)} ${unit || ""} from baseline is not clinically important`)));
  }
  if (Number.isFinite(baseline)) {
    svg.append(s("line", { x1: plotLeft, x2: plotRight, y1: y(baseline), y2: y(baseline), class: "baseline" }));
    svg.append(s("text", { x: plotRight - 2, y: y(baseline) - 4, class: "ref-label", "text-anchor": "end" }, "baseline"));
  }
  if (Number.isFinite(target)) {
    svg.append(s("line", { x1: plotLeft, x2: plotRight, y1: y(target), y2: y(target), class: "target" }));
    svg.append(s("text", { x: plotRight - 2, y: y(target) - 4, class: "ref-label target-label", "text-anchor": "end" },
      "goal " + fmtNum(target)));
  }
  // x axis: first, middle and last dates
  const xDates = [...new Set([t0, (t0 + t1) / 2, t1])];
  const sameDay = t1 - t0 < 2 * 86400000; // within two days the time of day tells the points apart
  svg.append(s("line", { x1: plotLeft, x2: plotRight, y1: H - PAD.bottom, y2: H - PAD.bottom, class: "axis" }));
  xDates.forEach((t, i) => svg.append(s("text", {
    x: x(t), y: H - PAD.bottom + 16, class: "tick",
    "text-anchor": i === 0 ? "start" : i === xDates.length - 1 ? "end" : "middle",
  }, fmtDate(new Date(t).toISOString().slice(0, sameDay ? 16 : 10)))));
  if (unit) svg.append(s("text", { x: 4, y: PAD.top - 4, class: "tick unit" }, unit));
  if (points.length > 1) {
    svg.append(s("polyline", {
      class: "series", points: points.map((p, i) => `${x(times[i]).toFixed(1)},${y(p.value).toFixed(1)}`).join(" "),
    }));
  }
  points.forEach((p, i) => svg.append(s("circle", { cx: x(times[i]), cy: y(p.value), r: 4, class: "point" },
    s("title", null, `${fmtDate(p.date)}: ${fmtNum(p.value)} ${unit || ""}`))));
  return svg;
}

/** The far edge of the MCID band: baseline plus one MCID in the direction of improvement. */
export function mcidEdge(baseline, mcid, direction) {
  if (!Number.isFinite(baseline) || !Number.isFinite(mcid)) return NaN;
  return direction === "lower" ? baseline - mcid : baseline + mcid;
}
