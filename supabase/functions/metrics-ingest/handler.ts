// The request handler of the metrics-ingest edge function (index.ts serves it); docs/ingest-http.md.
//
//   POST /functions/v1/metrics-ingest/v1/metrics   OTLP/HTTP metrics, application/json or application/x-protobuf,
//                                                  gzip accepted; answers in the OTLP response shape
//   POST /functions/v1/metrics-ingest              a batch of our wire format (docs/batch.schema.json)
//
// Auth: "Authorization: Bearer mhi_..." (an ingest token: the project is the token's), or a user JWT / the
// service key with ?project_id=<uuid> (for a batch, its project_id works too). Every write goes through
// metrics.ingest_http with the caller's rights (the Data API verifies JWTs; an ingest token is checked by the
// database). Deploy: supabase functions deploy metrics-ingest --no-verify-jwt (ingest tokens are not JWTs;
// supabase/config.toml says the same for the local stack).
import { convert, OtlpError } from "./otlp.ts";
import { decodeRequest, encodeResponse, encodeStatus } from "./proto.ts";

/** The body size limit from MESHHOOK_INGEST_MAX_BODY_BYTES (unset or empty: 4 MiB); anything but a positive integer
 * stops the function at start with a clear error rather than leaving it without a limit. */
export function maxBodyBytes(raw: string | undefined): number {
  if (raw === undefined || raw.trim() === "") return 4 * 1024 * 1024;
  const n = Number(raw.trim());
  if (!/^\d+$/.test(raw.trim()) || !Number.isSafeInteger(n) || n <= 0) {
    throw new Error(`MESHHOOK_INGEST_MAX_BODY_BYTES must be a positive integer number of bytes, not "${raw}"`);
  }
  return n;
}

const MAX_BODY = maxBodyBytes(Deno.env.get("MESHHOOK_INGEST_MAX_BODY_BYTES"));
/** a gzip body may expand to at most this many times the limit */
const MAX_INFLATE = 8;
const RESOURCE_ATTRIBUTES = (Deno.env.get("MESHHOOK_INGEST_RESOURCE_ATTRIBUTES") ?? "")
  .split(",").map((s) => s.trim()).filter((s) => s !== "");
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const MAX_POINTS = 50000;

// gRPC status codes for google.rpc.Status bodies
const GRPC = { 400: 3, 401: 16, 403: 7, 404: 5, 405: 12, 409: 6, 413: 8, 415: 3, 500: 13, 502: 14, 503: 14 } as const;

export class HttpError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

type Encoding = "json" | "protobuf";

function reply(status: number, body: unknown, encoding: Encoding, protobuf?: Uint8Array): Response {
  if (encoding === "protobuf" && protobuf) {
    return new Response(protobuf as Uint8Array<ArrayBuffer>, { status, headers: { "content-type": "application/x-protobuf" } });
  }
  return Response.json(body, { status });
}

function failure(error: HttpError, otlp: boolean, encoding: Encoding): Response {
  if (!otlp) return Response.json({ code: error.status, message: error.message }, { status: error.status });
  const code = GRPC[error.status as keyof typeof GRPC] ?? 2;
  return reply(error.status, { code, message: error.message }, encoding, encodeStatus(code, error.message));
}

async function readBody(req: Request): Promise<Uint8Array> {
  const declared = Number(req.headers.get("content-length") ?? "NaN");
  if (Number.isFinite(declared) && declared > MAX_BODY) {
    throw new HttpError(413, `body of ${declared} bytes exceeds the limit of ${MAX_BODY} bytes`);
  }
  let stream = req.body;
  if (stream === null) throw new HttpError(400, "empty body");
  const encoding = (req.headers.get("content-encoding") ?? "identity").trim().toLowerCase();
  let limit = MAX_BODY;
  let what = "body";
  if (encoding === "gzip") {
    stream = stream.pipeThrough(new DecompressionStream("gzip"));
    limit = MAX_BODY * MAX_INFLATE;
    what = "decompressed body";
  } else if (encoding !== "identity" && encoding !== "") {
    throw new HttpError(415, `Content-Encoding ${encoding} is not supported (gzip or none)`);
  }
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    for await (const chunk of stream) {
      size += chunk.byteLength;
      if (size > limit) throw new HttpError(413, `${what} exceeds the limit of ${limit} bytes`);
      chunks.push(chunk);
    }
  } catch (e) {
    if (e instanceof HttpError) throw e;
    throw new HttpError(400, encoding === "gzip" ? "body is not valid gzip" : "could not read the body");
  }
  if (size === 0) throw new HttpError(400, "empty body");
  const out = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}

interface Caller {
  token: string | null;
  authorization: string;
  apikey: string;
}

