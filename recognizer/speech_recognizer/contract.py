"""The recognizer's outward contract: port, routes, setting names, mounts, user.

This module is pure data with no third-party imports, so that the operator
(which must not install Vosk) imports it to build Deployments, probes and
arguments without retyping any of these facts.
"""

from __future__ import annotations

from typing import Final, NamedTuple

#: Port the recognizer listens on, as Azure's container does.
PORT: Final = 5000
#: The address that means every address of both families (Kestrel's ``http://*:5000``, which Azure's container listens
#: on): the default ``Host``, the gateway's, and the host of the operator's ``--liveness`` and ``--metrics`` URLs
#: (:func:`speech_recognizer.serving.listening_socket`). A pod's IP may be of either family, IPv6 alone on an
#: IPv6-only cluster, and a kubelet probes that IP.
EVERY_ADDRESS: Final = "*"
#: The image's non-root user and group (distroless ``nonroot``).
RUN_AS_USER: Final = 65532
RUN_AS_GROUP: Final = 65532

#: Bytes per second of the widest audio a body may hold when nothing declares its format (48 kHz, stereo, 32-bit;
#: compressed audio is far less): what caps a REST body before its header is read, and an OpenAI upload.
MAX_BYTES_PER_SECOND: Final = 48000 * 2 * 4

# ---- HTTP routes ---------------------------------------------------------
ROUTE_HOME: Final = "/"
ROUTE_READY: Final = "/ready"
ROUTE_STATUS: Final = "/status"
ROUTE_CONTAINER_LIVENESS: Final = "/ContainerLiveness"
ROUTE_CONTAINER_READINESS: Final = "/ContainerReadiness"
ROUTE_SWAGGER: Final = "/swagger"
ROUTE_OPENAPI: Final = "/openapi.json"
#: The files of the interactive reference (Swagger UI), served by the recognizer itself.
ROUTE_SWAGGER_UI: Final = "/swagger/ui"
ROUTE_METRICS: Final = "/metrics"
#: Live sessions and decoder capacity as JSON: what the operator's autoscaling reads from each pod.
ROUTE_SESSIONS: Final = "/sessions"
ROUTE_USAGE_LOGS: Final = "/records/usage-logs/"
#: The pod's preStop hook: answers after :data:`PRE_STOP_SECONDS` (the image has no shell for a ``sleep``).
ROUTE_PRE_STOP: Final = "/pre-stop"
#: How long the preStop hook holds the pod's termination, in seconds: time for the Service's
#: endpoints to drop the pod, while it still serves new work, before SIGTERM starts the drain.
PRE_STOP_SECONDS: Final = 5
#: Most headers in one request head, on the recognizer and at the gateway (aiohttp's and websockets' default bound, which
#: the recognizer's WebSocket upgrades met already): each costs memory for as long as its request lasts, where
#: ``Http:MaxHeaderBytes`` bounds only their bytes. A head of 16 KiB holds 2000 tiny ones, 230 KiB more parsed than a
#: connection's usual 20 KiB (bench/notes.md, "Headers in a head"). More gets 431 saying so.
MAX_HEADERS: Final = 128
#: The three Speech service modes; each is served over REST (POST) and USP WebSocket.
RECOGNITION_MODES: Final = ("interactive", "conversation", "dictation")
RECOGNITION_PATH_TEMPLATE: Final = "/speech/recognition/{mode}/cognitiveservices/v1"
RECOGNITION_PATHS: Final = tuple(RECOGNITION_PATH_TEMPLATE.format(mode=m) for m in RECOGNITION_MODES)
#: Where the Speech SDK (1.53 for Python, 1.52 for JavaScript) connects for the services Azure's speech-to-text container
#: does not serve either, and what the app used: the recognizer and the gateway refuse them naming the service
#: (:func:`speech_recognizer.errors.unserved_service`), where an unknown path was refused with 403 (the SDK's
#: "AuthenticationFailure", a wrong lead) or 404.
NOT_SERVED_PATHS: Final = {
    "/stt/speech/universal/v2": "speech translation (TranslationRecognizer)",
    "/speech/translation/cognitiveservices/v1": "speech translation (TranslationRecognizer)",
    "/speech/universal/v2": "conversation transcription (ConversationTranscriber)",
    "/cognitiveservices/websocket/v1": "speech synthesis (SpeechSynthesizer)",
    "/tts/cognitiveservices/websocket/v1": "speech synthesis (SpeechSynthesizer)",  # the SDK for JavaScript's
}
#: The ``Path`` of the messages that begin a Speech SDK request (recognition and translation; synthesis): a refused
#: stream is closed once one came (or audio), as the SDK for JavaScript fails a request whose messages meet a close
#: with "websocket send error" instead of the close's reason.
USP_REQUEST_PATHS: Final = frozenset({"speech.context", "synthesis.context", "ssml"})
#: vosk-server compatible WebSocket route.
ROUTE_VOSK_WS: Final = "/vosk"
#: OpenAI's audio transcription route (its clients' ``base_url`` is ``http://host:5000/v1``).
ROUTE_OPENAI_TRANSCRIPTIONS: Final = "/v1/audio/transcriptions"
#: The live demo page (microphone -> /vosk) and its scripts below it.
ROUTE_DEMO: Final = "/demo"

