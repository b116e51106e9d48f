#!/bin/sh
# End-to-end on kind: exit 0 passed, 1 failed, 77 NOT RUN (no Docker engine / kind here).
cd "$(dirname "$0")/../.." && exec python -m tests.e2e "$@"
