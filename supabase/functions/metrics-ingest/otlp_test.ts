// deno test: the OTLP -> batch conversion, with the official OpenTelemetry JS SDK and serializers as the source
// of requests (JSON and protobuf must convert alike), and the sketch accuracy of both histogram kinds measured
// against the exact values. Run: deno test --no-config --allow-env --allow-read supabase/functions/metrics-ingest/
import {
  AggregationTemporality,
  AggregationType,
  InstrumentType,
  MeterProvider,
  MetricReader,
  type ResourceMetrics,
} from "npm:@opentelemetry/sdk-metrics@3.1.1";
import { JsonMetricsSerializer, ProtobufMetricsSerializer } from "npm:@opentelemetry/otlp-transformer@0.301.2";
import { resourceFromAttributes } from "npm:@opentelemetry/resources@3.1.1";
import { databaseError, maxBodyBytes } from "./handler.ts";
import { convert, type ExpBuckets, labelName, metricName, OtlpError, type Point, representative } from "./otlp.ts";
import { decodeRequest, decodeResponse, encodeRequest, encodeResponse } from "./proto.ts";
import { sketchKey, sketchQuantile, sketchValue } from "./sketch.ts";

function assert(condition: unknown, message = "assertion failed"): asserts condition {
  if (!condition) throw new Error(message);
}

function equal(actual: unknown, expected: unknown, message = "") {
  const a = JSON.stringify(actual), e = JSON.stringify(expected);
  if (a !== e) throw new Error(`${message}\n  actual:   ${a}\n  expected: ${e}`);
}

function throwsOtlp(fn: () => unknown, metric: string | null, field: RegExp) {
  try {
    fn();
  } catch (e) {
    assert(e instanceof OtlpError, `expected OtlpError, got ${e}`);
    equal(e.metric, metric, "metric of the error");
    assert(field.test(e.field), `field ${e.field} does not match ${field}`);
    return;
  }
  throw new Error("expected an OtlpError");
}

class Reader extends MetricReader {
  constructor(temporality: AggregationTemporality) {
    // as the OTLP exporters' DELTA preference: up-down counters stay cumulative
    super({
      aggregationTemporalitySelector: (type) =>
        type === InstrumentType.UP_DOWN_COUNTER || type === InstrumentType.OBSERVABLE_UP_DOWN_COUNTER
          ? AggregationTemporality.CUMULATIVE
          : temporality,
    });
  }
  protected async onShutdown() {}
  protected async onForceFlush() {}
  async take(): Promise<ResourceMetrics> {
    const { resourceMetrics, errors } = await this.collect();
    assert(errors.length === 0, String(errors));
    return resourceMetrics;
  }
}

const RESOURCE = resourceFromAttributes({
  "service.name": "meshhook-worker",
  "service.instance.id": "worker-1",
  "host.name": "box-7",
  "deployment.environment": "test",
});

function sdk(temporality: AggregationTemporality) {
  const reader = new Reader(temporality);
  const provider = new MeterProvider({
    resource: RESOURCE,
    readers: [reader],
    views: [{
      instrumentName: "meshhook_exp_seconds",
      aggregation: { type: AggregationType.EXPONENTIAL_HISTOGRAM, options: { maxSize: 160 } },
    }],
  });
  return { reader, meter: provider.getMeter("meshhook-test") };
}

const json = (rm: ResourceMetrics) => JSON.parse(new TextDecoder().decode(JsonMetricsSerializer.serializeRequest(rm)!));
const proto = (rm: ResourceMetrics) => decodeRequest(ProtobufMetricsSerializer.serializeRequest(rm)!);
const byName = (points: Point[], name: string) => points.filter((p) => p.name === name);

Deno.test("names and labels follow Prometheus rules", () => {
  equal(metricName("http.server.request.duration"), "http_server_request_duration");
  equal(metricName("9lives"), "_9lives");
  equal(metricName("a..b"), "a_b");
  equal(labelName("http.route"), "http_route");
  equal(labelName("__secret"), "_secret");
  equal(labelName("2xx"), "key_2xx");
});

