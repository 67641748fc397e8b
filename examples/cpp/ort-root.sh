#!/usr/bin/env bash
# Assemble an ONNX Runtime folder (include/ + lib/) for ONNXRUNTIME_ROOT on a Linux machine that
# reaches only Debian's and npm's package registries, not ONNX Runtime's GitHub releases:
#   - the C/C++ headers from Debian 13's libonnxruntime-dev (ONNX Runtime 1.21), fetched with
#     `apt-get download` into a private apt state (nothing is installed or changed system-wide);
#   - the library libonnxruntime.so.1 (1.30) bundled in the npm package onnxruntime-node, so
#     run `(cd examples/node && npm install --ignore-scripts)` first.
# Older headers with a newer library is a supported pairing: the C++ API asks the library for the
# C API version of its headers (21), which every later release still serves.
# With an official release (onnxruntime-linux-x64-*.tgz) unpacked, you do not need this script.
#
# usage: examples/cpp/ort-root.sh DEST   then   cmake ... -DONNXRUNTIME_ROOT=DEST
set -euo pipefail
dest=${1:?usage: ort-root.sh DEST}
here=$(cd "$(dirname "$0")" && pwd)
case "$(uname -m)" in
  x86_64) arch=x64 ;;
  aarch64) arch=arm64 ;;
  *) echo "error: no onnxruntime-node library for $(uname -m)" >&2; exit 2 ;;
esac
lib=$here/../node/node_modules/onnxruntime-node/bin/napi-v6/linux/$arch/libonnxruntime.so.1
if [[ ! -f $lib ]]; then
  echo "error: $lib is missing: run (cd examples/node && npm install --ignore-scripts) first" >&2
  exit 2
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/root"
# The Debian archive this machine already uses, asked for the trixie (Debian 13) suite.
uri=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/*.sources \
  2>/dev/null || true)
if [[ -z $uri ]]; then
  uri=$(awk '$1 == "deb" && !/security/ {for (i = 2; i <= NF; i++) if ($i ~ /:\/\//) {print $i; exit}}' \
    /etc/apt/sources.list 2>/dev/null || true)
fi
if [[ -z $uri ]]; then
  echo "error: no Debian archive is configured in /etc/apt" >&2
  exit 2
fi
cat > "$work/trixie.sources" <<EOF
Types: deb
URIs: $uri
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
apt_opts=(
  -o "Dir::Etc::SourceList=$work/trixie.sources" -o Dir::Etc::SourceParts=/nonexistent
  -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o APT::Sandbox::User=root
)
apt-get "${apt_opts[@]}" -qq update
(cd "$work" && apt-get "${apt_opts[@]}" -qq download libonnxruntime-dev)
dpkg-deb -x "$work"/libonnxruntime-dev_*.deb "$work/root"
mkdir -p "$dest/include" "$dest/lib"
cp -r "$work/root/usr/include/onnxruntime/." "$dest/include/"
cp "$lib" "$dest/lib/"
echo "ONNX Runtime for C++ in $dest: pass -DONNXRUNTIME_ROOT=$dest to cmake"
