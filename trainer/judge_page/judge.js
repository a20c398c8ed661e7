// The judging page: fetch the blind pairs, show the ones this judge hasn't judged, post each verdict.
(function () {
  "use strict";
  const state = { pairs: [], queue: [], judge: "", shownAt: 0, busy: false };
  const $ = (id) => document.getElementById(id);

  function fail(message) {
    $("error").textContent = message;
    $("error").hidden = false;
  }

  async function api(path, options) {
    const response = await fetch(path, options);
    if (!response.ok) throw new Error(path + ": HTTP " + response.status + " " + (await response.text()));
    return response.json();
  }

  function show() {
    const judged = state.pairs.length - state.queue.length;
    $("progress").textContent = state.judge + ": " + judged + " of " + state.pairs.length + " pairs judged";
    if (!state.queue.length) {
      $("pair").hidden = true;
      $("done").hidden = false;
      $("done").textContent = "Done: every pair has a verdict from " + state.judge + ". Thank you.";
      document.body.dataset.state = "done";
      return;
    }
    const pair = state.queue[0];
    for (const side of ["left", "right"]) {
      const el = $("side-" + side);
      el.querySelector(".task").textContent = "Task: " + pair[side].prompt;
      el.querySelector(".transcript").textContent = pair[side].transcript;
    }
    $("pair").hidden = false;
    $("pair").dataset.pairId = pair.id;
    document.body.dataset.state = "judging";
    state.shownAt = performance.now();
  }

  async function choose(choice) {
    if (state.busy || !state.queue.length) return;
    state.busy = true;
    const pair = state.queue[0];
    try {
      await api("/api/verdicts", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ pair_id: pair.id, choice: choice, judge: state.judge,
                               ms: Math.round(performance.now() - state.shownAt) }),
      });
      state.queue.shift();
      show();
    } catch (e) {
      fail(String(e));
    } finally {
      state.busy = false;
    }
  }

  async function start(event) {
    event.preventDefault();
    const name = $("judge-name").value.trim();
    if (!name) return;
    state.judge = name;
    try { localStorage.setItem("understudy-judge", name); } catch (e) { /* private mode */ }
    try {
      const [data, progress] = await Promise.all([
        api("/api/pairs"),
        api("/api/progress?judge=" + encodeURIComponent(name)),
      ]);
      const done = new Set(progress.judged);
      state.pairs = data.pairs;
      state.queue = data.pairs.filter((p) => !done.has(p.id));
      $("who").hidden = true;
      show();
    } catch (e) {
      fail(String(e));
    }
  }

  $("who").addEventListener("submit", start);
  for (const button of document.querySelectorAll(".choose")) {
    button.addEventListener("click", () => choose(button.dataset.choice));
  }
  document.addEventListener("keydown", (event) => {
    if ($("pair").hidden || event.target.tagName === "INPUT") return;
    if (event.key === "1" || event.key === "ArrowLeft") choose("left");
    if (event.key === "2" || event.key === "ArrowRight") choose("right");
  });
  try { $("judge-name").value = localStorage.getItem("understudy-judge") || ""; } catch (e) { /* ignore */ }
  document.body.dataset.state = "ready";
})();
