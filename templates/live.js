// Keeps a berth page current: when the server says the status changed, fetch the same page's
// <main> and swap it in. Without JavaScript the pages are complete; reload to refresh.
(() => {
  const main = document.getElementById("main");
  if (!main || !window.EventSource || !window.fetch) return;
  let busy = false;
  let again = false;
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
        if (html !== main.innerHTML) main.innerHTML = html;
      }
    } catch (_) {
      // The server is away; the next event brings the page back up to date.
    }
    busy = false;
    if (again) { again = false; refresh(); }
  }
  const events = new EventSource("/ui/events");
  events.addEventListener("status", refresh);
})();
