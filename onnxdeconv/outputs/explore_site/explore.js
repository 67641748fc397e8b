// The page of `onnxdeconv explore`: activation maps and live deconvnet projections, computed in
// the browser by onnxruntime-web. site.json (written by onnxdeconv.outputs.explore) describes the
// model, its layers, the graphs and the pictures.
//
// For tests and measurements the page keeps its state in `window.explore`: `ready`, `busy`,
// `last` (the last projection: layer, rule, channel, position, activation, milliseconds),
// `projection` and `input` (Float32Arrays), `timings` and `errors`.

const $ = (id) => document.getElementById(id);
const explore = {
  ready: false,
  busy: 0,
  last: null,
  projection: null,
  input: null,
  provider: null,
  timings: { firstProjectionMs: null, clicks: [] },
  errors: [],
};
window.explore = explore;

let site;
let ort;
let weights;
const sessions = new Map();
const view = { layer: 0, rule: null, image: null, acts: null, prediction: null, selected: null };

function fail(error) {
  console.error(error);
  explore.errors.push(String(error?.message ?? error));
  $("status").textContent = `error: ${error?.message ?? error}`;
  $("status").classList.add("error");
}

function status(text) {
  $("status").textContent = text;
}

// --- numbers -------------------------------------------------------------------------------

const f32 = Math.fround;

/** float16 bits of each value, rounding to nearest even (as numpy's astype(float16)). */
function toHalf(values) {
  if (typeof Float16Array !== "undefined") {
    return new Uint16Array(Float16Array.from(values).buffer);
  }
  const out = new Uint16Array(values.length);
  const view32 = new DataView(new ArrayBuffer(4));
  for (let i = 0; i < values.length; i += 1) {
    view32.setFloat32(0, values[i]);
    const x = view32.getUint32(0);
    const sign = (x >>> 16) & 0x8000;
    let exp = ((x >>> 23) & 0xff) - 127 + 15;
    let mant = x & 0x7fffff;
    if (exp >= 31) {
      out[i] = sign | 0x7c00 | (((x >>> 23) & 0xff) === 0xff && mant ? 0x200 : 0);
      continue;
    }
    if (exp <= 0) {
      if (exp < -10) { out[i] = sign; continue; }
      mant |= 0x800000;
      const shift = 14 - exp;
      let half = mant >>> shift;
      const rest = mant & ((1 << shift) - 1);
      const mid = 1 << (shift - 1);
      if (rest > mid || (rest === mid && (half & 1))) half += 1;
      out[i] = sign | half;
      continue;
    }
    let half = (exp << 10) | (mant >>> 13);
    const rest = mant & 0x1fff;
    if (rest > 0x1000 || (rest === 0x1000 && (half & 1))) half += 1;
    out[i] = sign | half;
  }
  return out;
}

/** A runtime tensor's values as Float32Array (float16 outputs decoded). */
function floats(tensor) {
  const data = tensor.data;
  if (data instanceof Float32Array) return data;
  if (typeof Float16Array !== "undefined" && data instanceof Float16Array) return Float32Array.from(data);
  if (tensor.type === "float16") {
    const out = new Float32Array(data.length);
    for (let i = 0; i < data.length; i += 1) {
      const h = data[i];
      const sign = h & 0x8000 ? -1 : 1;
      const exp = (h >> 10) & 0x1f;
      const mant = h & 0x3ff;
      out[i] = exp === 0 ? sign * 2 ** -14 * (mant / 1024)
        : exp === 31 ? (mant ? NaN : sign * Infinity)
          : sign * 2 ** (exp - 15) * (1 + mant / 1024);
    }
    return out;
  }
  return Float32Array.from(data, Number);
}

// --- pictures to model input ------------------------------------------------------------------

function inputSize() {
  const [, a, b, c] = site.input.shape;
  return site.input.layout === "NCHW" ? [b, c] : [a, b];
}

function loadPicture(url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error(`cannot read the image ${url}`));
    img.src = url;
  });
}

