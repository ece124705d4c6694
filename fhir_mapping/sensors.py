"""POST /rehab/sensor-series: wearable/biofeedback streams -> Device + Observation.valueSampledData
+ derived summary Observations (peak, mean, RMS per channel; left/right symmetry index on RMS).

Peak is the largest absolute sample; summaries carry `derivedFrom` the series Observation and
our CodeSystem codes stat-peak, stat-mean, stat-rms, stat-symmetry-index (no standard codes
were verified for these).
https://hl7.org/fhir/R4B/datatypes.html#SampledData
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from marshmallow import Schema
from marshmallow import ValidationError
from marshmallow import fields
from marshmallow import post_load
from marshmallow import validate
from marshmallow import validates_schema

from fhir_mapping import codes
from fhir_mapping.analytics import asymmetry_index
from fhir_mapping.analytics import rms
from fhir_mapping.catalog import BODY_SITES
from fhir_mapping.catalog import Measure
from fhir_mapping.catalog import get
from fhir_mapping.catalog import recognise
from fhir_mapping.observations import body_site
from fhir_mapping.observations import code_concept
from fhir_mapping.observations import side_of
from fhir_mapping.observations import site_of
from fhir_mapping.schemas import SIDES
from fhir_mapping.schemas import PatientId
from fhir_mapping.schemas import check_measured
from fhir_mapping.schemas import not_future
from fhir_mapping.schemas import unit_problem
from fhir_mapping.sessions import parse_instant
from fhir_mapping.sessions import stamp
from fhir_mapping.transaction import Entry
from fhir_mapping.transaction import entry
from fhir_mapping.transaction import of_role
from fhir_mapping.transaction import patient_of
from fhir_mapping.units import convert
from fhir_mapping.units import resolve
from fhir_mapping.units import ucum

KINDS = ("surface_emg", "imu_joint_angle", "force_plate_sway")
STATS = {
    "peak": "Peak of a sampled series",
    "mean": "Mean of a sampled series",
    "rms": "Root mean square of a sampled series",
    "symmetry-index": "Left/right symmetry index",
}


class DeviceSchema(Schema):
    """The sensor that recorded the series."""

    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    manufacturer = fields.String(validate=validate.Length(min=1, max=200))
    model = fields.String(validate=validate.Length(min=1, max=200))
    serial = fields.String(validate=validate.Length(min=1, max=200))


MAX_PERIOD_MS = 3_600_000


class ChannelSchema(Schema):
    """One channel: a side and its samples."""

    side = fields.String(validate=validate.OneOf(SIDES))
    samples = fields.List(
        fields.Float(allow_nan=False), required=True, validate=validate.Length(min=1, max=100_000)
    )


class SensorSeriesSchema(Schema):
    """POST /rehab/sensor-series."""

    patient = PatientId(required=True)
    date = fields.AwareDateTime(required=True, format="iso", validate=not_future)
    kind = fields.String(required=True, validate=validate.OneOf(KINDS))
    device = fields.Nested(DeviceSchema, required=True)
    body_site = fields.String(validate=validate.OneOf(sorted(BODY_SITES)))
    # At most an hour between samples: a larger period is no sensor's, and period x samples must stay a
    # time span (2**70 ms overflowed timedelta: a 500).
    period_ms = fields.Float(
        required=True, validate=validate.Range(min=0, min_inclusive=False, max=MAX_PERIOD_MS)
    )
    unit = fields.String()
    channels = fields.List(
        fields.Nested(ChannelSchema), required=True, validate=validate.Length(min=1, max=8)
    )

    @validates_schema
    def _check(self, data: dict[str, Any], **_: Any) -> None:
        measure = get(data["kind"])
        assert measure is not None and measure.unit is not None
        errors: dict[str, Any] = {}
        if resolve(data.get("unit"), measure.unit) is None:
            errors["unit"] = [unit_problem(data.get("unit"), measure.unit, measure.key)]
        site = {"measure": measure.key, "value": 0, "body_site": data.get("body_site")}
        for k, v in check_measured(site, "value").items():
            if k == "body_site":
                errors[k] = [v]
        per_channel = {}
        for i, ch in enumerate(data["channels"]):
            bad = check_measured({"measure": measure.key, "value": 0, "side": ch.get("side")}, "value")
            if "side" in bad:
                per_channel[i] = {"side": [bad["side"]]}
        if per_channel:
            errors["channels"] = per_channel
        sides = [ch.get("side") for ch in data["channels"]]
        if len(set(sides)) != len(sides):
            errors.setdefault("channels", {})[len(sides) - 1] = {"side": ["Each channel needs its own side"]}
        if "unit" not in errors:
            for i, ch in enumerate(data["channels"]):
                bad = _outside(measure, data.get("unit"), ch["samples"])
                if bad:
                    errors.setdefault("channels", {}).setdefault(i, {})["samples"] = [bad]
        if errors:
            raise ValidationError(errors)

    @post_load
    def _canonical(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        measure = get(data["kind"])
        assert measure is not None and measure.unit is not None
        for ch in data["channels"]:
            ch["samples"] = [codes.number(v) for v in ch["samples"]]
        data["unit"] = ucum(data.get("unit"), measure.unit)
        data["period_ms"] = codes.number(data["period_ms"])
        data["date"] = stamp(data["date"])
        return data


def sample_range(measure: Measure) -> tuple[float, float]:
    """The plausible range of one sample, in the measure's unit.

    A raw sEMG signal swings both ways around zero, so its samples lie within +/- the
    catalog's amplitude range (0-10000 uV); the other kinds are signed in the catalog already.
    """
    assert measure.low is not None and measure.high is not None
    return (-measure.high, measure.high) if measure.key == "surface_emg" else (measure.low, measure.high)


def _outside(measure: Measure, unit: str | None, samples: list[float]) -> str | None:
    assert measure.unit is not None
    low, high = sample_range(measure)
    for i, v in enumerate(samples):
        canonical = convert(v, unit, measure.unit)
        if canonical is not None and not low <= canonical <= high:
            return f"Sample {i} ({v:g} {unit or measure.unit}) is outside {low:g} to {high:g} {measure.unit}"
    return None


def _device(payload: dict[str, Any]) -> dict[str, Any]:
    d = payload["device"]
    out: dict[str, Any] = {
        "resourceType": "Device",
        "deviceName": [{"name": d["name"], "type": "user-friendly-name"}],
        "patient": {"reference": f"Patient/{payload['patient']}"},
    }
    for key, element in (
        ("manufacturer", "manufacturer"),
        ("model", "modelNumber"),
        ("serial", "serialNumber"),
    ):
        if key in d:
            out[element] = d[key]
    return out


def _stat(
    measure_key: str, stat: str, value: float, base: dict[str, Any], sources: list[str], unit: str
) -> dict[str, Any]:
    measure = get(measure_key)
    assert measure is not None
    unit = "%" if stat == "symmetry-index" else unit
    obs = {
        **base,
        "code": {
            "coding": [codes.coding(codes.PT, f"stat-{stat}", STATS[stat])],
            "text": f"{measure.display} {stat.replace('-', ' ')}",
        },
        "valueQuantity": codes.quantity(codes.number(round(value, 4)), unit),
        "derivedFrom": [{"reference": s} for s in sources],
    }
    obs.pop("valueSampledData", None)
    return obs


def build_series(payload: dict[str, Any]) -> list[Entry]:
    """Return the Device, one series Observation per channel and the summary Observations."""
    measure = get(payload["kind"])
    assert measure is not None and measure.unit is not None
    device = entry("device", _device(payload))
    entries, stats, rms_by_side = [device], [], {}
    start = parse_instant(payload["date"])
    for ch in payload["channels"]:
        samples = ch["samples"]
        end = start + timedelta(milliseconds=payload["period_ms"] * len(samples))
        obs: dict[str, Any] = {
            "resourceType": "Observation",
            "status": "final",
            "category": [codes.category(measure.category)],
            "code": code_concept(measure, ch.get("side")),
            "subject": {"reference": f"Patient/{payload['patient']}"},
            "effectivePeriod": {"start": payload["date"], "end": stamp(end)},
            "device": {"reference": device.full_url},
            "valueSampledData": {
                "origin": codes.quantity(0, payload["unit"]),
                "period": payload["period_ms"],
                "dimensions": 1,
                "data": " ".join(repr(v) for v in samples),
            },
        }
        site = body_site(payload.get("body_site"), ch.get("side"))
        if site is not None:
            obs["bodySite"] = site
        series = entry("series", obs)
        entries.append(series)
        base = {k: v for k, v in obs.items() if k != "effectivePeriod"}
        base["effectiveDateTime"] = payload["date"]
        root = rms(samples)
        for stat, value in (
            ("peak", max(abs(v) for v in samples)),
            ("mean", sum(samples) / len(samples)),
            ("rms", root),
        ):
            stats.append(
                entry("summary", _stat(measure.key, stat, value, base, [series.full_url], payload["unit"]))
            )
        if ch.get("side") in ("left", "right"):
            rms_by_side[ch["side"]] = (root, series.full_url, base)
    if len(rms_by_side) == 2:
        (left, l_url, base), (right, r_url, _) = rms_by_side["left"], rms_by_side["right"]
        index = asymmetry_index(left, right)
        if index is not None:
            sym = {k: v for k, v in base.items() if k != "bodySite"}
            stat = _stat(measure.key, "symmetry-index", index, sym, [l_url, r_url], "%")
            stats.append(entry("summary", stat))
    return entries + stats


def read_series(entries: list[Entry]) -> dict[str, Any]:
    """Return the clinic payload of a sensor series' resources (inverse of build_series)."""
    device = of_role(entries, "device")[0]
    series = of_role(entries, "series")
    first = series[0]
    found = recognise(first["code"]["coding"])
    assert found is not None
    d: dict[str, Any] = {"name": device["deviceName"][0]["name"]}
    for key, element in (
        ("manufacturer", "manufacturer"),
        ("model", "modelNumber"),
        ("serial", "serialNumber"),
    ):
        if element in device:
            d[key] = device[element]
    out: dict[str, Any] = {
        "patient": patient_of(first),
        "date": first["effectivePeriod"]["start"],
        "kind": found[0].key,
        "device": d,
    }
    site = site_of(first.get("bodySite"))
    if site:
        out["body_site"] = site
    out["period_ms"] = codes.number(first["valueSampledData"]["period"])
    out["unit"] = first["valueSampledData"]["origin"]["code"]
    channels = []
    for obs in series:
        ch: dict[str, Any] = {}
        side = side_of(obs.get("bodySite"))
        if side:
            ch["side"] = side
        ch["samples"] = [codes.number(float(v)) for v in obs["valueSampledData"]["data"].split()]
        channels.append(ch)
    out["channels"] = channels
    return out


def read_summaries(entries: list[Entry]) -> list[dict[str, Any]]:
    """Return the derived statistics: stat, value, unit and side."""
    out = []
    for obs in of_role(entries, "summary"):
        stat = obs["code"]["coding"][0]["code"].removeprefix("stat-")
        item = {"stat": stat, "value": obs["valueQuantity"]["value"], "unit": obs["valueQuantity"]["code"]}
        side = side_of(obs.get("bodySite"))
        if side:
            item["side"] = side
        out.append(item)
    return out
