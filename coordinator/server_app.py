"""The fedge Flower ServerApp: runs the configured strategy and hands every aggregate to the registry."""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from flwr.app import ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp

from coordinator.drift.monitor import release_reference, run_monitor
from coordinator.drift.reference import LINEAGE_KEY, manifest_entry
from coordinator.node_wait import NodeWaitGrid, enrolled_node_names
from coordinator.packaging import package_and_register, warm_up_exporter
from coordinator.privacy import PrivacyBudgetStop, private_strategy, secure_aggregate_dp
from coordinator.prompt_grid import PromptGrid
from coordinator.round_recorder import RoundRecorder, with_round_recording
from coordinator.run_recovery import checkpoint_chain, resume_point
from coordinator.secure_aggregation import run_secure_rounds
from coordinator.strategies import strategy_class, strategy_kwargs
from coordinator.strategy_state import capture as capture_strategy_state
from coordinator.strategy_state import restore as restore_strategy_state
from coordinator.warm_start import resume_from_checkpoint, resumed_strategy_state, warm_start
from fedge.config import FedgeConfig
from fedge.errors import FederationError
from fedge.protocol import config_hash, decode_run_config
from fedge.serde import state_dict_to_arrays
from fedge.tasks import check_dataset, get_task
from fedge.tasks.training import check_model_output
from fedge.version import fedge_version, git_commit
from registry import RunStatus, open_registry

__all__ = ["app", "run_federation"]

