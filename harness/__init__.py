"""What the tests and the benchmarks share: speech made with espeak-ng and sox, WAV reading, free
ports on loopback, a recognizer server in a subprocess and the CPU and peak memory it used, clients
of its WebSocket routes and the USP frames they write, hostile inputs (audio bombs, oversized and withheld requests), and a
Kubernetes API emulator (kmock) that does what the operator relies on.

Dependencies point one way: ``tests`` and ``bench`` import this package and never each other; it
imports neither, and the production packages (``speech_recognizer``, ``speech_operator``) never
import it. It is not shipped in the wheel nor in the images.
"""
