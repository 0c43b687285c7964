"""Registry benchmarks: releasing a ~1M-parameter model, and what int8 costs in size and accuracy.

Sections (each a function of the parsed arguments that prints its tables and returns its goals):

- ``packaging``: a ~1M-parameter digits MLP (untrained; timing does not depend on the weights) goes
  through export_onnx (cold, i.e. the first export in this process, and warm), check_parity on 257
  rows (as the coordinator does), quantize_int8, build + sign the manifest, and storing the weights,
  both models, manifest and signature in a temporary registry plus register_version. Reported in
  seconds per step; the release total is warm export + parity + quantize + sign + store/register
  (the ServerApp warms the exporter up during the rounds), also given with the cold export.
  Assembling and verifying the bundle is timed too (what an edge device pays), outside the total.
- ``int8``: the standard digits MLP and the ~1M MLP are trained on the pool split, exported, and
  quantized; fp32 and int8 ONNX accuracy on the held-out split come from onnxruntime (int8 both in
  one batch of all held-out rows and row by row, since activations are quantized per batch).
  Goals: the 1M model's int8 file >= 3.5x smaller, <= 1 point accuracy drop on both models.

- ``audit``: the audit log as a transparency log on SQLite: append p50 (chain, Merkle nodes and a
  signed tree head per entry, committed) on a log of ``--audit-entries`` entries, the time of what
  ``fedge audit verify --trusted-head`` does over all of them (read, chain, tree rebuilt from the
  entries, head signature, consistency from the trusted head), and the consistency proof from an
  old head (the registry's side from stored nodes, and a witness verifying it). Goals: append p50
  < 2 ms, verify < 5 s, proof < 50 ms. The log is bulk-filled with the registry's own hashing.

    python benchmarks/registry_bench.py [--sections packaging,int8,lookups,audit] [--epochs 20]

Add a section by writing ``bench_NAME(args) -> list[Goal]`` and one line in :data:`SECTIONS`.
(Named ``registry_bench.py``, not ``registry.py``: a script's folder comes first on ``sys.path``, and a
``registry.py`` there shadows the ``registry`` package for every benchmark in the folder.)
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

PARAMETER_TARGET = 1_000_000
SIZE_RATIO_GOAL = 3.5
ACCURACY_DROP_GOAL_POINTS = 1.0
PARITY_ROWS = 257  # coordinator.packaging.PARITY_ROWS
DIGITS_PREPROCESSING = {"features": "8x8 pixel intensities 0-16 divided by 16, row-major", "range": [0, 1]}


@dataclass(frozen=True)
class Goal:
    """One figure a section checks against its goal."""

    section: str
    figure: str
    value: str
    target: str
    met: bool


def _console() -> Any:
    from rich.console import Console

    # Wide enough for the tables when stdout is a file or a pipe (rich would assume 80 columns).
    return Console() if sys.stdout.isatty() else Console(width=140)


def _goal(ok: bool) -> str:
    return "[green]met[/]" if ok else "[red]missed[/]"


def _hidden_for(parameters: int, num_features: int = 64, num_classes: int = 10) -> int:
    """Hidden width of ``MLP(num_features, num_classes, hidden)`` closest to ``parameters``.

    The MLP has ``h^2 + (num_features + num_classes + 2) h + num_classes`` parameters.
    """
    b = num_features + num_classes + 2
    root = (-b + (b * b + 4 * (parameters - num_classes)) ** 0.5) / 2
    return min((int(root), int(root) + 1), key=lambda h: abs(h * h + b * h + num_classes - parameters))


def _wide_mlp() -> tuple[Any, int]:
    import torch

    from fedge.tasks.models import MLP

    torch.manual_seed(0)
    model = MLP(64, 10, hidden=_hidden_for(PARAMETER_TARGET))
    return model, sum(p.numel() for p in model.parameters())


def bench_packaging(args: argparse.Namespace) -> list[Goal]:
    """Time each step of releasing a ~1M-parameter model into a temporary registry."""
    import torch
    from rich.table import Table

    from fedge.crypto import generate_private_key, key_id, sign
    from fedge.release_format import INT8_MODEL, MODEL
    from fedge.serde import state_dict_to_safetensors
    from fedge.tasks import TaskConfig, get_task
    from registry import (
        ModelVersion,
        ModelVersionCreate,
        RegistryConfig,
        check_parity,
        export_onnx,
        open_registry,
    )
    from registry.bundle import (
        Release,
        assemble_bundle,
        bind_identity,
        build_manifest,
        canonical_manifest_bytes,
        store_release,
        verify_bundle,
    )
    from registry.quantize import quantize_int8

    console = _console()
    torch.set_num_threads(1)  # as the ServerApp does; two threads on two shared cores ran 5-10x slower
    model, count = _wide_mlp()
    _, holdout = get_task("digits").split_holdout(TaskConfig())
    rows = np.resize(holdout.x, (PARITY_ROWS, 64)).astype(np.float32)
    private_key = generate_private_key()
    console.print(
        f"[bold]packaging[/]: MLP(64, 10, hidden={model.net[0].out_features}), {count:,} parameters"
    )

    steps: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        out = fn()
        steps[name] = time.perf_counter() - start
        return out

    timed("export_onnx (cold: first export in this process)", lambda: export_onnx(model, 64))
    onnx_bytes = timed("export_onnx (warm)", lambda: export_onnx(model, 64))
    parity = timed(f"check_parity ({PARITY_ROWS} rows)", lambda: check_parity(model, onnx_bytes, rows))
    int8_bytes = timed("quantize_int8", lambda: quantize_int8(onnx_bytes))
    with tempfile.TemporaryDirectory(prefix="fedge-bench-registry-") as tmp:
        registry = open_registry(RegistryConfig(root=tmp))
        try:
            weights = state_dict_to_safetensors(model.state_dict(), {"task": "digits"})
            stored = timed(
                "store weights + onnx",
                lambda: (
                    registry.put_artifact("weights", weights),
                    registry.put_artifact("onnx", onnx_bytes),
                ),
            )
            draft = ModelVersionCreate(
                name="digits-1m",
                run_id=None,
                checkpoint_id=None,
                artifacts=stored,
                metrics={"onnx-parity-max-abs-diff": parity.max_abs_diff},
                lineage={"task": "digits", "strategy": "none (benchmark)"},
                model_config={"task": "digits", "hidden": model.net[0].out_features},
            )

            def build_and_sign() -> tuple[bytes, bytes]:
                manifest = build_manifest(
                    version=draft,
                    onnx_bytes=onnx_bytes,
                    int8_bytes=int8_bytes,
                    reference_inputs=holdout.x[:4],
                    preprocessing=DIGITS_PREPROCESSING,
                    signer_key_id=key_id(private_key.public_key()),
                )
                data = canonical_manifest_bytes(manifest)
                return data, sign(private_key, data)

            manifest_bytes, signature = timed("build + sign manifest", build_and_sign)

            def store_and_register() -> ModelVersion:
                # As release_version does: the manifest is signed again with the version's
                # identity inside the registration's transaction, then stored with the int8 model.
                draft_release = Release(
                    json.loads(manifest_bytes),
                    manifest_bytes,
                    signature,
                    {MODEL: onnx_bytes, INT8_MODEL: int8_bytes},
                )
                return registry.register_version(
                    draft,
                    attach=lambda identity: store_release(
                        registry, bind_identity(draft_release, identity, private_key)
                    ),
                )

            version = timed("store int8 + manifest + sig, register_version", store_and_register)
            bundle = timed("assemble_bundle", lambda: assemble_bundle(registry, version))
            timed(
                "verify_bundle (offline, what an edge device pays)",
                lambda: verify_bundle(bundle, private_key.public_key()),
            )
        finally:
            registry.close()

    outside = ("export_onnx (cold", "assemble", "verify")
    total = sum(v for k, v in steps.items() if not k.startswith(outside))
    table = Table(title=f"release of a {count:,}-parameter model (seconds)")
    table.add_column("step")
    table.add_column("s", justify="right")
    for name, seconds in steps.items():
        table.add_row(name, f"{seconds:.3f}")
    cold = total - steps["export_onnx (warm)"] + steps["export_onnx (cold: first export in this process)"]
    table.add_row("[bold]release total[/] (warm export .. register_version)", f"[bold]{total:.3f}[/]")
    table.add_row("release total with the cold export instead", f"{cold:.3f}")
    console.print(table)
    console.print(
        f"  fp32 {len(onnx_bytes):,} B, int8 {len(int8_bytes):,} B, bundle {len(bundle):,} B, "
        f"manifest {len(manifest_bytes):,} B; parity max abs diff {parity.max_abs_diff:.2e}"
    )
    return [
        Goal("packaging", "release total s (1M params, warm exporter)", f"{total:.2f}", "report", True),
        Goal("packaging", "release total s (1M params, cold exporter)", f"{cold:.2f}", "report", True),
    ]


def _onnx_accuracy(
    onnx_bytes: bytes, x: np.ndarray, y: np.ndarray, *, row_by_row: bool
) -> tuple[float, np.ndarray]:
    """Held-out accuracy of an ONNX model in onnxruntime, one batch or one row at a time."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    session = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    x = np.ascontiguousarray(x, dtype=np.float32)
    if row_by_row:
        predicted = np.array([session.run(None, {name: x[i : i + 1]})[0].argmax(1)[0] for i in range(len(x))])
    else:
        predicted = session.run(None, {name: x})[0].argmax(1)
    return float(np.mean(predicted == y)), predicted


