// chatapp's only script: small behaviours hooked by data- attributes. No inline script.
(function () {
  "use strict";

  // Enter sends, Shift+Enter adds a line.
  document.addEventListener("keydown", function (event) {
    var box = event.target;
    if (!box.matches || !box.matches("[data-composer]")) return;
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      var button = box.form.querySelector("button[type=submit]");
      if (box.value.trim() && !(button && button.disabled)) box.form.requestSubmit();
    }
  });

  // A send swaps in a fresh composer (with a new message id): keep typing where you were.
  document.addEventListener("htmx:load", function (event) {
    var box = event.target.id === "composer" && event.target.querySelector("[data-composer]");
    if (box) box.focus();
  });

  // Defence in depth against doubled text: the server already sends each entry once per
  // connection, but never apply a delta whose position this page has already applied.
  // Event ids are "<generation>:<seq>"; a snapshot or end resets what was applied.
  var applied = new WeakMap();
  document.addEventListener("htmx:sseBeforeMessage", function (event) {
    var native = event.detail;
    var source = event.target.closest("[sse-connect]");
    if (!source || !native || !native.lastEventId) return;
    var parts = native.lastEventId.split(":");
    var generation = parts[0], seq = parseInt(parts[1], 10);
    var last = applied.get(source);
    if (native.type === "delta" && last && last.generation === generation && seq <= last.seq) {
      event.preventDefault();
      return;
    }
    applied.set(source, { generation: generation, seq: seq });
  });

  // Connection state, for the page and for tests: data-connection on the answer.
  function mark(event, state) {
    var el = event.target.closest && event.target.closest("[sse-connect]");
    if (el) el.dataset.connection = state;
  }
  document.addEventListener("htmx:sseOpen", function (e) { mark(e, "open"); });
  document.addEventListener("htmx:sseError", function (e) { mark(e, "reconnecting"); });
})();
