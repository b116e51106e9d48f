"""The pod's scratch space: what the recognizer writes to /tmp, and a model download to the models folder, at most,
from its settings.

One place for the figure: the recognizer holds its /vosk spills to :func:`spill_budget` (:mod:`.inbox`), and the
operator sizes the pod's /tmp ``emptyDir`` (its ``sizeLimit``) and the container's ``ephemeral-storage`` request by
:func:`tmp_bytes`, so that the kubelet neither schedules the pod blind to its disk nor evicts it (every stream on it
lost) for writing what it was allowed to.

What writes there:

- a /vosk stream's read-ahead (:class:`.inbox.Spill`): at most :data:`SPILL_BYTES` not yet handled per stream, and all
  streams' files together, what was read of them but not yet freed included, at most :func:`spill_budget` (one
  stream's share per decoder): past it a stream is held back as when its own spill is full. Not every stream that
  reads ahead holds a decoder (one whose model is loading does), so the decoders alone do not bound them.
- an OpenAI transcription's upload: Starlette's form parser keeps a file part past 1 MiB in a temporary file, all of
  it (:func:`upload_bytes`); one per decoder at most, each held before its body is read.
- a model's load: a view of its folder (links, its ``conf`` copied: :data:`MODEL_VIEW_BYTES`).

Nothing else: a REST body, FFmpeg's input and output (its child may write no file) stay in memory and pipes.

The models folder, when the pod downloads its model into an ``emptyDir`` (``DownloadModel=True``), holds at most a
:class:`DownloadBound`'s :attr:`~DownloadBound.folder_bytes` at once: the download holds itself to the bound
:func:`.models.download_bound` gives, and the operator sizes that ``emptyDir`` by the same function's figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from .contract import MAX_BYTES_PER_SECOND

#: Most bytes of messages read ahead beyond the memory's read-ahead and kept on disk, per /vosk stream, each message
#: counted with its head and its cost in memory (:data:`.inbox.MESSAGE_BYTES`; 31 min of 16 kHz mono PCM in
#: 3200-byte messages).
SPILL_BYTES: Final = 64 << 20
#: A spill's file is closed (its disk space freed) once read through; a new one is begun past this many bytes.
SPILL_FILE_BYTES: Final = 8 << 20
#: An OpenAI form's fields besides its file: their values are short.
FORM_FIELD_BYTES: Final = 64 * 1024
#: A model's view while it loads: a link per file, and its ``conf`` folder copied (a few KB); a MiB is room to spare.
MODEL_VIEW_BYTES: Final = 1 << 20


def spill_budget(decoders: int) -> int:
    """Bytes every /vosk stream's spill files may take on disk together: a stream's :data:`SPILL_BYTES` per decoder."""
    return decoders * SPILL_BYTES


def upload_bytes(max_audio_seconds: float) -> int:
    """The largest OpenAI upload (its body, the file and the form's fields): ``max_audio_seconds`` of the widest
    audio taken, as a REST body before its header says its format."""
    return int(max_audio_seconds * MAX_BYTES_PER_SECOND) + FORM_FIELD_BYTES


def tmp_bytes(decoders: int, max_audio_seconds: float) -> int:
    """The most a recognizer with ``decoders`` (``DecoderMaxCount``) and ``MaxAudioSeconds`` writes to /tmp at once:
    the spills' budget, an upload in flight per decoder, a model's view."""
    return spill_budget(decoders) + decoders * upload_bytes(max_audio_seconds) + MODEL_VIEW_BYTES


#: Room in the models folder besides a download's file contents: its folders, each file's last block.
MODEL_FOLDER_BYTES: Final = 1 << 20


def model_max_bytes(model_max_size_mb: float) -> int:
    """``ModelMaxSizeMB`` in bytes: the most a model's zip, and what it unpacks to, may each hold."""
    return int(model_max_size_mb * 1e6)


#: What a catalog model's zip may unpack to, in times the zip's size the catalog gives, when ``ModelMaxSizeMB`` is not
#: given (:func:`.models.download_bound`): its pod's models folder is sized for the zip and 8 times it, not for 2 x 4096 MB.
#: Measured: the ko-KR small model unpacks to 3.04 times its zip (86,914,329 bytes to 264,389,302), en-US small to
#: about 1.7; the most compressible file in any of them, ko-KR's HCLr.fst grammar, deflates 5.6 times (181.5 MB to
#: 32.3 MB; its acoustic model and i-vector files 1.04-1.09, Gr.fst 2.2). 8 holds even a model made of nothing but
#: such a grammar, and 2.6 times the worst whole model measured; past it a catalog model is refused in one line
#: naming ModelMaxSizeMB, before anything is unpacked (never a pod evicted for a full folder).
CATALOG_UNPACK_RATIO: Final = 8


@dataclass(frozen=True)
class DownloadBound:
    """What a model download (:func:`.models.download_model`) may write to the models folder: its zip at most
    ``zip_bytes``, what it unpacks to at most ``unpacked_bytes``, and both together, with the grammar's rewrite
    (:func:`.model_graph.slim_model`: a copy of one file, made once the zip is deleted), at most
    :attr:`folder_bytes`. ``catalog``: the catalog's zip whose known size it is made of (:func:`.models.download_bound`),
    else None: ``ModelMaxSizeMB``'s (:func:`model_bound`)."""

    zip_bytes: int
    unpacked_bytes: int
    catalog: str | None = None

    @property
    def folder_bytes(self) -> int:
        """The most the models folder holds at once, and room for its folders: the zip and what it unpacks to; once
        the zip is deleted, what it unpacked to and the grammar's rewrite, which the download holds to the same sum
        (under ``ModelMaxSizeMB``'s bound it does by itself: the copied file is part of what was unpacked)."""
        return self.zip_bytes + self.unpacked_bytes + MODEL_FOLDER_BYTES


def model_bound(model_max_size_mb: float) -> DownloadBound:
    """``ModelMaxSizeMB``'s bound: the zip and what it unpacks to each at most :func:`model_max_bytes`."""
    most = model_max_bytes(model_max_size_mb)
    return DownloadBound(most, most)


def download_bytes(model_max_size_mb: float) -> int:
    """The most a model download of ``ModelMaxSizeMB`` (:func:`model_bound`) holds in the models folder at once."""
    return model_bound(model_max_size_mb).folder_bytes