Deno.test("delta: counters, up-down counters, gauges and histograms from the SDK, JSON and protobuf alike", async () => {
  const { reader, meter } = sdk(AggregationTemporality.DELTA);
  const requests = meter.createCounter("meshhook.webhook.requests", { description: "Webhook requests", unit: "{request}" });
  requests.add(3, { outcome: "ok" });
  requests.add(2, { outcome: "ok" });
  requests.add(1, { outcome: "error" });
  meter.createUpDownCounter("meshhook_queue_depth").add(7, { queue: "jobs" });
  meter.createObservableGauge("process.memory.usage", { unit: "By" }).addCallback((r) => r.observe(1234));
  const hist = meter.createHistogram("meshhook_step_seconds", { unit: "s" });
  [0.003, 0.2, 0.2, 0.7, 3, 30].forEach((v) => hist.record(v, { node_type: "http" }));
  const rm = await reader.take();
  const fromJson = convert(json(rm), { now: 1 });
  const fromProto = convert(proto(rm), { now: 1 });
  equal(fromProto, fromJson, "protobuf and JSON convert alike");
  const { points, rejected, source } = fromJson;
  equal(rejected, 0);
  equal(source, "otlp/meshhook-worker/worker-1");

  const counters = byName(points, "meshhook_webhook_requests");
  equal(counters.map((p) => [p.kind, p.labels.outcome, p.sum, p.count, p.cumulative]).sort(),
    [["counter", "error", 1, 1, undefined], ["counter", "ok", 5, 1, undefined]]);
  equal(counters[0].help, "Webhook requests");
  equal(counters[0].unit, undefined, "annotation-only units are dropped");

  const [queue] = byName(points, "meshhook_queue_depth");
  equal([queue.kind, queue.last, queue.labels], ["gauge", 7, { queue: "jobs" }], "an up-down counter is a gauge (cumulative)");
  assert(queue.cumulative === undefined);

  const [memory] = byName(points, "process_memory_usage");
  equal([memory.kind, memory.last, memory.unit, memory.labels],
    ["gauge", 1234, "bytes", { service: "meshhook-worker", instance: "worker-1" }], "process metrics carry service and instance");

  const [h] = byName(points, "meshhook_step_seconds");
  equal([h.kind, h.count, h.min, h.max, h.unit, h.labels], ["histogram", 6, 0.003, 30, "seconds", { node_type: "http" }]);
  assert(Math.abs(h.sum - 34.103) < 1e-9);
  const buckets = Object.values(h.sketch!.p).reduce((a, b) => a + b, 0) + h.sketch!.z;
  equal(buckets, 6, "the sketch holds every value");
  assert(h.ts > 1_000_000_000 && h.ts < 4_000_000_000, "ts in epoch seconds");
});

Deno.test("cumulative: monotonic sums and histograms carry their stream and start time", async () => {
  const { reader, meter } = sdk(AggregationTemporality.CUMULATIVE);
  const c = meter.createCounter("meshhook_jobs_total");
  c.add(4, { queue: "a" });
  meter.createHistogram("meshhook_step_seconds").record(0.3);
  const first = convert(proto(await reader.take()));
  c.add(6, { queue: "a" });
  const second = convert(proto(await reader.take()));
  const [a1] = byName(first.points, "meshhook_jobs_total");
  const [a2] = byName(second.points, "meshhook_jobs_total");
  equal([a1.sum, a2.sum], [4, 10], "cumulative values go to the database as they are");
  equal(a1.cumulative, a2.cumulative, "same stream, same start");
  assert(/^\d+$/.test(a1.cumulative!.start) && a1.cumulative!.start !== "0");
  const [h] = byName(second.points, "meshhook_step_seconds");
  assert(h.cumulative !== undefined && h.count === 1);
  // another instance of the service is another stream
  const other = json(await reader.take());
  other.resourceMetrics[0].resource.attributes = other.resourceMetrics[0].resource.attributes.map(
    (kv: { key: string; value: { stringValue: string } }) =>
      kv.key === "service.instance.id" ? { key: kv.key, value: { stringValue: "worker-2" } } : kv,
  );
  const [b] = byName(convert(other).points, "meshhook_jobs_total");
  assert(b.cumulative!.stream !== a1.cumulative!.stream, "streams are per resource");
});

