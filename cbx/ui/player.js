// The dashboard's live player: AudioBlocks from the kernel, scheduled back to back on
// the Web Audio timeline, so the browser (not the kernel) decides when each one plays.
// Shipped inside the package and loaded by cbx/ui/player.py as the anywidget's _esm.

const LEAD_S = 0.1;        // the first block starts this far ahead (room to schedule)
const LATE_MARGIN_S = 0.05; // a late block starts this far ahead of now
const TICK_MS = 250;       // counters reach the model at most 4 times a second

function render({ model, el }) {
  let ctx = null;          // AudioContext of the current generation (closed when done)
  let gen = -1;            // generation the view is playing; older messages are ignored
  let sources = [];        // scheduled sources not yet ended
  let segments = [];       // [ctxStart, duration] not yet fully played
  let playedDone = 0;      // seconds of segments already pruned as played
  let nextAt = 0;          // context time where the next block joins on
  let finished = false;    // the kernel sent its last block
  let ticker = null;       // interval that pushes counters while playing
  let firstPlayedAt = 0;   // epoch ms at which played time first moved
  const c = { buffered: 0, blocks: 0, maxGap: 0, lateGaps: 0, lateS: 0 };

  const button = document.createElement("button");
  button.className = "jupyter-button widget-button cbx-live-toggle";
  const info = document.createElement("span");
  info.className = "cbx-live-info cbx-hint";
  el.classList.add("cbx-live");
  el.append(button, info);

  const state = () => model.get("state");

  function played() {
    if (!ctx) return playedDone;
    const now = ctx.currentTime;
    while (segments.length && now >= segments[0][0] + segments[0][1]) {
      playedDone += segments.shift()[1];
    }
    let total = playedDone;
    if (segments.length && now > segments[0][0]) total += now - segments[0][0];
    return total;
  }

  function push(newState) {
    const p = played();
    if (p > 0 && !firstPlayedAt) firstPlayedAt = Date.now() - p * 1000;
    model.set({
      state: newState || state(), played_s: p, buffered_s: c.buffered, blocks: c.blocks,
      max_gap_ms: c.maxGap * 1000, late_gaps: c.lateGaps, late_s: c.lateS,
      first_played_at: firstPlayedAt,
    });
    model.save_changes();
  }

  function tick(on) {
    if (on && !ticker) ticker = setInterval(() => push(), TICK_MS);
    if (!on && ticker) { clearInterval(ticker); ticker = null; }
  }

  function shutdown(newState) {
    tick(false);
    for (const s of sources) { s.onended = null; s.stop(); }
    sources = [];
    const p = played();
    segments = []; playedDone = p;
    if (ctx) { const old = ctx; ctx = null; old.close(); }
    push(newState);
  }

  function ensureContext() {
    if (!ctx) {
      const Ctx = window.AudioContext || window.webkitAudioContext;
      ctx = new Ctx({ latencyHint: "playback" });
    }
    if (ctx.state === "suspended" && state() === "playing") ctx.resume();
    return ctx;
  }

  function begin(g) {
    if (ctx || sources.length) shutdown("stopped");
    gen = g; finished = false; nextAt = 0; playedDone = 0; firstPlayedAt = 0;
    Object.assign(c, { buffered: 0, blocks: 0, maxGap: 0, lateGaps: 0, lateS: 0 });
    push("playing");
    ensureContext();
    tick(true);
  }

  function block(meta, view) {
    if (meta.gen !== gen || !["playing", "paused"].includes(state())) return;
    const bytes = view.buffer.slice(view.byteOffset, view.byteOffset + view.byteLength);
    const pcm = new Float32Array(bytes);
    if (!pcm.length) return;
    const ac = ensureContext();
    const buffer = ac.createBuffer(1, pcm.length, meta.rate);
    buffer.copyToChannel(pcm, 0);
    const now = ac.currentTime;
    let when = nextAt;
    if (c.blocks === 0) {
      when = now + LEAD_S;
    } else if (when < now + LATE_MARGIN_S) {     // late: resume from now, count the gap
      when = now + LATE_MARGIN_S;
      c.lateGaps += 1; c.lateS += when - nextAt;
      c.maxGap = Math.max(c.maxGap, when - nextAt);
    }
    const src = ac.createBufferSource();
    src.buffer = buffer;
    src.connect(ac.destination);
    src.onended = () => {
      sources = sources.filter((s) => s !== src);
      if (finished && !sources.length) shutdown("ended");
    };
    src.start(when);
    sources.push(src);
    segments.push([when, buffer.duration]);
    nextAt = when + buffer.duration;
    c.blocks += 1; c.buffered += buffer.duration;
    if (!ticker) push();     // paused: the buffered figure still grows on the page
  }

  function finish(g) {
    if (g !== gen) return;
    finished = true;
    if (!sources.length && ["playing", "paused"].includes(state())) shutdown("ended");
  }

  function toggle() {
    if (!ctx) return;
    if (state() === "playing") { ctx.suspend(); tick(false); push("paused"); }
    else if (state() === "paused") { push("playing"); ctx.resume(); tick(true); }
  }

  model.on("msg:custom", (msg, buffers) => {
    if (msg.kind === "begin") begin(msg.gen);
    else if (msg.kind === "block") block(msg, buffers[0]);
    else if (msg.kind === "finish") finish(msg.gen);
    else if (msg.kind === "stop" && (msg.gen === gen) && ctx) shutdown("stopped");
  });

  // A browser that blocked the context until a gesture: the next click or key starts it.
  const unlock = () => { if (ctx && ctx.state === "suspended" && state() === "playing") ctx.resume(); };
  document.addEventListener("pointerdown", unlock, true);
  document.addEventListener("keydown", unlock, true);
  const onLeave = () => { if (ctx) shutdown("stopped"); };
  window.addEventListener("pagehide", onLeave);

  function show() {
    const s = state();
    el.style.display = s === "idle" ? "none" : "";      // no player before a generation
    button.disabled = !["playing", "paused"].includes(s);
    button.textContent = s === "paused" ? "\u25B6 Play" : "\u23F8 Pause";
    const p = model.get("played_s").toFixed(1), b = model.get("buffered_s").toFixed(1);
    const late = model.get("late_gaps");
    info.textContent = ` Live: ${s} \u00B7 played ${p} s of ${b} s buffered` +
      (late ? ` \u00B7 waited for audio ${late}\u00D7` : "");
    for (const name of shown) el.dataset[name] = String(model.get(name));
  }
  const shown = ["state", "played_s", "buffered_s", "blocks", "max_gap_ms", "late_gaps",
                 "first_played_at"];
  button.addEventListener("click", toggle);
  for (const name of shown) model.on(`change:${name}`, show);
  show();

  return () => {
    document.removeEventListener("pointerdown", unlock, true);
    document.removeEventListener("keydown", unlock, true);
    window.removeEventListener("pagehide", onLeave);
    if (ctx) shutdown("stopped");
  };
}

export default { render };
