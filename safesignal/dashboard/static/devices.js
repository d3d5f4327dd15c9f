/* The device list stays current without a reload: each alert on the live stream (and every
   15 s, for presence) fetches GET /api/devices and updates the rows in place; a device the page
   does not show yet gets a "reload" notice.  Without JavaScript the page is the same, as of its
   loading. */
(function () {
  "use strict";
  var SS = window.SS;
  var root, statusEl, notice = null;
  var pending = null;

  function setTime(cell, iso) {
    if (!cell) { return; }
    cell.textContent = "";
    if (iso) { cell.appendChild(SS.timeEl(iso)); } else { cell.textContent = "–"; }
  }

  function update(row, d) {
    var was = row.getAttribute("data-last-alert");
    row.classList.toggle("online", d.online);
    row.classList.toggle("offline", !d.online);
    var presence = row.querySelector('[data-field="presence"]');
    presence.textContent = "";
    var p = document.createElement("span");
    p.className = "presence";
    p.textContent = d.online ? "online" : d.last_seen ? "offline" : "not seen yet";
    presence.appendChild(p);
    if (d.presence_since) {
      presence.appendChild(document.createElement("br"));
      var small = document.createElement("small");
      small.appendChild(document.createTextNode("since "));
      small.appendChild(SS.timeEl(d.presence_since));
      presence.appendChild(small);
    }
    setTime(row.querySelector('[data-field="last_alert"]'), d.last_alert);
    setTime(row.querySelector('[data-field="last_test_alert"]'), d.last_test_alert);
    var anomalies = row.querySelector('[data-field="anomalies"]');
    anomalies.textContent = d.anomalies.length ? "" : "none";
    d.anomalies.forEach(function (a, i) {
      if (i) { anomalies.appendChild(document.createElement("br")); }
      var s = document.createElement("span");
      s.className = "anomaly";
      s.textContent = a;
      anomalies.appendChild(s);
    });
    var conf = row.querySelector('[data-field="confirmation"]');
    if (d.confirmed && !conf.querySelector(".confirmed")) {
      conf.textContent = "";
      var c = document.createElement("span");
      c.className = "confirmed";
      c.textContent = "✓ confirmed by " + d.confirmed_by;
      conf.appendChild(c);
    }
    var ready = conf.querySelector(".readiness");
    if (ready && d.provisioned_at) {
      var ok = d.last_test_alert !== null && new Date(d.last_test_alert) >= new Date(d.provisioned_at);
      ready.setAttribute("data-ready", ok ? "yes" : "no");
      ready.textContent = ok ? "test alert received since provisioning: ready to confirm"
        : "waiting for a test alert since provisioning";
    }
    if (d.last_alert && was !== null && was !== d.last_alert) {
      row.classList.add("updated");
      window.setTimeout(function () { row.classList.remove("updated"); }, 3000);
    }
    row.setAttribute("data-last-alert", d.last_alert || "");
    SS.times(row);
  }

  function refresh() {
    pending = null;
    fetch("/api/devices", { credentials: "same-origin" }).then(function (r) {
      return r.ok ? r.json() : null;
    }).then(function (devices) {
      if (!devices) { return; }
      var missing = 0;
      devices.forEach(function (d) {
        var row = document.getElementById("device-" + d.tenant + "-" + d.device_id);
        if (row) { update(row, d); } else { missing += 1; }
      });
      if (missing && notice === null) {
        notice = document.createElement("p");
        notice.className = "message";
        notice.setAttribute("role", "status");
        var a = document.createElement("a");
        a.href = "/";
        a.textContent = "Reload to see them";
        notice.appendChild(document.createTextNode("New devices have appeared. "));
        notice.appendChild(a);
        root.insertBefore(notice, root.firstChild);
      }
    }, function () { /* the live status says when the dashboard is unreachable */ });
  }

  function soon() {
    if (pending === null) { pending = window.setTimeout(refresh, 200); }
  }

  document.addEventListener("DOMContentLoaded", function () {
    root = document.getElementById("devices");
    statusEl = document.getElementById("live-status");
    var rows = root.querySelectorAll("tr.device");
    for (var i = 0; i < rows.length; i++) {
      var cell = rows[i].querySelector('[data-field="last_alert"] time');
      rows[i].setAttribute("data-last-alert", cell ? cell.getAttribute("datetime") : "");
    }
    SS.live(root.getAttribute("data-events"), statusEl, soon);
    window.setInterval(refresh, 15000);
  });
}());
