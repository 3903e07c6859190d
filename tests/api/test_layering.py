"""Product code never depends on the development stack (docs: DESIGN.md, "localstack/ ... product code
never imports it"): the HTTP service reads the JWT secret and verifies tokens with the neutral
``meshhook_rt_metrics.jwt_keys``, which the local gateway re-exports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import meshhook_rt_metrics
from meshhook_rt_metrics import jwt_keys
from meshhook_rt_metrics.localstack.gateway import keys as gateway_keys

PACKAGE = Path(meshhook_rt_metrics.__file__).resolve().parent
PRODUCT = ("api", "alerting", "client")
FORBIDDEN = "meshhook_rt_metrics.localstack"


def imports_in(source: str, package: str) -> list[tuple[int, str]]:
    """Every module a source imports, wherever the import statement is (inside functions and
    ``if TYPE_CHECKING:`` too), relative imports resolved against ``package``: (line, module) pairs, a
    ``from m import n`` giving both ``m`` and ``m.n``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def imported_modules(path: Path) -> list[tuple[int, str]]:
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    return imports_in(path.read_text(encoding="utf-8"), package)


def test_the_walk_sees_lazy_and_relative_imports() -> None:
    source = (
        "def f():\n    from meshhook_rt_metrics.localstack.gateway.keys import JwtKeys\n"
        "from ..localstack import stack\n"
        "import meshhook_rt_metrics.localstack.users as u\n"
        "from . import deps\n"
    )
    names = [name for _, name in imports_in(source, "meshhook_rt_metrics.api")]
    assert "meshhook_rt_metrics.localstack.gateway.keys" in names  # inside a function
    assert "meshhook_rt_metrics.localstack" in names  # relative
    assert "meshhook_rt_metrics.localstack.users" in names
    assert "meshhook_rt_metrics.api.deps" in names


@pytest.mark.parametrize("area", PRODUCT)
def test_product_code_does_not_import_the_local_stack(area: str) -> None:
    files = sorted((PACKAGE / area).rglob("*.py"))
    assert files
    offending = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {name}"
        for path in files
        for line, name in imported_modules(path)
        if name == FORBIDDEN or name.startswith(FORBIDDEN + ".")
    ]
    assert offending == []


def test_the_gateway_and_the_service_share_one_implementation() -> None:
    for name in (
        "JwtKeys",
        "TokenError",
        "Claims",
        "load_or_create_secret",
        "keys_for_state_dir",
        "SECRET_FILE",
    ):
        assert getattr(gateway_keys, name) is getattr(jwt_keys, name), name


def test_the_service_reads_a_state_dirs_secret(tmp_path: Path) -> None:
    from meshhook_rt_metrics.api import ApiSettings
    from meshhook_rt_metrics.api.app import build_verifier

    keys = gateway_keys.keys_for_state_dir(tmp_path)  # as the local stack creates it
    verifier = build_verifier(ApiSettings(state_dir=tmp_path))
    assert verifier.verify(keys.service_role_key).role == "service_role"
