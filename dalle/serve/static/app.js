// dalle serve's page. The server's settings (/api/info's JSON) come in a data block of index.html.
"use strict";
const CONFIG = JSON.parse(document.getElementById("config").textContent);
const $ = (id) => document.getElementById(id);
const FIELDS = ["prompt", "n", "top", "condition_scale", "top_k", "temperature", "seed"];
const COMPLETION_FIELDS = ["image", "keep_rows"];
let polling = null;
// Image completion: the chosen picture and its blob: URL (the CSP's img-src allows blob:, so the preview never
// leaves the browser); the URL of the picture the shown results completed; the one of the request in flight.
let picture = null;
let shownUrl = null;
let sentUrl = null;
let errorField = null;  // the field the message on show is about

function init() {
  const d = CONFIG.defaults, l = CONFIG.limits;
  $("n").value = d.n; $("n").min = 1; $("n").max = l.max_images;
  $("n-hint").textContent = "1 to " + l.max_images;
  $("condition_scale").value = d.condition_scale; $("top_k").value = d.top_k; $("temperature").value = d.temperature;
  if (CONFIG.reranking) {
    $("top").value = d.top || ""; $("top").placeholder = "all";
    $("top-hint").textContent = "best k of n by CLIP; empty = all, best first";
  } else {
    $("top").disabled = true; $("top").placeholder = "all";
    $("top-hint").textContent = "reranking is off (start with --clip DIR)";
  }
  $("model-info").textContent = (CONFIG.model ? CONFIG.model + " · " : "") +
      (CONFIG.reranking ? "CLIP reranking on" : "reranking is off: images are shown in sampling order");
  const ex = $("examples");
  if (CONFIG.examples.length) {
    ex.append("Try: ");
    for (const p of CONFIG.examples) {
      const a = document.createElement("a"); a.textContent = p;
      a.onclick = () => { $("prompt").value = p; $("prompt").focus(); };
      ex.append(a);
    }
  }
  $("form").addEventListener("submit", (e) => { e.preventDefault(); submit(); });
  if (CONFIG.completion) initCompletion();
}

function initCompletion() {
  const rows = CONFIG.limits.code_rows;
  $("completion").hidden = false;
  for (let k = 1; k < rows; k++) {
    const o = document.createElement("option"); o.value = String(k); o.textContent = k + " of " + rows;
    $("keep_rows").append(o);
  }
  $("keep_rows").value = String(Math.max(1, Math.floor(rows / 2)));
  $("image-hint").textContent = "its centered square, at most " + kib(CONFIG.limits.max_image_bytes) +
      "; empty = generate from the prompt alone";
  $("keep_rows-hint").textContent = "top code rows of the picture kept (the model's images have " + rows +
      "); the rest are drawn to match the prompt";
  $("image").addEventListener("change", pictureChanged);
  $("keep_rows").addEventListener("change", showKept);
  $("image-clear").addEventListener("click", () => { $("image").value = ""; pictureChanged(); });
}

function kib(bytes) { return Number((bytes / 1024).toPrecision(4)) + " KiB"; }  // as the server writes it

function forget(url) {  // a blob: URL holds its file in memory until revoked
  if (url && url !== shownUrl && url !== sentUrl && !(picture && picture.url === url)) URL.revokeObjectURL(url);
}

function pictureChanged() {
  const old = picture;
  const file = $("image").files[0];
  picture = file ? {file: file, url: URL.createObjectURL(file)} : null;
  if (old) forget(old.url);
  $("keep_rows").disabled = $("image-clear").disabled = !picture;
  $("preview").hidden = !picture;
  if (COMPLETION_FIELDS.includes(errorField)) clearErrors();  // a message about the previous picture
  if (picture) { $("preview-img").src = picture.url; showKept(); } else { $("preview-img").removeAttribute("src"); }
}

function showKept() {
  const rows = CONFIG.limits.code_rows, k = Number($("keep_rows").value);
  $("preview-drawn").style.top = (100 * k / rows) + "%";
  $("preview-caption").textContent = "top " + k + " of " + rows + " rows kept; shaded: drawn";
}

function readDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

function clearErrors() {
  $("error").classList.remove("show"); $("error").textContent = ""; errorField = null;
  for (const f of FIELDS.concat(COMPLETION_FIELDS)) $(f).removeAttribute("aria-invalid");
}

function showError(message, field) {
  $("error").textContent = message; $("error").classList.add("show"); errorField = field || null;
  if (field && $(field)) { $(field).setAttribute("aria-invalid", "true"); $(field).focus(); }
}

function setStatus(text, fraction, done) {
  $("status").classList.add("show"); $("status").classList.toggle("done", !!done);
  $("status-text").textContent = text;
  $("bar").style.width = Math.round(100 * Math.max(0, Math.min(1, fraction))) + "%";
}

