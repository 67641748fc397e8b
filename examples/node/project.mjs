#!/usr/bin/env node
// Run a projector graph written by `onnxdeconv export` with onnxruntime-node.
//
//   node project.mjs PROJECTOR.onnx INPUT.f32 CHANNEL[,CHANNEL...] [OUT.f32]
//                    [--shape 1,1,28,28] [--position H,W[;H,W...]]
//
// INPUT.f32 holds the model's input for one image as raw little-endian float32, already
// preprocessed (the graph does no resizing or normalisation). Its shape is read from the
// session's input metadata with batch 1; pass --shape when the model input has free dimensions.
// Prints one JSON line {"activation": [...], "position": [[h, w], ...], "projection_shape": [...]}
// and, when OUT.f32 is given, writes the projections ([K, ...input shape without batch]) to it as
// raw little-endian float32.
//
// --position is for graphs exported with --position-input: one position for all channels, or one
// per channel separated by ';'.
// A graph exported without --batch takes one channel per run; for several channels this script
// runs it once per channel.

import { readFileSync, writeFileSync } from "node:fs";
import process from "node:process";

import ort from "onnxruntime-node";

const CHANNEL = "channel";
const POSITION = "position";
const USAGE =
  "usage: node project.mjs PROJECTOR.onnx INPUT.f32 CHANNEL[,CHANNEL...] [OUT.f32] " +
  "[--shape 1,1,28,28] [--position H,W[;H,W...]]";

class UsageError extends Error {}

function parseInts(text, what) {
  const parts = text.split(",").map((s) => s.trim());
  if (parts.length === 0 || parts.some((p) => !/^\d+$/.test(p))) {
    throw new UsageError(`${what} must be comma-separated non-negative integers, got '${text}'`);
  }
  return parts.map(Number);
}

function parseArgs(argv) {
  const positional = [];
  const options = { shape: null, position: null };
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i];
    if (arg === "-h" || arg === "--help") {
      console.log(USAGE);
      process.exit(0);
    }
    if (arg === "--shape" || arg === "--position") {
      if (i + 1 >= argv.length) throw new UsageError(`${arg} needs a value`);
      options[arg.slice(2)] = argv[i + 1];
      i += 1;
    } else if (arg.startsWith("--")) {
      throw new UsageError(`unknown option '${arg}'`);
    } else {
      positional.push(arg);
    }
  }
  if (positional.length < 3 || positional.length > 4) throw new UsageError(USAGE);
  const [model, input, channels, output] = positional;
  return {
    model,
    input,
    channels: parseInts(channels, "CHANNEL"),
    output: output ?? null,
    shape: options.shape === null ? null : parseInts(options.shape, "--shape"),
    position: options.position,
  };
}

/** The model input's shape with batch 1, from --shape or the session's input metadata. */
function inputShape(meta, given) {
  if (given !== null) return given;
  const dims = meta?.shape;
  if (!Array.isArray(dims)) {
    throw new UsageError(`the runtime does not report the shape of input '${meta?.name}': pass --shape`);
  }
  const shape = dims.map((d, axis) => (axis === 0 ? 1 : d));
  if (shape.some((d) => typeof d !== "number" || d < 1)) {
    throw new UsageError(
      `input '${meta.name}' has free dimensions [${dims.join(", ")}]: pass --shape, e.g. --shape 1,3,224,224`,
    );
  }
  return shape;
}

