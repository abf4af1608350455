// dockhand dashboard: a running deploy's steps, live, from GET /api/deploys/{id}/events (the
// session cookie authenticates it). Each step event updates or appends its row by step id; the
// status event sets the badge and ends the stream. No other script runs on any page.
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
      return;
    }
    li.dataset.ok = step.ok ? "true" : "false";
    if (step.output && !li.querySelector("pre")) {
      const pre = document.createElement("pre");
      pre.textContent = step.output;
      li.appendChild(pre);
    }
  });

  source.addEventListener("status", function (e) {
    const s = JSON.parse(e.data);
    source.close();
    const badge = document.querySelector("#status .badge");
    if (badge) {
      badge.textContent = s.status;
      badge.dataset.status = s.status;
      badge.className = "badge " + (s.status === "succeeded" ? "ok" : (s.status === "failed" || s.status === "interrupted") ? "bad" : "muted");
    }
    if (s.error) {
      const error = document.getElementById("error");
      error.textContent = s.error;
      error.hidden = false;
    }
    if (live) live.textContent = "Finished: " + s.status + ".";
  });

  source.onerror = function () {
    if (source.readyState === EventSource.CLOSED && live) live.textContent = "Lost the live stream: reload the page.";
  };
})();
