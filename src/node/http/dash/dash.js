// The dashboard's script (docs/dashboard.md), embedded in the binary at build time. The page is
// whole without it; with it, GET /v1/dashboard/events (Server-Sent Events) brings the sections
// that changed, already rendered by the server, about once a second, and each replaces its
// section in place. EventSource reconnects by itself after a break.
(function () {
  "use strict";
  var live = document.getElementById("live");
  function mark(on, text) {
    live.className = on ? "on" : "off";
    live.textContent = text;
  }
  if (!window.EventSource) return;
  var es = new EventSource("/v1/dashboard/events");
  es.addEventListener("open", function () { mark(true, "live"); });
  es.addEventListener("error", function () { mark(false, "reconnecting"); });
  es.addEventListener("sections", function (e) {
    var s = JSON.parse(e.data);
    for (var id in s) {
      var el = document.getElementById(id);
      if (el) el.innerHTML = s[id];
    }
    mark(true, "live");
  });
})();