def bench_int8(args: argparse.Namespace) -> list[Goal]:
    """Size ratio and held-out accuracy drop of int8 against fp32, on trained digits MLPs."""
    import torch
    from rich.table import Table

    from fedge.tasks import TaskConfig, get_task
    from fedge.tasks.training import train_model
    from registry import export_onnx
    from registry.quantize import quantize_int8

    console = _console()
    torch.set_num_threads(1)
    task = get_task("digits")
    config = TaskConfig()
    pool, holdout = task.split_holdout(config)
    torch.manual_seed(0)
    wide, wide_count = _wide_mlp()
    candidates = [
        (f"MLP h={config.hidden}", task.build_model(config), config.lr),
        (f"MLP h={wide.net[0].out_features}", wide, 0.05),
    ]
    console.print(
        f"[bold]int8[/]: training on {len(pool)} rows for {args.epochs} epochs, "
        f"held-out split {len(holdout)} rows"
    )
    table = Table(title="int8 vs fp32 ONNX on the digits held-out split (onnxruntime)")
    columns = ("model", "params", "train s", "fp32 KB", "int8 KB", "ratio", "acc fp32")
    columns += ("acc int8", "acc int8 1-row", "drop pts", "agree")
    for column in columns:
        table.add_column(column, justify="left" if column == "model" else "right", no_wrap=True)
    goals: list[Goal] = []
    for label, model, lr in candidates:
        count = sum(p.numel() for p in model.parameters())
        start = time.perf_counter()
        train_model(
            model, pool, epochs=args.epochs, lr=lr, batch_size=config.batch_size, momentum=config.momentum
        )
        train_s = time.perf_counter() - start
        fp32 = export_onnx(model, task.input_spec.shape)
        int8 = quantize_int8(fp32)
        fp32_acc, fp32_pred = _onnx_accuracy(fp32, holdout.x, holdout.y, row_by_row=False)
        batch_acc, batch_pred = _onnx_accuracy(int8, holdout.x, holdout.y, row_by_row=False)
        row_acc, _ = _onnx_accuracy(int8, holdout.x, holdout.y, row_by_row=True)
        drop = 100 * (fp32_acc - min(batch_acc, row_acc))
        ratio = len(fp32) / len(int8)
        table.add_row(
            label,
            f"{count:,}",
            f"{train_s:.1f}",
            f"{len(fp32) / 1024:,.0f}",
            f"{len(int8) / 1024:,.0f}",
            f"{ratio:.2f}x",
            f"{100 * fp32_acc:.2f}%",
            f"{100 * batch_acc:.2f}%",
            f"{100 * row_acc:.2f}%",
            f"{drop:+.2f}",
            f"{100 * float(np.mean(batch_pred == fp32_pred)):.2f}%",
        )
        goals.append(
            Goal(
                "int8",
                f"accuracy drop, {label}, points",
                f"{drop:+.2f}",
                f"<= {ACCURACY_DROP_GOAL_POINTS}",
                drop <= ACCURACY_DROP_GOAL_POINTS,
            )
        )
        if count == wide_count:
            goals.append(
                Goal(
                    "int8",
                    f"size fp32/int8, {label}",
                    f"{ratio:.2f}x",
                    f">= {SIZE_RATIO_GOAL}x",
                    ratio >= SIZE_RATIO_GOAL,
                )
            )
    console.print(table)
    console.print(
        "  acc int8: all held-out rows in one run; 1-row: one row per run (activation scales are per "
        "batch)\n  drop = fp32 accuracy - the worse of the two int8 figures; agree = argmax agreement"
    )
    return goals


