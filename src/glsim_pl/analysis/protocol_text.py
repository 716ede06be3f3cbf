"""A job's protocol in words for the tables: the splits and epochs (``metrics.json``'s ``protocol``), then the
training recipe its resolved config records (fine-tuning regime, recipe, optimizer and LR, layer decay, EMA) and TTA.
"""

from __future__ import annotations

from typing import Any

__all__ = ["protocol_text", "split_protocols"]


def protocol_text(protocol: dict[str, Any], config: dict[str, Any] | None = None) -> str:
    """The splits and epochs, then the training recipe the resolved config records (regime, optimizer, LR, layer
    decay, EMA) and the test pass's TTA; parts an older record lacks are left out."""
    train, select = protocol.get("train_split", "?"), protocol.get("selection_split", "?")
    text = f"train: {train}; select: {select}; test: {protocol.get('test_split', '?')}; {protocol.get('epochs')} ep"
    return "; ".join([text, *_recipe_parts(config or {}), *([f"TTA {protocol['tta']}"] if "tta" in protocol else [])])


def _recipe_parts(config: dict[str, Any]) -> list[str]:
    parts = []
    if isinstance(config.get("finetune"), dict) and "regime" in config["finetune"]:
        parts.append(f"finetune {config['finetune']['regime']}")
    if isinstance(config.get("recipe"), dict) and config["recipe"].get("name"):
        parts.append(f"recipe {config['recipe']['name']}")
    optim = config.get("optim")
    if isinstance(optim, dict) and "lr" in optim:
        parts.append(f"{optim.get('optimizer', '?')} lr {optim['lr']:g}")
        parts.append(f"layer decay {optim['layer_decay']:g}" if optim.get("layer_decay") else "layer decay off")
    if isinstance(config.get("ema"), dict):
        decay = config["ema"].get("decay")
        parts.append(f"EMA {decay:g}" if decay is not None else "EMA off")
    return parts


def split_protocols(rows: list[dict]) -> tuple[list[str], dict[int, str]]:
    """(the protocol parts every row shares, row id -> the parts that are its own): the column shows only the latter."""
    parts = {id(r): r["protocol"].split("; ") for r in rows}
    common = [p for p in parts[id(rows[0])] if all(p in other for other in parts.values())] if rows else []
    return common, {key: "; ".join(p for p in own if p not in common) for key, own in parts.items()}
