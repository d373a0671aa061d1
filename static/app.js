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

  // Esc stops the running answer, as its Stop button does (in the search box it clears
  // the search instead).
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape" || event.isComposing) return;
    if (event.target.matches && event.target.matches("input[type=search]")) return;
    var stop = document.querySelector("#messages article.answer[aria-busy] button.stop");
    if (stop) {
      event.preventDefault();
      stop.click();
    }
  });

  // Ctrl+K (Cmd+K) goes to the search box, as in ChatGPT and Slack.
  document.addEventListener("keydown", function (event) {
    if ((event.key || "").toLowerCase() !== "k" || !(event.ctrlKey || event.metaKey)) return;
    var search = document.querySelector("form.search input[type=search]");
    if (search) {
      event.preventDefault();
      search.focus();
      search.select();
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

  // The page's one stream: resuming, never twice, short deltas, network changes and the
  // connection's state are the chat-stream htmx extension's (chat-stream.js).

  // A message the page shows already is never added twice. A snapshot is no addition: it
  // replaces what #messages holds (its fragment is #messages itself), and it may well
  // begin with a message the page shows (a new version of the last answer, say).
  document.addEventListener("htmx:oobBeforeSwap", function (event) {
    var fragment = event.detail.fragment;
    var first = fragment && fragment.firstElementChild;
    var target = event.detail.target;
    if (target.id === "messages" && fragment.id !== "messages" && first && first.id &&
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

  // Copy an answer's text, or its code blocks (the sanitized answer itself has no buttons),
  // or a new access token (account page).
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest("button[data-copy]");
    if (!button || !navigator.clipboard) return;
    var parts = Array.from(document.querySelectorAll(button.dataset.copy));
    if (!parts.length) return;
    var label = button.textContent;
    var text = parts.map(function (part) {
      return (part.tagName === "INPUT" ? part.value : part.innerText).replace(/\n$/, "");
    });
    navigator.clipboard.writeText(text.join("\n\n")).then(function () {
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = label; }, 1500);
    });
  });

  // A code block's header copies its code, on a click or Enter or Space (render.py makes
  // it a button for the keyboard and screen readers; "Copy" is its own text, from app.css).
  function copyCode(head) {
    var code = head.parentElement.querySelector("pre");
    if (!code || !navigator.clipboard) return;
    navigator.clipboard.writeText(code.innerText.replace(/\n$/, "")).then(function () {
      head.setAttribute("data-copied", "");
      setTimeout(function () { head.removeAttribute("data-copied"); }, 1500);
    });
  }
  document.addEventListener("click", function (event) {
    var head = event.target.closest && event.target.closest(".message .code-head");
    if (head) copyCode(head);
  });
  document.addEventListener("keydown", function (event) {
    var head = event.target.closest && event.target.closest(".message .code-head");
    if (!head || (event.key !== "Enter" && event.key !== " ")) return;
    event.preventDefault();  // a space would scroll the page
    copyCode(head);
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
  function clearFlash() {
    var area = document.getElementById("flash");
    if (area) area.replaceChildren();
  }
  document.addEventListener("htmx:sendError", function () {
    flash("Could not reach the server: check your connection, then try again.");
  });
  // The message goes once something works again: a request (not the app's own refusal,
  // which it just showed), or the page's stream connecting; or when it is clicked.
  document.addEventListener("htmx:afterRequest", function (event) {
    var xhr = event.detail.xhr;
    if (event.detail.successful && !(xhr && xhr.getResponseHeader("HX-Retarget"))) clearFlash();
  });
  document.addEventListener("htmx:sseOpen", clearFlash);
  document.addEventListener("click", function (event) {
    if (event.target.closest && event.target.closest("#flash")) clearFlash();
  });
  document.addEventListener("htmx:responseError", function (event) {
    var xhr = event.detail.xhr;
    if (!xhr || xhr.getResponseHeader("HX-Retarget")) return;  // the app's own message
    flash("The server could not take this now (error " + xhr.status + "). Try again in a moment.");
  });
})();