def _fill(store: Any, *, versions: int, models: int) -> None:
    """Bulk-insert ``versions`` versions (2 artifacts each) over ``models`` model names, with aliases."""
    from sqlalchemy import insert

    from registry.tables import AliasRow, ModelVersionRow, RunRow, VersionArtifactRow

    engine = store._engine  # bulk insert through the store's own engine (100k ORM writes take minutes)
    now = datetime.now(UTC)
    chunk = 10_000
    with engine.begin() as conn:
        conn.execute(
            insert(RunRow),
            [
                {
                    "run_id": "bench",
                    "task": "digits",
                    "strategy": "fedavg",
                    "num_rounds": 1,
                    "status": "completed",
                    "config": {},
                    "config_hash": "0" * 64,
                    "reason": "bench",
                    "mode": "simulation",
                    "created_at": now,
                }
            ],
        )
        for start in range(0, versions, chunk):
            ids = range(start + 1, min(start + chunk, versions) + 1)
            conn.execute(
                insert(ModelVersionRow),
                [
                    {
                        "id": i,
                        "name": f"model-{i % models}",
                        "number": i // models + 1,
                        "run_id": "bench",
                        "metrics": {"central-accuracy": 0.9},
                        "lineage": {"nodes": []},
                        "model_config": {},
                        "description": "",
                        "created_at": now,
                    }
                    for i in ids
                ],
            )
            conn.execute(
                insert(VersionArtifactRow),
                [
                    {"version_id": i, "kind": kind, "sha256": f"{i:064x}", "size": 1000, "media_type": "x"}
                    for i in ids
                    for kind in ("onnx", "weights")
                ],
            )
        conn.execute(
            insert(AliasRow),
            [
                {
                    "name": f"model-{m}",
                    "alias": alias,
                    "version_id": versions - ((versions - m) % models),
                    "updated_at": now,
                }
                for m in range(1, models)
                for alias in ("candidate", "production")
            ],
        )


