// The page: UI state, URL parameters, and messages to and from worker.js.
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const DEFAULT_MODEL = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

const ui = {
  url: $("model-url"), loadUrl: $("load-url"), file: $("file"), drop: $("drop"),
  progressBox: $("progress-box"), progress: $("progress"), progressText: $("progress-text"),
  status: $("status"), nogpu: $("nogpu"), log: $("log"), prompt: $("prompt"), n: $("n"),
  temperature: $("temperature"), useChat: $("use-chat"), send: $("send"), stop: $("stop"),
  clear: $("clear"), output: $("output"), stats: $("stats"), adapter: $("adapter"), ask: $("ask"),
};

let worker = null;
let ready = false;
let loaded = false;
let running = false;
let messages = []; // the conversation, for the chat template
let current = null; // the assistant turn being written
let autorun = params.get("autorun") === "1";

function status(text, isError = false) {
  ui.status.textContent = text;
  ui.status.classList.toggle("error", isError);
}

function setBusy(b) {
  running = b;
  ui.send.disabled = b || !loaded;
  ui.stop.disabled = !b;
  ui.loadUrl.disabled = b || !ready;
}

const mb = (n) => (n / 1e6).toFixed(1) + " MB";

function turn(role, text) {
  const div = document.createElement("div");
  div.className = `turn ${role}`;
  div.textContent = text;
  ui.log.appendChild(div);
  ui.log.scrollTop = ui.log.scrollHeight;
  return div;
}

function loadUrl(url) {
  if (!ready) return;
  loaded = false;
  setBusy(false);
  ui.progressBox.hidden = false;
  ui.progress.removeAttribute("value");
  ui.progressText.textContent = "";
  status(`Loading ${url} ...`);
  worker.postMessage({ type: "load-url", url: new URL(url, location.href).href });
}

function loadFile(file) {
  if (!ready || !file) return;
  loaded = false;
  setBusy(false);
  ui.progressBox.hidden = false;
  ui.progress.removeAttribute("value");
  status(`Reading ${file.name} (${mb(file.size)}) ...`);
  worker.postMessage({ type: "load-file", file });
}

function generate(text, chat) {
  if (!loaded || running || !text) return;
  const opts = {
    n: Number(ui.n.value) || 128,
    temperature: Number(ui.temperature.value) || 0,
    seed: Number(params.get("seed") || 0),
  };
  if (chat) {
    messages.push({ role: "user", content: text });
    opts.messages = messages;
  } else {
    opts.prompt = text;
  }
  turn("user", text);
  current = turn("assistant", "");
  current.classList.add("running");
  ui.output.dataset.ids = "";
  setBusy(true);
  status("Generating ...");
  worker.postMessage({ type: "generate", opts });
}