Deno.test("stream keys are the SHA-256 of the stream identity, short however long the resource attributes", async () => {
  const { reader, meter } = sdk(AggregationTemporality.CUMULATIVE);
  meter.createCounter("meshhook_jobs_total").add(1, { queue: "a" });
  const request = json(await reader.take());
  const [a] = byName(convert(request).points, "meshhook_jobs_total");
  assert(/^[0-9a-f]{64}$/.test(a.cumulative!.stream), `stream ${a.cumulative!.stream}`);
  equal(byName(convert(proto(await reader.take())).points, "meshhook_jobs_total")[0].cumulative!.stream, a.cumulative!.stream,
    "the same stream from protobuf and in the next export");
  // Kubernetes-style resources: many long attributes (the JSON of the identity is > 2,000 characters)
  request.resourceMetrics[0].resource.attributes.push(
    ...Array.from({ length: 40 }, (_, i) => ({ key: `k8s.pod.label.${i}`, value: { stringValue: "x".repeat(100) } })),
  );
  const [long] = byName(convert(request).points, "meshhook_jobs_total");
  assert(/^[0-9a-f]{64}$/.test(long.cumulative!.stream) && long.cumulative!.stream !== a.cumulative!.stream);
  // the order of resource attributes does not matter
  request.resourceMetrics[0].resource.attributes.reverse();
  equal(byName(convert(request).points, "meshhook_jobs_total")[0].cumulative!.stream, long.cumulative!.stream);
});

/** The older native buckets downscaled to the newer scale and subtracted, placed in the newer export's sketch buckets
 * (an oracle of metrics.exp_buckets_delta, the one implementation of the rule, in SQL). */
function expDelta(older: ExpBuckets, newer: ExpBuckets): Record<string, number> | null {
  const shift = older.scale - newer.scale;
  if (shift < 0) return null;
  const out: Record<string, number> = {};
  for (const store of ["p", "n"] as const) {
    const down: Record<string, number> = {};
    for (const [i, [c]] of Object.entries(older[store])) {
      const j = String(Math.floor(Number(i) / 2 ** shift));
      down[j] = (down[j] ?? 0) + c;
    }
    for (const [j, c] of Object.entries(down)) if ((newer[store][j]?.[0] ?? 0) < c) return null;
    for (const [j, [c, slot, key]] of Object.entries(newer[store])) {
      const d = c - (down[j] ?? 0);
      if (d > 0) out[`${slot}${key}`] = (out[`${slot}${key}`] ?? 0) + d;
    }
  }
  return out;
}

