"""The dataset: loaded as one frame, verified byte for byte, downloaded once and cached."""

from __future__ import annotations

import http.server
import io
import re
import shutil
import socket
import threading
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from app.wine.config import Settings
from app.wine.data import (
    EXPECTED_SHA256,
    ChecksumMismatchError,
    DataError,
    DataFileMissingError,
    DownloadError,
    WineData,
    load_wine_data,
    locate,
    sha256_of,
)
from app.wine.features import FEATURE_NAMES, TARGET

RED, WHITE = "winequality-red.csv", "winequality-white.csv"


@pytest.fixture(scope="module")
def source_dir() -> Path:
    """The folder holding the verified original CSVs (WINE_QUALITY_DATA_DIR or the download cache)."""
    try:
        folder, _, _ = locate(Settings())
    except DataError as error:
        pytest.skip(f"wine data unavailable ({error}); set WINE_QUALITY_DATA_DIR to a folder with the UCI CSVs")
    return folder


@pytest.fixture
def csv_copy(source_dir: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the two CSVs."""
    copy = tmp_path / "csv"
    copy.mkdir()
    for name in EXPECTED_SHA256:
        shutil.copyfile(source_dir / name, copy / name)
    return copy


def flip_one_byte(path: Path, offset: int = 1000) -> None:
    payload = bytearray(path.read_bytes())
    payload[offset] = ord("7") if payload[offset] != ord("7") else ord("8")
    path.write_bytes(bytes(payload))


def test_loads_both_colours_as_one_frame(wine_data: WineData) -> None:
    """Training relies on 6497 rows, snake_case measurement columns, the target and a colour column."""
    frame = wine_data.frame
    assert len(frame) == 6497
    assert list(frame.columns) == [*FEATURE_NAMES, TARGET, "color"]
    assert all(re.fullmatch(r"[a-z]+(_[a-z]+)*", column) for column in frame.columns)
    assert frame["color"].value_counts().to_dict() == {"red": 1599, "white": 4898}
    assert not frame.isna().any().any()
    assert wine_data.sha256 == EXPECTED_SHA256


def test_data_dir_with_altered_byte_is_refused(csv_copy: Path) -> None:
    """One changed byte is caught, and the message says which file and what to do."""
    flip_one_byte(csv_copy / WHITE)
    with pytest.raises(ChecksumMismatchError) as caught:
        load_wine_data(Settings(quality_data_dir=csv_copy))
    message = str(caught.value)
    assert WHITE in message
    assert EXPECTED_SHA256[WHITE] in message
    assert "WINE_QUALITY_DATA_DIR" in message


def test_data_dir_missing_a_file_is_refused(csv_copy: Path) -> None:
    """A folder without one of the CSVs names the missing file and the setting to fix."""
    (csv_copy / RED).unlink()
    with pytest.raises(DataFileMissingError, match=rf"{RED} is missing.*WINE_QUALITY_DATA_DIR"):
        load_wine_data(Settings(quality_data_dir=csv_copy))


# --- the download path, against a local HTTP server -------------------------------------------------


@dataclass
class ArchiveServer:
    """A local stand-in for UCI: serves ``routes`` and counts the requests per path."""

    routes: dict[str, tuple[int, bytes]]
    requests: Counter = field(default_factory=Counter)
    base_url: str = ""

    def settings(self, path: str, cache_dir: Path) -> Settings:
        return Settings(quality_data_url=self.base_url + path, cache_dir=cache_dir, quality_data_dir=None)


def make_zip(folder: Path, names: tuple[str, ...]) -> bytes:
    """An archive laid out like UCI's wine+quality.zip."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in names:
            archive.write(folder / name, name)
        archive.writestr("winequality.names", "Citation Request: Cortez et al., 2009\n")
    return buffer.getvalue()


@pytest.fixture
def archive_server(csv_copy: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ArchiveServer]:
    for variable in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(variable, raising=False)  # 127.0.0.1 must not go through a proxy

    altered = csv_copy.parent / "altered"
    shutil.copytree(csv_copy, altered)
    flip_one_byte(altered / RED)
    server_state = ArchiveServer(routes={
        "/wine+quality.zip": (200, make_zip(csv_copy, (RED, WHITE))),
        "/no-white.zip": (200, make_zip(csv_copy, (RED,))),
        "/altered.zip": (200, make_zip(altered, (RED, WHITE))),
        "/login.html": (200, b"<html><body>Please log in to the proxy</body></html>"),
    })

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            server_state.requests[self.path] += 1
            status, body = server_state.routes.get(self.path, (404, b"not found"))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server_state.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield server_state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_download_verifies_and_caches(archive_server: ArchiveServer, tmp_path: Path) -> None:
    """The first load downloads and verifies; later loads use the cache without touching the network."""
    cache = tmp_path / "cache"
    settings = archive_server.settings("/wine+quality.zip", cache)

    first = load_wine_data(settings)
    assert len(first.frame) == 6497
    assert first.sha256 == EXPECTED_SHA256
    assert first.source == settings.quality_data_url
    # Only the two CSVs land in the cache: no temporary files, nothing else from the archive.
    assert sorted(path.name for path in cache.iterdir()) == [RED, WHITE]
    assert archive_server.requests["/wine+quality.zip"] == 1

    second = load_wine_data(settings)
    assert second.frame.equals(first.frame)
    assert archive_server.requests["/wine+quality.zip"] == 1


def test_corrupt_cache_is_downloaded_again(archive_server: ArchiveServer, tmp_path: Path) -> None:
    """A damaged cached CSV is replaced by a fresh download instead of failing or training on it."""
    cache = tmp_path / "cache"
    settings = archive_server.settings("/wine+quality.zip", cache)
    load_wine_data(settings)
    flip_one_byte(cache / RED)

    data = load_wine_data(settings)
    assert archive_server.requests["/wine+quality.zip"] == 2
    assert len(data.frame) == 6497
    assert sha256_of(cache / RED) == EXPECTED_SHA256[RED]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param("/gone.zip", r"(?s)Could not download .*/gone\.zip.*404.*WINE_QUALITY_DATA_DIR", id="http-404"),
        pytest.param("/login.html", r"did not return a zip archive.*WINE_QUALITY_DATA_DIR", id="not-a-zip"),
        pytest.param("/no-white.zip", rf"has no {WHITE}", id="zip-without-a-csv"),
    ],
)
def test_bad_download_raises_download_error(
    archive_server: ArchiveServer, tmp_path: Path, path: str, expected: str
) -> None:
    """A failed or wrong download says what went wrong and how to provide the data by hand."""
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match=expected):
        load_wine_data(archive_server.settings(path, cache))
    assert archive_server.requests[path] == 1
    assert not (cache / WHITE).exists()


def test_download_that_does_not_match_the_checksums_is_refused(
    archive_server: ArchiveServer, tmp_path: Path
) -> None:
    """A download that differs from the published files is never used for training."""
    with pytest.raises(ChecksumMismatchError, match=rf"{RED} has SHA-256 .*UCI may have changed the files"):
        load_wine_data(archive_server.settings("/altered.zip", tmp_path / "cache"))


def test_unreachable_server_raises_download_error(tmp_path: Path) -> None:
    """No network (nothing listening) is a DownloadError with the offline alternative, not a traceback."""
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = Settings(
        quality_data_url=f"http://127.0.0.1:{port}/wine+quality.zip", cache_dir=tmp_path, quality_data_dir=None
    )
    with pytest.raises(DownloadError, match="WINE_QUALITY_DATA_DIR"):
        load_wine_data(settings)
