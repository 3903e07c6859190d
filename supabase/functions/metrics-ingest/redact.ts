// Secret redaction of label values: the twin of meshhook_rt_metrics/client/labels.py (_SECRET_PATTERNS,
// default_redactor, REDACTED). Both must hide exactly the same things; the contract is tests/redaction_vectors.json,
// which the Python tests (tests/client/test_redaction_vectors.py) and the Deno tests (redact_test.ts) both run, and
// tests/localstack/test_edge_function_units.py also compares the two on generated values. Change both or neither.
//
// The patterns are the Python ones, rewritten where JavaScript's regexes mean something else than Python's `re`
// on str patterns (the `u` flag is on everywhere):
//   \b, \w    Python: Unicode word characters (letters, digits, "_"); JS: ASCII only -> explicit look-arounds on
//             [\p{L}\p{N}_]
//   \d        Python: any Unicode decimal digit -> \p{Nd}
//   \s        Python: str.isspace() (includes \x1c-\x1f and \x85, not \ufeff); JS differs -> SPACE below
//   (?i)      Python folds i to ı/İ, k to K (Kelvin), s to ſ; JS's `i` flag does not fold ı/İ -> no `i` flag,
//             each letter of a case-insensitive pattern is spelled out as a class (ci() below)
//   (?P<n>)   -> (?<n>), \g<n> -> $<n>
// This module has no imports and reads nothing: the function stays deployable on its own.

export const REDACTED = "[REDACTED]";

/** Python's \s on str (str.isspace()), as the inside of a character class. */
const SPACE = "\\t\\n\\v\\f\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
/** Python's \w on str. */
const WORD = "[\\p{L}\\p{N}_]";
/** Python's \b, where the next character is known to be a word character (before a letter). */
const START = `(?<!${WORD})`;
/** Python's \b, where the previous character is known to be a word character (after a letter or digit). */
const END = `(?!${WORD})`;
/** Python's (?<![^\W_]): not after a word character other than "_" (a letter or digit). */
const AFTER_NON_ALNUM = "(?<![\\p{L}\\p{N}])";
/** Python's \b, anywhere. */
const BOUNDARY = `(?:(?<=${WORD})(?!${WORD})|(?<!${WORD})(?=${WORD}))`;
/** The characters Python's IGNORECASE lets an ASCII letter match besides its two ASCII cases. */
const FOLDS: Record<string, string> = { i: "\\u0130\\u0131", k: "\\u212a", s: "\\u017f" };

/** A word as Python's (?i) matches it: each letter a class of its case variants. */
function ci(word: string): string {
  return word.replace(/[a-z]/g, (c) => `[${c}${c.toUpperCase()}${FOLDS[c] ?? ""}]`);
}

const PATTERNS: readonly [RegExp, string][] = [
  // passwords in URLs: scheme://user:password@host -> keep the user, hide the password
  [new RegExp(`(?<head>[a-zA-Z][a-zA-Z0-9+.\\-]*:\\/\\/[^\\/${SPACE}:@]*:)[^@${SPACE}\\/]+@`, "gu"), `$<head>${REDACTED}@`],
  // JWTs (Supabase anon/service keys, user tokens)
  [/eyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]*/gu, REDACTED],
  // bearer / basic / token authorisation values ((?i) in Python: the token's letters fold too)
  [
    new RegExp(
      `${START}(${ci("bearer")}|${ci("basic")}|${ci("token")})[${SPACE}]+[A-Za-z0-9._~+\\/=${FOLDS.i}${FOLDS.k}${FOLDS.s}\\-]{8,}`,
      "gu",
    ),
    `$1 ${REDACTED}`,
  ],
  // well-known API key shapes
  [
    new RegExp(
      [
        `${START}(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{8,}`,
        `${START}sk-[A-Za-z0-9_\\-]{16,}`,
        `${START}gh[pousr]_[A-Za-z0-9]{20,}`,
        `${START}xox[abposr]-[A-Za-z0-9\\-]{10,}`,
        `${START}AKIA[0-9A-Z]{16}${END}`,
        `${START}sb_(?:secret|publishable)_[A-Za-z0-9_\\-]{8,}`,
        `${START}AIza[0-9A-Za-z_\\-]{30,}`,
      ].join("|"),
      "gu",
    ),
    REDACTED,
  ],
  // key=value pairs whose key says it is secret: the key word directly followed by optional spaces and "=" or ":",
  // and not after a letter or digit (but after "_" or "-": "client_secret=", "x-api-key:", "AUTH_TOKEN=")
  [
    new RegExp(
      `${AFTER_NON_ALNUM}((?:${ci("api")}[_\\-]?${ci("key")}|${ci("apikey")}|${ci("secret")}|${ci("password")}|${ci("passwd")}` +
        `|${ci("pwd")}|${ci("token")}|${ci("access")}[_\\-]?${ci("token")})[${SPACE}]*[=:][${SPACE}]*)[^${SPACE}&;,]+`,
      "gu",
    ),
    `$1${REDACTED}`,
  ],
  // long opaque high-entropy tokens (hex or base64url of 32+ chars mixing letters and digits)
  // (UUIDs are identifiers, not secrets: left alone)
  [
    new RegExp(
      `${BOUNDARY}(?![0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}${END})` +
        `(?=[A-Za-z0-9_\\-]*\\p{Nd})(?=[A-Za-z0-9_\\-]*[A-Za-z])[A-Za-z0-9_\\-]{32,}${BOUNDARY}`,
      "gu",
    ),
    REDACTED,
  ],
];

const KEY_WORDS = ["key", "secret", "passw", "pwd", "token"];
const OPAQUE_RUN = /[A-Za-z0-9_\-]{32}/;
// deno-lint-ignore no-control-regex
const ASCII = /^[\x00-\x7f]*$/;

/**
 * Cheap necessary condition for PATTERNS[index] to match an ASCII value (labels.py's _may_match): a substring
 * every match contains. Only ever skips a replacement that could not have changed anything.
 */
function mayMatch(index: number, value: string, lower: string): boolean {
  switch (index) {
    case 0:
      return value.includes("://") && value.includes("@");
    case 1:
      return value.includes("eyJ");
    case 2:
      return lower.includes("bearer") || lower.includes("basic") || lower.includes("token");
    case 4:
      return (value.includes("=") || value.includes(":")) && KEY_WORDS.some((w) => lower.includes(w));
    case 5:
      return value.length >= 32 && OPAQUE_RUN.test(value);
    default:
      return true; // the API-key alternation is a single scan
  }
}

/**
 * Hides values that look like secrets (passwords in URLs, JWTs, bearer/basic/token values, API keys, key=value
 * secrets, long opaque tokens): the same result as the Python client's default_redactor for every string.
 */
export function redact(value: string): string {
  // non-ASCII values take every pattern (case folding beyond ASCII: the lower-case pre-filter is not exact)
  const ascii = ASCII.test(value);
  PATTERNS.forEach(([pattern, replacement], index) => {
    if (!ascii || mayMatch(index, value, value.toLowerCase())) value = value.replace(pattern, replacement);
  });
  return value;
}

/** A label set with every value redacted. */
export function redactLabels(labels: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(labels)) out[name] = redact(value);
  return out;
}
