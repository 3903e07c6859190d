// metrics-ingest: HTTP ingest for producers that are not our Python client (docs/ingest-http.md).
//
//   POST /functions/v1/metrics-ingest/v1/metrics   OTLP/HTTP metrics (JSON or protobuf, gzip accepted)
//   POST /functions/v1/metrics-ingest              a batch of our wire format (docs/batch.schema.json)
//
// Deploy: supabase functions deploy metrics-ingest --no-verify-jwt
import { handle } from "./handler.ts";

Deno.serve(handle);
