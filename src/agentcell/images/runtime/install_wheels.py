"""Unpack wheels into one import directory with the standard library (no pip needed).

Usage: python3 install_wheels.py WHEEL_DIR TARGET_DIR

Importable files only: a wheel's ``*.data/purelib`` and ``*.data/platlib`` land in the
target like its top level; its scripts, headers and data are not installed.
"""

from __future__ import annotations

import shutil
import sys
import zipfile
from pathlib import Path, PurePosixPath


def unpack(wheel: Path, target: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            member = PurePosixPath(info.filename)
            if member.is_absolute() or ".." in member.parts:
                raise SystemExit(f"install_wheels: {wheel.name}: unsafe path {info.filename}")
            if info.is_dir():
                continue
            parts = member.parts
            if parts[0].endswith(".data"):
                if len(parts) < 3 or parts[1] not in ("purelib", "platlib"):
                    continue
                parts = parts[2:]
            destination = target.joinpath(*parts)
            destination.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as source, destination.open("wb") as sink:
                shutil.copyfileobj(source, sink)


def main(argv: list[str]) -> int:
    wheel_dir, target = Path(argv[1]), Path(argv[2])
    wheels = sorted(wheel_dir.glob("*.whl"))
    if not wheels:
        print(f"install_wheels: no wheels in {wheel_dir}", file=sys.stderr)
        return 1
    for wheel in wheels:
        unpack(wheel, target)
        print(f"install_wheels: {wheel.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
