#!/usr/bin/env bash
# Client role: the legitimate client of the scenarios (lab/scenarios.py legit).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
. "$PROVISION_DIR/scenario-runner.sh"
