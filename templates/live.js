// Keeps a berth page current: when the server says the status changed, fetch the same page's
// <main> and swap it in. Without JavaScript the pages are complete; reload to refresh.
// Parts marked data-keep (a pod's following log) stay as they are across the swap.
(() => {
  const main = document.getElementById("main");
  if (!main || !window.EventSource || !window.fetch) return;
  let busy = false;
  let again = false;
  function swap(html) {
    const next = document.createElement("div");
    next.innerHTML = html;
    for (const kept of main.querySelectorAll("[data-keep][id]")) {
      const fresh = next.querySelector("#" + CSS.escape(kept.id));
      if (fresh) fresh.replaceWith(kept);
    }
    main.replaceChildren(...next.childNodes);
  }
  async function refresh() {
    if (busy) { again = true; return; }
    // Never wipe what someone is typing, such as the token of the Approve form.
    const typing = main.querySelector("input:focus, select:focus, input[type=password]");
    if (typing && (document.activeElement === typing || typing.value)) return;
    busy = true;
    try {
      const response = await fetch(location.href, { headers: { "X-Berth-Fragment": "1" }, credentials: "same-origin" });
      if (response.ok) {
        const html = await response.text();
        if (html !== main.innerHTML) swap(html);
      }
    } catch (_) {
      // The server is away; the next event brings the page back up to date.
    }
    busy = false;
    if (again) { again = false; refresh(); }
  }
  const events = new EventSource("/ui/events");
  events.addEventListener("status", refresh);
  followLog();
})();

// A pod's log follows what the container writes; Pause holds new lines back (counted) until
// Resume shows them.
function followLog() {
  const log = document.getElementById("log");
  const button = document.getElementById("log-pause");
  const note = document.getElementById("log-note");
  if (!log || !log.dataset.stream) return;
  const KEEP = 5000;
  let paused = false;
  let held = [];
  function show(text) {
    const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.append(text + "\n");
    const lines = log.textContent.split("\n");
    if (lines.length > KEEP + 1) log.textContent = lines.slice(lines.length - KEEP - 1).join("\n");
    if (atEnd) log.scrollTop = log.scrollHeight;
  }
  button.hidden = false;
  button.addEventListener("click", () => {
    paused = !paused;
    button.textContent = paused ? "Resume" : "Pause";
    button.setAttribute("aria-pressed", String(paused));
    if (!paused) {
      for (const text of held) show(text);
      held = [];
      note.textContent = "";
    }
  });
  log.scrollTop = log.scrollHeight;
  const stream = new EventSource(log.dataset.stream);
  stream.addEventListener("lines", (event) => {
    if (paused) {
      held.push(event.data);
      const count = held.reduce((n, text) => n + text.split("\n").length, 0);
      note.textContent = "Paused: " + count + " new line" + (count === 1 ? "" : "s") + " held back.";
    } else {
      show(event.data);
    }
  });
  stream.addEventListener("note", (event) => { if (!paused) note.textContent = event.data; });
  stream.addEventListener("gone", (event) => { note.textContent = event.data; stream.close(); });
}
