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
# The npm package carries no LICENSE file: say what it is, its licence and where it comes from.
node -p "const p = require('$here/node_modules/onnxruntime-web/package.json');
  p.name + ' ' + p.version + ', ' + p.license + ' licence, ' + (p.homepage || p.repository?.url)" \
  >"$target/NOTICE"
node -p "require('$here/node_modules/onnxruntime-web/package.json').version" >"$target/VERSION"
echo "onnxruntime-web $(cat "$target/VERSION") -> $target"
