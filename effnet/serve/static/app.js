// The page: pick or drop an image, POST it to the model's endpoint, draw the answer.
// One renderer per model kind (what /health reports): bars for a classifier, boxes over the image for a detector,
// the mask as a colour overlay with a legend for a segmenter, the JSON itself for any other task. The route's options (name, default, bounds: /health's "options", from the
// task object) become number inputs whose values go in the query string.
// The endpoint answers {model, ms, results: [one result per image]} in effnet's one result schema
// (effnet/results.py): label = class name, index = the model's class index.
"use strict";

const $ = (id) => document.getElementById(id);
let endpoint = "/predict";
let kind = "classify";

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
}

function renderClassification(answer) {
  const bars = $("bars");
  bars.replaceChildren();
  for (const p of answer.predictions) {
    const li = document.createElement("li");
    const name = document.createElement("div");
    name.className = "name";
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = p.label;
    const score = document.createElement("span");
    score.textContent = (100 * p.score).toFixed(1) + " %";
    name.append(label, score);
    const track = document.createElement("div");
    track.className = "track";
    const fill = document.createElement("div");
    fill.className = "fill";
    fill.style.width = (100 * p.score).toFixed(1) + "%";
    track.append(fill);
    li.append(name, track);
    bars.append(li);
  }
  const best = answer.predictions[0];
  $("top").textContent = best ? best.label : "";
}

const COLORS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#9a6324", "#000075", "#808000"];

// Boxes come in the uploaded image's pixels: the canvas gets the image's own size and is stretched over the
// preview by CSS, so a box lands where the object is at any display size.
function drawBoxes(answer) {
  const img = $("preview");
  const canvas = $("boxes");
  canvas.width = answer.width;
  canvas.height = answer.height;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const line = Math.max(2, Math.round(Math.max(canvas.width, canvas.height) / 200));
  ctx.lineWidth = line;
  ctx.font = `${6 * line + 4}px system-ui, sans-serif`;
  ctx.textBaseline = "top";
  for (const d of answer.detections) {
    const [x1, y1, x2, y2] = d.box;
    const color = COLORS[d.index % COLORS.length];
    ctx.strokeStyle = color;
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
    const text = `${d.label} ${(100 * d.score).toFixed(0)}%`;
    const h = 6 * line + 8;
    const w = ctx.measureText(text).width + 6;
    const ty = y1 >= h ? y1 - h : y1;
    ctx.fillStyle = color;
    ctx.fillRect(x1, ty, w, h);
    ctx.fillStyle = "#fff";
    ctx.fillText(text, x1 + 3, ty + 2);
  }
  canvas.dataset.boxes = String(answer.detections.length);
  canvas.hidden = false;
  img.dataset.drawn = "1";
}

function renderDetection(answer) {
  const list = $("bars");
  list.replaceChildren();
  for (const d of answer.detections) {
    const li = document.createElement("li");
    li.className = "det";
    const name = document.createElement("div");
    name.className = "name";
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = d.label;
    label.style.color = COLORS[d.index % COLORS.length];
    const score = document.createElement("span");
    score.textContent = `${(100 * d.score).toFixed(1)} % at [${d.box.map((v) => Math.round(v)).join(", ")}]`;
    name.append(label, score);
    li.append(name);
    list.append(li);
  }
  const n = answer.detections.length;
  $("top").textContent = n === 1 ? "1 object" : `${n} objects`;
  const img = $("preview");
  if (img.complete && img.naturalWidth) drawBoxes(answer);
  else img.onload = () => drawBoxes(answer);
}

// Pascal VOC's colour of class i (its devkit's labelcolormap, as effnet.data.masks.voc_palette): the colours of
// the palette PNG the segmenter answers with png=1, so both answers draw the same overlay.
function vocColour(i) {
  let r = 0, g = 0, b = 0;
  for (let j = 0, c = i; j < 8; j++, c >>= 3) {
    r |= (c & 1) << (7 - j);
    g |= ((c >> 1) & 1) << (7 - j);
    b |= ((c >> 2) & 1) << (7 - j);
  }
  return [r, g, b];
}

const BACKGROUND = 0; // class 0 is left clear, as `effnet segment predict --overlays` leaves it
const MASK_ALPHA = 128; // the overlay is half class colour, half image

// The mask from each class's COCO RLE: run lengths down the columns (column-major), the first run outside.
function maskFromRLE(answer, pixels) {
  const h = answer.height;
  for (const cls of answer.classes) {
    if (cls.index === BACKGROUND) continue;
    const [r, g, b] = vocColour(cls.index);
    let at = 0, inside = false;
    for (const run of cls.rle.counts) {
      if (inside) {
        for (let k = at; k < at + run; k++) {
          const y = k % h, o = 4 * (y * answer.width + (k - y) / h);
          pixels[o] = r; pixels[o + 1] = g; pixels[o + 2] = b; pixels[o + 3] = MASK_ALPHA;
        }
      }
      at += run;
      inside = !inside;
    }
  }
}

