// The model runs here, off the page's thread: WebGPU work and token readbacks
// never block the UI. Messages in: load-url, load-file, generate, stop.
// Messages out: ready, progress, loaded, token, done, error.
import init, { Engine } from "./pkg/lottery_web.js";

const CACHE = "lottery-models-v1";
let engine = null;

const post = (m) => self.postMessage(m);
const fail = (during, e) =>
  post({
    type: "error",
    during,
    message: String(e && e.message ? e.message : e),
    hasModel: !!(engine && engine.hasModel()),
  });

async function start() {
  try {
    await init();
  } catch (e) {
    return fail("wasm", e);
  }
  try {
    engine = await Engine.create();
  } catch (e) {
    return fail("webgpu", e);
  }
  post({ type: "ready", adapter: JSON.parse(engine.adapter()) });
}

// Downloads with progress, keeping the file in the Cache API so a reload does
// not fetch it again.
async function fetchModel(url) {
  let cache = null;
  try {
    cache = await caches.open(CACHE);
    const hit = await cache.match(url);
    if (hit) {
      const buf = new Uint8Array(await hit.arrayBuffer());
      post({ type: "progress", phase: "cache", loaded: buf.length, total: buf.length });
      return buf;
    }
  } catch (_) {
    cache = null; // no Cache API (e.g. an insecure context): just download
  }
  let res;
  try {
    res = await fetch(url);
  } catch (e) {
    throw new Error(`could not fetch ${url}: ${e.message || e}`);
  }
  if (!res.ok) throw new Error(`could not fetch ${url}: HTTP ${res.status} ${res.statusText}`);
  const total = Number(res.headers.get("content-length")) || 0;
  const reader = res.body.getReader();
  const parts = [];
  let loaded = 0;
  let last = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    parts.push(value);
    loaded += value.length;
    const now = performance.now();
    if (now - last > 100) {
      last = now;
      post({ type: "progress", phase: "download", loaded, total });
    }
  }
  const buf = new Uint8Array(loaded);
  let off = 0;
  for (const p of parts) {
    buf.set(p, off);
    off += p.length;
  }
  post({ type: "progress", phase: "download", loaded, total: total || loaded });
  if (cache) {
    try {
      await cache.put(url, new Response(buf, { headers: { "content-type": "application/octet-stream" } }));
    } catch (_) {
      // Out of quota: the model still runs, it is just fetched again next time.
    }
  }
  return buf;
}

function load(bytes, name) {
  post({ type: "progress", phase: "upload", loaded: 0, total: 1 });
  const info = JSON.parse(engine.loadModel(bytes, name));
  post({ type: "loaded", info });
}

self.onmessage = async (ev) => {
  const m = ev.data;
  if (m.type === "stop") {
    if (engine) engine.stop();
    return;
  }
  if (!engine) return fail(m.type, "the engine is not ready (WebGPU unavailable)");
  if (m.type === "load-url") {
    try {
      const bytes = await fetchModel(m.url);
      load(bytes, m.url.split("/").pop() || m.url);
    } catch (e) {
      fail("load", e);
    }
  } else if (m.type === "load-file") {
    try {
      load(new Uint8Array(await m.file.arrayBuffer()), m.file.name);
    } catch (e) {
      fail("load", e);
    }
  } else if (m.type === "generate") {
    try {
      const out = await engine.generate(JSON.stringify(m.opts), (id, text) =>
        post({ type: "token", id, text }),
      );
      post({ type: "done", result: JSON.parse(out) });
    } catch (e) {
      fail("generate", e);
    }
  }
};

start();