/** RGBA pixels at the model's size: resized (shorter side) and centre-cropped, as fit_image. */
function fitted(img) {
  const [height, width] = inputSize();
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = "high";
  const factor = Math.max(height / img.naturalHeight, width / img.naturalWidth);
  const newH = Math.max(height, Math.round(img.naturalHeight * factor));
  const newW = Math.max(width, Math.round(img.naturalWidth * factor));
  const top = Math.floor((newH - height) / 2);
  const left = Math.floor((newW - width) / 2);
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, width, height);
  ctx.drawImage(img, -left, -top, newW, newH);
  return ctx.getImageData(0, 0, width, height);
}

/** The model input for RGBA pixels: (pixel * scale - mean) / std in float32, as normalise. */
function normalised(pixels) {
  const { scale, mean, std, bgr } = site.preprocessing;
  const channels = site.input.channels;
  const [height, width] = inputSize();
  const count = height * width;
  let means = mean.map(f32);
  let stds = std.map(f32);
  if (channels === 1 && means.length === 3) means = [f32((means[0] + means[1] + means[2]) / 3)];
  if (channels === 1 && stds.length === 3) stds = [f32((stds[0] + stds[1] + stds[2]) / 3)];
  const s = f32(scale);
  const rgba = pixels.data;
  const out = new Float32Array(count * channels);
  for (let c = 0; c < channels; c += 1) {
    const m = means[means.length === 1 ? 0 : c];
    const d = stds[stds.length === 1 ? 0 : c];
    const source = bgr ? 2 - c : c;
    for (let i = 0; i < count; i += 1) {
      let p;
      if (channels === 1) {
        const [r, g, b] = [rgba[4 * i], rgba[4 * i + 1], rgba[4 * i + 2]];
        p = r === g && g === b ? r : Math.round(0.299 * r + 0.587 * g + 0.114 * b);
      } else {
        p = rgba[4 * i + source];
      }
      const v = f32(f32(f32(p * s) - m) / d);
      if (site.input.layout === "NCHW") out[c * count + i] = v;
      else out[i * channels + c] = v;
    }
  }
  return out;
}

function inputTensor(values) {
  const dtype = site.input.dtype;
  if (dtype === "float16") return new ort.Tensor("float16", toHalf(values), site.input.shape);
  if (dtype === "float32") return new ort.Tensor("float32", values, site.input.shape);
  throw new Error(`the page feeds float32 or float16 inputs; the model takes ${dtype}`);
}

// --- sessions -------------------------------------------------------------------------------

let webgpu = false;
/** Whether the site carries the WebGPU build and the browser gives it a GPU adapter. */
async function findWebgpu() {
  if (!site.runtime.includes("webgpu") || !navigator.gpu) return false;
  try {
    return Boolean(await navigator.gpu.requestAdapter());
  } catch {
    return false;
  }
}

function providers() {
  return webgpu ? ["webgpu", "wasm"] : ["wasm"];
}

// One run at a time: a click while the dataset examples project waits for the current run.
let queue = Promise.resolve();
function exclusive(work) {
  const next = queue.then(work, work);
  queue = next.catch(() => {});
  return next;
}

async function session(path) {
  if (!sessions.has(path)) {
    sessions.set(
      path,
      (async () => {
        const bytes = new Uint8Array(await (await fetch(path)).arrayBuffer());
        return ort.InferenceSession.create(bytes, {
          executionProviders: providers(),
          externalData: [{ path: "weights.bin", data: weights }],
          logSeverityLevel: 3,
        });
      })(),
    );
  }
  return sessions.get(path);
}

// --- drawing ---------------------------------------------------------------------------------

function putGray(canvas, width, height, value) {
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(width, height);
  for (let i = 0; i < width * height; i += 1) {
    const [r, g, b] = value(i);
    image.data.set([r, g, b, 255], 4 * i);
  }
  ctx.putImageData(image, 0, 0);
}