log = logging.getLogger(__name__)

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Flower entry point: decode the fedge config and run the federation (or, ``mode=monitor``, the
    drift monitoring windows of the ``production`` version)."""
    _show_fedge_logs()
    config = decode_run_config(context.run_config)
    grid = PromptGrid(grid)  # replies pulled at sub-second intervals, not Flower's 3 s
    if config.mode == "monitor":
        run_monitor(grid=grid, config=config, flower_run_id=context.run_id)
        return
    run_federation(grid=grid, config=config, flower_run_id=context.run_id, context=context)


_FEDGE_LOGGERS = ("coordinator", "registry", "fedge")


def _show_fedge_logs() -> None:
    """fedge's own INFO lines in the run's log.

    In a deployment the ServerApp runs in Flower's ``flwr-serverapp`` process, which mirrors its
    stderr into the run's log; no logging handler is configured there, so only warnings reached
    stderr (through logging's last resort) and lines such as a round's attendance or a release were
    missing. A process whose root logger already has handlers (``fedge simulate``) is left as it is.
    """
    if logging.getLogger().handlers:
        return
    handler = logging.StreamHandler()  # sys.stderr, which Flower mirrors into the run's log
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    for name in _FEDGE_LOGGERS:
        logger = logging.getLogger(name)
        if not logger.handlers:
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)


def run_federation(
    *, grid: Grid, config: FedgeConfig, flower_run_id: int, context: Context | None = None
) -> None:
    """Train for ``strategy.num_rounds`` rounds, checkpointing each, then package the result.

    The final aggregate is exported to ONNX, checked for parity, and registered as a version
    holding the ``candidate`` alias.
    """
    run_id = config.run_id
    task_cfg, strategy_cfg, registry_config = config.task, config.strategy, config.registry
    registry = open_registry(registry_config)
    try:
        registry.store.update_run(run_id, status=RunStatus.RUNNING, flower_run_id=flower_run_id)
        task = get_task(task_cfg.name)
        torch.set_num_threads(1)
        _, holdout = task.split_holdout(task_cfg)
        # Before round 1: a model whose output disagrees with the target fails here, by name.
        check_dataset(task, holdout, where="the held-out set")
        check_model_output(task, task_cfg, holdout.x)
        torch.manual_seed(config.seed)
        model = task.build_model(task_cfg)
        warm = warm_start(registry, model, config.warm_start_from) if config.warm_start_from else None
        # A resumed run (`fedge runs resume`) starts from the interrupted run's last checkpoint.
        resumed = resume_point(registry, config.resume_from) if config.resume_from else None
        if resumed is not None:
            resume_from_checkpoint(registry, model, resumed)
            log.info("resuming run %s after its round %d", config.resume_from, resumed.round)
        central = config.central_evaluation
        resumed_from: dict[str, Any] | None = (
            {"run_id": config.resume_from, "checkpoint_id": resumed.id, "round": resumed.round}
            if resumed is not None
            else None
        )
        lineage = {
            "run_id": run_id,
            "flower_run_id": flower_run_id,
            "strategy": strategy_cfg.name,
            "strategy_params": dict(strategy_cfg.params),
            "config_hash": config_hash(config),
            "task": task_cfg.name,
            "fedge_version": fedge_version(),
            "git_commit": git_commit(),
            "reason": config.reason,
            "warm_start_from": warm,
            "resumed_from": resumed_from,
        }
        if strategy_cfg.secure_aggregation:
            secagg = config.privacy.secagg
            lineage["secure_aggregation"] = {
                "protocol": "secagg+",
                "num_shares": secagg.num_shares,
                "reconstruction_threshold": secagg.reconstruction_threshold,
                "clipping_range": secagg.clipping_range,
                "quantization_range": secagg.quantization_range,
            }
        recorder = RoundRecorder(
            registry=registry,
            run_id=run_id,
            model=task.build_model(task_cfg),
            base_lineage=lineage,
            test_set=holdout if central else None,
            task=task,
            validation=strategy_cfg.validation,
            resumed=resumed,
            strategy_name=strategy_cfg.name,
            destination_of=grid.destination_of if isinstance(grid, PromptGrid) else None,
            node_names=lambda: enrolled_node_names(registry_config.resolved_database_url()),
        )
        if resumed is not None:
            recorder.model.load_state_dict(model.state_dict())
        num_rounds = strategy_cfg.num_rounds - recorder.round_offset
        # The exporter's first use costs seconds of CPU: pay them during the rounds only where a
        # core is free of simulated clients (measured on 2 cores: slower rounds ate the gain).
        reserved = config.simulation.backend_cpus
        warm_up = warm_up_exporter(task, task_cfg) if (os.cpu_count() or 1) > reserved else None
        if strategy_cfg.secure_aggregation:
            if context is None:
                raise FederationError("strategy.secure_aggregation=true runs from the ServerApp's main only")
            # SecAgg+ (docs/privacy.md): Flower's legacy workflow; the recorder gets every unmasked mean.
            privacy, secure_dp = secure_aggregate_dp(config, lineage)
            try:
                run_secure_rounds(
                    grid=grid, context=context, config=config, recorder=recorder,
                    initial_arrays=state_dict_to_arrays(model.state_dict()), dp=secure_dp,
                )  # fmt: skip
            except PrivacyBudgetStop as stop:
                log.warning("%s", stop)
                if not recorder.checkpoints:
                    raise
            return _package(
                grid=grid, config=config, registry=registry, task=task, recorder=recorder, holdout=holdout,
                result=None, warm_up=warm_up, privacy=privacy.entry(),
            )  # fmt: skip
        base_cls = strategy_class(strategy_cfg.name)
        # Differential privacy (docs/privacy.md): Flower's DP wrapper sits inside the recorder, so
        # every checkpoint is the released (noised) aggregate and its lineage says what it spent.
        strategy, privacy = private_strategy(
            config=config,
            strategy_cls=base_cls,
            strategy_kwargs=strategy_kwargs(strategy_cfg, base_cls),
            lineage=lineage,
            record=lambda cls: with_round_recording(cls, recorder),
        )
        recorder.strategy_state = lambda: capture_strategy_state(strategy)
        if resumed is not None and resumed_from is not None:
            # FedAdam's moments, FedAvgM's momentum...: the resumed rounds continue the optimiser.
            state = resumed_strategy_state(registry, resumed)
            resumed_from["strategy_state"] = restore_strategy_state(strategy, state)
        try:
            result = (
                None
                if num_rounds <= 0
                else strategy.start(
                    grid=NodeWaitGrid(
                        grid,
                        required=max(
                            strategy_cfg.min_available_nodes,
                            strategy_cfg.min_train_nodes,
                            strategy_cfg.min_evaluate_nodes,
                        ),
                        limit_s=strategy_cfg.wait_for_nodes_s,
                        names=lambda: enrolled_node_names(registry_config.resolved_database_url()),
                    ),
                    initial_arrays=state_dict_to_arrays(model.state_dict()),
                    num_rounds=num_rounds,
                    timeout=strategy_cfg.round_timeout_s,
                    train_config=ConfigRecord({"lr": task_cfg.lr, "local-epochs": task_cfg.local_epochs}),
                    evaluate_fn=recorder.evaluate_fn,
                )
            )
        except PrivacyBudgetStop as stop:
            # The budget is spent: the rounds trained so far are the release; no round past it runs.
            log.warning("%s", stop)
            if not recorder.checkpoints:
                raise
            result = None
        _package(
            grid=grid, config=config, registry=registry, task=task, recorder=recorder, holdout=holdout,
            result=result, warm_up=warm_up, privacy=privacy.entry(),
        )  # fmt: skip
    except BaseException as exc:
        registry.store.update_run(run_id, error=f"{type(exc).__name__}: {exc}")
        raise
    finally:
        registry.close()


def _package(
    *,
    grid: Grid,
    config: FedgeConfig,
    registry: Any,
    task: Any,
    recorder: RoundRecorder,
    holdout: Any,
    result: Any,
    warm_up: Any,
    privacy: dict[str, Any],
) -> None:
    """Export, sign and register the last checkpoint's model as the run's ``candidate`` version."""
    run_id, task_cfg, strategy_cfg = config.run_id, config.task, config.strategy
    registry_config = config.registry
    final = recorder.checkpoints[-1] if recorder.checkpoints else recorder.resumed
    if final is None:
        raise RuntimeError("no round completed: no checkpoint to package")
    if warm_up is not None:
        warm_up.join()
    if result is not None:
        recorder.model.load_state_dict(result.arrays.to_torch_state_dict())
    final_arrays = state_dict_to_arrays(recorder.model.state_dict())
    drift = config.drift
    reference = (
        release_reference(
            grid, settings=drift, task=task, model_arrays=final_arrays, public_rows=holdout.x,
            model_name=task.name, min_nodes=strategy_cfg.min_available_nodes,
        )
        if drift.enabled
        else None
    )  # fmt: skip
    packaged = package_and_register(
        registry=registry,
        task=task,
        task_config=task_cfg,
        model=recorder.model,
        reference_rows=holdout.x,
        reference_labels=holdout.y,
        signing_key_path=registry_config.resolved_signing_key(),
        run_id=run_id,
        checkpoint_id=final.id,
        metrics=dict(final.metrics),
        lineage={
            **final.lineage,
            # every round's checkpoint, through the runs this one resumed
            "checkpoint_ids": checkpoint_chain(registry, final),
            "privacy": privacy,
            **({LINEAGE_KEY: reference.to_dict()} if reference is not None else {}),
        },
        drift=manifest_entry(reference) if reference is not None else None,
    )
    log.info(
        "registered %s:%d as candidate (onnx parity %.2e)",
        packaged.version.name,
        packaged.version.number,
        packaged.parity.max_abs_diff,
    )