def _p50_ms(fn: Callable[[], Any], repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return float(np.median(samples))


def bench_lookups(args: argparse.Namespace) -> list[Goal]:
    """Alias lookup and version listing p50 on SQLite with 100k versions vs 1k (same run)."""
    import tempfile

    from rich.table import Table

    from registry import SqlRegistryStore

    console = _console()
    table = Table(title="registry lookups on SQLite (p50 ms)")
    for col in ("versions", "fill s", "get_alias", "list 100 newest", "list 100 of one model", "by number"):
        table.add_column(col, justify="right")
    results: dict[int, dict[str, float]] = {}
    for versions in (1_000, args.versions):
        with tempfile.TemporaryDirectory(prefix="fedge-bench-lookups-") as tmp:
            store = SqlRegistryStore.from_url(f"sqlite:///{tmp}/registry.db")
            models = 100
            t = time.perf_counter()
            _fill(store, versions=versions, models=models)
            fill = time.perf_counter() - t
            rng = np.random.default_rng(0)
            names = [f"model-{m}" for m in rng.integers(1, models, 64)]
            it = iter(names * 100)

            def alias(store: Any = store, it: Any = it) -> Any:
                return store.get_alias(next(it), "production")

            def newest(store: Any = store) -> Any:
                return store.list_versions(limit=100)

            def of_model(store: Any = store, it: Any = it) -> Any:
                return store.list_versions(name=next(it), limit=100)

            def by_number(store: Any = store, it: Any = it) -> Any:
                return store.get_version_by_number(next(it), 3)

            r = {
                "get_alias": _p50_ms(alias, 300),
                "list": _p50_ms(newest, 50),
                "list_name": _p50_ms(of_model, 50),
                "number": _p50_ms(by_number, 300),
            }
            store.close()
        results[versions] = r
        table.add_row(
            f"{versions:,}",
            f"{fill:.1f}",
            f"{r['get_alias']:.2f}",
            f"{r['list']:.2f}",
            f"{r['list_name']:.2f}",
            f"{r['number']:.2f}",
        )
    big, small = results[args.versions], results[1_000]
    table.add_row(
        "ratio", "", *(f"{big[k] / small[k]:.2f}x" for k in ("get_alias", "list", "list_name", "number"))
    )
    console.print(table)
    return [
        Goal(
            "lookups",
            f"alias lookup p50 ms, {args.versions:,} versions",
            f"{big['get_alias']:.2f}",
            "< 5",
            big["get_alias"] < 5,
        ),
        Goal(
            "lookups",
            f"list 100 versions p50 ms, {args.versions:,} versions",
            f"{big['list']:.2f}",
            "< 5",
            big["list"] < 5,
        ),
        Goal(
            "lookups", "list 100 of one model p50 ms", f"{big['list_name']:.2f}", "< 5", big["list_name"] < 5
        ),
    ]


def _fill_audit(store: Any, signer: Any, entries: int, *, old_size: int) -> Any:
    """Bulk-insert ``entries`` audit entries with their chain hashes, tree nodes and a signed head.

    Returns the head a witness would have kept when the log held ``old_size`` entries.
    """
    from sqlalchemy import insert, update

    from fedge.transparency import MemoryNodes, leaf_hash, sign_tree_head, tree_root
    from registry.audit import GENESIS_HASH, entry_hash, leaf_data
    from registry.tables import AuditHeadRow, AuditRow, AuditTreeHeadRow, AuditTreeNodeRow

    prev, tree, rows = GENESIS_HASH, MemoryNodes(), []
    now = datetime.now(UTC).isoformat(timespec="microseconds")
    for seq in range(1, entries + 1):
        row: dict[str, Any] = {
            "seq": seq,
            "created_at": now,
            "actor": "bench",
            "action": "alias.moved",
            "subject": f"model-{seq % 100}@production",
            "details": {"from_version_id": seq - 1, "to_version_id": seq, "reason": "bench"},
        }
        row["prev_hash"], row["hash"] = prev, entry_hash(prev_hash=prev, **row)
        prev = row["hash"]
        tree.append(leaf_hash(leaf_data(row)))
        rows.append(row)
        if seq == old_size:
            old = sign_tree_head(signer(), seq, tree_root(seq, tree))
    head = sign_tree_head(signer(), entries, tree_root(entries, tree))
    nodes = [{"level": lvl, "idx": idx, "hash": h.hex()} for (lvl, idx), h in tree.store.items()]
    with store.engine.begin() as conn:
        for start in range(0, entries, 10_000):
            conn.execute(insert(AuditRow), rows[start : start + 10_000])
        for start in range(0, len(nodes), 20_000):
            conn.execute(insert(AuditTreeNodeRow), nodes[start : start + 20_000])
        conn.execute(update(AuditHeadRow).where(AuditHeadRow.id == 1).values(seq=entries, hash=prev))  # type: ignore[arg-type]
        conn.execute(
            insert(AuditTreeHeadRow),
            [{"id": 1, **{k: v for k, v in head.to_dict().items() if k != "format"}}],
        )
    return old


def bench_audit(args: argparse.Namespace) -> list[Goal]:
    """Audit append p50, full verify and consistency-proof times with the transparency log."""
    import tempfile

    from rich.table import Table

    from fedge.config import RegistryConfig
    from fedge.crypto import load_public_key, public_key_path_for
    from fedge.transparency import SignedTreeHead, verify_consistency
    from registry import open_registry
    from registry.audit import verify_log

    console = _console()
    entries = args.audit_entries
    with tempfile.TemporaryDirectory(prefix="fedge-bench-audit-") as tmp:
        config = RegistryConfig(root=tmp)
        registry = open_registry(config)
        store: Any = registry.store  # the SQL store: its signer and engine
        t = time.perf_counter()
        old = _fill_audit(store, store.head_signer, entries - 200, old_size=1_000)
        fill = time.perf_counter() - t
        n = iter(range(10**9))
        append = _p50_ms(
            lambda: store.append_audit(
                action="alias.moved", actor="bench", subject=f"s{next(n)}", details={"i": 1}
            ),
            200,
        )
        total = store.audit_head()[0]
        key = load_public_key(public_key_path_for(config.resolved_signing_key()))
        trusted = SignedTreeHead.from_dict(old.to_dict())

        def verify() -> Any:
            seq, head_hash = store.audit_head()
            return verify_log(
                store.list_audit(),
                head_seq=seq,
                head_hash=head_hash,
                signed_head=store.signed_audit_head(sign_if_stale=False),
                public_key=key,
                trusted_head=trusted,
            )

        t = time.perf_counter()
        result = verify()
        verify_s = time.perf_counter() - t
        current = store.signed_audit_head(sign_if_stale=False)
        assert result.ok and current is not None, result.reason

        def prove_and_check() -> None:
            proof = store.audit_consistency(trusted.tree_size, current.tree_size)
            assert verify_consistency(trusted.tree_size, current.tree_size, trusted.root, current.root, proof)

        proof_ms = _p50_ms(prove_and_check, 50)
        registry.close()
    table = Table(title=f"audit transparency log on SQLite ({total:,} entries)")
    for col in ("bulk fill s", "append p50 ms", "verify s", "proof from 1,000 p50 ms"):
        table.add_column(col, justify="right")
    table.add_row(f"{fill:.1f}", f"{append:.2f}", f"{verify_s:.2f}", f"{proof_ms:.2f}")
    console.print(table)
    return [
        Goal("audit", f"append p50 ms, {total:,} entries", f"{append:.2f}", "< 2", append < 2),
        Goal("audit", f"audit verify s, {total:,} entries", f"{verify_s:.2f}", "< 5", verify_s < 5),
        Goal("audit", "consistency proof from an old head ms", f"{proof_ms:.2f}", "< 50", proof_ms < 50),
    ]


# The benchmark's sections, run in this order; add one with a line here.
SECTIONS: list[tuple[str, Callable[[argparse.Namespace], list[Goal]]]] = [
    ("packaging", bench_packaging),
    ("int8", bench_int8),
    ("lookups", bench_lookups),
    ("audit", bench_audit),
]


def main(argv: list[str] | None = None) -> int:
    names = [name for name, _ in SECTIONS]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default=",".join(names), help=f"comma-separated, of {', '.join(names)}")
    parser.add_argument("--epochs", type=int, default=20, help="training epochs of the int8 section's models")
    parser.add_argument("--versions", type=int, default=100_000, help="versions in the lookups section")
    parser.add_argument("--audit-entries", type=int, default=100_000, help="entries in the audit section")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {names}")
    logging.basicConfig(level=logging.WARNING)
    # torch warns once per op that torchvision is absent during export; expected, not actionable.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)

    from rich.table import Table

    console = _console()
    goals: list[Goal] = []
    start = time.perf_counter()
    for name, section in SECTIONS:
        if name in chosen:
            goals.extend(section(args))
    summary = Table(title="goals")
    for column in ("section", "figure", "value", "goal"):
        summary.add_column(column, justify="right" if column == "value" else "left")
    for g in goals:
        summary.add_row(
            g.section, g.figure, g.value, g.target if g.target == "report" else f"{g.target} {_goal(g.met)}"
        )
    summary.add_row("", "benchmark total s", f"{time.perf_counter() - start:.1f}", "")
    console.print(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