Deno.test("cumulative exponential histograms carry their native buckets: a rescale keeps the delta exact", async () => {
  const { reader, meter } = sdk(AggregationTemporality.CUMULATIVE);
  const hist = meter.createHistogram("meshhook_exp_seconds");
  for (let i = 0; i < 10; i++) hist.record(1 + i / 1000);
  const first = convert(proto(await reader.take())).points[0];
  hist.record(1000); // widens the range: the SDK lowers the scale of the cumulative stream
  const secondJson = json(await reader.take());
  const second = convert(secondJson).points[0];
  equal(convert(proto(await reader.take())).points[0].cumulative!.buckets, second.cumulative!.buckets, "JSON and protobuf alike");
  const b1 = first.cumulative!.buckets!, b2 = second.cumulative!.buckets!;
  assert(b2.scale < b1.scale, `the SDK rescaled (${b1.scale} -> ${b2.scale})`);
  equal(b2.scale, secondJson.resourceMetrics[0].scopeMetrics[0].metrics[0].exponentialHistogram.dataPoints[0].scale);
  equal([first.count, second.count], [10, 11]);
  // every native bucket names the sketch bucket its count went to: the buckets add up to the sketch
  for (const [point, b] of [[first, b1], [second, b2]] as const) {
    const sketch: Record<string, number> = {};
    for (const [c, slot, key] of Object.values(b.p)) sketch[key] = (sketch[key] ?? 0) + (slot === "p" ? c : 0);
    equal(sketch, Object.fromEntries(Object.entries(point.sketch!.p).map(([k, c]) => [k, c])), "buckets -> sketch");
  }
  // the sketch keys of the old state do not nest in the new ones (why sketch-space subtraction reset) ...
  assert(Object.keys(first.sketch!.p).some((k) => !(k in second.sketch!.p)), "the keys moved");
  // ... but in bucket space the difference is the one new value, in the sketch bucket of 1000
  const top = Math.max(...Object.keys(b2.p).map(Number));
  equal(expDelta(b1, b2), { [`p${sketchKey(Math.pow(2, (top + 0.5) / 2 ** b2.scale))}`]: 1 });
  const [[onlyKey, one]] = Object.entries(expDelta(b1, b2)!);
  equal(one, 1);
  assert(Math.abs(sketchValue(Number(onlyKey.slice(1))) - 1000) / 1000 < 0.1, "at about 1000");
  // a delta exponential histogram carries no buckets
  const { reader: dr, meter: dm } = sdk(AggregationTemporality.DELTA);
  dm.createHistogram("meshhook_exp_seconds").record(3);
  assert(convert(json(await dr.take())).points[0].cumulative === undefined);
});

Deno.test("explicit histograms: one representative per bucket, documented accuracy", () => {
  const bounds = [0, 5, 10, 25, 50, 75, 100, 250, 500, 750, 1000, 2500, 5000, 7500, 10000];
  equal(representative(bounds, 0), 0, "(-inf, 0] at 0");
  equal(representative(bounds, 1), 2.5, "(0, 5] at its midpoint");
  equal(representative(bounds, bounds.length), 10000, "the overflow bucket at the last bound");
  equal(representative(bounds, bounds.length, 1, 12000), 11000, "... or between it and max (delta)");
  equal(representative(bounds, 3, 12, 13), 13, "within [min, max]");
  // measured: every quantile within half the width of its bucket (plus the sketch's 1 %)
  const values = Array.from({ length: 1000 }, (_, i) => 1 + i * 9.5);
  const counts = new Array(bounds.length + 1).fill(0);
  for (const v of values) counts[bounds.findIndex((b) => v <= b) === -1 ? bounds.length : bounds.findIndex((b) => v <= b)]++;
  const request = { resourceMetrics: [{ scopeMetrics: [{ metrics: [{ name: "h", histogram: {
    aggregationTemporality: 1,
    dataPoints: [{ timeUnixNano: "1700000000000000000", count: String(values.length), sum: values.reduce((a, b) => a + b),
      bucketCounts: counts.map(String), explicitBounds: bounds, min: values[0], max: values[values.length - 1] }],
  } }] }] }] };
  const [h] = convert(request).points;
  for (const q of [0.5, 0.9, 0.99]) {
    const exact = values[Math.floor(q * (values.length - 1))];
    const i = bounds.findIndex((b) => exact <= b);
    const lower = i <= 0 ? 0 : bounds[i - 1], upper = i === -1 ? values[values.length - 1] : bounds[i];
    const got = sketchQuantile(h.sketch!, q)!;
    assert(Math.abs(got - exact) <= (upper - lower) / 2 * 1.01 + exact * 0.01, `q${q}: ${got} vs ${exact}`);
  }
});

