"""A client's side of differential privacy for training: the Flower mod, and the ledger's payment.

``privacy.mode=local``: before training, the institution's ledger pays ``privacy.target_epsilon``
(refused beyond its budget: the reply carries the refusal, nothing is trained or sent); after it,
Flower's ``LocalDpMod`` clips the update to ``privacy.clipping_norm`` and adds Gaussian noise.
``privacy.mode=central`` with ``privacy.clipping=client``: Flower's ``fixedclipping_mod`` (or
``adaptiveclipping_mod``) clips the update before it leaves. Only ``train`` messages are touched.

This module reads the ``privacy`` group straight from the run config's JSON (no torch, no task
import): it runs in the light ClientApp process that forwards to the agent's worker.
"""

from __future__ import annotations

import json
from typing import Any

from flwr.app import Context, Message

from fedge.config.privacy import PrivacySettings
from fedge.config.validation import build
from fedge.privacy_ledger import PrivacyLedger
from fedge.protocol import RUN_CONFIG_KEY

__all__ = ["privacy_mod", "privacy_settings", "spend_for_training"]


def privacy_settings(raw_config: str) -> PrivacySettings:
    """The run's ``privacy`` group out of the encoded run config (defaults when absent)."""
    try:
        raw = json.loads(raw_config).get("privacy", {}) if raw_config else {}
    except (ValueError, AttributeError):
        raw = {}
    return build(PrivacySettings, raw or {}, "privacy")


def spend_for_training(ledger: PrivacyLedger, settings: PrivacySettings, content: Any, run_id: str) -> None:
    """Pay one local-DP training round from the institution's ledger before any training.

    Raises
    ------
    PrivacyBudgetError
        When the ledger's budget cannot pay it: the client refuses the round, saying so.
    """
    if settings.mode != "local" or settings.target_epsilon is None:
        return
    server_round = "?"
    for record in content.config_records.values():
        server_round = str(record.get("server-round", server_round))
    ledger.spend(
        float(settings.target_epsilon),
        purpose=f"local-dp training, run {run_id or '?'} round {server_round}",
        delta=float(settings.delta),
    )


def privacy_mod(msg: Message, context: Context, call_next: Any) -> Message:
    """Flower mod: SecAgg+, local DP, or client-side clipping for central DP, on ``train`` messages only."""
    if msg.metadata.message_type != "train":
        return call_next(msg, context)
    from client.secure_aggregation import is_secagg_message

    if is_secagg_message(msg.content):
        # SecAgg+ (strategy.secure_aggregation=true): Flower's mod runs the protocol and masks the
        # update; central DP's clipping happens inside, before masking (client/secure_aggregation.py).
        from flwr.client.mod import secaggplus_mod

        return secaggplus_mod(msg, context, call_next)
    settings = privacy_settings(str(context.run_config.get(RUN_CONFIG_KEY, "")))
    if settings.mode == "local":
        from flwr.clientapp.mod import LocalDpMod

        assert settings.target_epsilon is not None  # validated with the run config
        mod = LocalDpMod(
            clipping_norm=settings.clipping_norm,
            sensitivity=settings.clipping_norm,
            epsilon=settings.target_epsilon,
            delta=settings.delta,
        )
        return mod(msg, context, call_next)
    if settings.mode == "central" and settings.clipping == "client":
        from flwr.clientapp.mod import adaptiveclipping_mod, fixedclipping_mod

        clip = adaptiveclipping_mod if settings.adaptive else fixedclipping_mod
        return clip(msg, context, call_next)
    return call_next(msg, context)