function caller(req: Request): Caller {
  const anon = Deno.env.get("SUPABASE_ANON_KEY") ?? "";
  const match = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.get("authorization") ?? "");
  if (!match) {
    throw new HttpError(401, "missing Authorization: Bearer <ingest token (mhi_...), user JWT or service key>");
  }
  if (match[1].startsWith("mhi_")) return { token: match[1], authorization: `Bearer ${anon}`, apikey: anon };
  return { token: null, authorization: `Bearer ${match[1]}`, apikey: req.headers.get("apikey") ?? anon };
}

interface IngestResult {
  status: string;
  points: number;
  series_created?: number;
  overflowed?: number;
}

/** metrics.ingest_http through the Data API, as the caller; database errors become HTTP errors. */
async function ingest(who: Caller, batch: Record<string, unknown>, describe: (where: string) => string): Promise<IngestResult> {
  const base = Deno.env.get("SUPABASE_URL") ?? "";
  let response: Response;
  try {
    response = await fetch(`${base}/rest/v1/rpc/ingest_http`, {
      method: "POST",
      headers: {
        apikey: who.apikey,
        authorization: who.authorization,
        "content-type": "application/json",
        "content-profile": "metrics",
      },
      body: JSON.stringify({ p_batch: batch, p_token: who.token }),
    });
  } catch (_) {
    throw new HttpError(502, "the database API is unreachable");
  }
  const text = await response.text();
  let body: Record<string, unknown> = {};
  try {
    body = JSON.parse(text);
  } catch (_) {
    // not JSON: handled by status below
  }
  if (response.ok) return body as unknown as IngestResult;
  const code = typeof body.code === "string" ? body.code : "";
  const message = typeof body.message === "string" ? body.message : "";
  throw databaseError(response.status, code, message, who.token !== null, describe);
}

/**
 * The HTTP error for a failed call of metrics.ingest_http (Data API status and error code). Only what says the
 * request itself is wrong is a 400 (OTLP exporters do not retry it): data exceptions, SQLSTATE class 22, which
 * includes metrics.reject's 22023 naming the problem. 28000 (ingest token) and JWT errors are 401; 42501 is 401
 * for an anonymous caller (as the Data API answers), else 403. Transient database states (classes 40, 53, 57,
 * 08) are 503; anything else (a missing function PGRST202, a schema not exposed PGRST106, a conflict, a server
 * error, ...) is a deployment or server problem: 502, logged with its status and code, so that exporters retry
 * instead of dropping data.
 */
export function databaseError(
  status: number,
  code: string,
  message: string,
  withToken: boolean,
  describe: (m: string) => string = (m) => m,
): HttpError {
  if (code.startsWith("22")) return new HttpError(400, describe(message || "invalid batch"));
  if (code === "28000") return new HttpError(401, "invalid ingest token (unknown, revoked or expired)");
  if (code === "42501") {
    const text = message || "not allowed to write this project's metrics";
    return new HttpError(status === 401 && !withToken ? 401 : 403, text);
  }
  if (/^PGRST3\d\d$/.test(code) || status === 401) return new HttpError(401, message || "invalid JWT");
  if (status === 403 && code === "") return new HttpError(403, message || "forbidden");
  console.error(`metrics-ingest: database API error ${status} ${code || "(no code)"}`);
  if (/^(40|53|57|08)/.test(code) || status === 503 || status === 504) {
    return new HttpError(503, "the database is busy or unavailable; retry later");
  }
  return new HttpError(502, "the database could not store the batch; retry later");
}

