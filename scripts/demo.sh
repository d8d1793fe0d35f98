#!/usr/bin/env bash
# Set up everything and run the main job on the embedded default: with no configuration, `sm`
# creates a local File SR on first use; make a VDI, write, snapshot, write again, revert
# (in place, then through the clone fallback, keeping the VDI's uuid), and show the tree.
# Everything lives under one directory: $1, or a new temporary one (SM_HOME).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
export SM_HOME=${1:-$(mktemp -d /tmp/sm-demo.XXXXXX)}
mkdir -p "$SM_HOME"
set -x
sm sr list
sm vdi create demo-disk --size 64M --description "made by scripts/demo.sh"
printf 'hello from the first version' | sm vdi write demo-disk
sm vdi snapshot demo-disk --name v1
printf 'HELLO FROM THE SECOND VERSION' | sm vdi write demo-disk
sm vdi snapshot demo-disk --name v2
sm vdi read demo-disk --length 29; echo
sm vdi revert demo-disk v1
sm vdi read demo-disk --length 29 | tr -d '\0'; echo
SM_REVERT=clone sm vdi revert demo-disk v2      # the fallback a driver without VDI_REVERT gets
sm vdi read demo-disk --length 29; echo
sm vdi show demo-disk
sm vdi tree demo-disk
sm vdi list
sm vhd check "$SM_HOME/default-sr/$(sm vdi show demo-disk --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["backing_location"])').vhd"
