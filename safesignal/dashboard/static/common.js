/* SafeSignal dashboard: what the pages share (no build step, no framework).
   SS.times(root): <time datetime=ISO> shown in the browser's local time, with how long ago.
   SS.live(url, statusEl, onAlert): the live stream (GET /api/events, Server-Sent Events, read with
   the session cookie) with a visible connection state; reconnects after the last alert it got. */
(function () {
  "use strict";
  var SS = {};

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  SS.ago = function (t, now) {
    var s = Math.round((now - t) / 1000);
    if (s < 5) { return "just now"; }
    if (s < 60) { return s + " s ago"; }
    if (s < 3600) { return Math.floor(s / 60) + " min ago"; }
    if (s < 86400) { return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min ago"; }
    return Math.floor(s / 86400) + " days ago";
  };

  SS.local = function (t, now) {
    var hms = pad(t.getHours()) + ":" + pad(t.getMinutes()) + ":" + pad(t.getSeconds());
    if (t.toDateString() === now.toDateString()) { return hms; }
    return t.getFullYear() + "-" + pad(t.getMonth() + 1) + "-" + pad(t.getDate()) + " " + hms;
  };

  SS.times = function (root) {
    var now = new Date();
    var els = (root || document).querySelectorAll("time[datetime]");
    for (var i = 0; i < els.length; i++) {
      var t = new Date(els[i].getAttribute("datetime"));
      if (isNaN(t.getTime())) { continue; }
      els[i].textContent = SS.local(t, now) + " (" + SS.ago(t, now) + ")";
      els[i].title = t.toString();
    }
  };

  SS.timeEl = function (iso) {
    var el = document.createElement("time");
    el.setAttribute("datetime", iso);
    el.textContent = iso;
    return el;
  };

  SS.status = function (el, state, text) {
    if (!el) { return; }
    el.setAttribute("data-state", state);
    el.textContent = text;
  };

  SS.live = function (url, statusEl, onAlert) {
    var last = null;
    var source = null;

    function open() {
      var u = url;
      if (last !== null) { u = u.replace(/([?&]after=)\d*/, "$1" + last); }
      source = new EventSource(u, { withCredentials: true });
      source.onopen = function () { SS.status(statusEl, "live", "● Live: new alerts appear at once"); };
      source.addEventListener("alert", function (e) {
        if (e.lastEventId) { last = e.lastEventId; }
        var alert;
        try { alert = JSON.parse(e.data); } catch (err) { return; }
        onAlert(alert);
      });
      source.onerror = function () {
        if (source.readyState === EventSource.CONNECTING) {
          SS.status(statusEl, "reconnecting", "Connection lost: reconnecting…");
          return;
        }
        // Closed for good (the server answered, but not with a stream): signed out, or gone.
        source.close();
        fetch("/api/me", { credentials: "same-origin" }).then(function (r) {
          if (r.status === 401) {
            SS.status(statusEl, "signed-out", "Signed out: no new alerts will appear. Sign in again.");
            var a = document.createElement("a");
            a.href = "/login";
            a.textContent = " Sign in";
            statusEl.appendChild(a);
            return;
          }
          SS.status(statusEl, "reconnecting", "Connection lost: reconnecting…");
          window.setTimeout(open, 2000);
        }, function () {
          SS.status(statusEl, "reconnecting", "Dashboard unreachable: reconnecting…");
          window.setTimeout(open, 2000);
        });
      };
    }

    open();
  };

  window.SS = SS;
  document.addEventListener("DOMContentLoaded", function () {
    SS.times(document);
    window.setInterval(function () { SS.times(document); }, 15000);
  });
}());
