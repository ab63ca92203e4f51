"use strict";
// fastdllm-ray playground: chats through the server's own /v1 API with stream_steps on, and
// draws each engine step's commits on a grid of answer cells. Server text is only ever set
// with textContent (never parsed as HTML).

const $ = (id) => document.getElementById(id);
const SETTINGS = ["threshold", "factor", "block_length", "steps", "sub_block_length", "steps_per_block", "max_tokens"];
const REPLAY_STEP_MS = 250;
let history = []; // the conversation so far, sent with every request
let familySettings = {}; // model name -> the request fields of its family's own settings (/v1/models)
let lastSteps = []; // the last answer's step events, for the replay
let busy = false;

function headers() {
  const result = {"content-type": "application/json"};
  const key = $("key").value.trim();
  if (key) result.authorization = "Bearer " + key;
  return result;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function errorMessage(response) {
  // the server's OpenAI-style error body; else the status and the start of what came back
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    if (body && body.error && body.error.message) return body.error.message;
  } catch (err) { /* not JSON: fall through */ }
  return `HTTP ${response.status} ${response.statusText}` + (text ? ": " + text.slice(0, 300) : "");
}

async function loadModels() {
  try {
    const response = await fetch("v1/models", {headers: headers()});
    if (!response.ok) {
      const hint = response.status === 401 ? " (type a key in the API key field above)" : "";
      return showError(await errorMessage(response) + hint);
    }
    const cards = (await response.json()).data;
    familySettings = Object.fromEntries(cards.map((card) => [card.id, card.settings]));
    $("model").replaceChildren(...cards.map((card) => new Option(card.id, card.id)));
    showFamilySettings();
    showError("");
  } catch (err) {
    showError("cannot reach the server: " + err.message);
  }
}

function showFamilySettings() {
  // a family's own fields (data-field) show for a model of that family only; another's would be refused
  const own = familySettings[$("model").value];
  if (!Array.isArray(own)) return;
  for (const label of document.querySelectorAll("#settings label[data-field]")) {
    label.hidden = !own.includes(label.dataset.field);
  }
}

function shown(id) {
  return !$(id).closest("label").hidden;
}

function numberOrText(raw) {
  // a number when it reads as one, else the text itself, so that the server names the bad field
  const value = raw.trim();
  const number = Number(value);
  return Number.isFinite(number) ? number : value;
}

function requestBody(messages) {
  const body = {model: $("model").value, messages, stream: true, stream_steps: true,
                stream_options: {include_usage: true}};
  if (shown("cache")) {
    const cache = $("cache").value;
    body.use_cache = cache !== "none";
    body.use_dual_cache = cache === "dual";
  }
  if (shown("block_cache") && $("block_cache").value) body.block_cache = $("block_cache").value === "true";
  for (const name of SETTINGS) {
    if (shown(name) && $(name).value.trim() !== "") body[name] = numberOrText($(name).value);
  }
  return body;
}

async function* streamedChunks(response) {
  // server-sent events: "data: <json>" separated by blank lines, ending with "data: [DONE]"
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    let part;
    try {
      part = await reader.read();
    } catch (err) {
      throw new Error("the connection broke mid-answer: " + err.message);
    }
    const {value, done} = part;
    if (done) return;
    buffer += decoder.decode(value, {stream: true});
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = event.split("\n").filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trim()).join("\n");
      if (data === "[DONE]") return;
      if (data) yield JSON.parse(data);
    }
  }
}

function cellText(text, special) {
  if (special) return "\u220e"; // the end token and the filler after it
  return text.replace(/ /g, "\u2423").replace(/\n/g, "\u23ce");
}

const canvas = {
  cells: [], // by answer position
  steps: 0,
  last: null, // the latest step: its block length and the most cells the answer may fill
  clear(note) {
    this.cells = [];
    this.steps = 0;
    this.last = null;
    $("canvas").replaceChildren();
    $("progress").textContent = note;
  },
  addRow(count, unused) {
    // the next row of the answer: one block's positions, from the first position without a cell
    const block = document.createElement("div");
    block.className = "block";
    block.dataset.label = `block ${$("canvas").children.length}`;
    for (let i = 0; i < count; i++) {
      const cell = document.createElement("div");
      const position = this.cells.length;
      cell.className = unused ? "cell unused" : "cell mask";
      cell.title = `position ${position}: ` + (unused ? "never decoded: the answer ended before it" : "masked");
      block.append(cell);
      this.cells.push(cell);
    }
    $("canvas").append(block);
  },
  reach(step) {
    // rows come in answer order, a step of a new row draws it (blocks need not align with the
    // answer: block-diffusion models' first block holds the prompt's tail)
    while (this.cells.length < step.row_start) {
      this.addRow(Math.min(step.block_length, step.row_start - this.cells.length), false);
    }
    if (this.cells.length === step.row_start) this.addRow(step.row_cells, false);
  },
  apply(step) {
    this.last = step;
    this.reach(step);
    this.steps += 1;
    for (const cell of this.cells) cell.classList.remove("new");
    for (const commit of step.commits) {
      const cell = this.cells[commit.position];
      if (!cell) continue;
      cell.textContent = cellText(commit.text, commit.special);
      cell.className = "cell new" + (commit.special ? " special" : "");
      cell.dataset.step = String(this.steps);
      cell.title = `position ${commit.position}: ${JSON.stringify(commit.text)} (token ${commit.token_id}), ` +
        `step ${this.steps} = block ${step.block} step ${step.block_step}`;
    }
    $("progress").textContent = `step ${this.steps}: block ${step.block}, its step ${step.block_step}, ` +
      `committed ${step.commits.length}; ${step.remaining} still masked in the block`;
  },
  finish() {
    // blocks after the end token are never decoded: the request stops there
    for (const cell of this.cells) {
      if (cell.classList.contains("mask")) {
        cell.className = "cell unused";
        cell.title += " (never decoded: the answer ended before it)";
      }
    }
    const last = this.last;
    while (last && this.cells.length < last.answer_cells) {
      this.addRow(Math.min(last.block_length, last.answer_cells - this.cells.length), true);
    }
  },
};

