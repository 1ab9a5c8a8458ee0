// Portico ops dashboard: live updates without reloading. Listens to
// /ops/events (server-sent events); a `changed` event names topics, and every
// section whose data-topics names one of them is fetched again from its
// data-src and swapped in. Without JavaScript the pages work as they are.
(function () {
  "use strict";
  if (!window.EventSource || !window.fetch) return;
  var status = document.getElementById("live");
  var inFlight = {};

  function refresh(id) {
    var el = document.getElementById(id);
    if (!el) return;
    if (inFlight[id]) { inFlight[id] = "again"; return; }
    inFlight[id] = "busy";
    var focused = document.activeElement && document.activeElement.id;
    fetch(el.getAttribute("data-src"), { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (r) {
        if (!r.ok || r.redirected) { location.reload(); return null; }
        return r.text();
      })
      .then(function (html) {
        var cur = document.getElementById(id);
        if (html === null || !cur) return;
        cur.outerHTML = html;
        if (focused) { var f = document.getElementById(focused); if (f) f.focus(); }
      })
      .catch(function () {})
      .then(function () {
        var again = inFlight[id] === "again";
        delete inFlight[id];
        if (again) refresh(id);
      });
  }

  var source = new EventSource("/ops/events");
  source.addEventListener("open", function () {
    document.body.setAttribute("data-live", "on");
    if (status) status.textContent = "live";
  });
  source.addEventListener("error", function () {
    document.body.setAttribute("data-live", "off");
    if (status) status.textContent = "reconnecting…";
  });
  source.addEventListener("changed", function (e) {
    var topics = String(e.data).split(" ");
    var sections = document.querySelectorAll("[data-topics]");
    Array.prototype.forEach.call(sections, function (el) {
      var mine = el.getAttribute("data-topics").split(" ");
      if (mine.some(function (t) { return topics.indexOf(t) >= 0; })) refresh(el.id);
    });
  });
})();
