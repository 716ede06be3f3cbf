"""glsim-data download against a server on 127.0.0.1: resumes a cut-off file, checks the MD5, extracts into the
dataset folder; benchmarks without a public archive name where to get them."""

from __future__ import annotations

import hashlib
import http.server
import io
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from glsim_pl.data.download import Archive, Benchmark, download
from glsim_pl.errors import UserError


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves the files of ``self.server.files`` with HTTP Range support, recording each request's range."""

    def do_GET(self) -> None:
        data = self.server.files.get(self.path.lstrip("/"))
        if data is None:
            self.send_error(404)
            return
        start = 0
        header = self.headers.get("Range")
        if header:
            start = int(header.removeprefix("bytes=").split("-")[0])
        self.server.requests.append((self.path, header))
        body = data[start:]
        self.send_response(206 if header else 200)
        self.send_header("Content-Length", str(len(body)))
        if header:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server() -> Iterator[http.server.HTTPServer]:
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _RangeHandler)
    httpd.files, httpd.requests = {}, []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _tiny_archive() -> bytes:
    """A .tgz holding tiny/images.txt and tiny/images/a.jpg, as an official archive carries its folder."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in (("tiny/images.txt", b"1 a.jpg\n" * 200), ("tiny/images/a.jpg", bytes(range(256)) * 40)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _registry(base: str, data: bytes) -> dict[str, Benchmark]:
    archive = Archive(f"{base}/tiny.tgz", hashlib.md5(data).hexdigest())
    return {"tiny": Benchmark("tiny_set", (archive,), archive_root="tiny", marker="images.txt")}


def test_download_resumes_checks_and_extracts(server, tmp_path: Path) -> None:
    data = _tiny_archive()
    server.files["tiny.tgz"] = data
    base = f"http://127.0.0.1:{server.server_port}"
    (tmp_path / ".downloads").mkdir()
    (tmp_path / ".downloads" / "tiny.tgz.part").write_bytes(data[: len(data) // 2])  # an interrupted download
    folder = download("tiny", tmp_path, progress=False, registry=_registry(base, data))
    assert folder == tmp_path / "tiny_set"
    assert (folder / "images.txt").read_bytes() == b"1 a.jpg\n" * 200
    assert (folder / "images" / "a.jpg").read_bytes() == bytes(range(256)) * 40
    assert server.requests == [("/tiny.tgz", f"bytes={len(data) // 2}-")]  # only the missing half was fetched
    assert not (tmp_path / "tiny_set.partial").exists() and not (tmp_path / ".downloads" / "tiny.tgz.part").exists()
    assert download("tiny", tmp_path, progress=False, registry=_registry(base, data)) == folder  # in place: no fetch
    assert len(server.requests) == 1


def test_a_corrupt_download_is_one_line_and_removed(server, tmp_path: Path) -> None:
    data = _tiny_archive()
    server.files["tiny.tgz"] = data[:-10] + b"0123456789"
    base = f"http://127.0.0.1:{server.server_port}"
    with pytest.raises(UserError, match=r"tiny.tgz: checksum mismatch \(MD5 [0-9a-f]{32}, expected "
                                        + hashlib.md5(data).hexdigest()):  # fmt: skip
        download("tiny", tmp_path, progress=False, registry=_registry(base, data))
    assert not list((tmp_path / ".downloads").iterdir()) and not (tmp_path / "tiny_set").exists()
    with pytest.raises(UserError, match=r"127.0.0.1:\d+/missing.tgz: download failed \(HTTP 404"):
        download("tiny", tmp_path, progress=False,
                 registry={"tiny": Benchmark("t", (Archive(f"{base}/missing.tgz", "0" * 32),))})  # fmt: skip


@pytest.mark.parametrize(("name", "names"), [("nabirds", "dl.allaboutbirds.org"), ("cars", "dataset=hf_cars"),
                                             ("inat17", "inat_comp"), ("imagenet", "unknown benchmark")])  # fmt: skip
def test_benchmarks_without_an_archive_say_where_to_get_them(name: str, names: str, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=names):
        download(name, tmp_path, progress=False)
    assert not list(tmp_path.iterdir())  # nothing written
