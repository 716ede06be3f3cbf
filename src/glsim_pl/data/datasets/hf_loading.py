"""Finding a Hugging Face dataset (Hub id, ``save_to_disk`` folder or local files) and recording its version."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from glsim_pl.errors import UserError

__all__ = ["FILE_FORMATS", "dataset_provenance", "hub_commit", "load_dataset_dict"]

FILE_FORMATS = {".parquet": "parquet", ".arrow": "arrow", ".csv": "csv", ".json": "json", ".jsonl": "json"}


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def _expanded_files(files: Any) -> dict[str, list[str]] | list[str] | None:
    """``data_files`` as ``datasets`` takes them, with ``~`` expanded: a list, or ``{split: list}``."""
    if files is None:
        return None
    if isinstance(files, dict) or hasattr(files, "items"):
        return {str(k): [str(Path(p).expanduser()) for p in _as_list(v)] for k, v in files.items()}
    return [str(Path(p).expanduser()) for p in _as_list(files)]


def load_dataset_dict(name: str | None, config_name: str | None, revision: str | None, data_files: Any,
                      cache_dir: str | None, train_split: str, where: str) -> Any:  # fmt: skip
    """The ``DatasetDict`` (or ``Dataset``) of a Hub id, a ``save_to_disk`` folder or local files (a bare list of
    files becomes ``train_split``); any failure of ``datasets`` is one line naming ``where``."""
    try:
        import datasets
    except ImportError:
        raise UserError("dataset=hf needs the datasets library: pip install 'glsim_pl[data]'") from None

    files = _expanded_files(data_files)
    try:
        if name and (Path(name).expanduser() / "dataset_dict.json").is_file():
            return datasets.load_from_disk(str(Path(name).expanduser()))
        if name:
            return datasets.load_dataset(name, config_name, revision=revision, data_files=files,
                                         cache_dir=cache_dir)  # fmt: skip
        first = next(iter(files.values()))[0] if isinstance(files, dict) else files[0]
        suffix = Path(first).suffix.lower()
        if suffix not in FILE_FORMATS:
            raise UserError(f"dataset.data_files: {first}: expected {', '.join(FILE_FORMATS)} files")
        if isinstance(files, list):
            files = {train_split: files}
        return datasets.load_dataset(FILE_FORMATS[suffix], data_files=files, cache_dir=cache_dir)
    except UserError:
        raise
    except FileNotFoundError as exc:
        raise UserError(f"dataset=hf {where}: not found ({exc})") from None
    except Exception as exc:  # datasets raises many types (hub, arrow, config errors); the message says it all
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"dataset=hf {where}: cannot load ({type(exc).__name__}: {message})") from None


def hub_commit(name: str, revision: str | None) -> str | None:
    """The commit a Hub dataset's revision resolves to (one metadata request); None offline or for a local folder."""
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE or Path(name).expanduser().exists():
        return None
    try:
        return HfApi().dataset_info(name, revision=revision, timeout=10).sha
    except Exception:  # the record is a convenience: no network or no access must not stop a run that has its data
        return None


def dataset_provenance(train: Any, name: str | None, revision: str | None) -> dict[str, str]:
    """What ``metrics.json`` records of the dataset's version: the train split's fingerprint, and the Hub id,
    revision and resolved commit where there are ones."""
    provenance = {"data/hf_fingerprint": getattr(train, "_fingerprint", "") or ""}
    if name:
        provenance["data/hf_dataset"] = name
    if revision:
        provenance["data/hf_revision"] = str(revision)
    commit = hub_commit(name, revision) if name else None
    if commit:
        provenance["data/hf_commit"] = commit
    return provenance
