"""scripts/install-system-deps.sh, which `make test` and `make up` run first: it installs what is missing
as root or through sudo, stops at once with the command to run when it cannot, and does nothing when all
is there. Debian's tools are replaced by shims on PATH (the test must not install anything)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "install-system-deps.sh"


def shim(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/bash\n{body}\n")
    path.chmod(0o755)


def run(tmp_path: Path, *, installed: bool, uid: int, sudo: bool) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / "calls"
    status = "install ok installed" if installed else "unknown ok not-installed"
    shim(bin_dir, "dpkg-query", f"printf '{status}'")
    shim(bin_dir, "id", f"echo {uid}")
    shim(bin_dir, "apt-get", f'echo "apt-get $*" >> {log}')
    shim(bin_dir, "npm", "true")
    if sudo:
        shim(
            bin_dir,
            "sudo",
            f'if [[ $1 == -n && $2 == true ]]; then exit 0; fi; shift; echo "sudo" >> {log}; "$@"',
        )
    path = f"{bin_dir}:/usr/bin:/bin"
    if not sudo:  # hide the machine's own sudo, if it has one
        path = f"{bin_dir}:{tmp_path / 'empty'}"
        (tmp_path / "empty").mkdir(exist_ok=True)
        for tool in ("bash", "grep", "printf", "echo", "true", "cat"):
            real = next((Path(d) / tool for d in ("/usr/bin", "/bin") if (Path(d) / tool).exists()), None)
            if real is not None and not (bin_dir / tool).exists():
                (bin_dir / tool).symlink_to(real)
    env = {**os.environ, "PATH": path}
    return subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, check=False)


def calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "calls"
    return log.read_text().splitlines() if log.exists() else []


def test_nothing_happens_when_everything_is_installed(tmp_path: Path) -> None:
    result = run(tmp_path, installed=True, uid=1000, sudo=False)
    assert result.returncode == 0
    assert "all present" in result.stdout
    assert calls(tmp_path) == []


def test_root_installs_what_is_missing(tmp_path: Path) -> None:
    result = run(tmp_path, installed=False, uid=0, sudo=False)
    assert result.returncode == 0, result.stderr
    assert calls(tmp_path)[0] == "apt-get update -q"
    assert calls(tmp_path)[1].startswith("apt-get install -y -q --no-install-recommends postgresql-15 ")
    assert "chromium" in calls(tmp_path)[1]


def test_a_user_with_sudo_installs_through_it(tmp_path: Path) -> None:
    result = run(tmp_path, installed=False, uid=1000, sudo=True)
    assert result.returncode == 0, result.stderr
    assert calls(tmp_path)[:2] == ["sudo", "apt-get update -q"]


def test_without_root_or_sudo_it_stops_at_once_naming_the_command(tmp_path: Path) -> None:
    result = run(tmp_path, installed=False, uid=1000, sudo=False)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "missing Debian packages: postgresql-15" in lines[0]
    assert lines[0].endswith(f"run: sudo {SCRIPT}")
    assert calls(tmp_path) == []
