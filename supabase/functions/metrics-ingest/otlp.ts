// OTLP metrics (the OTLP/JSON shape; proto.ts decodes protobuf into the same shape) -> points of our batch wire
// format (docs/batch.schema.json). The one definition of the conversion; docs/ingest-http.md documents it.
//
//   Sum, monotonic        counter: delta as is; cumulative as {"cumulative": {stream, start}} points that
//                         metrics.ingest_http turns into deltas against state kept in Postgres
//   Sum, not monotonic    gauge (an up-down counter's value); cumulative only (the SDKs' default for them)
//   Gauge                 gauge
//   Histogram             histogram: each explicit bucket's count goes to the sketch bucket of ONE
//                         representative value (the bucket's midpoint; see representative()), so the sketch
//                         of a cumulative histogram is linear in its bucket counts and differences stay exact
//   ExponentialHistogram  histogram: each bucket's count at its log-midpoint base^(i + 1/2); a cumulative one
//                         also carries its native buckets (cumulative.buckets: scale, zero count and, per bucket
//                         index, its count and the sketch bucket it maps to), because the SDK rescales: its
//                         cumulative -> delta conversion is done in the exponential bucket space
//                         (metrics.exp_buckets_delta), not in sketch space
//   Summary               rejected (partial success): quantiles cannot be merged
// Resource: service.name -> service, service.instance.id -> instance, host.name -> host, on the metrics the
// Python client gives them to (process/runtime: service, instance; system/host: host) and, for any metric, the
// resource attributes on the allow-list. Data point attributes are the labels. Names follow Prometheus rules.
// Every label value is redacted (redact.ts, the twin of the Python client's default_redactor) in base(), the one
// place a point's labels are made; stream identities (hashed, never stored as text) keep the values as sent.

import { createHash } from "node:crypto";
import { redactLabels } from "./redact.ts";
import { type Sketch, sketchAdd, sketchValue } from "./sketch.ts";

/** Where one value went in a sketch: its store and key ("z" with key 0 for the zero bucket). */
export type Slot = ["z" | "p" | "n", number];

/**
 * The native buckets of a cumulative exponential histogram: scale, zero count and, per store ("p" positive, "n"
 * negative) and bucket index (at this scale), [count, store, key] of the sketch bucket the index maps to.
 */
export interface ExpBuckets {
  scale: number;
  z: number;
  p: Record<string, [number, Slot[0], number]>;
  n: Record<string, [number, Slot[0], number]>;
}

export interface Point {
  name: string;
  kind: "counter" | "gauge" | "histogram";
  labels: Record<string, string>;
  ts: number;
  count: number;
  sum: number;
  min?: number;
  max?: number;
  last?: number;
  sketch?: Sketch;
  unit?: string;
  help?: string;
  /** stream: SHA-256 hex of the stream's identity; start: unix nanoseconds as a decimal string */
  cumulative?: { stream: string; start: string; buckets?: ExpBuckets };
}

export interface Conversion {
  points: Point[];
  /** data points not stored (partial success) and why */
  rejected: number;
  messages: string[];
  /** the producer, for the batch's source: otlp/<service.name>/<service.instance.id or host.name> */
  source: string;
}

export interface ConvertOptions {
  /** OTel resource attribute keys copied as labels onto every metric (sanitised names), e.g. "deployment.environment" */
  resourceAttributes?: readonly string[];
  /** seconds since the epoch, for data points without a time */
  now?: number;
}

/** A request the converter refuses as a whole: HTTP 400 naming the metric (if any) and the field. */
export class OtlpError extends Error {
  constructor(readonly metric: string | null, readonly field: string, problem: string) {
    super(`${metric === null ? "" : `metric "${metric}": `}${field}: ${problem}`);
    this.name = "OtlpError";
  }
}

const DELTA = 1;
const CUMULATIVE = 2;
const NO_RECORDED_VALUE = 1;
const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const PROCESS_PREFIXES = ["process_", "nodejs_", "v8js_", "runtime_", "jvm_", "go_", "python_"];
const HOST_PREFIXES = ["system_", "host_"];
const UNITS: Record<string, string> = {
  s: "seconds",
  ms: "milliseconds",
  us: "microseconds",
  ns: "nanoseconds",
  By: "bytes",
  KiBy: "kibibytes",
  MiBy: "mebibytes",
  "1": "ratio",
  "%": "percent",
};

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function list(value: unknown, metric: string | null, field: string): unknown[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) throw new OtlpError(metric, field, "must be an array");
  return value;
}

