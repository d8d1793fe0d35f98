#!/usr/bin/env bash
# Set up everything and run the main job on an embedded default: a VHD chain in a
# temporary directory, written through and shown with `sm vhd`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
dir=${1:-$(mktemp -d /tmp/sm-demo.XXXXXX)}
mkdir -p "$dir"
set -x
sm vhd create "$dir/base.vhd" --size 64M
printf 'hello from the base image' | sm vhd write "$dir/base.vhd" --offset 0
sm vhd snapshot "$dir/base.vhd" "$dir/leaf.vhd"
printf 'written in the leaf' | sm vhd write "$dir/leaf.vhd" --offset 4096
sm vhd info "$dir/leaf.vhd"
sm vhd map "$dir/leaf.vhd"
sm vhd check "$dir/leaf.vhd"
sm vhd read "$dir/leaf.vhd" | head -c 4200 | tr -d '\0'; echo