// A perceptual ramp (black, purple, orange, yellow) for the activation maps.
const RAMP = [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]];
function ramp(t) {
  const x = Math.min(Math.max(t, 0), 1) * (RAMP.length - 1);
  const i = Math.min(Math.floor(x), RAMP.length - 2);
  const f = x - i;
  return RAMP[i].map((v, k) => Math.round(v + f * (RAMP[i + 1][k] - v)));
}

/** The projection as RGB in 0..255: zero is mid-grey, the 99.9th percentile of |value| the end. */
function displayProjection(values) {
  const [height, width] = inputSize();
  const channels = site.input.channels;
  const count = height * width;
  const magnitudes = [];
  for (const v of values) if (v !== 0) magnitudes.push(Math.abs(v));
  magnitudes.sort((a, b) => a - b);
  let peak = 0;
  if (magnitudes.length) {
    // numpy's default percentile: linear between the closest ranks.
    const rank = 0.999 * (magnitudes.length - 1);
    const low = Math.floor(rank);
    const high = Math.min(low + 1, magnitudes.length - 1);
    peak = magnitudes[low] + (rank - low) * (magnitudes[high] - magnitudes[low]);
  }
  const shown = (v) => Math.round(255 * Math.min(Math.max(peak > 0 ? v / (2 * peak) + 0.5 : v + 0.5, 0), 1));
  const at = (c, i) => (site.input.layout === "NCHW" ? values[c * count + i] : values[i * channels + c]);
  const order = site.preprocessing.bgr ? [2, 1, 0] : [0, 1, 2];
  return (i) => {
    if (channels === 1) {
      const g = shown(at(0, i));
      return [g, g, g];
    }
    return order.map((c) => shown(at(c, i)));
  };
}

/** Draw `box` ([[top, bottom], [left, right]]) of a picture (RGB function of pixel) into canvas. */
function drawCrop(canvas, pixel, box) {
  const [height, width] = inputSize();
  const [[top, bottom], [left, right]] = box;
  const h = bottom - top;
  const w = right - left;
  putGray(canvas, w, h, (i) => {
    const y = top + Math.floor(i / w);
    const x = left + (i % w);
    return y < 0 || x < 0 || y >= height || x >= width ? [128, 128, 128] : pixel(y * width + x);
  });
}

function unitBox(layer, position) {
  const [height, width] = inputSize();
  if (!position || position.length < 2 || layer.boxes.length < 2) return [[0, height], [0, width]];
  return [layer.boxes[0][position[0]], layer.boxes[1][position[1]]];
}

// --- the page ----------------------------------------------------------------------------------

function currentLayer() {
  return site.layers[view.layer];
}

function layerMaps(layer) {
  const acts = view.acts[layer.name];
  const [channels, ...spatial] = layer.shape;
  const size = spatial.reduce((a, b) => a * b, 1);
  return { acts, channels, spatial, size };
}

function strongest(layer, channel) {
  const { acts, spatial, size } = layerMaps(layer);
  let best = 0;
  for (let i = 1; i < size; i += 1) if (acts[channel * size + i] > acts[channel * size + best]) best = i;
  const position = [];
  let rest = best;
  for (let a = spatial.length - 1; a >= 0; a -= 1) {
    position.unshift(rest % spatial[a]);
    rest = Math.floor(rest / spatial[a]);
  }
  return position;
}

