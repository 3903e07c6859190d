// deno test: the redactor against the contract it shares with the Python client (meshhook_rt_metrics/client/labels.py):
// every case of tests/redaction_vectors.json. Needs --allow-read (of that file).
import { redact, REDACTED, redactLabels } from "./redact.ts";

interface Vector {
  note: string;
  value: string;
  redacted: string;
}

const VECTORS: Vector[] = JSON.parse(
  await Deno.readTextFile(new URL("../../../tests/redaction_vectors.json", import.meta.url)),
);

Deno.test("redaction: every shared vector gives the Python client's result", () => {
  if (VECTORS.length < 40) throw new Error(`only ${VECTORS.length} vectors in tests/redaction_vectors.json`);
  const wrong = VECTORS.filter((v) => redact(v.value) !== v.redacted)
    .map((v) => `${v.note}: ${JSON.stringify(v.value)} -> ${JSON.stringify(redact(v.value))}, want ${JSON.stringify(v.redacted)}`);
  if (wrong.length > 0) throw new Error(`${wrong.length} of ${VECTORS.length} vectors differ:\n${wrong.join("\n")}`);
});

Deno.test("redaction: idempotent, and the vectors both hide and keep", () => {
  for (const v of VECTORS) {
    const once = redact(v.value);
    if (redact(once) !== once) throw new Error(`${v.note}: a second pass changes ${JSON.stringify(once)}`);
  }
  if (!VECTORS.some((v) => v.redacted.includes(REDACTED))) throw new Error("no vector hides anything");
  if (!VECTORS.some((v) => v.redacted === v.value && /[^ -~]/.test(v.value))) {
    throw new Error("no vector keeps a non-ASCII value");
  }
});

Deno.test("redaction: redactLabels redacts every value and keeps the names", () => {
  const out = redactLabels({ url: "https://u:pw@h/x", route: "/api/hooks/[slug]", token: "x" });
  const want = { url: `https://u:${REDACTED}@h/x`, route: "/api/hooks/[slug]", token: "x" };
  if (JSON.stringify(out) !== JSON.stringify(want)) throw new Error(JSON.stringify(out));
});
