// dockhand dashboard: a running deploy's steps, live, from GET /api/deploys/{id}/events (the
// session cookie authenticates it). Each step event updates or appends its row by step id; the
// status events set the badge, and the terminal one ends the stream. No other script runs on any page.
"use strict";
(function () {
  const list = document.getElementById("steps");
  if (!list || list.dataset.live !== "true") return;
  const id = list.dataset.deploy;
  const live = document.getElementById("live");
  const source = new EventSource("/api/deploys/" + encodeURIComponent(id) + "/events");

  function row(step) {
    let li = list.querySelector('li[data-step="' + step.step + '"]');
    if (!li) {
      li = document.createElement("li");
      li.dataset.step = String(step.step);
      const head = document.createElement("div");
      head.className = "step-head";
      const stage = document.createElement("span");
      stage.className = "stage";
      stage.textContent = step.stage;
      head.appendChild(stage);
      if (step.detail) {
        const detail = document.createElement("span");
        detail.className = "detail";
        detail.textContent = " " + step.detail;
        head.appendChild(detail);
      }
      const took = document.createElement("span");
      took.className = "took";
      head.appendChild(took);
      li.appendChild(head);
      list.appendChild(li);
    }
    return li;
  }

  source.addEventListener("step", function (e) {
    const step = JSON.parse(e.data);
    const li = row(step);
    if (step.state === "started") {
      if (!li.dataset.ok) li.dataset.ok = "running";
      if (step.at) li.dataset.started = step.at;
      return;
    }
    li.dataset.ok = step.ok ? "true" : "false";
    const took = li.querySelector(".took");
    if (took && !took.textContent.trim() && li.dataset.started && step.at) {
      const ms = Date.parse(step.at) - Date.parse(li.dataset.started);
      if (ms >= 0) took.textContent = ms < 1000 ? ms + " ms" : (ms / 1000).toFixed(1) + " s";
    }
    if (step.output && !li.querySelector("pre")) {
      const pre = document.createElement("pre");
      pre.textContent = step.output;
      li.appendChild(pre);
    }
  });

  const terminal = (status) => status !== "queued" && status !== "running";
  source.addEventListener("status", function (e) {
    const s = JSON.parse(e.data);
    const badge = document.querySelector("#status .badge");
    if (badge) {
      badge.textContent = s.status;
      badge.dataset.status = s.status;
      const kind = s.status === "succeeded" ? "ok"
        : (s.status === "failed" || s.status === "interrupted") ? "bad"
        : terminal(s.status) ? "muted" : "busy";
      badge.className = "badge " + kind;
    }
    if (!terminal(s.status)) return;
    source.close();
    if (s.error) {
      const error = document.getElementById("error");
      error.textContent = s.error;
      error.hidden = false;
    }
    if (live) live.textContent = "Finished: " + s.status + ". Reload for its timings.";
  });

  source.onerror = function () {
    if (source.readyState === EventSource.CLOSED && live) live.textContent = "Lost the live stream: reload the page.";
  };
})();