function object(value: unknown, metric: string | null, field: string): Json {
  if (value === undefined || value === null) return {};
  if (!isObject(value)) throw new OtlpError(metric, field, "must be an object");
  return value;
}

/** A JSON number or a decimal string (OTLP/JSON writes 64-bit integers as strings). */
function number(value: unknown, metric: string | null, field: string): number {
  if (typeof value === "number") return value;
  if (typeof value === "string" && /^[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|NaN|-?Infinity)$/.test(value)) {
    return Number(value);
  }
  throw new OtlpError(metric, field, "must be a number");
}

function count(value: unknown, metric: string, field: string): number {
  if (value === undefined || value === null) return 0;
  const n = number(value, metric, field);
  if (!Number.isSafeInteger(n) || n < 0) throw new OtlpError(metric, field, "must be a non-negative integer");
  return n;
}

/** Unix nanoseconds (string or number) as a canonical decimal string; "0" when absent. */
function nanos(value: unknown, metric: string, field: string): string {
  if (value === undefined || value === null || value === "") return "0";
  if (typeof value === "string" && /^\d{1,20}$/.test(value)) return BigInt(value).toString();
  if (typeof value === "number" && Number.isSafeInteger(value) && value >= 0) return BigInt(value).toString();
  if (typeof value === "number" && Number.isFinite(value) && value >= 0) return BigInt(Math.round(value)).toString();
  throw new OtlpError(metric, field, "must be unix nanoseconds (a non-negative integer or decimal string)");
}

function seconds(ns: string): number {
  const n = BigInt(ns);
  return Number(n / 1_000_000_000n) + Number(n % 1_000_000_000n) / 1e9;
}

function temporality(value: unknown, metric: string, field: string): number {
  if (value === 1 || value === "1" || value === "AGGREGATION_TEMPORALITY_DELTA") return DELTA;
  if (value === 2 || value === "2" || value === "AGGREGATION_TEMPORALITY_CUMULATIVE") return CUMULATIVE;
  throw new OtlpError(metric, field, "must be 1 (delta) or 2 (cumulative)");
}

/** Prometheus metric name: other characters become "_", runs of "_" collapse, a leading digit gets "_". */
export function metricName(name: string): string {
  let out = name.replace(/[^a-zA-Z0-9_:]/g, "_").replace(/__+/g, "_");
  if (/^[0-9]/.test(out)) out = `_${out}`;
  return out;
}

/** Prometheus label name: other characters become "_", a leading digit gets "key_", leading "__" is cut to "_". */
export function labelName(name: string): string {
  let out = name.replace(/[^a-zA-Z0-9_]/g, "_");
  if (/^[0-9]/.test(out)) out = `key_${out}`;
  return out.replace(/^__+/, "_");
}

function anyValue(value: unknown): string {
  if (!isObject(value)) return "";
  if (typeof value.stringValue === "string") return value.stringValue;
  if (typeof value.boolValue === "boolean") return String(value.boolValue);
  if (value.intValue !== undefined) return String(value.intValue);
  if (value.doubleValue !== undefined) return String(value.doubleValue);
  if (typeof value.bytesValue === "string") return value.bytesValue;
  if (isObject(value.arrayValue)) {
    return JSON.stringify(list(value.arrayValue.values, null, "arrayValue.values").map(anyValue));
  }
  if (isObject(value.kvlistValue)) {
    return JSON.stringify(Object.fromEntries(attributes(value.kvlistValue.values, null, "kvlistValue.values")));
  }
  return "";
}

function attributes(value: unknown, metric: string | null, field: string): [string, string][] {
  return list(value, metric, field).map((kv, i) => {
    if (!isObject(kv) || typeof kv.key !== "string") throw new OtlpError(metric, `${field}[${i}].key`, "required string");
    return [kv.key, anyValue(kv.value)] as [string, string];
  });
}

/** Labels from attributes: sanitised names; attributes that sanitise to the same name are joined with ";". */
function labels(pairs: [string, string][], metric: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [key, value] of [...pairs].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))) {
    const name = labelName(key);
    if (name === "" || name === "_") throw new OtlpError(metric, `attributes.${key}`, "not a usable label name");
    out[name] = name in out ? `${out[name]};${value}` : value;
  }
  return out;
}

