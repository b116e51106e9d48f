"""``python -m speech_recognizer``."""

import sys

from .cli import main

sys.exit(main())
