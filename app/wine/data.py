"""The UCI Wine Quality data: download once, verify always, load as one frame.

Either the archive is downloaded from UCI and the two CSVs are cached per user,
or ``WINE_QUALITY_DATA_DIR`` names a folder that already holds them (offline
classrooms, tests, CI). Either way the SHA-256 of each file is checked against
the published originals, so a model is never trained on a silently different
dataset.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd

from app.common.checksums import sha256_of
from app.wine.config import Settings, get_settings
from app.wine.features import FEATURES, TARGET

log = logging.getLogger(__name__)

# SHA-256 of the files inside UCI's wine+quality.zip (dataset 186).
EXPECTED_SHA256 = {
    "winequality-red.csv": "4a402cf041b025d4566d954c3b9ba8635a3a8a01e039005d97d6a710278cf05e",
    "winequality-white.csv": "76c3f809815c17c07212622f776311faeb31e87610d52c26d87d6e361b169836",
}
FILE_COLORS = {"winequality-red.csv": "red", "winequality-white.csv": "white"}


class DataError(RuntimeError):
    """The dataset could not be provided; the message says what to do."""


class DownloadError(DataError):
    pass


class ChecksumMismatchError(DataError):
    pass


class DataFileMissingError(DataError):
    pass


@dataclass(frozen=True)
class WineData:
    frame: pd.DataFrame
    sha256: dict[str, str]
    source: str

    @property
    def combined_sha256(self) -> str:
        """One checksum for the dataset: of the per-file checksums in file-name order."""
        joined = "".join(f"{name}:{digest}\n" for name, digest in sorted(self.sha256.items()))
        return hashlib.sha256(joined.encode()).hexdigest()


def verify(folder: Path, *, hint: str) -> dict[str, str]:
    """Check both CSVs in ``folder``; return their checksums or raise with ``hint``."""
    checksums = {}
    for name, expected in EXPECTED_SHA256.items():
        path = folder / name
        if not path.is_file():
            raise DataFileMissingError(f"{path} is missing. {hint}")
        actual = sha256_of(path)
        if actual != expected:
            raise ChecksumMismatchError(
                f"{path} has SHA-256 {actual}, expected {expected}: the file is corrupt or not the UCI original. {hint}"
            )
        checksums[name] = actual
    return checksums


def download(settings: Settings) -> Path:
    """Download the UCI archive into the cache folder and return that folder."""
    target = settings.cache_dir
    log.info("downloading wine quality data", extra={"url": settings.quality_data_url})
    try:
        response = httpx.get(settings.quality_data_url, timeout=settings.download_timeout_s, follow_redirects=True)
        response.raise_for_status()
    except httpx.HTTPError as error:
        raise DownloadError(
            f"Could not download {settings.quality_data_url}: {error}. Check your network or proxy, "
            "or download the archive by hand, unzip it, and set WINE_QUALITY_DATA_DIR to that folder."
        ) from error
    try:
        archive = zipfile.ZipFile(io.BytesIO(response.content))
    except zipfile.BadZipFile as error:
        raise DownloadError(
            f"{settings.quality_data_url} did not return a zip archive ({len(response.content)} bytes). "
            "A proxy may have answered instead; set WINE_QUALITY_DATA_DIR to a folder with the CSVs."
        ) from error
    members = {Path(info.filename).name: info for info in archive.infolist()}
    target.mkdir(parents=True, exist_ok=True)
    for name in EXPECTED_SHA256:
        if name not in members:
            raise DownloadError(f"The archive from {settings.quality_data_url} has no {name}; found {sorted(members)}.")
        payload = archive.read(members[name])
        # Write then rename, so an interrupted download never leaves a half file in the cache.
        with tempfile.NamedTemporaryFile(dir=target, delete=False) as handle:
            handle.write(payload)
        os.replace(handle.name, target / name)
    return target


def locate(settings: Settings | None = None) -> tuple[Path, dict[str, str], str]:
    """Return a folder with verified CSVs, downloading into the cache when needed."""
    settings = settings or get_settings()
    if settings.quality_data_dir is not None:
        folder = settings.quality_data_dir.expanduser()
        hint = f"WINE_QUALITY_DATA_DIR={folder} must hold the two original UCI CSVs; unset it to download them."
        return folder, verify(folder, hint=hint), str(folder)
    folder = settings.cache_dir
    hint = f"Delete {folder} to download again, or set WINE_QUALITY_DATA_DIR to a folder with the CSVs."
    try:
        return folder, verify(folder, hint=hint), settings.quality_data_url
    except DataFileMissingError:
        pass
    except ChecksumMismatchError:
        log.warning("cached wine data is corrupt; downloading again", extra={"cache_dir": str(folder)})
    download(settings)
    hint = "The download did not match the published checksums; UCI may have changed the files."
    return folder, verify(folder, hint=hint), settings.quality_data_url


def load_wine_data(settings: Settings | None = None) -> WineData:
    """Both colours in one frame: snake_case feature columns, ``quality`` and ``color``."""
    folder, checksums, source = locate(settings)
    renames = {feature.csv_column: feature.name for feature in FEATURES}
    frames = []
    for name, color in FILE_COLORS.items():
        frame = pd.read_csv(folder / name, sep=";").rename(columns=renames)
        frame["color"] = color
        frames.append(frame)
    frame = pd.concat(frames, ignore_index=True)
    frame["color"] = frame["color"].astype(pd.CategoricalDtype(["red", "white"]))
    columns = [feature.name for feature in FEATURES] + [TARGET, "color"]
    return WineData(frame=frame[columns], sha256=checksums, source=source)


def load_wine_frame(settings: Settings | None = None) -> pd.DataFrame:
    return load_wine_data(settings).frame
