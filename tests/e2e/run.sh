#!/bin/sh
# End-to-end: exit 0 passed, 1 failed, 77 NOT RUN (no Docker/kind and no --kubeconfig), 130 interrupted.
cd "$(dirname "$0")/../.." && exec python -m tests.e2e "$@"