function unitOf(unit: unknown): string | undefined {
  if (typeof unit !== "string" || unit === "") return undefined;
  const cleaned = unit.replace(/\{[^}]*\}/g, "").trim();
  if (cleaned === "") return undefined;
  return (UNITS[cleaned] ?? cleaned).slice(0, 64);
}

/**
 * The representative value of explicit bucket i (bounds b): (b[i-1], b[i]] at its midpoint; the first bucket
 * (-inf, b[0]] at b[0] / 2 when b[0] > 0 (values are taken to start at 0, as Prometheus' histogram_quantile
 * does), else at b[0]; the overflow bucket (b[n-1], +inf) at b[n-1]. With delta temporality and a known min
 * or max the open ends use them (midpoint of min and b[0], of b[n-1] and max) and every representative is kept
 * within [min, max]. Cumulative histograms never use min and max here: their sketch stays linear in the counts.
 */
export function representative(bounds: number[], i: number, min?: number, max?: number): number {
  const n = bounds.length;
  let value: number;
  if (n === 0) value = min !== undefined && max !== undefined ? (min + max) / 2 : (min ?? max ?? 0);
  else if (i === 0) value = min !== undefined && min <= bounds[0] ? (min + bounds[0]) / 2 : bounds[0] > 0 ? bounds[0] / 2 : bounds[0];
  else if (i >= n) value = max !== undefined && max > bounds[n - 1] ? (bounds[n - 1] + max) / 2 : bounds[n - 1];
  else value = (bounds[i - 1] + bounds[i]) / 2;
  if (min !== undefined && value < min) value = min;
  if (max !== undefined && value > max) value = max;
  return value;
}

function optionalFinite(value: unknown, metric: string, field: string): number | undefined {
  if (value === undefined || value === null) return undefined;
  const n = number(value, metric, field);
  return Number.isFinite(n) ? n : undefined;
}

function extremes(sketchValues: number[]): { min: number; max: number } {
  return { min: Math.min(...sketchValues), max: Math.max(...sketchValues) };
}

function identityLabels(name: string, resource: Map<string, string>, allow: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const key of allow) {
    const value = resource.get(key);
    if (value !== undefined) out[labelName(key === "service.name" ? "service" : key === "service.instance.id" ? "instance" : key === "host.name" ? "host" : key)] = value;
  }
  const put = (label: string, key: string) => {
    const value = resource.get(key);
    if (value !== undefined && value !== "") out[label] = value;
  };
  if (PROCESS_PREFIXES.some((p) => name.startsWith(p))) {
    put("service", "service.name");
    put("instance", "service.instance.id");
  }
  if (HOST_PREFIXES.some((p) => name.startsWith(p))) put("host", "host.name");
  return out;
}

interface MetricContext {
  name: string;
  original: string;
  unit?: string;
  help?: string;
  resourceLabels: Record<string, string>;
  /** the identity of the resource and scope, canonical JSON */
  streamIdentity: unknown[];
  now: number;
  out: Conversion;
}

/**
 * A stream's key: the SHA-256 (hex) of its canonical identity, [resource attributes sorted, scope name, scope
 * version, metric name, point attributes sorted] as JSON: 64 characters however long the attributes.
 */
export function stream(ctx: { original: string; streamIdentity: unknown[] }, pointAttributes: [string, string][]): string {
  const attrs = [...pointAttributes].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  return createHash("sha256").update(JSON.stringify([...ctx.streamIdentity, ctx.original, attrs]), "utf8").digest("hex");
}

function base(ctx: MetricContext, point: Json, field: string, attrs: [string, string][]) {
  const time = nanos(point.timeUnixNano, ctx.original, `${field}.timeUnixNano`);
  const start = nanos(point.startTimeUnixNano, ctx.original, `${field}.startTimeUnixNano`);
  const out: Partial<Point> = {
    name: ctx.name,
    // secrets in attribute values (a password in url.full, a token) never become label values
    labels: redactLabels({ ...ctx.resourceLabels, ...labels(attrs, ctx.original) }),
    ts: time === "0" ? ctx.now : seconds(time),
  };
  if (ctx.unit !== undefined) out.unit = ctx.unit;
  if (ctx.help !== undefined) out.help = ctx.help;
  return { out, start };
}