function onMessage(ev) {
  const m = ev.data;
  switch (m.type) {
    case "ready": {
      ready = true;
      const a = m.adapter;
      ui.adapter.textContent = `${a.name || "WebGPU adapter"} (${a.backend}), tier ${a.tier}, max binding ${mb(a.max_storage_binding)}`;
      status("Ready: load a model.");
      setBusy(false);
      if (autorun || params.get("model")) loadUrl(ui.url.value);
      break;
    }
    case "progress": {
      if (m.phase !== "upload") ui.output.dataset.modelSource = m.phase;
      if (m.phase === "upload") {
        ui.progress.removeAttribute("value");
        ui.progressText.textContent = "uploading to the GPU";
      } else if (m.total) {
        ui.progress.value = m.loaded / m.total;
        ui.progressText.textContent = `${mb(m.loaded)} / ${mb(m.total)}${m.phase === "cache" ? " (from cache)" : ""}`;
      } else {
        ui.progressText.textContent = mb(m.loaded);
      }
      break;
    }
    case "loaded": {
      loaded = true;
      ui.progressBox.hidden = true;
      const i = m.info;
      status(`Loaded ${i.name}: ${i.arch}, ${i.layers} layers, d=${i.d_model}, vocab ${i.vocab}, ${mb(i.bytes)}.`);
      // A shared run (?prompt=) says itself whether it used the template.
      ui.useChat.checked = i.chat_template && (params.has("prompt") ? params.get("chat") === "1" : params.get("chat") !== "0");
      if (!i.chat_template) ui.useChat.disabled = true;
      setBusy(false);
      const p = params.get("prompt");
      if (autorun && p !== null) {
        autorun = false;
        if (params.get("n")) ui.n.value = params.get("n");
        if (params.get("temperature")) ui.temperature.value = params.get("temperature");
        generate(p, params.get("chat") === "1");
      }
      break;
    }
    case "token": {
      if (current) {
        current.textContent += m.text;
        ui.log.scrollTop = ui.log.scrollHeight;
      }
      break;
    }
    case "done": {
      const r = m.result;
      if (current) {
        current.classList.remove("running");
        current.textContent = r.text;
      }
      if (ui.useChat.checked && messages.length) messages.push({ role: "assistant", content: r.text });
      ui.output.dataset.ids = JSON.stringify(r.ids);
      ui.output.dataset.text = r.text;
      ui.stats.textContent =
        `${r.ids.length} tokens (${r.stop}); time to first token ${(r.ttft_s * 1e3).toFixed(0)} ms ` +
        `(prompt ${r.prompt_tokens} tokens, ${r.cached_tokens} cached, ${r.prefill_tokens_per_s.toFixed(1)} tok/s); ` +
        `decode ${r.decode_tokens_per_s.toFixed(1)} tok/s`;
      status("Done.");
      current = null;
      setBusy(false);
      break;
    }
    case "error": {
      ui.progressBox.hidden = true;
      if (current) current.classList.remove("running");
      current = null;
      if (m.during === "webgpu") {
        noGpu(`This browser offers WebGPU but gave no usable adapter.\nDetails: ${m.message}`);
      } else {
        status(`Error (${m.during}): ${m.message}`, true);
      }
      // A failed load keeps the model that was there.
      loaded = !!m.hasModel;
      setBusy(false);
      break;
    }
  }
}

function noGpu(text) {
  ui.nogpu.hidden = false;
  ui.nogpu.textContent =
    "WebGPU is not available, so the model cannot run in this page. " +
    "Use a browser that has it (recent Chrome or Edge; Safari and Firefox where enabled) " +
    "on a secure page (https or localhost), with hardware acceleration on.\n" + text;
  ui.loadUrl.disabled = true;
  ui.send.disabled = true;
  status("");
}

ui.url.value = params.get("model") || DEFAULT_MODEL;
ui.loadUrl.onclick = () => loadUrl(ui.url.value);
ui.file.onchange = () => loadFile(ui.file.files[0]);
ui.drop.ondragover = (e) => { e.preventDefault(); ui.drop.classList.add("over"); };
ui.drop.ondragleave = () => ui.drop.classList.remove("over");
ui.drop.ondrop = (e) => {
  e.preventDefault();
  ui.drop.classList.remove("over");
  loadFile(e.dataTransfer.files[0]);
};
ui.ask.onsubmit = (e) => {
  e.preventDefault();
  const text = ui.prompt.value.trim();
  if (!text) return;
  ui.prompt.value = "";
  generate(text, ui.useChat.checked);
};
ui.prompt.onkeydown = (e) => {
  if (e.key === "Enter" && !e.shiftKey) {
    e.preventDefault();
    ui.ask.requestSubmit();
  }
};
ui.stop.onclick = () => worker && worker.postMessage({ type: "stop" });
ui.clear.onclick = () => {
  messages = [];
  ui.log.textContent = "";
};

if (!("gpu" in navigator) || !navigator.gpu) {
  noGpu("This browser does not offer WebGPU (navigator.gpu is missing).");
} else {
  status("Starting the engine ...");
  worker = new Worker("worker.js", { type: "module" });
  worker.onmessage = onMessage;
  worker.onerror = (e) => status(`Worker failed: ${e.message}`, true);
}
