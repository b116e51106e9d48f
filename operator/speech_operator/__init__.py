"""Kubernetes operator that runs speech_recognizer per locale from SpeechToText resources."""

__version__ = "0.1.0"
