"""``glsim-data download <name>``: the official archives of the benchmarks that publish them, resumed when cut off,
checked against their published MD5, extracted into the layout the dataset modules read.

Downloads go to ``<data_dir>/.downloads/<file>.part`` and continue from its size (an HTTP ``Range`` request) after an
interruption; a finished file is checked before it is used. Extraction writes into ``<folder>.partial`` and renames
it, so an interrupted extraction leaves no half folder where the dataset module would look.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from glsim_pl.errors import UserError

__all__ = ["ARCHIVES", "MANUAL", "Archive", "Benchmark", "download"]

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Archive:
    """One file: where from, its published MD5, and where under the dataset folder it goes (``.`` = the folder)."""

    url: str
    md5: str
    extract: bool = True  # a tar archive (extracted), else a plain file copied as is


@dataclass(frozen=True)
class Benchmark:
    """A benchmark's archives and the folder (under ``data_dir``) its dataset config reads."""

    folder: str
    archives: tuple[Archive, ...]
    archive_root: str = ""  # the folder the archives unpack into, when they carry it themselves ("" = no folder)
    marker: str = ""  # a path under ``folder`` that exists once the dataset is in place


ARCHIVES: dict[str, Benchmark] = {
    "cub": Benchmark(
        "CUB_200_2011",
        (
            Archive(
                "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz",
                "97eceeb196236b17998738112f37df78",
            ),
        ),  # fmt: skip
        archive_root="CUB_200_2011",
        marker="images.txt",
    ),
    "flowers": Benchmark(
        "flowers-102",
        (
            Archive(
                "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/102flowers.tgz", "52808999861908f626f3c1f4e79d11fa"
            ),
            Archive(
                "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/imagelabels.mat",
                "e0620be6f572b9609742df49c70aed4d",
                extract=False,
            ),  # fmt: skip
            Archive(
                "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/setid.mat",
                "a5357ecc9cb78c4bef273ce3793fc85c",
                extract=False,
            ),  # fmt: skip
        ),
        marker="setid.mat",
    ),
    "pets": Benchmark(
        "oxford-iiit-pet",
        (
            Archive(
                "https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz", "5c4f3ee8e5d25df40f4fd59a7f44e54c"
            ),
            Archive(
                "https://www.robots.ox.ac.uk/~vgg/data/pets/data/annotations.tar.gz", "95a8c909bbe2e81eed6a22bccdf3f68f"
            ),  # fmt: skip
        ),
        marker="annotations/test.txt",
    ),
    "food": Benchmark(
        "food-101",
        (Archive("http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz", "85eeb15f3717b99a5da872d97d918f87"),),
        archive_root="food-101",
        marker="meta/test.json",
    ),
}

