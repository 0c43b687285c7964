"""Hydra composition of the YAML groups in ``configs/`` into a validated :class:`FedgeConfig`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedge.config.schemas import FedgeConfig
from fedge.config.validation import validate_config
from fedge.errors import ConfigError, UnknownStrategyError, UnknownTaskError

__all__ = ["CONFIG_DIR", "load_config", "refuse_interpolations"]

# configs/ is installed beside the packages (as data), both in a checkout and in site-packages.
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def load_config(
    overrides: list[str] | None = None, *, config_dir: Path | None = None, config_name: str = "config"
) -> FedgeConfig:
    """Compose ``configs/<config_name>.yaml`` with Hydra overrides and check it against the schema.

    Hydra is imported here, not at module import, so the kernel stays light for the edge.

    Raises
    ------
    UnknownTaskError, UnknownStrategyError
        For a group option that does not exist (``task=nope``).
    ConfigError
        For an unknown key, a wrong type, or a value out of range; the message names the key.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException, MissingConfigException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    overrides = list(overrides or [])
    refuse_interpolations(overrides)
    folder = config_dir or CONFIG_DIR
    if not (folder / f"{config_name}.yaml").is_file():
        names = sorted(p.stem for p in folder.glob("*.yaml"))
        raise ConfigError(f"unknown config {config_name!r}: choose one of {', '.join(names)}")
    overrides = _task_references(overrides, folder)
    _check_group_choices(overrides, folder)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(folder), version_base="1.3"):
            composed = compose(config_name=config_name, overrides=overrides)
        schema = OmegaConf.structured(FedgeConfig)
        if OmegaConf.select(composed, "registry.gates.aliases") is not None:
            # The YAML states the gates: let it (and `~registry.gates...` deletions) be the whole
            # truth rather than a key-wise merge over the schema's default gates.
            schema.registry.gates.aliases = {}
        _refuse_composed_interpolations(composed)  # what the override grammar could still smuggle in
        merged = OmegaConf.merge(schema, composed)
        config: FedgeConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except MissingConfigException as exc:
        raise ConfigError(_first_line(str(exc))) from None
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(_describe_omegaconf_error(exc)) from None
    finally:
        GlobalHydra.instance().clear()
    if not config.task.model and config.task.name:
        # configs/task/custom.yaml leaves the model to the task: its first declared one.
        from fedge.tasks import get_task

        config.task.model = get_task(config.task.name).models[0]
    validate_config(config)
    return config


def refuse_interpolations(overrides: list[str]) -> None:
    """Refuse any override whose value holds an interpolation (``${...}``): overrides are data.

    OmegaConf would resolve ``task.name=${oc.env:PATH}`` while building the config, and a later
    error naming the value would hand the server's environment to whoever sent the override. The
    refusal names the key only; nothing is resolved and the value is not echoed.

    Raises
    ------
    ConfigError
        Naming the override's key.
    """
    for item in overrides:
        key, sep, value = item.partition("=")
        if "${" in value or "${" in key:
            shown = _shown_key(key) if sep else "<override>"
            raise ConfigError(
                f"override {shown}: interpolations (${{...}}) are not allowed in overrides; "
                "give the value itself"
            )


def _shown_key(key: str) -> str:
    key = key.strip()
    plain = all(c.isalnum() or c in "._-+~/@[]" for c in key) and len(key) <= 200
    return repr(key) if plain else "<override>"


def _refuse_composed_interpolations(node: Any, key: str = "") -> None:
    """Refuse an interpolation anywhere in the composed (unresolved) config, naming its key."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(node, DictConfig):
        items: Any = ((str(k), k) for k in node)
    elif isinstance(node, ListConfig):
        items = ((f"[{i}]", i) for i in range(len(node)))
    else:
        return
    for name, index in items:
        full = f"{key}{name}" if name.startswith("[") or not key else f"{key}.{name}"
        if OmegaConf.is_interpolation(node, index):
            raise ConfigError(
                f"config key {full!r}: interpolations (${{...}}) are not allowed; give the value itself"
            )
        _refuse_composed_interpolations(node._get_node(index), full)


def _task_references(overrides: list[str], config_dir: Path) -> list[str]:
    """``task=pkg.mod:Class`` or ``task=<entry point>``: the generic task group with that name.

    A task without a YAML file of its own (a user's task, found by import path or through the
    ``fedge.tasks`` entry points) takes ``configs/task/custom.yaml``'s training settings.
    """
    from fedge.tasks.catalog import BUILTIN_TASKS, ENTRY_POINT_GROUP

    options = {p.stem for p in (config_dir / "task").glob("*.yaml")}
    out = []
    for item in overrides:
        key, sep, value = item.partition("=")
        if sep and key.lstrip("+~") == "task" and value not in options and "custom" in options:
            from importlib import metadata

            installed = {ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
            if ":" in value or (value in installed and value not in BUILTIN_TASKS):
                out += ["task=custom", f"task.name={value}"]
                continue
        out.append(item)
    return out


def _check_group_choices(overrides: list[str], config_dir: Path) -> None:
    """Turn ``task=nope`` / ``strategy=nope`` into errors listing the options that exist."""
    errors = {"task": UnknownTaskError, "strategy": UnknownStrategyError}
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.lstrip("+~")
        if not sep or "." in key or "/" in key:
            continue
        group_dir = config_dir / key
        if group_dir.is_dir():
            options = sorted(p.stem for p in group_dir.glob("*.yaml"))
            if value not in options and key == "task":
                from fedge.tasks import get_task

                get_task(value)  # raises UnknownTaskError naming the known tasks and the import-path form
            if value not in options:
                error = errors.get(key, ConfigError)
                raise error(f"unknown {key} {value!r}: choose one of {', '.join(options)}")


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), text)


def _describe_omegaconf_error(exc: Exception) -> str:
    """One line naming the key and the problem, from a Hydra/OmegaConf error."""
    cause = exc.__cause__ or exc.__context__
    full_key = getattr(exc, "full_key", None) or getattr(cause, "full_key", None)
    msg = _first_line(str(cause if cause is not None and not getattr(exc, "full_key", None) else exc))
    if "not in struct" in msg or "not in '" in msg:
        return f"unknown config key {full_key!r}: the schema has no such key (check the spelling)"
    if full_key:
        return f"config key {full_key!r}: {msg}"
    return f"invalid config: {_first_line(str(exc))}"
