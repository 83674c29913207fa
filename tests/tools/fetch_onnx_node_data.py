"""Fetch the ONNX backend node test data (model.onnx + test_data_set_*/*.pb per case) into a cache.

onnx wheels up to 1.22.0 ship these files under ``onnx/backend/test/data/node/``; the onnx we pin
does not, so this downloads the onnx==1.22.0 wheel with pip (any platform's wheel holds the same
data) and extracts only that folder with zipfile. Idempotent: a stamp file naming the version
makes a second run return at once.

Run: .venv/bin/python tests/tools/fetch_onnx_node_data.py [--dest .cache/onnx-node-data]
Result: DEST/node/<case>/model.onnx, DEST/node/<case>/test_data_set_N/{input,output}_K.pb
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ONNX_VERSION = "1.22.0"
PREFIX = "onnx/backend/test/data/node/"
STAMP_NAME = ".fetched"
DEFAULT_DEST = Path(__file__).resolve().parents[2] / ".cache" / "onnx-node-data"


def fetch(dest: Path, *, version: str = ONNX_VERSION) -> Path:
    """Make ``dest/node`` hold the node test cases of onnx ``version``; returns ``dest/node``."""
    stamp = dest / STAMP_NAME
    node_dir = dest / "node"
    if stamp.is_file() and stamp.read_text().strip() == version and node_dir.is_dir():
        stamp.touch()  # newer than what make compares it with, so make stops asking
        return node_dir
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="onnx-wheel-") as download_dir:
        wheel = _download_wheel(version, Path(download_dir))
        partial = dest / "node.partial"
        shutil.rmtree(partial, ignore_errors=True)
        count = _extract_node_data(wheel, partial)
    shutil.rmtree(node_dir, ignore_errors=True)
    partial.rename(node_dir)
    stamp.write_text(version + "\n")
    print(f"onnx {version} node test data: {count} cases in {node_dir}")
    return node_dir


def _download_wheel(version: str, folder: Path) -> Path:
    # The test data is platform independent; naming one platform makes pip pick a wheel whatever
    # the host (onnx 1.20+ ships manylinux_2_28 wheels only).
    command = [
        sys.executable, "-m", "pip", "download", f"onnx=={version}", "--no-deps",
        "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
        "--platform", "manylinux_2_28_x86_64", "--quiet", "-d", str(folder),
    ]
    subprocess.run(command, check=True)
    wheels = sorted(folder.glob(f"onnx-{version}-*.whl"))
    if not wheels:
        raise SystemExit(f"pip downloaded no onnx {version} wheel into {folder}")
    return wheels[0]


def _extract_node_data(wheel: Path, target: Path) -> int:
    """Extract the files under PREFIX into ``target`` (paths checked to stay inside it)."""
    root = target.resolve()
    cases: set[str] = set()
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.infolist():
            if not member.filename.startswith(PREFIX) or member.is_dir():
                continue
            relative = member.filename[len(PREFIX):]
            destination = (root / relative).resolve()
            if not destination.is_relative_to(root):
                raise SystemExit(f"refusing to extract {member.filename!r} outside {root}")
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(archive.read(member))
            cases.add(relative.split("/", 1)[0])
    if not cases:
        raise SystemExit(f"{wheel.name} holds no {PREFIX} files")
    return len(cases)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST)
    parser.add_argument("--version", default=ONNX_VERSION)
    args = parser.parse_args()
    fetch(args.dest, version=args.version)


if __name__ == "__main__":
    main()
