// The attention-map editor's browser side (anywidget ES module; no imports, nothing fetched).
// Draws the image, the colour-mapped edited map and the brush trail; a finished stroke is sent to the
// kernel as {action: "stroke", stroke: {mode, radius, strength, points: [[row, col], ...]}} in image
// coordinates (pixel (r, c) centred at (r, c)), which applies it with attnlib.editing and syncs back.

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function slider(label, name, min, max, step, model) {
  const wrap = element("label", "ae-slider");
  wrap.append(element("span", "", label));
  const input = element("input");
  Object.assign(input, { type: "range", min, max, step, value: model.get(name) });
  input.dataset.trait = name;
  const value = element("span", "ae-value", String(model.get(name)));
  input.addEventListener("input", () => {
    value.textContent = input.value;
    model.set(name, Number(input.value));
    model.save_changes();
  });
  model.on(`change:${name}`, () => {
    input.value = model.get(name);
    value.textContent = String(model.get(name));
  });
  wrap.append(input, value);
  return wrap;
}

function render({ model, el }) {
  el.classList.add("attnlib-editor");
  const bar = element("div", "ae-bar");
  const button = (label, action, title) => {
    const b = element("button", "ae-button", label);
    b.dataset.action = action;
    b.title = title;
    b.addEventListener("click", () => model.send({ action }));
    bar.append(b);
    return b;
  };
  button("◀ prev", "previous", "previous sample");
  button("next ▶", "next", "next sample");
  const modes = element("span", "ae-modes");
  const modeButtons = ["add", "remove"].map((mode) => {
    const b = element("button", "ae-button ae-mode", mode === "add" ? "paint in (1)" : "erase (0)");
    b.dataset.mode = mode;
    b.addEventListener("click", () => {
      model.set("mode", mode);
      model.save_changes();
    });
    modes.append(b);
    return b;
  });
  bar.append(modes);
  const undo = button("undo", "undo", "remove the last stroke");
  const redo = button("redo", "redo", "re-apply the last undone stroke");
  button("reset", "reset", "back to the network's map (redo restores)");
  const save = button("save", "save", "save the edited map and its strokes");

  const [h0, w0] = model.get("image_size");
  const controls = element("div", "ae-controls");
  controls.append(
    slider("radius (px)", "radius", 1, Math.max(2, Math.round(Math.max(h0, w0) / 3)), 1, model),
    slider("strength", "strength", 0.05, 1, 0.05, model),
    slider("opacity", "opacity", 0, 1, 0.05, model),
  );

  const stage = element("div", "ae-stage");
  const base = element("canvas", "ae-image");
  const overlay = element("canvas", "ae-overlay");
  const paint = element("canvas", "ae-paint");
  stage.append(base, overlay, paint);

  const info = element("div", "ae-info");
  const header = element("div", "ae-header");
  const top = element("table", "ae-top3");
  const status = element("div", "ae-status");
  info.append(header, top, status);

  const body = element("div", "ae-body");
  body.append(stage, info);
  el.append(bar, controls, body);

  const images = { image: new Image(), overlay: new Image() };
  let trail = null; // points of the stroke being drawn, image coordinates

  function layout() {
    const [h, w] = model.get("image_size");
    const side = model.get("display_size");
    const scale = side / Math.max(h, w);
    const [width, height] = [Math.round(w * scale), Math.round(h * scale)];
    if (base.width === width && base.height === height) return;
    for (const canvas of [base, overlay, paint]) {
      canvas.width = width;
      canvas.height = height;
    }
    stage.style.width = `${base.width}px`;
    stage.style.height = `${base.height}px`;
  }

  function drawLayer(canvas, img, alpha, smooth) {
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    if (!img.complete || !img.naturalWidth) return;
    ctx.imageSmoothingEnabled = smooth;
    ctx.globalAlpha = alpha;
    ctx.drawImage(img, 0, 0, canvas.width, canvas.height);
    ctx.globalAlpha = 1;
  }
  const drawImage = () => drawLayer(base, images.image, 1, false);
  const drawOverlay = () => drawLayer(overlay, images.overlay, model.get("opacity"), true);
  images.image.onload = drawImage;
  images.overlay.onload = drawOverlay;

  function toImage(event) {
    const rect = paint.getBoundingClientRect();
    const [h, w] = model.get("image_size");
    const clamp = (v, n) => Math.min(n - 0.5, Math.max(-0.5, v));
    const row = ((event.clientY - rect.top) * h) / rect.height - 0.5;
    const col = ((event.clientX - rect.left) * w) / rect.width - 0.5;
    return [clamp(row, h), clamp(col, w)];
  }

  function drawTrail() {
    const ctx = paint.getContext("2d");
    ctx.clearRect(0, 0, paint.width, paint.height);
    if (!trail) return;
    const [h] = model.get("image_size");
    const scale = paint.height / h;
    const xy = ([row, col]) => [(col + 0.5) * scale, (row + 0.5) * scale];
    ctx.strokeStyle = ctx.fillStyle = model.get("mode") === "add" ? "rgba(255,255,255,0.55)" : "rgba(0,0,0,0.55)";
    ctx.lineWidth = 2 * model.get("radius") * scale;
    ctx.lineCap = ctx.lineJoin = "round";
    ctx.beginPath();
    const [x0, y0] = xy(trail[0]);
    ctx.moveTo(x0, y0);
    for (const point of trail.slice(1)) ctx.lineTo(...xy(point));
    if (trail.length === 1) {
      ctx.arc(x0, y0, model.get("radius") * scale, 0, 2 * Math.PI);
      ctx.fill();
    } else {
      ctx.stroke();
    }
  }

  paint.addEventListener("pointerdown", (event) => {
    event.preventDefault();
    paint.setPointerCapture(event.pointerId);
    trail = [toImage(event)];
    drawTrail();
  });
  paint.addEventListener("pointermove", (event) => {
    if (!trail) return;
    const point = toImage(event);
    const last = trail[trail.length - 1];
    if (Math.hypot(point[0] - last[0], point[1] - last[1]) >= 0.5) {
      trail.push(point);
      drawTrail();
    }
  });
  const finish = () => {
    if (!trail) return;
    const points = trail;
    trail = null;
    status.textContent = "applying stroke…";
    model.send({
      action: "stroke",
      stroke: { mode: model.get("mode"), radius: model.get("radius"), strength: model.get("strength"), points },
    });
  };
  paint.addEventListener("pointerup", finish);
  paint.addEventListener("pointercancel", finish);

  function renderInfo() {
    header.textContent = `sample ${model.get("sample_id")} (${model.get("position")}) · true class: ${model.get("true_label")}`;
    top.replaceChildren();
    const head = element("tr");
    head.append(element("th", "", "top-3 with edited map"), element("th", "", "p"), element("th", "", "with network's map"), element("th", "", "p"));
    top.append(head);
    const edited = model.get("predictions");
    const network = model.get("network_predictions");
    for (let i = 0; i < edited.length; i++) {
      const row = element("tr");
      row.append(
        element("td", "ae-label", edited[i].label),
        element("td", "ae-prob", edited[i].probability.toFixed(3)),
        element("td", "ae-label", network[i] ? network[i].label : ""),
        element("td", "ae-prob", network[i] ? network[i].probability.toFixed(3) : ""),
      );
      top.append(row);
    }
    const state = model.get("dirty") ? "unsaved changes" : model.get("saved") ? "saved" : "not edited";
    status.textContent = `${model.get("n_strokes")} strokes · ${state}${model.get("message") ? " · " + model.get("message") : ""}`;
    status.dataset.state = state;
    el.dataset.revision = String(model.get("revision"));
    undo.disabled = !model.get("can_undo");
    redo.disabled = !model.get("can_redo");
    save.classList.toggle("ae-pending", model.get("dirty"));
    for (const b of modeButtons) b.classList.toggle("ae-active", b.dataset.mode === model.get("mode"));
  }

  function refresh() {
    layout();
    // a changed source draws on load; an unchanged one (no load event) is redrawn now
    for (const [name, draw] of [["image", drawImage], ["overlay", drawOverlay]]) {
      if (images[name].src !== model.get(name)) images[name].src = model.get(name);
      else draw();
    }
    drawTrail();
    renderInfo();
  }

  model.on("change:revision", refresh);
  model.on("change:opacity", drawOverlay);
  model.on("change:mode", renderInfo);
  model.on("change:display_size", refresh);
  refresh();
  return () => {
    model.off("change:revision", refresh);
    model.off("change:opacity", drawOverlay);
    model.off("change:mode", renderInfo);
    model.off("change:display_size", refresh);
  };
}

export default { render };
