"""``deno test`` of the metrics-ingest edge function (the OTLP -> batch conversion, protobuf, the sketch), run
from pytest so that ``make test`` runs it too."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile

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
