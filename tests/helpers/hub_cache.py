"""A local Hugging Face cache laid out as ``huggingface_hub`` lays it out, for offline Hub tests.

<HF_HOME>/hub/models--<owner>--<name>/
    blobs/<sha256 of the file>             the content
    refs/main                              the commit hash
    snapshots/<commit>/<path in repo>      symlink -> ../../blobs/<sha256> (one more ../ per subfolder)
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def add_to_hub_cache(hf_home: Path, repo_id: str, files: dict[str, Path], commit: str = "0" * 40) -> Path:
    """Put ``files`` ({path in repo: local file}) into the cache under ``repo_id`` at revision main."""
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    for name, source in files.items():
        data = source.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return repo / "snapshots" / commit


def hub_env(hf_home: Path) -> dict[str, str]:
    """Environment of a subprocess that sees only this cache, offline."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    return {**env, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