/** Raw little-endian float32 from `path`, checked against `shape`. */
function readFloat32(path, shape) {
  const bytes = readFileSync(path);
  const count = shape.reduce((a, b) => a * b, 1);
  if (bytes.length !== count * 4) {
    throw new UsageError(
      `${path} has ${bytes.length} bytes; shape [${shape.join(", ")}] needs ${count * 4} ` +
        "(raw little-endian float32)",
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const data = new Float32Array(count);
  for (let i = 0; i < count; i += 1) data[i] = view.getFloat32(i * 4, true);
  return data;
}

function writeFloat32(path, arrays) {
  const count = arrays.reduce((n, a) => n + a.length, 0);
  const bytes = Buffer.alloc(count * 4);
  let offset = 0;
  for (const array of arrays) {
    for (const value of array) {
      bytes.writeFloatLE(value, offset);
      offset += 4;
    }
  }
  writeFileSync(path, bytes);
}

/** One [h, w, ...] row per channel from --position. */
function parsePositions(text, count) {
  const rows = text.split(";").map((row) => parseInts(row, "--position"));
  if (rows.some((row) => row.length !== rows[0].length)) {
    throw new UsageError(`--position rows must all have the same length, got '${text}'`);
  }
  if (rows.length === 1) return Array.from({ length: count }, () => rows[0]);
  if (rows.length !== count) {
    throw new UsageError(`--position has ${rows.length} rows for ${count} channels: give 1 or ${count}`);
  }
  return rows;
}

/** The rows of a [K, rank] int64 tensor as numbers ([K, 0] for a fully connected layer). */
function rowsOf(tensor) {
  const [count, width = 1] = tensor.dims.map(Number);
  const values = Array.from(tensor.data, Number);
  return Array.from({ length: count }, (_, r) => values.slice(r * width, (r + 1) * width));
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  // Errors are reported below with context; keep the runtime's own log quiet.
  const session = await ort.InferenceSession.create(args.model, { logSeverityLevel: 4 });
  const names = session.inputNames;
  if (!names.includes(CHANNEL)) {
    throw new UsageError(`${args.model} has no '${CHANNEL}' input: is it a graph from 'onnxdeconv export'?`);
  }
  const imageName = names.find((n) => n !== CHANNEL && n !== POSITION);
  const metadata = session.inputMetadata ?? [];
  const meta = metadata.find((m) => m.name === imageName) ?? { name: imageName };
  const shape = inputShape(meta, args.shape);
  const image = new ort.Tensor("float32", readFloat32(args.input, shape), shape);

  const takesPosition = names.includes(POSITION);
  if (takesPosition && args.position === null) {
    throw new UsageError(`${args.model} was exported with --position-input: pass --position H,W`);
  }
  if (!takesPosition && args.position !== null) {
    throw new UsageError(`${args.model} finds the position itself: drop --position`);
  }
  const positions = takesPosition ? parsePositions(args.position, args.channels.length) : null;

  // A graph exported without --batch has channel [1]: run it once per channel.
  const channelDims = metadata.find((m) => m.name === CHANNEL)?.shape;
  const fixedOne = Array.isArray(channelDims) && channelDims[0] === 1;
  const groups = fixedOne ? args.channels.map((_, i) => [i]) : [args.channels.map((_, i) => i)];

  const activation = [];
  const position = [];
  const projections = [];
  let projectionDims = null;
  for (const rows of groups) {
    const feeds = {
      [imageName]: image,
      [CHANNEL]: new ort.Tensor(
        "int64",
        BigInt64Array.from(rows, (i) => BigInt(args.channels[i])),
        [rows.length],
      ),
    };
    if (takesPosition) {
      const picked = rows.map((i) => positions[i]);
      const width = picked[0].length;
      feeds[POSITION] = new ort.Tensor(
        "int64",
        BigInt64Array.from(picked.flat(), (v) => BigInt(v)),
        [rows.length, width],
      );
    }
    let out;
    try {
      out = await session.run(feeds);
    } catch (err) {
      throw new Error(
        `running ${args.model} failed (is every channel in range for the layer?): ${err.message}`,
      );
    }
    activation.push(...Array.from(out.activation.data, Number));
    position.push(...(takesPosition ? rows.map((i) => positions[i]) : rowsOf(out.position)));
    projections.push(out.projection.data);
    const dims = out.projection.dims.map(Number);
    projectionDims = projectionDims === null ? dims : [projectionDims[0] + dims[0], ...dims.slice(1)];
  }

  if (args.output !== null) writeFloat32(args.output, projections);
  console.log(JSON.stringify({ activation, position, projection_shape: projectionDims }));
}

main().catch((err) => {
  console.error(`error: ${err.message}`);
  process.exit(err instanceof UsageError ? 2 : 1);
});