function drawGrid() {
  const layer = currentLayer();
  const { acts, channels, spatial, size } = layerMaps(layer);
  const [mapH, mapW] = spatial.length >= 2 ? spatial : [1, 1];
  const peaks = [];
  let top = 0;
  for (let c = 0; c < channels; c += 1) {
    let peak = -Infinity;
    for (let i = 0; i < size; i += 1) peak = Math.max(peak, acts[c * size + i]);
    peaks.push(peak);
    top = Math.max(top, peak);
  }
  const order = peaks.map((_, c) => c).sort((a, b) => peaks[b] - peaks[a] || a - b);
  $("grid-title").textContent =
    `${layer.alias} · ${channels} channels of ${spatial.join("×") || "1"} · receptive field ${layer.field}` +
    " · strongest first";
  const grid = $("grid");
  grid.replaceChildren();
  for (const c of order) {
    const tile = document.createElement("div");
    tile.className = "tile";
    tile.dataset.channel = String(c);
    if (layer.features?.[String(c)]) tile.dataset.features = "";
    const canvas = document.createElement("canvas");
    // Each map on its own scale (its number says how strong it is): weak maps keep their shape.
    // A fully connected layer's "map" is one unit: there the layer's scale tells them apart.
    const scale = size > 1 && peaks[c] > 0 ? peaks[c] : top;
    putGray(canvas, mapW, mapH, (i) => ramp(scale > 0 ? acts[c * size + i] / scale : 0));
    canvas.addEventListener("click", (event) => {
      const rect = canvas.getBoundingClientRect();
      const h = Math.min(mapH - 1, Math.floor(((event.clientY - rect.top) / rect.height) * mapH));
      const w = Math.min(mapW - 1, Math.floor(((event.clientX - rect.left) / rect.width) * mapW));
      select(c, spatial.length >= 2 ? [h, w] : strongest(layer, c), "click");
    });
    const num = document.createElement("div");
    num.className = "num";
    num.textContent = `${c} · ${peaks[c].toPrecision(3)}`;
    num.title = "project the strongest unit of this channel";
    num.addEventListener("click", () => select(c, strongest(layer, c), "click"));
    tile.append(canvas, num);
    grid.append(tile);
  }
  return order;
}

function drawPrediction() {
  const list = $("prediction");
  list.replaceChildren();
  if (!view.prediction) return;
  let scores = Array.from(view.prediction);
  const sum = scores.reduce((a, b) => a + b, 0);
  const probabilities = scores.every((v) => v >= 0 && v <= 1) && Math.abs(sum - 1) < 1e-2;
  if (!probabilities) {
    const peak = Math.max(...scores);
    const exps = scores.map((v) => Math.exp(v - peak));
    const total = exps.reduce((a, b) => a + b, 0);
    scores = exps.map((v) => v / total);
  }
  const order = scores.map((_, i) => i).sort((a, b) => scores[b] - scores[a]).slice(0, 5);
  for (const i of order) {
    const item = document.createElement("li");
    const name = site.labels?.[i] ?? `class ${i}`;
    item.textContent = `${name} ${(100 * scores[i]).toFixed(1)}%`;
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = `${Math.round(80 * scores[i])}px`;
    item.append(bar);
    list.append(item);
  }
}

function drawInput() {
  const [height, width] = inputSize();
  const rgba = view.image.pixels.data;
  putGray($("input"), width, height, (i) => [rgba[4 * i], rgba[4 * i + 1], rgba[4 * i + 2]]);
  const overlay = $("overlay");
  overlay.width = width * 4;
  overlay.height = height * 4;
  overlay.getContext("2d").clearRect(0, 0, overlay.width, overlay.height);
}

function drawBox(box) {
  const overlay = $("overlay");
  const ctx = overlay.getContext("2d");
  ctx.clearRect(0, 0, overlay.width, overlay.height);
  const [[top, bottom], [left, right]] = box;
  // Two CSS pixels wide, whatever the canvas's scale; a dark edge keeps it visible on white.
  const line = (2 * overlay.width) / Math.max(overlay.clientWidth, 1);
  const rect = [4 * left, 4 * top, 4 * (right - left), 4 * (bottom - top)];
  ctx.lineWidth = 2 * line;
  ctx.strokeStyle = "rgba(0, 0, 0, 0.6)";
  ctx.strokeRect(...rect);
  ctx.lineWidth = line;
  ctx.strokeStyle = "#4fc3f7";
  ctx.strokeRect(...rect);
}

