"""WebDataset shard URLs: brace expansion, a local shard's sample count, and reading one shard with one-line errors."""

from __future__ import annotations

import re
import tarfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from glsim_pl.errors import UserError

__all__ = ["count_local_samples", "expand_urls", "read_shard"]


def expand_urls(urls: str | Sequence[str]) -> list[str]:
    """Brace patterns (``shard-{000000..000099}.tar``) and lists -> the shard URLs, in order."""
    import braceexpand

    items = [urls] if isinstance(urls, str) else list(urls)
    return [u for item in items for u in braceexpand.braceexpand(str(item))]


_REMOTE = ("pipe:", "http://", "https://", "gs://", "s3://")
_EXIT = re.compile(r": exit (\d+) \(read\)")  # how webdataset reports a pipe or download command that failed


def count_local_samples(url: str) -> int | None:
    """Samples in a local shard from its tar headers (no image is read); None for a remote URL."""
    if url.startswith(_REMOTE):
        return None
    path = Path(url.removeprefix("file:")).expanduser()
    if not path.is_file():
        raise UserError(f"{url}: no such shard file (check the brace range of the dataset's urls)")
    from webdataset.tariterators import base_plus_ext  # webdataset's own rule for a member's sample key

    keys = set()
    try:
        with tarfile.open(path, "r") as tar:
            for member in tar:
                key = base_plus_ext(member.name)[0] if member.isfile() else None
                if key is not None:
                    keys.add(key)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise UserError(f"{url}: not a readable tar shard ({exc}); the shard may end mid-record (cut short by a copy "
                        "or an interrupted write)") from None  # fmt: skip
    return len(keys)


def read_shard(url: str, wds: Any) -> Iterator[dict[str, Any]]:
    """The samples of one shard; a truncated or unreadable shard is one UserError naming it."""
    source = iter(wds.tarfile_to_samples()(iter([{"url": url}])))
    while True:
        try:
            sample = next(source)
        except StopIteration:
            return
        except UserError:
            raise
        except Exception as exc:  # tarfile / IO / pipe errors, raised by webdataset as they come
            raise UserError(_shard_error(url, exc)) from None
        sample.setdefault("__url__", url)
        yield sample


def _shard_error(url: str, exc: Exception) -> str:
    """One line for a shard that cannot be read: missing, a failed command / download, or cut short."""
    if isinstance(exc, FileNotFoundError):
        return f"{url}: no such shard file"
    text, remote = str(exc), url.startswith(_REMOTE)
    how = "the download" if url.startswith(_REMOTE[1:]) else "the command"
    if remote and (failed := _EXIT.search(text)):
        return f"{url}: {how} failed (exit status {failed[1]}); check the URL or command by hand"
    if remote and "empty file" in text:  # a failed download reaches tarfile as an empty stream before its exit status
        return f"{url}: nothing came back ({how} failed, or the shard is empty); check the URL or command by hand"
    first = exc.args[0] if exc.args and isinstance(exc.args[0], str) else text
    text = first.split(" @ ")[0].splitlines()[0] if first else type(exc).__name__  # webdataset appends the stream
    # object after " @ "; the url is named once, first
    return (f"{url}: cannot read the shard ({type(exc).__name__}: {text}); it may end mid-record (cut short by a "
            "copy or an interrupted write)")  # fmt: skip