function reject(ctx: MetricContext, n: number, why: string) {
  ctx.out.rejected += n;
  const message = `metric "${ctx.original}": ${why}`;
  if (!ctx.out.messages.includes(message)) ctx.out.messages.push(message);
}

function numberValue(point: Json, ctx: MetricContext, field: string): number | null {
  if (point.asDouble !== undefined && point.asDouble !== null) return number(point.asDouble, ctx.original, `${field}.asDouble`);
  if (point.asInt !== undefined && point.asInt !== null) return number(point.asInt, ctx.original, `${field}.asInt`);
  return null;
}

function convertNumbers(ctx: MetricContext, data: Json, kind: "gauge" | "sum") {
  const path = kind === "gauge" ? "gauge" : "sum";
  const points = list(data.dataPoints, ctx.original, `${path}.dataPoints`);
  let mode: "gauge" | "counter" | "counter-cumulative" = "gauge";
  if (kind === "sum") {
    const t = temporality(data.aggregationTemporality, ctx.original, "sum.aggregationTemporality");
    const monotonic = data.isMonotonic === true;
    if (monotonic) mode = t === DELTA ? "counter" : "counter-cumulative";
    else if (t === DELTA) {
      reject(ctx, points.length, "sum.aggregationTemporality: delta up-down counters are not supported (export them cumulative, the SDK default)");
      return;
    }
  }
  points.forEach((raw, i) => {
    const field = `${path}.dataPoints[${i}]`;
    if (!isObject(raw)) throw new OtlpError(ctx.original, field, "must be an object");
    if ((Number(raw.flags ?? 0) & NO_RECORDED_VALUE) !== 0) return;
    const attrs = attributes(raw.attributes, ctx.original, `${field}.attributes`);
    const { out, start } = base(ctx, raw, field, attrs);
    const value = numberValue(raw, ctx, field);
    if (value === null) throw new OtlpError(ctx.original, `${field}.value`, "asDouble or asInt required");
    if (!Number.isFinite(value)) {
      reject(ctx, 1, `${field}.value: not a finite number`);
      return;
    }
    if (mode === "gauge") {
      ctx.out.points.push({ ...out, kind: "gauge", count: 1, sum: value, min: value, max: value, last: value } as Point);
    } else if (value < 0) {
      reject(ctx, 1, `${field}.value: a monotonic sum cannot be negative`);
    } else if (mode === "counter") {
      ctx.out.points.push({ ...out, kind: "counter", count: 1, sum: value } as Point);
    } else {
      ctx.out.points.push({
        ...out, kind: "counter", count: 1, sum: value, cumulative: { stream: stream(ctx, attrs), start },
      } as Point);
    }
  });
}