function addMessage(role, text) {
  const item = document.createElement("li");
  item.className = "msg " + role;
  item.textContent = text;
  $("messages").append(item);
  return item;
}

function showStats(usage, seconds) {
  const latency = seconds < 1 ? `${Math.round(seconds * 1000)} ms` : `${seconds.toFixed(2)} s`;
  if (!usage || !usage.nfe) {
    $("stats").textContent = `latency ${latency}`;
    return;
  }
  const tokens = usage.completion_tokens;
  // prompt tokens the server's prefix cache held (models that share prefixes: a chat's next turn)
  const cached = (usage.prompt_tokens_details || {}).cached_tokens || 0;
  $("stats").textContent = `NFE ${usage.nfe} \u00b7 ${(tokens / usage.nfe).toFixed(2)} tokens per forward \u00b7 ` +
    `latency ${latency} \u00b7 ${tokens} tokens, ${(tokens / seconds).toFixed(1)} tokens/s \u00b7 ` +
    `prompt ${usage.prompt_tokens} tokens` + (cached ? `, ${cached} cached` : "");
}

async function ask(text, answer) {
  // streams one answer into `answer` and the canvas; returns its text, usage and seconds
  const started = performance.now();
  const body = JSON.stringify(requestBody([...history, {role: "user", content: text}]));
  let response;
  try {
    response = await fetch("v1/chat/completions", {method: "POST", headers: headers(), body});
  } catch (err) {
    throw new Error("cannot reach the server: " + err.message);
  }
  if (!response.ok) throw new Error(await errorMessage(response));
  let content = "";
  let usage = null;
  let finished = false;
  for await (const chunk of streamedChunks(response)) {
    if (chunk.error) throw new Error(chunk.error.message);
    if (chunk.step) {
      lastSteps.push(chunk.step);
      canvas.apply(chunk.step);
    }
    const choice = chunk.choices && chunk.choices[0];
    if (choice && choice.delta && choice.delta.content) {
      content += choice.delta.content;
      answer.textContent = content;
      answer.classList.remove("pending");
    }
    if (choice && choice.finish_reason) finished = true;
    if (chunk.usage) usage = chunk.usage;
  }
  if (!finished) throw new Error("the answer stream ended early (the server went away?)");
  return {content, usage, seconds: (performance.now() - started) / 1000};
}

function setBusy(value) {
  busy = value;
  $("send").disabled = value;
  $("replay").disabled = value || lastSteps.length === 0;
}

async function send(event) {
  event.preventDefault();
  if (busy) return;
  const text = $("message").value;
  showError("");
  lastSteps = [];
  setBusy(true);
  const question = addMessage("user", text);
  const answer = addMessage("assistant", "decoding\u2026");
  answer.classList.add("pending");
  canvas.clear("waiting for the first step\u2026");
  $("stats").textContent = "";
  try {
    const {content, usage, seconds} = await ask(text, answer);
    canvas.finish();
    answer.textContent = content;
    answer.classList.remove("pending");
    history.push({role: "user", content: text}, {role: "assistant", content});
    $("message").value = "";
    showStats(usage, seconds);
  } catch (err) {
    question.remove(); // the message stays in the box, to be fixed and sent again
    answer.remove();
    canvas.clear("");
    showError(err.message);
  } finally {
    setBusy(false);
  }
}

async function replay() {
  if (busy || lastSteps.length === 0) return;
  setBusy(true);
  canvas.clear("");
  for (const step of lastSteps) {
    canvas.apply(step);
    await new Promise((resolve) => setTimeout(resolve, REPLAY_STEP_MS));
  }
  canvas.finish();
  setBusy(false);
}

function reset() {
  if (busy) return;
  history = [];
  lastSteps = [];
  $("messages").replaceChildren();
  $("stats").textContent = "";
  canvas.clear("");
  showError("");
  setBusy(false);
}

$("key").value = sessionStorage.getItem("fastdllm-key") || "";
$("key").addEventListener("change", () => {
  sessionStorage.setItem("fastdllm-key", $("key").value.trim());
  loadModels();
});
$("model").addEventListener("change", showFamilySettings);
$("ask").addEventListener("submit", send);
$("message").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    $("ask").requestSubmit();
  }
});
$("replay").addEventListener("click", replay);
$("reset").addEventListener("click", reset);
loadModels();
