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

  // Esc stops the running answer, as its Stop button does.
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape" || event.isComposing) return;
    var stop = document.querySelector("#messages article.answer[aria-busy] button.stop");
    if (stop) {
      event.preventDefault();
      stop.click();
    }
  });

  // While the chat's answer is being written, Send waits (the server would refuse a second
  // message); the button says why. Checked after every swap and every stream event.
  function sendWhenIdle() {
    var button = document.querySelector("#composer button[type=submit]");
    if (!button || button.closest("form").classList.contains("htmx-request")) return;
    var running = document.querySelector("#messages article.answer[aria-busy]");
    button.disabled = !!running;
    button.title = running ? "An answer is being written: wait for it, or stop it (Esc)" : "";
  }
  ["htmx:load", "htmx:afterSettle", "htmx:oobAfterSwap", "htmx:sseMessage", "htmx:afterRequest"].forEach(
    function (name) { document.addEventListener(name, sendWhenIdle); }
  );
  document.addEventListener("DOMContentLoaded", sendWhenIdle);

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
  var sources = [];
  htmx.createEventSource = function (url) {
    var holder = document.querySelector('[sse-connect="' + CSS.escape(url) + '"]');
    var cursor = holder && holder.dataset.cursor;
    if (cursor) url += (url.indexOf("?") < 0 ? "?" : "&") + "after=" + encodeURIComponent(cursor);
    var source = createEventSource(url);
    sources = sources.filter(function (s) { return s.readyState !== EventSource.CLOSED; });
    sources.push(source);
    return source;
  };

  // When the browser says the network went away or came back, the open connection is
  // likely dead (a dead TCP connection can take minutes to notice): drop it and let the
  // SSE extension build a new one, which starts from the page's cursor. A closed source
  // that reports an error is what the extension rebuilds: the standard `error` event.
  function startOver(onlyBroken) {
    sources.forEach(function (source) {
      if (source.readyState === EventSource.CLOSED) return;
      if (onlyBroken && source.readyState === EventSource.OPEN) return;
      source.close();
      source.dispatchEvent(new Event("error"));
    });
  }
  window.addEventListener("offline", function () { startOver(false); });
  window.addEventListener("online", function () { startOver(true); });

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

  // An answer's new text in the stream's short form (frames.chat_delta_event): the text
  // alone, HTML-escaped, for the answer whose generation the event's id names. It goes at
  // the end of that answer's pending span, as text; htmx finds no markup in it to swap.
  document.addEventListener("htmx:sseBeforeMessage", function (event) {
    var native = event.detail;
    if (event.defaultPrevented || !native || native.type !== "delta") return;
    var data = native.data || "";
    var cursor = parseCursor(native.lastEventId);
    if (data.charAt(0) === "<" || !cursor || !cursor.generation) return;  // markup: htmx's
    var answer = document.querySelector(
      'article.answer[data-generation="' + cursor.generation + '"]');
    var pending = answer && answer.querySelector(".pending");
    if (pending) pending.append(unescapeHtml(data));
  });

  // The inverse of the server's escaping: html.escape(text, quote=False), and a space or
  // tab that starts a line as a character reference (frames.chat_delta_event).
  function unescapeHtml(text) {
    return text.replace(/&#(9|32);/g, function (_, code) { return String.fromCharCode(+code); })
      .replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&");
  }

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

  // A new title from the stream: the tab's title follows the page's heading.
  document.addEventListener("htmx:oobAfterSwap", function (event) {
    var heading = document.getElementById("chat-title");
    if (event.detail.target && event.detail.target.id === "chat-title" && heading) {
      document.title = heading.textContent + " · chatapp";
    }
  });

  // The chat is gone (deleted here or on another device): the address bar leaves it, so a
  // reload shows the chat list instead of a 404.
  document.addEventListener("htmx:oobAfterSwap", function (event) {
    var target = event.detail.target;
    var gone = target && target.querySelector && target.querySelector(".chat-gone[data-leave-to]");
    if (gone) {
      history.replaceState(null, "", gone.getAttribute("data-leave-to"));
    }
  });

  // Follow the answer as it grows, unless the reader scrolled up to read something else.
  var following = true;
  window.addEventListener("scroll", function () {
    var fromBottom = document.documentElement.scrollHeight - window.innerHeight - window.scrollY;
    following = fromBottom < 80;
  }, { passive: true });
  document.addEventListener("htmx:sseMessage", function () {
    if (following && document.getElementById("messages")) {
      window.scrollTo({ top: document.documentElement.scrollHeight, behavior: "instant" });
    }
  });

  // Copy an answer's text, or its code blocks (the sanitized answer itself has no buttons).
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("button[data-copy]");
    if (!button || !navigator.clipboard) return;
    var parts = Array.from(document.querySelectorAll(button.dataset.copy));
    if (!parts.length) return;
    var label = button.textContent;
    var text = parts.map(function (part) { return part.innerText.replace(/\n$/, ""); });
    navigator.clipboard.writeText(text.join("\n\n")).then(function () {
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = label; }, 1500);
    });
  });

  // A code block's header copies its code (render.py makes the header; the sanitized
  // answer itself has no buttons, so "Copy" is the header's own text, from app.css).
  document.addEventListener("click", function (event) {
    var head = event.target.closest && event.target.closest(".message .code-head");
    var code = head && head.parentElement.querySelector("pre");
    if (!code || !navigator.clipboard) return;
    navigator.clipboard.writeText(code.innerText.replace(/\n$/, "")).then(function () {
      head.setAttribute("data-copied", "");
      setTimeout(function () { head.removeAttribute("data-copied"); }, 1500);
    });
  });

  // A request that reached no server (offline, or the server down), or an error page from
  // something in front of the app (a proxy's 502): say so where the app's own errors go.
  function flash(text) {
    var area = document.getElementById("flash");
    if (!area) return;
    var message = document.createElement("p");
    message.className = "flash-message";
    message.textContent = text;
    area.replaceChildren(message);
  }
  document.addEventListener("htmx:sendError", function () {
    flash("Could not reach the server: check your connection, then try again.");
  });
  document.addEventListener("htmx:responseError", function (event) {
    var xhr = event.detail.xhr;
    if (!xhr || xhr.getResponseHeader("HX-Retarget")) return;  // the app's own message
    flash("The server could not take this now (error " + xhr.status + "). Try again in a moment.");
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
})();