function convertHistogram(ctx: MetricContext, data: Json, exponential: boolean) {
  const path = exponential ? "exponentialHistogram" : "histogram";
  const t = temporality(data.aggregationTemporality, ctx.original, `${path}.aggregationTemporality`);
  const points = list(data.dataPoints, ctx.original, `${path}.dataPoints`);
  points.forEach((raw, i) => {
    const field = `${path}.dataPoints[${i}]`;
    if (!isObject(raw)) throw new OtlpError(ctx.original, field, "must be an object");
    if ((Number(raw.flags ?? 0) & NO_RECORDED_VALUE) !== 0) return;
    const attrs = attributes(raw.attributes, ctx.original, `${field}.attributes`);
    const { out, start } = base(ctx, raw, field, attrs);
    const total = count(raw.count, ctx.original, `${field}.count`);
    if (total === 0) return; // nothing recorded (a delta interval without values)
    const min = optionalFinite(raw.min, ctx.original, `${field}.min`);
    const max = optionalFinite(raw.max, ctx.original, `${field}.max`);
    // min and max shape the representatives of delta points only (cumulative sketches must stay linear)
    const lo = t === DELTA ? min : undefined;
    const hi = t === DELTA ? max : undefined;
    const sketch: Sketch = { z: 0, p: {}, n: {} };
    const values: number[] = [];
    let placed = 0;
    const add = (value: number, n: number): Slot | null => {
      if (n <= 0) return null;
      const slot = sketchAdd(sketch, value, n);
      values.push(value);
      placed += n;
      return slot;
    };
    const native: ExpBuckets | undefined = exponential && t === CUMULATIVE ? { scale: 0, z: 0, p: {}, n: {} } : undefined;
    if (!exponential) {
      const bounds = list(raw.explicitBounds, ctx.original, `${field}.explicitBounds`).map((b, j) =>
        number(b, ctx.original, `${field}.explicitBounds[${j}]`)
      );
      for (let j = 0; j < bounds.length; j++) {
        if (!Number.isFinite(bounds[j]) || (j > 0 && bounds[j] <= bounds[j - 1])) {
          throw new OtlpError(ctx.original, `${field}.explicitBounds`, "must be finite and strictly increasing");
        }
      }
      const counts = list(raw.bucketCounts, ctx.original, `${field}.bucketCounts`).map((c, j) =>
        count(c, ctx.original, `${field}.bucketCounts[${j}]`)
      );
      if (counts.length === 0) add(representative([], 0, min, max), total);
      else if (counts.length !== bounds.length + 1) {
        throw new OtlpError(ctx.original, `${field}.bucketCounts`, `${counts.length} counts for ${bounds.length} bounds (need bounds + 1)`);
      } else counts.forEach((c, j) => add(representative(bounds, j, lo, hi), c));
    } else {
      const scale = number(raw.scale ?? 0, ctx.original, `${field}.scale`);
      if (!Number.isInteger(scale) || scale < -10 || scale > 20) {
        throw new OtlpError(ctx.original, `${field}.scale`, "must be an integer in [-10, 20]");
      }
      const factor = Math.pow(2, -scale);
      if (native) native.scale = scale;
      const buckets = (b: unknown, sign: 1 | -1, name: string) => {
        const store = object(b, ctx.original, `${field}.${name}`);
        const offset = number(store.offset ?? 0, ctx.original, `${field}.${name}.offset`);
        if (!Number.isInteger(offset)) throw new OtlpError(ctx.original, `${field}.${name}.offset`, "must be an integer");
        const where = sign > 0 ? native?.p : native?.n;
        list(store.bucketCounts, ctx.original, `${field}.${name}.bucketCounts`).forEach((c, j) => {
          const n = count(c, ctx.original, `${field}.${name}.bucketCounts[${j}]`);
          if (n === 0) return;
          // bucket index k holds (base^k, base^(k+1)], base = 2^(2^-scale): its log-midpoint base^(k + 1/2)
          let value = Math.pow(2, (offset + j + 0.5) * factor);
          if (sign > 0 && hi !== undefined && value > hi) value = hi;
          if (sign > 0 && lo !== undefined && value < lo) value = lo;
          if (sign < 0 && lo !== undefined && -value < lo) value = -lo;
          if (sign < 0 && hi !== undefined && -value > hi) value = -hi;
          const slot = add(sign * value, n)!;
          // (cumulative: no min/max clamp above, so the slot is a function of scale and index alone)
          if (where) where[String(offset + j)] = [n, slot[0], slot[1]];
        });
      };
      const zero = count(raw.zeroCount, ctx.original, `${field}.zeroCount`);
      add(0, zero);
      if (native) native.z = zero;
      buckets(raw.positive, 1, "positive");
      buckets(raw.negative, -1, "negative");
    }
    if (placed !== total) {
      throw new OtlpError(ctx.original, `${field}.count`, `${total}, but the buckets hold ${placed}`);
    }
    const sum = optionalFinite(raw.sum, ctx.original, `${field}.sum`);
    const ext = extremes(values);
    const point: Point = {
      ...out,
      kind: "histogram",
      count: total,
      // without a sum (OTLP allows it), the representatives' sum
      sum: sum ?? Object.entries(sketch.p).reduce((s, [k, c]) => s + c * sketchValue(Number(k)), 0) -
        Object.entries(sketch.n).reduce((s, [k, c]) => s + c * sketchValue(Number(k)), 0),
      min: min ?? ext.min,
      max: max ?? ext.max,
      sketch,
    } as Point;
    if (point.min! > point.max!) point.min = point.max;
    if (t === CUMULATIVE) point.cumulative = { stream: stream(ctx, attrs), start, ...(native ? { buckets: native } : {}) };
    ctx.out.points.push(point);
  });
}