# ---- Audio the recognizer decodes (a REST body, an OpenAI upload, a file to transcribe) ----
class AudioFormat(NamedTuple):
    """An audio container the recognizer decodes, told apart from the others by its first bytes."""

    #: As messages name it ("the WAV audio").
    name: str
    #: As the docs list it, its codecs named where it has several.
    listed: str
    #: The bytes it begins with.
    signature: bytes
    #: The content types that name it.
    media_types: tuple[str, ...]
    #: The suffixes of its files, which the file transcriber searches a folder for.
    suffixes: tuple[str, ...]
    #: Where :attr:`signature` is, from the first byte.
    offset: int = 0
    #: The signature as messages name it (empty: its bytes, which are text).
    signature_name: str = ""


#: Every container decoded: what sniffing, error messages, content types, the transcriber's folder search and the
#: API reference take their lists from. An MP3 begins with an ID3v2 tag, or else with MPEG audio frames, and raw AAC
#: with ADTS frames (:func:`speech_recognizer.audio.sniff`); an old QuickTime movie without an ``ftyp`` box with its
#: atoms; an MPEG program stream with a pack header of MPEG-1 or MPEG-2; headerless 16-bit PCM is told by its content
#: type alone. WebM (an EBML header: Matroska's), MP4 (an ``ftyp`` box, 4 bytes in), AAC, AMR (RFC 4867's file header:
#: ``#!AMR`` or ``#!AMR-WB``) and MPEG-PS are decoded by FFmpeg in a child process (:mod:`speech_recognizer.ffmpeg`),
#: MP3 by libmpg123, the others by libsndfile. An MPEG-PS sent as ``audio/mpeg`` (MP3's type) is decoded as what its
#: bytes are, as any body is.
AUDIO_FORMATS: Final = (
    AudioFormat("WAV", "WAV", b"RIFF", ("audio/wav", "audio/x-wav", "audio/wave"), (".wav", ".wave")),
    AudioFormat("Ogg", "Ogg/Opus, Ogg/Vorbis", b"OggS", ("audio/ogg", "audio/opus"), (".ogg", ".oga", ".opus")),
    AudioFormat("FLAC", "FLAC", b"fLaC", ("audio/flac",), (".flac",)),
    AudioFormat("MP3", "MP3", b"ID3", ("audio/mpeg", "audio/mp3"), (".mp3", ".mpga")),
    AudioFormat("WebM", "WebM/MKV (Opus, Vorbis, AAC)", b"\x1a\x45\xdf\xa3",
                ("audio/webm", "video/webm", "audio/x-matroska", "video/x-matroska"), (".webm", ".weba", ".mkv", ".mka"),
                signature_name="EBML"),
    AudioFormat("MP4", "MP4/M4A/MOV/3GP (AAC, ALAC, AMR)", b"ftyp",
                ("audio/mp4", "audio/m4a", "audio/x-m4a", "video/mp4", "video/quicktime", "audio/3gpp", "video/3gpp"),
                (".m4a", ".mp4", ".mov", ".qt", ".m4b", ".3gp"), offset=4),
    AudioFormat("AAC", "AAC (ADTS)", b"\xff\xf1", ("audio/aac", "audio/x-aac", "audio/aacp"), (".aac", ".adts"),
                signature_name="ADTS"),
    AudioFormat("AMR", "AMR (AMR-NB, AMR-WB)", b"#!AMR", ("audio/amr", "audio/amr-wb"), (".amr", ".awb")),
    AudioFormat("MPEG-PS", "MPEG-PS/MPG (MP2, MP3)", b"\x00\x00\x01\xba", ("video/mpeg", "video/mp2p"), (".mpg", ".mpeg"),
                signature_name="MPEG pack header"),
)
#: The formats as the docs list them: "WAV, Ogg/Opus, Ogg/Vorbis, FLAC, MP3".
AUDIO_LISTED: Final = ", ".join(f.listed for f in AUDIO_FORMATS)