async function setImage(name, url, thumb) {
  explore.busy += 1;
  try {
    status("running the model…");
    const img = await loadPicture(url);
    const pixels = fitted(img);
    const input = normalised(pixels);
    view.image = { name, pixels, input, tensor: inputTensor(input) };
    explore.input = input;
    for (const other of document.querySelectorAll(".thumbs img")) other.classList.toggle("active", other === thumb);
    $("image-name").textContent = name;
    drawInput();
    const forward = await session(site.forward);
    const out = await exclusive(() => forward.run({ [site.input.name]: view.image.tensor }));
    view.acts = Object.fromEntries(site.layers.map((l) => [l.name, floats(out[l.name])]));
    view.prediction = site.prediction ? floats(out[site.prediction.name]) : null;
    drawPrediction();
    const order = drawGrid();
    const layer = currentLayer();
    await select(order[0], strongest(layer, order[0]), "image");
  } finally {
    explore.busy -= 1;
  }
}

function projectorFeeds(tensor, channel, position) {
  return {
    [site.input.name]: tensor,
    channel: new ort.Tensor("int64", BigInt64Array.from([BigInt(channel)]), [1]),
    position: new ort.Tensor("int64", BigInt64Array.from(position.map((v) => BigInt(v))), [1, position.length]),
  };
}

async function project(layer, rule, tensor, channel, position) {
  const projector = await session(layer.graphs[rule]);
  const out = await exclusive(() => projector.run(projectorFeeds(tensor, channel, position)));
  return { projection: floats(out.projection), activation: floats(out.activation)[0] };
}

async function select(channel, position, why) {
  if (!view.image) return;
  const started = performance.now();
  explore.busy += 1;
  try {
    const layer = currentLayer();
    const rule = view.rule;
    view.selected = { channel, position };
    for (const tile of document.querySelectorAll(".tile")) {
      tile.classList.toggle("active", tile.dataset.channel === String(channel));
    }
    status(`projecting ${layer.alias} channel ${channel}…`);
    const { projection, activation } = await project(layer, rule, view.image.tensor, channel, position);
    const box = unitBox(layer, position);
    const shown = displayProjection(projection);
    const [height, width] = inputSize();
    const rgba = view.image.pixels.data;
    drawCrop($("patch"), (i) => [rgba[4 * i], rgba[4 * i + 1], rgba[4 * i + 2]], box);
    drawCrop($("projection-crop"), shown, box);
    drawCrop($("projection"), shown, [[0, height], [0, width]]);
    drawBox(box);
    const ms = performance.now() - started;
    const where = position.length ? ` @ ${position.join(",")}` : "";
    $("unit-title").textContent =
      `${layer.alias} · channel ${channel}${where} · activation ${activation.toPrecision(4)} · ${rule}`;
    explore.projection = projection;
    explore.last = { layer: layer.name, rule, channel, position, activation, image: view.image.name, ms };
    $("result").textContent = JSON.stringify(explore.last);
    if (explore.timings.firstProjectionMs === null) {
      explore.timings.firstProjectionMs = performance.now();
    } else if (why === "click") {
      explore.timings.clicks.push(ms);
    }
    status(`${explore.provider} · projected in ${ms.toFixed(0)} ms`);
    await drawFeatures(layer, rule, channel);
  } catch (error) {
    fail(error);
  } finally {
    explore.busy -= 1;
  }
}

const datasetCache = new Map();
async function datasetInput(index) {
  if (!datasetCache.has(index)) {
    datasetCache.set(index, (async () => {
      const entry = site.dataset[index];
      const pixels = fitted(await loadPicture(entry.file));
      return { pixels, tensor: inputTensor(normalised(pixels)) };
    })());
  }
  return datasetCache.get(index);
}