Deno.test("exponential histograms map onto the sketch within the measured accuracy", async () => {
  const { reader, meter } = sdk(AggregationTemporality.DELTA);
  const hist = meter.createHistogram("meshhook_exp_seconds");
  // log-uniform values over five decades, and two zeros (histograms take no negative values)
  const values: number[] = [];
  for (let i = 0; i < 2000; i++) values.push(Math.pow(10, -3 + (5 * i) / 1999));
  values.push(0, 0);
  values.forEach((v) => hist.record(v));
  const rm = await reader.take();
  const [h] = convert(proto(rm)).points;
  equal(convert(json(rm)).points, convert(proto(rm)).points, "JSON and protobuf alike");
  const scale = (json(rm).resourceMetrics[0].scopeMetrics[0].metrics[0].exponentialHistogram.dataPoints[0].scale) as number;
  const base = Math.pow(2, Math.pow(2, -scale));
  const sorted = [...values].sort((a, b) => a - b);
  equal([h.count, h.min, h.max, h.sketch!.z], [values.length, 0, 100, 2]);
  let worst = 0;
  for (const q of [0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999]) {
    const exact = sorted[Math.floor(q * (sorted.length - 1))];
    const got = sketchQuantile(h.sketch!, q)!;
    worst = Math.max(worst, Math.abs(got - exact) / Math.abs(exact));
  }
  // bound: half an OTel bucket (sqrt(base) - 1) plus the sketch's 1 %
  const bound = (Math.sqrt(base) - 1) + 0.0101;
  assert(worst <= bound, `relative error ${worst} > ${bound} (scale ${scale})`);
  console.log(`exponential histogram, scale ${scale}: worst relative quantile error ${(worst * 100).toFixed(2)} % (bound ${(bound * 100).toFixed(2)} %)`);
});

Deno.test("bad requests name the metric and the field", () => {
  const wrap = (metric: Record<string, unknown>) => ({ resourceMetrics: [{ scopeMetrics: [{ metrics: [metric] }] }] });
  throwsOtlp(() => convert(wrap({ name: "x", foo: {} })), "x", /^data$/);
  throwsOtlp(() => convert(wrap({ name: "x".repeat(201), gauge: { dataPoints: [] } })), "x".repeat(201), /^name$/);
  throwsOtlp(() => convert(wrap({ name: "", gauge: { dataPoints: [] } })), null, /metrics\[0\]\.name$/);
  throwsOtlp(() => convert(wrap({ name: "y", sum: { aggregationTemporality: 7, dataPoints: [] } })), "y", /aggregationTemporality/);
  throwsOtlp(() => convert(wrap({ name: "z", gauge: { dataPoints: [{ timeUnixNano: "1", asDouble: "abc" }] } })), "z", /asDouble/);
  throwsOtlp(() => convert(wrap({ name: "h", histogram: { aggregationTemporality: 1, dataPoints: [
    { timeUnixNano: "1", count: "3", bucketCounts: ["1", "1"], explicitBounds: [1] },
  ] } })), "h", /dataPoints\[0\]\.count/);
  throwsOtlp(() => convert(wrap({ name: "h", histogram: { aggregationTemporality: 1, dataPoints: [
    { timeUnixNano: "1", count: "2", bucketCounts: ["1", "1"], explicitBounds: [1, 2] },
  ] } })), "h", /bucketCounts/);
  throwsOtlp(() => convert({ resourceMetrics: {} }), null, /^resourceMetrics$/);
});