async function submit() {
  clearErrors();
  const body = {};
  for (const f of FIELDS) {
    if (f === "top" && !CONFIG.reranking) continue;
    body[f] = $(f).value;  // raw text: the server validates every field and names the bad one
  }
  // a number input holds "" for text it cannot parse; say so instead of silently using the default
  for (const f of FIELDS.slice(1)) {
    if ($(f).validity && $(f).validity.badInput) {
      showError(CONFIG.fields[f] + " is not a number", f); return;
    }
  }
  const completing = CONFIG.completion && picture ? picture : null;
  if (completing) {
    // the server checks the size too; refusing here spares sending a file it would refuse
    const size = completing.file.size, max = CONFIG.limits.max_image_bytes;
    if (size > max) {
      showError("image is " + size.toLocaleString("en-US") + " bytes; the limit is " + max.toLocaleString("en-US") +
                " bytes (" + kib(max) + ")", "image");
      return;
    }
    $("generate").disabled = true;  // no second request while the file is read
    try {
      body.image = await readDataUrl(completing.file);
    } catch (e) {
      $("generate").disabled = false; showError("could not read the picture: " + e, "image"); return;
    }
    body.keep_rows = $("keep_rows").value;
  }
  const previous = sentUrl;
  sentUrl = completing ? completing.url : null;
  forget(previous);
  $("generate").disabled = true;
  setStatus("sending…", 0);
  let r, data;
  try {
    r = await fetch("/api/generate", {method: "POST", headers: {"Content-Type": "application/json"},
                                      body: JSON.stringify(body)});
    data = await r.json();
  } catch (e) {
    $("generate").disabled = false; $("status").classList.remove("show");
    showError("could not reach the server: " + e); return;
  }
  if (!r.ok) {
    $("generate").disabled = false; $("status").classList.remove("show");
    showError(data.error || ("HTTP " + r.status), data.field); return;
  }
  poll(data.id);
}

function describe(job) {
  if (job.status === "queued") {
    return "queued: position " + job.position + " (" + job.stage + ")" +
           (job.eta_s != null ? " · about " + Math.ceil(job.eta_s) + " s" : "");
  }
  let s = job.stage;
  if (job.elapsed_s != null) s += " · " + job.elapsed_s.toFixed(1) + " s";
  if (job.eta_s != null && job.eta_s > 0) s += " · about " + Math.ceil(job.eta_s) + " s left";
  return s;
}

async function poll(id) {
  let job;
  try {
    const r = await fetch("/api/jobs/" + encodeURIComponent(id));
    job = await r.json();
    if (!r.ok) throw new Error(job.error || ("HTTP " + r.status));
  } catch (e) {
    $("generate").disabled = false; $("status").classList.remove("show");
    showError("lost track of the request: " + e.message); return;
  }
  if (job.status === "done") { showResult(job); return; }
  if (job.status === "error") {
    $("generate").disabled = false; $("status").classList.remove("show");
    showError(job.error, job.field); return;
  }
  setStatus(describe(job), job.status === "queued" ? 0.02 : job.progress);
  polling = setTimeout(() => poll(id), 300);
}

function showResult(job) {
  const res = job.result, req = job.request;
  const previous = shownUrl;
  shownUrl = res.completion ? sentUrl : null;
  forget(previous);
  setStatus("done: " + res.images.length + " image(s) in " + res.seconds.toFixed(1) + " s", 1, true);
  $("generate").disabled = false;
  $("results").hidden = false;
  $("result-title").textContent = "“" + req.prompt + "”";
  $("result-meta").textContent = [
      res.reranked ? "best " + res.images.length + " of " + req.n + " by CLIP" :
                     res.images.length + " sample(s) in sampling order (reranking off)",
      "guidance " + req.condition_scale, "top-k " + req.top_k, "temperature " + req.temperature,
      "seed " + res.seed].concat(res.completion ?
          ["completing the top " + req.keep_rows + " of " + CONFIG.limits.code_rows + " code rows of a " +
           (req.image_bytes / 1024).toFixed(1) + " KiB picture"] : []).join(" · ");
  $("result-warn").textContent = res.warnings.join(" ");
  const grid = $("grid"); grid.replaceChildren();
  const side = Math.max(res.image_size[1] || 0, 160);
  if (res.completion && shownUrl) {  // the picture that was completed, cropped as the model saw it
    const fig = document.createElement("figure"); fig.className = "source";
    const frame = document.createElement("div"); frame.className = "frame";
    frame.style.width = frame.style.height = side + "px";
    const img = document.createElement("img"); img.src = shownUrl; img.alt = "the completed picture";
    const drawn = document.createElement("div"); drawn.className = "drawn";
    drawn.style.top = (100 * req.keep_rows / CONFIG.limits.code_rows) + "%";
    const cap = document.createElement("figcaption");
    cap.textContent = "your picture · top " + req.keep_rows + " rows kept";
    frame.append(img, drawn); fig.append(frame, cap); grid.append(fig);
  }
  res.images.forEach((src, i) => {
    const fig = document.createElement("figure");
    const img = document.createElement("img");
    img.src = src; img.alt = req.prompt + " (" + (i + 1) + ")"; img.className = "result";
    img.style.width = side + "px";
    const cap = document.createElement("figcaption");
    cap.textContent = res.reranked ? "#" + (i + 1) + " · sample " + (res.order[i] + 1) + " · CLIP " +
                                     res.scores[i].toFixed(1) : "sample " + (i + 1);
    fig.append(img, cap); grid.append(fig);
  });
  const a = document.createElement("a"); a.href = res.grid; a.className = "dl"; a.textContent = "download grid (PNG)";
  a.download = "grid.png";
  const wrap = document.createElement("div"); wrap.style.width = "100%"; wrap.append(a); grid.append(wrap);
}

init();
