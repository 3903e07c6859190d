// Exports known measurements with the official OpenTelemetry JS SDK and OTLP exporters to the metrics-ingest
// edge function (driven by tests/localstack/test_otel_node.py and benchmarks/edge_ingest.py).
//
//   node tools/otel/export.mjs <json config>
//   config: {url, token, protocol: "json"|"proto", temporality: "delta"|"cumulative", prefix, run: "first"|"restart",
//            instance}
// run "first" exports twice, "restart" once (a new process); <prefix>_wide_seconds gets 1 + i/1000 (i < 10) in the
// first export and 1000 in the second: a rescale of the exponential histogram between two cumulative exports.
// Prints one JSON line: {"exports": <number of exports>, "failed": [<error messages>]}; exit 1 when one failed.
// the imports of docs/ingest-http.md ("OpenTelemetry JS"), the JSON exporter besides the protobuf one
import { AggregationTemporality, AggregationType, MeterProvider, PeriodicExportingMetricReader } from "@opentelemetry/sdk-metrics";
import { OTLPMetricExporter as ProtoExporter } from "@opentelemetry/exporter-metrics-otlp-proto";
import { OTLPMetricExporter as JsonExporter } from "@opentelemetry/exporter-metrics-otlp-http";
import { resourceFromAttributes } from "@opentelemetry/resources";

const config = JSON.parse(process.argv[2]);
const Exporter = config.protocol === "proto" ? ProtoExporter : JsonExporter;
const inner = new Exporter({
  url: config.url,
  headers: { Authorization: `Bearer ${config.token}` },
  compression: config.protocol === "proto" ? "gzip" : "none",
  temporalityPreference: config.temporality === "delta" ? AggregationTemporality.DELTA : AggregationTemporality.CUMULATIVE,
});
const failed = [];
let exports = 0;
// the exporter as it is, with every export's result kept
const exporter = {
  export(metrics, done) {
    inner.export(metrics, (result) => {
      exports += 1;
      if (result.code !== 0) failed.push(String(result.error?.message ?? result.error ?? "failed"));
      done(result);
    });
  },
  forceFlush: () => inner.forceFlush(),
  shutdown: () => inner.shutdown(),
  selectAggregationTemporality: (type) => inner.selectAggregationTemporality(type),
  selectAggregation: inner.selectAggregation ? (type) => inner.selectAggregation(type) : undefined,
};
const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 3_600_000 });
const p = config.prefix;
const provider = new MeterProvider({
  resource: resourceFromAttributes({
    "service.name": "meshhook-node-worker",
    "service.instance.id": config.instance ?? "worker-1",
  }),
  readers: [reader],
  views: [`${p}_exp_seconds`, `${p}_wide_seconds`].map((instrumentName) => ({
    instrumentName,
    aggregation: { type: AggregationType.EXPONENTIAL_HISTOGRAM },
  })),
});
const meter = provider.getMeter("meshhook-otel-test", "1.0.0");
const jobs = meter.createCounter(`${p}_jobs_total`, { description: "Jobs done" });
const inflight = meter.createUpDownCounter(`${p}_inflight`);
const boundaries = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
const step = meter.createHistogram(`${p}_step_seconds`, { unit: "s", advice: { explicitBucketBoundaries: boundaries } });
const exp = meter.createHistogram(`${p}_exp_seconds`, { unit: "s" });
// values near 1, then one of 1000: the SDK lowers the scale of the (cumulative) exponential histogram in between
const wide = meter.createHistogram(`${p}_wide_seconds`, { unit: "s" });
let depth = 0;
meter.createObservableGauge(`${p}_queue_depth`).addCallback((result) => result.observe(depth, { queue: "jobs" }));
const record = (values) => values.forEach((v) => { step.record(v, { node_type: "http" }); exp.record(v, { node_type: "http" }); });

if (config.run === "first") {
  jobs.add(5, { queue: "a" });
  inflight.add(10);
  record([0.003, 0.02, 0.2, 0.2, 0.7, 3]);
  for (let i = 0; i < 10; i++) wide.record(1 + i / 1000);
  depth = 42;
  await reader.forceFlush();
  wide.record(1000);
  jobs.add(7, { queue: "a" });
  inflight.add(-3);
  record([0.05, 1.5]);
  depth = 43;
  await reader.forceFlush();
} else {
  // a restarted worker: a new process, new start times, counting from zero again
  jobs.add(4, { queue: "a" });
  inflight.add(2);
  record([0.4]);
  depth = 44;
  await reader.forceFlush();
}
await provider.shutdown();
console.log(JSON.stringify({ exports, failed }));
process.exit(failed.length ? 1 : 0);