Deno.test("what cannot be stored is a partial success, not an error", () => {
  const request = { resourceMetrics: [{ scopeMetrics: [{ metrics: [
    { name: "s", summary: { dataPoints: [{ count: "1", sum: 1 }, { count: "2", sum: 3 }] } },
    { name: "d", sum: { aggregationTemporality: 1, isMonotonic: false, dataPoints: [{ asInt: "-3" }] } },
    { name: "m", sum: { aggregationTemporality: 1, isMonotonic: true, dataPoints: [{ asInt: "-3" }, { asInt: "4" }] } },
    { name: "g", gauge: { dataPoints: [{ asDouble: "NaN" }, { asDouble: 1, flags: 1 }, { asDouble: 2 }] } },
  ] }] }] };
  const out = convert(request, { now: 5 });
  equal(out.rejected, 5);
  equal(out.points.map((p) => [p.name, p.sum, p.ts]), [["m", 4, 5], ["g", 2, 5]]);
  assert(out.messages.some((m) => m.includes('metric "s"') && m.includes("summary")));
});

Deno.test("protobuf responses and requests round-trip", () => {
  equal(decodeResponse(encodeResponse(0, "")), {});
  equal(decodeResponse(encodeResponse(3, "no")), { partialSuccess: { rejectedDataPoints: "3", errorMessage: "no" } });
  const request = { resourceMetrics: [{ scopeMetrics: [{ metrics: [{ name: "g", gauge: { dataPoints: [{ asDouble: 2, timeUnixNano: "1700000000000000000" }] } }] }] }] };
  equal(convert(decodeRequest(encodeRequest(request))).points, convert(request).points);
});

Deno.test("sketch keys agree with the Python client and SQL", () => {
  // metrics.sketch_key(1) = 0, (2) = ceil(ln 2 * 49.998...) = 35; the value of a key is within 1 %
  equal([sketchKey(1), sketchKey(2), sketchKey(0.001)], [0, 35, -345]);
  for (const v of [1e-6, 0.37, 1, 42, 1e9]) assert(Math.abs(sketchValue(sketchKey(v)) - v) / v <= 0.01);
});

Deno.test("two points of one cumulative stream in a request: the latest is kept, not a 400 for the request", () => {
  const point = (ts: string, start: string, value: number) => ({ timeUnixNano: ts, startTimeUnixNano: start, asInt: String(value),
    attributes: [{ key: "queue", value: { stringValue: "a" } }] });
  const request = { resourceMetrics: [{ scopeMetrics: [{ metrics: [{ name: "jobs_total", sum: {
    aggregationTemporality: 2, isMonotonic: true, dataPoints: [
      point("1700000002000000000", "1000", 7), point("1700000001000000000", "1000", 5), point("1700000000000000000", "999", 9),
    ],
  } }, { name: "other_total", sum: { aggregationTemporality: 2, isMonotonic: true, dataPoints: [point("1700000000000000000", "1", 1)] } }] }] }] };
  const { points, rejected } = convert(request);
  equal(points.map((p) => [p.name, p.sum]), [["jobs_total", 7], ["other_total", 1]], "the latest of the stream, and the other stream");
  equal(rejected, 0);
});

Deno.test("database errors: only a bad request is a 400; deployment and server problems are retryable", () => {
  const status = (s: number, code: string, token = true) => databaseError(s, code, "m", token).status;
  equal(status(400, "22023"), 400, "metrics.reject names the problem");
  equal(status(400, "22P02"), 400, "a data exception");
  equal(status(401, "28000"), 401, "an invalid ingest token");
  equal(status(401, "42501", true), 403, "a token of another project");
  equal(status(401, "42501", false), 401, "anonymous without a token (as the Data API)");
  equal(status(403, "42501", false), 403, "a signed-in user without rights");
  equal(status(401, "PGRST301", false), 401, "an invalid JWT");
  equal(status(404, "PGRST202"), 502, "the function is missing (a bad deploy): retry, not drop");
  equal(status(406, "PGRST106"), 502, "the schema is not exposed");
  equal(status(409, "23505"), 502, "a conflict");
  equal(status(400, "P0001"), 502, "an unexpected raise");
  equal(status(400, "PGRST102"), 502, "a request the function built wrong");
  equal(status(500, "40001"), 503, "a serialization failure");
  equal(status(503, ""), 503, "the database is unavailable");
  equal(status(500, "XX000"), 502);
});