async function sha256hex(parts: (string | Uint8Array)[]): Promise<string> {
  const enc = new TextEncoder();
  const bytes = parts.map((p) => (typeof p === "string" ? enc.encode(p) : p));
  const all = new Uint8Array(bytes.reduce((n, b) => n + b.byteLength + 1, 0));
  let at = 0;
  for (const b of bytes) {
    all.set(b, at);
    at += b.byteLength + 1; // a zero byte between parts
  }
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", all as Uint8Array<ArrayBuffer>));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

function projectParam(url: URL): string | null {
  const project = url.searchParams.get("project_id");
  if (project === null) return null;
  if (!UUID.test(project)) throw new HttpError(400, "project_id: must be a uuid");
  return project.toLowerCase();
}

async function handleOtlp(req: Request, url: URL, encoding: Encoding): Promise<Response> {
  const who = caller(req);
  const project = projectParam(url);
  if (who.token === null && project === null) {
    throw new HttpError(400, "project_id: required query parameter with a user JWT or the service key");
  }
  const body = await readBody(req);
  let request: unknown;
  try {
    request = encoding === "protobuf" ? decodeRequest(body) : JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(body));
  } catch (_) {
    throw new HttpError(400, encoding === "protobuf" ? "body is not a valid protobuf ExportMetricsServiceRequest" : "body is not valid JSON");
  }
  const conversion = convert(request, { resourceAttributes: RESOURCE_ATTRIBUTES });
  if (conversion.points.length > MAX_POINTS) {
    throw new HttpError(413, `${conversion.points.length} data points in one request, more than ${MAX_POINTS}`);
  }
  const message = conversion.messages.join("; ").slice(0, 2000);
  if (conversion.points.length > 0) {
    const key = req.headers.get("idempotency-key");
    if (key !== null && (key.length < 1 || key.length > 100)) throw new HttpError(400, "Idempotency-Key: 1 to 100 characters");
    const batch: Record<string, unknown> = {
      source: conversion.source,
      batch_id: key ?? (await sha256hex([conversion.source, encoding, body])),
      points: conversion.points,
    };
    if (project !== null) batch.project_id = project;
    const cumulative = conversion.points.some((p) => p.cumulative !== undefined);
    await ingest(who, batch, (m) => {
      const at = /^points\[(\d+)\]/.exec(m);
      // the index names a point of the batch as sent unless cumulative points were folded away
      return at && !cumulative && conversion.points[Number(at[1])] ? `metric "${conversion.points[Number(at[1])].name}": ${m}` : m;
    });
  }
  const partial = conversion.rejected > 0 ? { partialSuccess: { rejectedDataPoints: conversion.rejected, errorMessage: message } } : {};
  return reply(200, partial, encoding, encodeResponse(conversion.rejected, conversion.rejected > 0 ? message : ""));
}

async function handleBatch(req: Request, url: URL): Promise<Response> {
  const who = caller(req);
  const project = projectParam(url);
  const body = await readBody(req);
  let batch: unknown;
  try {
    batch = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(body));
  } catch (_) {
    throw new HttpError(400, "body is not valid JSON");
  }
  if (typeof batch !== "object" || batch === null || Array.isArray(batch)) {
    throw new HttpError(400, "batch: must be a JSON object (docs/batch.schema.json)");
  }
  const b = batch as Record<string, unknown>;
  if (project !== null) {
    if (b.project_id !== undefined && String(b.project_id).toLowerCase() !== project) {
      throw new HttpError(400, "batch.project_id: differs from the project_id query parameter");
    }
    b.project_id = project;
  }
  if (who.token === null && b.project_id === undefined) {
    throw new HttpError(400, "batch.project_id: required with a user JWT or the service key");
  }
  const points = Array.isArray(b.points) ? b.points : [];
  const result = await ingest(who, b, (m) => {
    const at = /^points\[(\d+)\]/.exec(m);
    const point = at ? points[Number(at[1])] : undefined;
    const name = point && typeof point === "object" && typeof (point as Record<string, unknown>).name === "string"
      ? (point as Record<string, unknown>).name
      : null;
    return name !== null && !points.some((p) => typeof p === "object" && p !== null && "cumulative" in p) ? `metric "${name}": ${m}` : m;
  });
  return Response.json(result, { status: 200 });
}

export async function handle(req: Request): Promise<Response> {
  const url = new URL(req.url);
  const otlp = /\/v1\/metrics\/?$/.test(url.pathname);
  const type = (req.headers.get("content-type") ?? "").split(";")[0].trim().toLowerCase();
  const encoding: Encoding = type === "application/x-protobuf" || type === "application/protobuf" ? "protobuf" : "json";
  try {
    if (!otlp && !/\/metrics-ingest\/?$/.test(url.pathname)) {
      throw new HttpError(404, "unknown path: POST .../metrics-ingest (batch) or .../metrics-ingest/v1/metrics (OTLP)");
    }
    if (req.method !== "POST") throw new HttpError(405, "only POST");
    if (otlp && type !== "application/json" && encoding !== "protobuf") {
      throw new HttpError(415, "Content-Type must be application/json or application/x-protobuf");
    }
    if (!otlp && type !== "application/json") throw new HttpError(415, "Content-Type must be application/json");
    return otlp ? await handleOtlp(req, url, encoding) : await handleBatch(req, url);
  } catch (e) {
    if (e instanceof HttpError) return failure(e, otlp, encoding);
    if (e instanceof OtlpError) return failure(new HttpError(400, e.message), otlp, encoding);
    // never a stack trace to the client (nor in the log: a message names what failed)
    console.error(`metrics-ingest: unexpected ${e instanceof Error ? `${e.name}: ${e.message}` : typeof e}`);
    return failure(new HttpError(500, "internal error"), otlp, encoding);
  }
}
