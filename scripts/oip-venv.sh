#!/usr/bin/env bash
# Creates .cache/oip-venv/ (git-ignored) with the Open Inference Protocol v2 clients people already use:
# tritonclient[http,grpc] (Triton's HTTP and gRPC clients) and the kserve SDK (its REST client), for
# tests/services/oip-v2.test.ts, locked by tests/python/oip-constraints.txt. See scripts/pinned-venv.sh.
exec bash "$(dirname "$0")/pinned-venv.sh" oip-venv tests/python/oip-constraints.txt \
  "tritonclient[http,grpc]==2.73.0" "kserve==0.21.0"