# ---- Settings (Azure-style keys; ':' on the command line, '__' in env) ----
EULA: Final = "Eula"
BILLING: Final = "Billing"
API_KEY: Final = "ApiKey"
MOUNTS_LICENSE: Final = "Mounts:License"
MOUNTS_OUTPUT: Final = "Mounts:Output"
MOUNTS_MODELS: Final = "Mounts:Models"
LOCALE: Final = "Locale"
MODEL_URL: Final = "ModelUrl"
MODEL_SHA256: Final = "ModelSha256"
MODEL_CATALOG_URL: Final = "ModelCatalogUrl"
MODEL_MAX_SIZE_MB: Final = "ModelMaxSizeMB"
MODEL_CA_FILE: Final = "ModelCaFile"
HTTP_MAX_HEADER_BYTES: Final = "Http:MaxHeaderBytes"
HTTP_HEADER_TIMEOUT: Final = "Http:HeaderTimeoutSeconds"
HTTP_BODY_TIMEOUT: Final = "Http:BodyTimeoutSeconds"
HTTP_MAX_CONNECTIONS: Final = "Http:MaxConnections"
HTTP_TRUSTED_PROXIES: Final = "Http:TrustedProxies"
HTTP_CORS_ORIGINS: Final = "Http:CorsOrigins"
DOWNLOAD_MODEL: Final = "DownloadModel"
DOWNLOAD_LICENSE: Final = "DownloadLicense"
DECODER_MAX_COUNT: Final = "DecoderMaxCount"
CONTAINER_CPU_LIMIT: Final = "Container:CpuLimitMillicores"
CONTAINER_MEMORY_LIMIT: Final = "Container:MemoryLimitBytes"
WARMUP_COUNT: Final = "Warmup:Count"
WARMUP_SECONDS: Final = "Warmup:Seconds"
WARMUP_AUDIO: Final = "Warmup:Audio"
REUSE_RECOGNIZERS: Final = "ReuseRecognizers"
DRAIN_SECONDS: Final = "Drain:Seconds"
MAX_CONNECTIONS: Final = "MaxConnections"
CONNECTION_IDLE_SECONDS: Final = "ConnectionIdleSeconds"
AUDIO_IDLE_SECONDS: Final = "AudioIdleSeconds"
LOG_LEVEL: Final = "Logging:Console:LogLevel:Default"
LOG_DISK_FORMAT: Final = "Logging:Disk:Format"
LOG_DISK_MAX_FILE_SIZE: Final = "Logging:Disk:MaxFileSize"

DEFAULT_LICENSE_MOUNT: Final = "/license"
DEFAULT_OUTPUT_MOUNT: Final = "/output"
DEFAULT_MODELS_MOUNT: Final = "/models"
#: Models baked into the image at build time (``MODEL_LOCALE``); searched after
#: ``Mounts:Models``, so a volume mounted at /models never hides them.
BAKED_MODELS_DIR: Final = "/opt/speech-recognizer/models"

#: Request headers that carry the key, as Azure accepts them.
KEY_HEADER: Final = "Ocp-Apim-Subscription-Key"


def env_name(key: str) -> str:
    """The environment-variable spelling of a setting: ``Mounts:License`` -> ``Mounts__License``."""
    return key.replace(":", "__")


def arg(key: str, value: object) -> str:
    """A ``Key=Value`` command-line argument for the recognizer."""
    return f"{key}={value}"