Deno.test("MESHHOOK_INGEST_MAX_BODY_BYTES: a positive integer, else a clear error at start", () => {
  equal([maxBodyBytes(undefined), maxBodyBytes(""), maxBodyBytes("1024")], [4 * 1024 * 1024, 4 * 1024 * 1024, 1024]);
  for (const bad of ["4MB", "abc", "-1", "0", "1.5", "1e99"]) {
    let message = "";
    try {
      maxBodyBytes(bad);
    } catch (e) {
      message = (e as Error).message;
    }
    assert(message.includes("MESHHOOK_INGEST_MAX_BODY_BYTES") && message.includes(bad), `"${bad}": ${message}`);
  }
});

Deno.test("label values are redacted like the Python client's: point attributes and allowed resource attributes", () => {
  const jwt = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.c2lnbmF0dXJlX2J5dGVz";
  const s = (key: string, value: string) => ({ key, value: { stringValue: value } });
  const attributes = [
    s("url.full", "https://alice:hunter2@api.example.com/v1/hooks"),
    s("http.request.header.authorization", `Bearer ${jwt}`),
    s("http.route", "/api/hooks/[slug]"),
    { key: "extra", value: { kvlistValue: { values: [s("q", "api_key=s3cr3t&page=2")] } } },
  ];
  const request = { resourceMetrics: [{
    resource: { attributes: [s("service.name", "worker"), s("service.instance.id", "sk_live_51HxYzAbCdEfGhIjKlMn"),
      s("deployment.environment", "prod token=abc")] },
    scopeMetrics: [{ metrics: [
      { name: "requests", sum: { aggregationTemporality: 1, isMonotonic: true, dataPoints: [{ attributes, asInt: "1" }] } },
      { name: "process_cpu_seconds", sum: { aggregationTemporality: 2, isMonotonic: true,
        dataPoints: [{ attributes, asDouble: 2, startTimeUnixNano: "1", timeUnixNano: "2" }] } },
      { name: "latency", histogram: { aggregationTemporality: 1,
        dataPoints: [{ attributes, count: "1", sum: 1, explicitBounds: [1], bucketCounts: ["1", "0"] }] } },
    ] }],
  }] };
  const out = convert(request, { now: 5, resourceAttributes: ["deployment.environment"] });
  equal(out.points.length, 3);
  const want = {
    deployment_environment: "prod token=[REDACTED]",
    extra: '{"q":"api_key=[REDACTED]&page=2"}',
    http_request_header_authorization: "Bearer [REDACTED]",
    http_route: "/api/hooks/[slug]",
    url_full: "https://alice:[REDACTED]@api.example.com/v1/hooks",
  };
  equal(out.points[0].labels, want, "an application metric");
  const sorted = (o: Record<string, string>) => Object.fromEntries(Object.entries(o).sort());
  equal(sorted(out.points[1].labels), sorted({ ...want, service: "worker", instance: "[REDACTED]" }), "a process metric");
  equal(out.points[2].labels, want, "a histogram");
  const text = JSON.stringify(out.points);
  for (const secret of ["hunter2", "eyJhbG", "s3cr3t", "sk_live", "abc\""]) assert(!text.includes(secret), `${secret} in ${text}`);
  // the stream identity keeps the values as sent: two secrets that redact alike are still two streams
  const other = structuredClone(request);
  other.resourceMetrics[0].scopeMetrics[0].metrics[1].sum!.dataPoints[0].attributes[0] = s("url.full", "https://alice:other@api.example.com/v1/hooks");
  const [p] = convert(other, { now: 5, resourceAttributes: ["deployment.environment"] }).points.filter((q) => q.cumulative);
  equal(p.labels, out.points[1].labels);
  assert(p.cumulative!.stream !== out.points[1].cumulative!.stream, "streams differing by a secret stay apart");
});
