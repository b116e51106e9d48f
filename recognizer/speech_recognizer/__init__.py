"""Open, self-hosted speech to text: an Azure speech-to-text container drop-in on Vosk."""

__version__ = "0.1.0"
