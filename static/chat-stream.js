// htmx extension "chat-stream": what a page's stream needs beyond htmx's SSE extension
// (docs/stream-protocol.md). Use it beside the SSE extension on the element that holds the
// stream: hx-ext="sse, chat-stream" sse-connect="..." data-cursor="<where the page was
// rendered>". It does what htmx cannot:
//
// - Resume from the page: data-cursor follows the newest event the page applied, and an
//   EventSource that the SSE extension builds again (after an error status) starts there
//   (`?after=`): a new EventSource has no Last-Event-ID of its own.
// - Never twice: an answer's entry, or a chat event, that the page has applied already is
//   refused (the server sends each once per connection; this is defence in depth).
// - Short deltas: an answer's new text alone (escaped), appended to its pending span.
// - Network changes: when the browser says it went offline or online, the open connection
//   is likely dead (a dead TCP connection can take minutes to notice): it is dropped and
//   built again from the cursor.
// - data-connection="open" or "reconnecting" on the holder, for the reader and for tests.
(function () {
  "use strict";

  var sources = [];  // the EventSources this extension has seen built

  // Event ids are cursors: "c<chat event>" or "c<chat event>.<generation>:<entry>".
  function parseCursor(id) {
    var match = /^c(\d+)(?:\.([0-9a-f]{16}):(\d+))?$/.exec(id || "");
    if (!match) return null;
    return { events: +match[1], generation: match[2] || null, entry: match[3] ? +match[3] : 0 };
  }

  // A closed source that reports an error is what the SSE extension builds again.
  function startOver(onlyBroken) {
    sources.forEach(function (source) {
      if (source.readyState === EventSource.CLOSED) return;
      if (onlyBroken && source.readyState === EventSource.OPEN) return;
      source.close();
      source.dispatchEvent(new Event("error"));
    });
  }

  function resumeFromThePage(createEventSource) {
    return function (url) {
      var holder = document.querySelector('[sse-connect="' + CSS.escape(url) + '"]');
      var cursor = holder && holder.dataset.cursor;
      if (cursor) url += (url.indexOf("?") < 0 ? "?" : "&") + "after=" + encodeURIComponent(cursor);
      var source = createEventSource(url);
      sources = sources.filter(function (s) { return s.readyState !== EventSource.CLOSED; });
      sources.push(source);
      return source;
    };
  }

  // False (refused) for what the page has applied already; else the cursor moves on.
  function isNew(event) {
    var native = event.detail;
    var holder = event.target.closest("[sse-connect]");
    if (!holder || !native || !native.lastEventId) return true;
    var next = parseCursor(native.lastEventId);
    var last = parseCursor(holder.dataset.cursor);
    if (!next) return true;
    if (last && native.type === "delta" && next.generation === last.generation &&
        next.entry <= last.entry) return false;
    if (last && native.type === "message" && next.events <= last.events) return false;
    holder.dataset.cursor = native.lastEventId;
    return true;
  }

  // The stream's short form of new text (frames.chat_delta_event): the text alone, for the
  // answer whose generation the event's id names; htmx finds no markup in it to swap.
  function appendShortDelta(native) {
    var data = native.data || "";
    var cursor = parseCursor(native.lastEventId);
    if (native.type !== "delta" || data.charAt(0) === "<" || !cursor || !cursor.generation) return;
    var answer = document.querySelector('article.answer[data-generation="' + cursor.generation + '"]');
    var pending = answer && answer.querySelector(".pending");
    if (pending) pending.append(unescapeHtml(data));
  }

  // The inverse of the server's escaping: html.escape(text, quote=False), and a space or
  // tab that starts a line as a character reference (frames.chat_delta_event).
  function unescapeHtml(text) {
    return text.replace(/&#(9|32);/g, function (_, code) { return String.fromCharCode(+code); })
      .replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&");
  }

  function mark(event, state) {
    var holder = event.target.closest && event.target.closest("[sse-connect]");
    if (holder) holder.dataset.connection = state;
  }

  htmx.defineExtension("chat-stream", {
    init: function () {
      htmx.createEventSource = resumeFromThePage(htmx.createEventSource);
      window.addEventListener("offline", function () { startOver(false); });
      window.addEventListener("online", function () { startOver(true); });
    },
    onEvent: function (name, event) {
      if (name === "htmx:sseBeforeMessage") {
        if (!isNew(event)) return false;  // the SSE extension then swaps nothing
        appendShortDelta(event.detail);
      } else if (name === "htmx:sseOpen" || name === "htmx:sseMessage") {
        // An event (a ping at least every 15 s) proves the connection works, whatever the
        // browser's offline/online events said meanwhile.
        mark(event, "open");
      } else if (name === "htmx:sseError") {
        mark(event, "reconnecting");
      }
    },
  });
})();
