import sys

from speech_operator.cli import main

sys.exit(main())