async function drawFeatures(layer, rule, channel) {
  const panel = $("features");
  const entries = layer.features?.[String(channel)];
  panel.replaceChildren();
  if (!entries || !entries.length) {
    const tracked = Object.keys(layer.features ?? {}).length;
    if (tracked) {
      const note = document.createElement("p");
      note.className = "muted";
      note.textContent =
        `channel ${channel} is not among the ${tracked} channels of the features run: ` +
        "the maps with a dot have their dataset examples";
      panel.append(note);
    }
    return;
  }
  const title = document.createElement("h3");
  title.textContent = `top ${entries.length} in the dataset · projections (left), patches (right)`;
  const two = document.createElement("div");
  two.className = "two";
  const left = document.createElement("div");
  const right = document.createElement("div");
  left.className = right.className = "nine";
  two.append(left, right);
  panel.append(title, two);
  for (const entry of entries) {
    const projection = document.createElement("canvas");
    const patch = document.createElement("canvas");
    const name = site.dataset[entry.image].name;
    projection.title = patch.title = `${name} @ ${entry.position?.join(",") ?? "-"} · ${entry.value.toPrecision(3)}`;
    left.append(projection);
    right.append(patch);
  }
  for (const [k, entry] of entries.entries()) {
    if (view.selected?.channel !== channel || currentLayer() !== layer || view.rule !== rule) return;
    const { pixels, tensor } = await datasetInput(entry.image);
    const position = entry.position ?? [];
    const { projection } = await project(layer, rule, tensor, channel, position);
    const box = unitBox(layer, entry.position);
    const rgba = pixels.data;
    drawCrop(left.children[k], displayProjection(projection), box);
    drawCrop(right.children[k], (i) => [rgba[4 * i], rgba[4 * i + 1], rgba[4 * i + 2]], box);
  }
}

function buildControls() {
  $("model").textContent = site.model;
  const nav = $("layers");
  // Start in the middle of the network: the first layer's maps are edges, the last one's classes.
  view.layer = Math.floor(site.layers.length / 2);
  while (view.layer > 0 && site.layers[view.layer].shape.length < 2) view.layer -= 1;
  site.layers.forEach((layer, index) => {
    const button = document.createElement("button");
    button.textContent = layer.alias;
    button.title = layer.name;
    button.addEventListener("click", async () => {
      view.layer = index;
      for (const b of nav.children) b.classList.toggle("active", b === button);
      if (!view.acts) return;
      const order = drawGrid();
      await select(order[0], strongest(currentLayer(), order[0]), "layer");
    });
    nav.append(button);
  });
  nav.children[view.layer]?.classList.add("active");
  const rule = $("rule");
  for (const name of site.rules) rule.append(new Option(name, name));
  view.rule = site.rules[0];
  rule.addEventListener("change", async () => {
    view.rule = rule.value;
    if (view.selected) await select(view.selected.channel, view.selected.position, "rule");
  });
  const thumbs = $("thumbs");
  for (const image of site.images) {
    const thumb = document.createElement("img");
    thumb.src = image.file;
    thumb.alt = thumb.title = image.name;
    thumb.addEventListener("click", () => setImage(image.name, image.file, thumb).catch(fail));
    thumbs.append(thumb);
  }
  const drop = $("drop");
  const open = (file) => setImage(file.name, URL.createObjectURL(file), null).catch(fail);
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    const file = event.dataTransfer.files[0];
    if (file) open(file);
  });
  $("file").addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (file) open(file);
  });
}

async function main() {
  site = await (await fetch("site.json")).json();
  buildControls();
  status("loading the runtime…");
  ort = await import(`./${site.runtime}`);
  ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
  webgpu = await findWebgpu();
  weights = new Uint8Array(await (await fetch(site.weights)).arrayBuffer());
  explore.provider = `${providers()[0]} · ${ort.env.wasm.numThreads} thread${ort.env.wasm.numThreads > 1 ? "s" : ""}`;
  if (site.images.length) {
    await setImage(site.images[0].name, site.images[0].file, document.querySelector(".thumbs img"));
  } else {
    status("drop an image");
  }
  explore.ready = true;
}

main().catch(fail);
