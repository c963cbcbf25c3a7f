// The page: pick or drop an image, POST it to the model's endpoint, draw the answer.
// One renderer per model kind (what /health reports); a detector adds its own that draws boxes.
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

const RENDERERS = { classify: renderClassification };

async function send(file) {
  $("error").hidden = true;
  $("preview").src = URL.createObjectURL(file);
  const form = new FormData();
  form.append("file", file);
  let response;
  try {
    response = await fetch(endpoint + "?topk=5", { method: "POST", body: form });
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
  RENDERERS[kind](answer);
  $("timing").textContent = `${answer.model} · ${answer.ms} ms on the server`;
  $("result").hidden = false;
}

async function loadModel() {
  try {
    const health = await (await fetch("/health")).json();
    endpoint = health.endpoint;
    kind = health.kind;
    $("model").textContent = `model ${health.model} (${health.kind}, backend ${health.backend})`;
  } catch (err) {
    $("model").textContent = "model not reachable: " + err;
  }
}

const drop = $("drop");
$("file").addEventListener("change", (e) => e.target.files[0] && send(e.target.files[0]));
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files[0]) send(e.dataTransfer.files[0]);
});
loadModel();
