#!/usr/bin/env python3
"""Drives the browser demo in headless Chromium through chromedriver's
WebDriver HTTP API (no Selenium needed) and checks it:

1. ?prompt=...&n=8&temperature=0&autorun=1 produces the reference greedy ids
   in #output[data-ids]; a screenshot is written to target/web-demo.png;
2. a reload takes the model from the Cache API instead of downloading it;
3. a dropped file that is not a GGUF shows the reader's named error, and a
   URL that fails shows the HTTP status; the loaded model stays usable: a
   chat turn streams tokens and Stop ends it early;
4. without WebGPU the page shows its message instead of failing silently.

Usage: web-demo-check.py PAGE_URL CHROMEDRIVER_URL OUT_DIR
"""
import base64, json, sys, time, urllib.parse, urllib.request

page, driver, out_dir = sys.argv[1], sys.argv[2].rstrip("/"), sys.argv[3]
WANT = [7042, 30, 198, 198, 504, 2988, 314, 42]
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu-sandbox", "--disable-dev-shm-usage",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", "--window-size=1100,900"]
WEBGPU = ["--enable-unsafe-webgpu", "--enable-unsafe-swiftshader", "--use-webgpu-adapter=swiftshader"]


def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(driver + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.loads(r.read() or b"{}").get("value")
    except urllib.error.HTTPError as e:
        raise SystemExit(f"webdriver {method} {path}: {e.code} {e.read()[:500]!r}")


def session(args):
    v = call("POST", "/session", {"capabilities": {"alwaysMatch": {
        "goog:chromeOptions": {"args": args}}}})
    return v["sessionId"]


def js(sid, script):
    return call("POST", f"/session/{sid}/execute/sync", {"script": script, "args": []})


def page_state(sid):
    return js(sid, """
      const o = document.getElementById('output');
      return {ids: o.dataset.ids || '', source: o.dataset.modelSource || '',
              status: document.getElementById('status').textContent,
              nogpu: document.getElementById('nogpu').hidden ? '' : document.getElementById('nogpu').textContent,
              stats: document.getElementById('stats').textContent,
              progress_hidden: getComputedStyle(document.getElementById('progress-box')).display === 'none',
              text: o.dataset.text || ''};""")


def wait_for(sid, pred, what, timeout=900):
    t0 = time.time()
    last = None
    while time.time() - t0 < timeout:
        last = page_state(sid)
        if pred(last):
            return last, time.time() - t0
        if last["status"].startswith("Error") or last["nogpu"]:
            raise SystemExit(f"{what}: the page reports: {last}")
        time.sleep(0.5)
    raise SystemExit(f"{what}: timed out after {timeout} s; last state {last}")


def screenshot(sid, name):
    png = base64.b64decode(call("GET", f"/session/{sid}/screenshot"))
    with open(f"{out_dir}/{name}", "wb") as f:
        f.write(png)


q = urllib.parse.urlencode({"prompt": "The capital of France is", "n": 8, "temperature": 0, "autorun": 1})
sid = session(FLAGS + WEBGPU)
try:
    call("POST", f"/session/{sid}/url", {"url": f"{page}?{q}"})
    st, secs = wait_for(sid, lambda s: s["ids"], "autorun generation")
    ids = json.loads(st["ids"])
    screenshot(sid, "web-demo.png")
    print(f"autorun: {ids} in {secs:.1f} s; {st['stats']}")
    assert ids == WANT, f"ids {ids}, expected {WANT}"
    assert st["progress_hidden"], "the progress bar is still shown"
    assert st["source"] == "download", f"first load came from {st['source']!r}"
    # A reload must not download the model again.
    call("POST", f"/session/{sid}/url", {"url": f"{page}?{q}"})
    st, secs = wait_for(sid, lambda s: s["ids"], "reload")
    assert st["source"] == "cache", f"reload took the model from {st['source']!r}, not the cache"
    assert json.loads(st["ids"]) == WANT
    print(f"reload: model from the Cache API, same ids in {secs:.1f} s")
    # A file that is not a GGUF: the reader's named error on the page.
    js(sid, """
      const f = new File([new Uint8Array([71, 71, 85, 70, 3, 0, 0, 0, 1, 2])], 'broken.gguf');
      const dt = new DataTransfer(); dt.items.add(f);
      document.getElementById('drop').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true}));
      return true;""")
    t0 = time.time()
    while True:
        st = page_state(sid)
        if st["status"].startswith("Error"):
            break
        if time.time() - t0 > 60:
            raise SystemExit(f"no error shown for a broken file: {st}")
        time.sleep(0.3)
    assert "broken.gguf" in st["status"] and "GGUF" in st["status"], st["status"]
    print(f"broken file: {st['status']}")
    # A URL that fails says so (and the loaded model stays usable).
    js(sid, """
      document.getElementById('model-url').value = 'models/no-such-model.gguf';
      document.getElementById('load-url').click();
      return true;""")
    t0 = time.time()
    while not page_state(sid)["status"].startswith("Error"):
        if time.time() - t0 > 60:
            raise SystemExit(f"no error for a missing URL: {page_state(sid)}")
        time.sleep(0.3)
    st = page_state(sid)
    assert "no-such-model.gguf" in st["status"] and "404" in st["status"], st["status"]
    print(f"missing URL: {st['status']}")
    # The model loaded before is still there: a chat turn through the
    # template streams tokens, and Stop ends it early.
    js(sid, """
      document.getElementById('use-chat').checked = true;
      document.getElementById('n').value = '400';
      document.getElementById('temperature').value = '0';
      document.getElementById('prompt').value = 'Write a long story about a lighthouse keeper.';
      document.getElementById('ask').requestSubmit();
      return true;""")
    t0 = time.time()
    while len(js(sid, "return document.querySelector('.turn.assistant.running')?.textContent || ''")) < 20:
        if time.time() - t0 > 300:
            raise SystemExit(f"no streamed text: {page_state(sid)}")
        time.sleep(0.2)
    js(sid, "document.getElementById('stop').click(); return true;")
    st, _ = wait_for(sid, lambda s: s["ids"], "stop", timeout=120)
    n = len(json.loads(st["ids"]))
    assert "Callback" in st["stats"] and n < 400, st["stats"]
    print(f"chat + stop: streamed, stopped after {n} tokens ({st['stats']})")
    with open(f"{out_dir}/web-demo.json", "w") as f:
        json.dump({"ids": ids, "stats": st["stats"]}, f)
finally:
    call("DELETE", f"/session/{sid}")

# No WebGPU: navigator.gpu is removed before the page's scripts run.
sid = session(FLAGS + ["--disable-blink-features=WebGPU"])
try:
    call("POST", f"/session/{sid}/url", {"url": page})
    t0 = time.time()
    while True:
        st = page_state(sid)
        if st["nogpu"]:
            break
        if time.time() - t0 > 60:
            raise SystemExit(f"no WebGPU message without WebGPU: {st}")
        time.sleep(0.3)
    assert "WebGPU" in st["nogpu"], st
    screenshot(sid, "web-demo-nogpu.png")
    print(f"without WebGPU: {st['nogpu'].splitlines()[0]}")
finally:
    call("DELETE", f"/session/{sid}")
print("web demo: all checks passed")
