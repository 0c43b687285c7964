"""An edge process loads a bundle and serves it without importing torch, flwr, sklearn or registry."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from fedge.crypto import generate_private_key, save_public_key
from fedge.tasks import TaskConfig, get_task
from registry import ModelVersionCreate, export_onnx
from registry.bundle import prepare_release, write_bundle

CHILD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from fastapi.testclient import TestClient
    from edge import ModelRuntime, ModelSlot, create_serving_app
    from fedge.crypto import load_public_key

    runtime = ModelRuntime.from_bundle_file(sys.argv[1], load_public_key(sys.argv[2]), "int8", "v1")
    out = runtime.predict(runtime.validate(np.full((2, 64), 0.5)))
    with TestClient(create_serving_app(ModelSlot(runtime), batching=True)) as client:
        status = client.post("/v1/predict", json={"rows": [[0.5] * 64]}).status_code
    heavy = ("torch", "flwr", "sklearn", "registry", "coordinator", "client")
    heavy = sorted(m for m in heavy if m in sys.modules)
    print(json.dumps({"shape": list(out.shape), "status": status, "heavy": heavy}))
    """
)


def test_edge_serves_a_bundle_without_heavy_imports(tmp_path: Path) -> None:
    torch.manual_seed(0)
    task = get_task("digits")
    cfg = TaskConfig(hidden=8)
    onnx_bytes = export_onnx(task.build_model(cfg), task.input_spec.shape)
    key = generate_private_key()
    release = prepare_release(
        version=ModelVersionCreate("digits", "run-1", 1, (), {}, {}, {}),
        onnx_bytes=onnx_bytes,
        private_key=key,
        reference_inputs=task.split_holdout(cfg)[1].x,
        preprocessing={"features": list(task.input_spec.feature_names), "value_range": [0.0, 1.0]},
    )
    bundle = write_bundle(
        tmp_path / "d.bundle", manifest=release.manifest, signature=release.signature, files=release.files
    )
    public = save_public_key(key.public_key(), tmp_path / "signer.pub")

    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(bundle), str(public)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],  # the checkout's packages, as pytest imports them
        check=False,
    )

    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"shape": [2, 10], "status": 200, "heavy": []}
