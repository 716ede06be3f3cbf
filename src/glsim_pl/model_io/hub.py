"""The Hugging Face Hub: ``hf-hub:`` model ids (downloads through ``huggingface_hub`` and its cache) and upload.

    hf-hub:NYCU-PCSxNTHU-MIS/GLSim/cub_vit_b16_16_2.pth   one file of a repository (here: an official checkpoint)
    hf-hub:USER/NAME                                      an exported model (config.json + model.safetensors)
    hf-hub:USER/NAME@v1.0/sub/file.ckpt                   a revision (branch, tag or commit) before the path

Files land in the Hub client's cache (``HF_HOME``, default ``~/.cache/huggingface``); with ``HF_HUB_OFFLINE=1``
only cached files load, with no network access.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from glsim_pl.errors import UserError

__all__ = ["HUB_PREFIX", "is_hub_id", "parse_hub_id", "push_folder", "resolve_model_path"]

HUB_PREFIX = "hf-hub:"
OFFICIAL_REPO = "NYCU-PCSxNTHU-MIS/GLSim"


def is_hub_id(spec: Any) -> bool:
    """True for ``hf-hub:owner/name[...]``."""
    return isinstance(spec, str) and spec.startswith(HUB_PREFIX)


def parse_hub_id(spec: str) -> tuple[str, str | None, str | None]:
    """``hf-hub:owner/name[@revision][/path/in/repo]`` -> (repo_id, filename or None, revision or None)."""
    parts = spec[len(HUB_PREFIX) :].strip("/").split("/")
    if len(parts) < 2 or not all(parts[:2]):
        raise UserError(f"{spec!r}: expected hf-hub:<owner>/<name>[@revision][/<file in the repository>]")
    name, _, revision = parts[1].partition("@")
    return f"{parts[0]}/{name}", "/".join(parts[2:]) or None, revision or None


def resolve_model_path(spec: str | Path) -> Path:
    """A local path unchanged; an ``hf-hub:`` id -> the downloaded (or cached) file, or the snapshot folder of an
    exported model (``config.json`` + ``model.safetensors``)."""
    if not is_hub_id(spec):
        return Path(spec).expanduser()
    from huggingface_hub import constants, hf_hub_download

    from glsim_pl.models.encoder import hub_cache_only_if_unreachable

    repo_id, filename, revision = parse_hub_id(str(spec))
    unreachable = False
    try:
        with hub_cache_only_if_unreachable() as unreachable:
            if filename:
                return Path(hf_hub_download(repo_id, filename, revision=revision))
            config = hf_hub_download(repo_id, "config.json", revision=revision)
            hf_hub_download(repo_id, "model.safetensors", revision=revision)
            return Path(config).parent
    except Exception as exc:  # huggingface_hub raises many types (offline, 404, auth); one message for all
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        offline = " (HF_HUB_OFFLINE=1: only files already in the cache load)" if constants.HF_HUB_OFFLINE else ""
        if unreachable:
            offline = f" ({constants.ENDPOINT} does not answer: only files already in the cache load)"
        raise UserError(f"{spec!r}: cannot be fetched from the Hugging Face Hub{offline}; cache: "
                        f"{constants.HF_HUB_CACHE} ({type(exc).__name__}: {first})") from exc  # fmt: skip


def push_folder(folder: str | Path, repo_id: str, private: bool = False, message: str | None = None) -> str:
    """Upload an exported folder to the model repository ``repo_id`` (created if missing); returns the commit URL.

    Authentication is the Hub client's own (``huggingface-cli login`` or ``HF_TOKEN``).
    """
    from huggingface_hub import HfApi

    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type="model",
                                 commit_message=message or "Upload GLSim model exported with glsim_pl")  # fmt: skip
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise UserError(f"hub.repo_id={repo_id!r}: upload failed ({type(exc).__name__}: {first})") from exc
    return str(getattr(info, "commit_url", info))