# Benchmarks without a public archive with a published checksum: where to get them instead.
MANUAL: dict[str, str] = {
    "nabirds": "NABirds needs a request form: https://dl.allaboutbirds.org/nabirds (nabirds.tar.gz, extract into "
    "<data_dir>/nabirds)",
    "cars": "Stanford Cars is no longer served by its authors: use the Hub mirror (dataset=hf_cars), or copy "
    "car_ims.tgz and cars_annos.mat from a copy you have into <data_dir>/stanford_cars",
    "inat17": "iNat17 is hosted by the iNaturalist competition: "
    "https://github.com/visipedia/inat_comp/tree/master/2017 (train_val_images.tar.gz, train_val2017.zip, extract "
    "into <data_dir>/inat17)",
    "aircraft": "FGVC-Aircraft publishes no checksum for its archive: get https://www.robots.ox.ac.uk/~vgg/data/fgvc-"
    "aircraft/archives/fgvc-aircraft-2013b.tar.gz and extract it into <data_dir>, or use dataset=hf_aircraft",
    "dogs": "Stanford Dogs publishes no checksums: get images.tar, annotation.tar and lists.tar from "
    "http://vision.stanford.edu/aditya86/ImageNetDogs/ into <data_dir>/stanford_dogs, or use dataset=hf_dogs",
}


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fetch(url: str, target: Path, md5: str, progress: bool) -> Path:
    """``url`` -> ``target``, resuming ``target.part``; the MD5 is checked before ``target`` appears."""
    from tqdm import tqdm

    if target.is_file() and _md5(target) == md5:
        return target
    part = target.with_name(target.name + ".part")
    done = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={done}-"} if done else {})
    try:
        response = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and done:  # the part file is already complete
            response = None
        else:
            raise UserError(f"{url}: download failed (HTTP {exc.code} {exc.reason})") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(f"{url}: cannot connect ({reason}); rerun the command to resume") from None
    if response is not None:
        with response:
            resumed = response.status == 206
            if not resumed:
                done = 0  # the server ignored the Range request: start over
            total = int(response.headers.get("Content-Length") or 0) + done
            bar = tqdm(total=total or None, initial=done, unit="B", unit_scale=True, desc=target.name,
                       disable=not progress)  # fmt: skip
            try:
                with part.open("ab" if resumed else "wb") as f:
                    while chunk := response.read(_CHUNK):
                        f.write(chunk)
                        bar.update(len(chunk))
            except OSError as exc:
                raise UserError(f"{url}: download interrupted ({exc}); rerun the command to resume") from None
            finally:
                bar.close()
    found = _md5(part)
    if found != md5:
        part.unlink()
        raise UserError(f"{url}: checksum mismatch (MD5 {found}, expected {md5}); the partial file was removed, "
                        "rerun the command to download it again")  # fmt: skip
    os.replace(part, target)
    return target


def _extract(archive: Path, into: Path) -> None:
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(into, filter="data")  # "data": no absolute paths, links out of the folder or devices
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise UserError(f"{archive}: cannot extract ({exc})") from None


def download(name: str, data_dir: Path, progress: bool = True, base_url: str | None = None,
             registry: dict[str, Benchmark] | None = None) -> Path:  # fmt: skip
    """Download and extract benchmark ``name`` under ``data_dir``; returns the dataset folder.

    Args:
        name: a key of :data:`ARCHIVES`.
        data_dir: where the dataset folders live (``paths.data_dir``).
        progress: show progress bars.
        base_url: fetch every file from ``<base_url>/<file name>`` instead (a mirror).
        registry: the benchmarks to choose from (default :data:`ARCHIVES`).
    """
    registry = ARCHIVES if registry is None else registry
    if name not in registry:
        if name in MANUAL:
            raise UserError(f"glsim-data download {name}: {MANUAL[name]}")
        known = ", ".join(sorted(registry))
        raise UserError(f"glsim-data download {name}: unknown benchmark; expected one of {known} (no public archive: "
                        f"{', '.join(sorted(MANUAL))})")  # fmt: skip
    bench = registry[name]
    data_dir = Path(data_dir).expanduser().absolute()
    folder = data_dir / bench.folder
    if bench.marker and (folder / bench.marker).exists():
        return folder
    if folder.exists():
        raise UserError(f"glsim-data download {name}: {folder} exists but has no {bench.marker}; move it away (or "
                        "complete it by hand) and rerun")  # fmt: skip
    downloads = data_dir / ".downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    files = []
    for archive in bench.archives:
        file_name = archive.url.rstrip("/").rsplit("/", 1)[-1]
        url = f"{base_url.rstrip('/')}/{file_name}" if base_url else archive.url
        files.append((archive, _fetch(url, downloads / file_name, archive.md5, progress)))
    staging = data_dir / f"{bench.folder}.partial"
    if staging.exists():
        shutil.rmtree(staging)  # an earlier interrupted extraction
    staging.mkdir()
    for archive, path in files:
        if archive.extract:
            _extract(path, staging)
        else:
            shutil.copyfile(path, staging / path.name)
    unpacked = staging / bench.archive_root if bench.archive_root else staging
    if not unpacked.is_dir() or (bench.marker and not (unpacked / bench.marker).exists()):
        raise UserError(f"glsim-data download {name}: the archives did not unpack to {bench.archive_root or '.'}/"
                        f"{bench.marker} (under {staging}); the files may have changed upstream")  # fmt: skip
    os.replace(unpacked, folder)
    if staging.exists():
        shutil.rmtree(staging)
    return folder
