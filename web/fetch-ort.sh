#!/usr/bin/env bash
# Vendors onnxruntime-web, at the version package.json pins, into the package data of
# `onnxdeconv explore` (onnxdeconv/outputs/explore_site/ort/, ignored by git: the WebAssembly
# binaries are large and come from npm, not from this repository). Run it once after checking
# out the source, before building a wheel, and in CI; it needs npm and the npm registry.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
target="$here/../onnxdeconv/outputs/explore_site/ort"
cd "$here"
# --ignore-scripts: onnxruntime-web needs no install step, and none runs.
npm install --ignore-scripts --no-audit --no-fund --silent
dist="$here/node_modules/onnxruntime-web/dist"
mkdir -p "$target"
for name in ort.wasm.min.mjs ort-wasm-simd-threaded.mjs ort-wasm-simd-threaded.wasm \
  ort.webgpu.min.mjs ort-wasm-simd-threaded.asyncify.mjs ort-wasm-simd-threaded.asyncify.wasm; do
  cp "$dist/$name" "$target/$name"
done
cp "$here/node_modules/onnxruntime-web/LICENSE" "$target/LICENSE" 2>/dev/null || true
node -p "require('$here/node_modules/onnxruntime-web/package.json').version" >"$target/VERSION"
echo "onnxruntime-web $(cat "$target/VERSION") -> $target"