/** Converts an ExportMetricsServiceRequest (OTLP/JSON shape) into points; throws OtlpError for a bad request. */
export function convert(request: unknown, options: ConvertOptions = {}): Conversion {
  const now = options.now ?? Date.now() / 1000;
  const allow = options.resourceAttributes ?? [];
  if (!isObject(request)) throw new OtlpError(null, "request", "must be an ExportMetricsServiceRequest object");
  const out: Conversion = { points: [], rejected: 0, messages: [], source: "" };
  list(request.resourceMetrics, null, "resourceMetrics").forEach((rmRaw, r) => {
    const rm = object(rmRaw, null, `resourceMetrics[${r}]`);
    const resource = new Map(
      attributes(object(rm.resource, null, `resourceMetrics[${r}].resource`).attributes, null, `resourceMetrics[${r}].resource.attributes`),
    );
    if (out.source === "") {
      const who = resource.get("service.instance.id") ?? resource.get("host.name") ?? "";
      out.source = `otlp/${resource.get("service.name") ?? "unknown_service"}${who ? `/${who}` : ""}`.slice(0, 200);
    }
    const resourceKey = [...resource.entries()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    list(rm.scopeMetrics, null, `resourceMetrics[${r}].scopeMetrics`).forEach((smRaw, s) => {
      const sm = object(smRaw, null, `resourceMetrics[${r}].scopeMetrics[${s}]`);
      const scope = object(sm.scope, null, `resourceMetrics[${r}].scopeMetrics[${s}].scope`);
      const streamIdentity = [resourceKey, typeof scope.name === "string" ? scope.name : "",
        typeof scope.version === "string" ? scope.version : ""];
      list(sm.metrics, null, `resourceMetrics[${r}].scopeMetrics[${s}].metrics`).forEach((mRaw, m) => {
        const where = `resourceMetrics[${r}].scopeMetrics[${s}].metrics[${m}]`;
        const metric = object(mRaw, null, where);
        if (typeof metric.name !== "string" || metric.name === "") throw new OtlpError(null, `${where}.name`, "required string");
        const original = metric.name;
        const name = metricName(original);
        if (!METRIC_NAME.test(name) || name.startsWith("__") || name.length > 200) {
          throw new OtlpError(original, "name", `"${name}" is not a valid metric name (Prometheus rules, at most 200 characters, no leading "__")`);
        }
        const ctx: MetricContext = {
          name,
          original,
          unit: unitOf(metric.unit),
          help: typeof metric.description === "string" && metric.description !== "" ? metric.description.slice(0, 1024) : undefined,
          resourceLabels: identityLabels(name, resource, allow),
          streamIdentity,
          now,
          out,
        };
        if (isObject(metric.sum)) convertNumbers(ctx, metric.sum, "sum");
        else if (isObject(metric.gauge)) convertNumbers(ctx, metric.gauge, "gauge");
        else if (isObject(metric.histogram)) convertHistogram(ctx, metric.histogram, false);
        else if (isObject(metric.exponentialHistogram)) convertHistogram(ctx, metric.exponentialHistogram, true);
        else if (isObject(metric.summary)) {
          reject(ctx, list(metric.summary.dataPoints, original, "summary.dataPoints").length,
            "summary: quantiles of summaries cannot be merged; export a histogram instead");
        } else {
          throw new OtlpError(original, "data", "unknown metric type (expected sum, gauge, histogram, exponentialHistogram or summary)");
        }
      });
    });
  });
  if (out.source === "") out.source = "otlp/unknown_service";
  out.points = latestPerStream(out.points);
  return out;
}

/**
 * One point per cumulative stream (metrics.ingest_http takes one per stream and batch): when a request holds
 * several (an exporter that batched two collections), the latest wins, as its cumulative value includes the
 * others': the newer start time, then the later time, then the later in the request.
 */
export function latestPerStream(points: Point[]): Point[] {
  const latest = new Map<string, number>();
  points.forEach((p, i) => {
    if (p.cumulative === undefined) return;
    const j = latest.get(p.cumulative.stream);
    if (j !== undefined) {
      const q = points[j];
      const a = BigInt(p.cumulative.start), b = BigInt(q.cumulative!.start);
      if (a < b || (a === b && p.ts < q.ts)) return;
    }
    latest.set(p.cumulative.stream, i);
  });
  if (latest.size === points.filter((p) => p.cumulative !== undefined).length) return points;
  return points.filter((p, i) => p.cumulative === undefined || latest.get(p.cumulative.stream) === i);
}
