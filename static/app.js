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

  // -- The page's one stream ---------------------------------------------------------
  // Event ids are cursors: "c<chat event>" or "c<chat event>.<generation>:<entry>".
  function parseCursor(id) {
    var match = /^c(\d+)(?:\.([0-9a-f]{16}):(\d+))?$/.exec(id || "");
    if (!match) return null;
    return { events: +match[1], generation: match[2] || null, entry: match[3] ? +match[3] : 0 };
  }

  // The element holding the EventSource remembers the newest event the page applied in
  // data-cursor (it starts as the position the server rendered the page at). When the SSE
  // extension rebuilds its EventSource (after an error status), the new one starts there:
  // a rebuilt EventSource has no Last-Event-ID of its own.
  var createEventSource = htmx.createEventSource;
  htmx.createEventSource = function (url) {
    var holder = document.querySelector('[sse-connect="' + CSS.escape(url) + '"]');
    var cursor = holder && holder.dataset.cursor;
    if (cursor) url += (url.indexOf("?") < 0 ? "?" : "&") + "after=" + encodeURIComponent(cursor);
    return createEventSource(url);
  };

  // Defence in depth against doubled text: the server sends each entry once per connection,
  // but never apply an answer's entry, or a chat event, this page has already applied.
  document.addEventListener("htmx:sseBeforeMessage", function (event) {
    var native = event.detail;
    var holder = event.target.closest("[sse-connect]");
    if (!holder || !native || !native.lastEventId) return;
    var next = parseCursor(native.lastEventId);
    var last = parseCursor(holder.dataset.cursor);
    if (!next) return;
    if (last && native.type === "delta" && next.generation === last.generation &&
        next.entry <= last.entry) {
      event.preventDefault();
      return;
    }
    if (last && native.type === "message" && next.events <= last.events) {
      event.preventDefault();
      return;
    }
    holder.dataset.cursor = native.lastEventId;
  });

  // A message the page shows already is never added twice (a snapshot, which replaces
  // #messages as a whole, is not an addition).
  document.addEventListener("htmx:oobBeforeSwap", function (event) {
    var fragment = event.detail.fragment;
    var first = fragment && fragment.firstElementChild;
    var target = event.detail.target;
    if (target.id === "messages" && first && first.id && first.id !== target.id &&
        document.getElementById(first.id)) {
      event.detail.shouldSwap = false;
    }
  });

  // Connection state, for the reader and for tests: data-connection on the stream's holder.
  function mark(event, state) {
    var holder = event.target.closest && event.target.closest("[sse-connect]");
    if (holder) holder.dataset.connection = state;
  }
  document.addEventListener("htmx:sseOpen", function (e) { mark(e, "open"); });
  document.addEventListener("htmx:sseError", function (e) { mark(e, "reconnecting"); });
  // An event (a ping at least every 15 s) proves the connection works, whatever the
  // browser's offline/online events said meanwhile.
  document.addEventListener("htmx:sseMessage", function (e) { mark(e, "open"); });
  window.addEventListener("offline", function () {
    document.querySelectorAll("[sse-connect]").forEach(function (holder) {
      holder.dataset.connection = "reconnecting";
    });
  });
})();