// The mask from the palette PNG (png=1): the browser decodes it to VOC's colours; class 0's black is cleared.
async function maskFromPNG(answer, pixels) {
  const bytes = Uint8Array.from(atob(answer.png), (c) => c.charCodeAt(0));
  const bitmap = await createImageBitmap(new Blob([bytes], { type: "image/png" }));
  const scratch = new OffscreenCanvas(answer.width, answer.height).getContext("2d");
  scratch.drawImage(bitmap, 0, 0);
  const decoded = scratch.getImageData(0, 0, answer.width, answer.height).data;
  const [r0, g0, b0] = vocColour(BACKGROUND);
  for (let o = 0; o < decoded.length; o += 4) {
    if (decoded[o] === r0 && decoded[o + 1] === g0 && decoded[o + 2] === b0) continue;
    pixels[o] = decoded[o]; pixels[o + 1] = decoded[o + 1]; pixels[o + 2] = decoded[o + 2];
    pixels[o + 3] = MASK_ALPHA;
  }
}

// The overlay, like the boxes, is drawn in the uploaded image's pixels and stretched over the preview by CSS.
async function drawMask(answer) {
  const canvas = $("boxes");
  canvas.width = answer.width;
  canvas.height = answer.height;
  const ctx = canvas.getContext("2d");
  const overlay = ctx.createImageData(answer.width, answer.height);
  await (answer.png ? maskFromPNG(answer, overlay.data) : maskFromRLE(answer, overlay.data));
  ctx.putImageData(overlay, 0, 0);
  canvas.dataset.classes = String(answer.classes.length);
  canvas.dataset.encoding = answer.png ? "png" : "rle";
  canvas.hidden = false;
  $("preview").dataset.drawn = "1";
}

function renderSegmentation(answer) {
  const list = $("bars");
  list.replaceChildren();
  const total = answer.width * answer.height;
  for (const cls of [...answer.classes].sort((a, b) => b.pixels - a.pixels)) {
    const li = document.createElement("li");
    li.className = "seg";
    li.dataset.index = String(cls.index);
    const name = document.createElement("div");
    name.className = "name";
    const label = document.createElement("span");
    label.className = "label";
    const swatch = document.createElement("span");
    swatch.className = cls.index === BACKGROUND ? "swatch clear" : "swatch";
    swatch.style.background = `rgb(${vocColour(cls.index).join(", ")})`;
    label.append(swatch, cls.label);
    const share = document.createElement("span");
    share.textContent = `${(100 * cls.pixels / total).toFixed(1)} % (${cls.pixels} px)`;
    name.append(label, share);
    li.append(name);
    list.append(li);
  }
  const n = answer.classes.length;
  $("top").textContent = n === 1 ? "1 class" : `${n} classes`;
  const img = $("preview");
  if (img.complete && img.naturalWidth) drawMask(answer);
  else img.onload = () => drawMask(answer);
}

const RENDERERS = { classify: renderClassification, detect: renderDetection, segment: renderSegmentation };

function renderJSON(answer) {
  $("top").textContent = JSON.stringify(answer);
  $("bars").replaceChildren();
}

function showOptions(options) {
  const box = $("options");
  box.replaceChildren();
  for (const o of options) {
    const label = document.createElement("label");
    const input = document.createElement("input");
    Object.assign(input, { id: o.name, type: "number", min: o.low, max: o.high, value: o.default,
                           step: o.type === "int" ? 1 : (o.high - o.low) / 20, title: o.help });
    label.append(o.name.replaceAll("_", " ") + " ", input);
    box.append(label);
  }
}

function query() {
  const inputs = [...$("options").querySelectorAll("input")];
  return inputs.length ? "?" + new URLSearchParams(inputs.map((i) => [i.id, i.value])) : "";
}

async function send(file) {
  $("error").hidden = true;
  $("boxes").hidden = true;
  delete $("preview").dataset.drawn;
  $("preview").onload = null;
  $("preview").src = URL.createObjectURL(file);
  const form = new FormData();
  form.append("file", file);
  let response;
  try {
    response = await fetch(endpoint + query(), { method: "POST", body: form });
  } catch (err) {
    showError("the server did not answer: " + err);
    return;
  }
  const answer = await response.json().catch(() => ({ detail: response.statusText }));
  if (!response.ok) {
    $("result").hidden = true;
    showError(typeof answer.detail === "string" ? answer.detail : JSON.stringify(answer.detail));
    return;
  }
  (RENDERERS[kind] || renderJSON)(answer.results[0]);
  $("timing").textContent = `${answer.model} · ${answer.ms} ms on the server`;
  $("result").hidden = false;
}

async function loadModel() {
  try {
    const health = await (await fetch("/health")).json();
    endpoint = health.endpoint;
    kind = health.kind;
    $("model").textContent = `model ${health.model} (${health.kind}, backend ${health.backend})`;
    $("api").textContent = `POST ${endpoint}`;
    showOptions(health.options);
  } catch (err) {
    $("model").textContent = "model not reachable: " + err;
  }
}

const drop = $("drop");
$("file").addEventListener("change", (e) => {
  const file = e.target.files[0];
  e.target.value = ""; // picking the same file again (say, with other options) is a change too
  if (file) send(file);
});
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files[0]) send(e.dataTransfer.files[0]);
});
loadModel();
