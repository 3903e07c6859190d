// OTLP/HTTP protobuf: the request and response messages of opentelemetry-proto (v1.x) for metrics, decoded and
// encoded with protobufjs reflection. Field names come out in lowerCamelCase, int64/fixed64 as decimal strings
// and enums as numbers: the same shape as OTLP/JSON, so that one converter (otlp.ts) serves both encodings.
import protobuf from "npm:protobufjs@8.8.1";

const PROTO = `
syntax = "proto3";
package otlp;

message AnyValue {
  oneof value {
    string string_value = 1;
    bool bool_value = 2;
    int64 int_value = 3;
    double double_value = 4;
    ArrayValue array_value = 5;
    KeyValueList kvlist_value = 6;
    bytes bytes_value = 7;
  }
}
message ArrayValue { repeated AnyValue values = 1; }
message KeyValueList { repeated KeyValue values = 1; }
message KeyValue { string key = 1; AnyValue value = 2; }
message InstrumentationScope {
  string name = 1;
  string version = 2;
  repeated KeyValue attributes = 3;
  uint32 dropped_attributes_count = 4;
}
message Resource { repeated KeyValue attributes = 1; uint32 dropped_attributes_count = 2; }

message ExportMetricsServiceRequest { repeated ResourceMetrics resource_metrics = 1; }
message ExportMetricsServiceResponse { ExportMetricsPartialSuccess partial_success = 1; }
message ExportMetricsPartialSuccess { int64 rejected_data_points = 1; string error_message = 2; }

message ResourceMetrics { Resource resource = 1; repeated ScopeMetrics scope_metrics = 2; string schema_url = 3; }
message ScopeMetrics { InstrumentationScope scope = 1; repeated Metric metrics = 2; string schema_url = 3; }
message Metric {
  string name = 1;
  string description = 2;
  string unit = 3;
  oneof data {
    Gauge gauge = 5;
    Sum sum = 7;
    Histogram histogram = 9;
    ExponentialHistogram exponential_histogram = 10;
    Summary summary = 11;
  }
  repeated KeyValue metadata = 12;
}
message Gauge { repeated NumberDataPoint data_points = 1; }
message Sum { repeated NumberDataPoint data_points = 1; int32 aggregation_temporality = 2; bool is_monotonic = 3; }
message Histogram { repeated HistogramDataPoint data_points = 1; int32 aggregation_temporality = 2; }
message ExponentialHistogram { repeated ExponentialHistogramDataPoint data_points = 1; int32 aggregation_temporality = 2; }
message Summary { repeated SummaryDataPoint data_points = 1; }
message NumberDataPoint {
  repeated KeyValue attributes = 7;
  fixed64 start_time_unix_nano = 2;
  fixed64 time_unix_nano = 3;
  oneof value { double as_double = 4; sfixed64 as_int = 6; }
  repeated Exemplar exemplars = 5;
  uint32 flags = 8;
}
message HistogramDataPoint {
  repeated KeyValue attributes = 9;
  fixed64 start_time_unix_nano = 2;
  fixed64 time_unix_nano = 3;
  fixed64 count = 4;
  optional double sum = 5;
  repeated fixed64 bucket_counts = 6;
  repeated double explicit_bounds = 7;
  repeated Exemplar exemplars = 8;
  uint32 flags = 10;
  optional double min = 11;
  optional double max = 12;
}
message ExponentialHistogramDataPoint {
  repeated KeyValue attributes = 1;
  fixed64 start_time_unix_nano = 2;
  fixed64 time_unix_nano = 3;
  fixed64 count = 4;
  optional double sum = 5;
  sint32 scale = 6;
  fixed64 zero_count = 7;
  Buckets positive = 8;
  Buckets negative = 9;
  uint32 flags = 10;
  repeated Exemplar exemplars = 11;
  optional double min = 12;
  optional double max = 13;
  double zero_threshold = 14;
  message Buckets { sint32 offset = 1; repeated uint64 bucket_counts = 2; }
}
message SummaryDataPoint {
  repeated KeyValue attributes = 7;
  fixed64 start_time_unix_nano = 2;
  fixed64 time_unix_nano = 3;
  fixed64 count = 4;
  double sum = 5;
  message ValueAtQuantile { double quantile = 1; double value = 2; }
  repeated ValueAtQuantile quantile_values = 6;
  uint32 flags = 8;
}
message Exemplar {
  repeated KeyValue filtered_attributes = 7;
  fixed64 time_unix_nano = 2;
  oneof value { double as_double = 3; sfixed64 as_int = 6; }
  bytes span_id = 4;
  bytes trace_id = 5;
}

// google.rpc.Status: the body of an OTLP error response
message Status { int32 code = 1; string message = 2; }
`;

const root = protobuf.parse(PROTO).root;
const Request = root.lookupType("otlp.ExportMetricsServiceRequest");
const Response = root.lookupType("otlp.ExportMetricsServiceResponse");
const Status = root.lookupType("otlp.Status");

/** Decodes an ExportMetricsServiceRequest into the OTLP/JSON shape; throws on malformed bytes. */
export function decodeRequest(bytes: Uint8Array): unknown {
  const message = Request.decode(bytes);
  return Request.toObject(message, { longs: String, enums: Number, bytes: String, arrays: true, defaults: false });
}

/** Encodes a request from the OTLP/JSON shape (tests and the benchmark). */
export function encodeRequest(request: unknown): Uint8Array {
  return Request.encode(Request.fromObject(request as Record<string, unknown>)).finish();
}

/** An ExportMetricsServiceResponse, with partial success when some data points were rejected. */
export function encodeResponse(rejected: number, message: string): Uint8Array {
  const body = rejected > 0 || message
    ? { partialSuccess: { rejectedDataPoints: String(rejected), errorMessage: message } }
    : {};
  return Response.encode(Response.fromObject(body)).finish();
}

export function decodeResponse(bytes: Uint8Array): unknown {
  return Response.toObject(Response.decode(bytes), { longs: String, defaults: false });
}

/** A google.rpc.Status (code: gRPC status code) for OTLP error responses. */
export function encodeStatus(code: number, message: string): Uint8Array {
  return Status.encode(Status.fromObject({ code, message })).finish();
}

export function decodeStatus(bytes: Uint8Array): { code?: number; message?: string } {
  return Status.toObject(Status.decode(bytes)) as { code?: number; message?: string };
}
