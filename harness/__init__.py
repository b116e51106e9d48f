"""What the tests and the benchmarks share: speech made with espeak-ng and sox, WAV reading, free
ports on loopback, a process's peak memory over a span, and a Kubernetes API emulator (kmock) that
does what the operator relies on.

Dependencies point one way: ``tests`` and ``bench`` import this package; it imports neither, and
the production packages (``speech_recognizer``, ``speech_operator``) never import it. It is not
shipped in the wheel nor in the images.
"""
