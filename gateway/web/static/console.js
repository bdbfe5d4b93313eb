// nakhon console: live regions, copy buttons, confirmations. No framework, nothing fetched from elsewhere.
(function () {
  "use strict";
  var BASE_MS = 5000, MAX_MS = 60000;

  // Every element with data-live-src is refreshed from that URL while the page is visible: one request in
  // flight at a time, every 5 s, backing off (doubling up to 60 s) on errors; a 401 (session ended) stops it.
  function live(el) {
    var delay = BASE_MS, stopped = false, dirty = false;
    var status = document.querySelector("[data-live-status]");
    el.addEventListener("input", function () { dirty = true; });
    el.addEventListener("submit", function () { stopped = true; });
    function schedule() { if (!stopped) { setTimeout(tick, delay); } }
    function tick() {
      if (document.hidden || dirty || el.contains(document.activeElement) && document.activeElement !== document.body) {
        schedule(); return;  // never replace what someone is typing into
      }
      fetch(el.getAttribute("data-live-src"), { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
        .then(function (r) {
          if (r.status === 401) { stopped = true; if (status) { status.classList.add("paused"); } return null; }
          if (!r.ok) { throw new Error(String(r.status)); }
          return r.text();
        })
        .then(function (html) {
          if (html !== null && html !== undefined) {
            el.innerHTML = html; delay = BASE_MS;
            el.setAttribute("data-live-updated", String(Date.now()));
            if (status) { status.classList.remove("paused"); }
          }
          schedule();
        })
        .catch(function () { delay = Math.min(delay * 2, MAX_MS); if (status) { status.classList.add("paused"); } schedule(); });
    }
    schedule();
  }

  function copy(button) {
    var text = button.getAttribute("data-copy");
    var done = function () { var label = button.textContent; button.textContent = button.getAttribute("data-copied") || "✓";
      setTimeout(function () { button.textContent = label; }, 1500); };
    if (navigator.clipboard && window.isSecureContext) { navigator.clipboard.writeText(text).then(done); return; }
    var area = document.createElement("textarea"); area.value = text; document.body.appendChild(area); area.select();
    try { document.execCommand("copy"); done(); } finally { document.body.removeChild(area); }
  }

  document.addEventListener("DOMContentLoaded", function () {
    Array.prototype.forEach.call(document.querySelectorAll("[data-live-src]"), live);
    document.addEventListener("click", function (e) {
      var b = e.target.closest && e.target.closest("button.copy");
      if (b) { copy(b); }
    });
    document.addEventListener("submit", function (e) {
      var message = e.target.getAttribute && e.target.getAttribute("data-confirm");
      if (message && !window.confirm(message)) { e.preventDefault(); }
    });
  });
})();
