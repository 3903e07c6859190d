"""``deno test`` of the metrics-ingest edge function (the OTLP -> batch conversion, protobuf, the sketch), run
from pytest so that ``make test`` runs it too."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import tempfile
from pathlib import Path

from tests.localstack.conftest import DENO, REPO

FUNCTION_DIR = REPO / "supabase" / "functions" / "metrics-ingest"


def test_deno_unit_tests_of_the_conversion_pass() -> None:
    assert DENO.exists(), "Deno is not installed: run 'npm ci --prefix tests/localstack/js'"
    tests = sorted(FUNCTION_DIR.glob("*_test.ts"))
    assert tests, f"no *_test.ts in {FUNCTION_DIR}"
    # outside any folder with a package.json (Deno would look for node_modules there)
    with tempfile.TemporaryDirectory() as cwd:
        result = subprocess.run(
            [str(DENO), "test", "--no-config", "--allow-env", "--allow-read", *map(str, tests)],
            cwd=cwd,
            env={**os.environ, "NO_COLOR": "1"},
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    output = f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    assert result.returncode == 0, output
    summary = re.search(r"ok \| (\d+) passed \| 0 failed", result.stdout)
    assert summary and int(summary.group(1)) >= 8, output


# Fragments that stress every pattern and every place where JavaScript's regexes differ from Python's re
# (Unicode \b and \d, \s, IGNORECASE folding of U+017F, U+212A, U+0131, U+0130).
FRAGMENTS = [
    *"abcdefABCXYZ0123456789_-=:/@.&;,~+ \t",
    *("eyJ", "://", "Bearer ", "basic ", "token", "Token ", "key", "api_key", "secret", "passw", "pwd"),
    *("access-token", "sk_live_", "sk-", "ghp_", "xoxb-", "AKIA", "sb_secret_", "AIza", "[REDACTED]"),
    *("9f86d081884c7d65", "6f1c2a9e-3b7d-4c5e-9a10-1234567890ab", "/api/hooks/[slug]"),
    *("\u017f", "\u212a", "\u0131", "\u0130", "\u00e9", "\u0301", "\u0663", "\u00a0", "\x1f", "\x85"),
    *("\ufeff", "\u2028", "\u6771", "\U0001f680"),
]


def test_the_edge_functions_redactor_agrees_with_the_python_clients_on_generated_values(
    tmp_path: Path,
) -> None:
    """Beyond the shared vectors (tests/redaction_vectors.json): thousands of generated values, both redactors."""
    from meshhook_rt_metrics.client.labels import REDACTED, default_redactor

    assert DENO.exists(), "Deno is not installed: run 'npm ci --prefix tests/localstack/js'"
    rng = random.Random(20261206)
    values = ["".join(rng.choices(FRAGMENTS, k=rng.randint(0, 40))) for _ in range(4000)]
    values += [v.replace(" ", "") for v in values[:1000]]  # long unbroken runs: the opaque-token pattern
    expected = [default_redactor(v) for v in values]
    assert sum(REDACTED in e and REDACTED not in v for v, e in zip(values, expected, strict=True)) > 1000
    inputs = tmp_path / "values.json"
    inputs.write_text(json.dumps(values), encoding="utf-8")
    script = tmp_path / "redact_all.ts"
    script.write_text(
        f'import {{ redact }} from "{(FUNCTION_DIR / "redact.ts").as_uri()}";\n'
        "const values: string[] = JSON.parse(await Deno.readTextFile(Deno.args[0]));\n"
        "console.log(JSON.stringify(values.map(redact)));\n",
        encoding="utf-8",
    )
    result = subprocess.run(
        [str(DENO), "run", "--no-config", f"--allow-read={inputs}", str(script), str(inputs)],
        cwd=tmp_path,
        env={**os.environ, "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    differ = [(v, g, e) for v, g, e in zip(values, got, expected, strict=True) if g != e]
    assert not differ, f"{len(differ)} values redact differently (value, deno, python): {differ[:5]!r}"
