/* The live PANIC feed a front desk leaves open: each new panic goes on top at once, flashes and
   beeps (Web Audio API: no sound file).  Browsers start audio only after a click on the page,
   so the "Turn sound on" button asks for one, and says so while the sound is off. */
(function () {
  "use strict";
  var SS = window.SS;
  var feed, empty, soundBtn, statusEl;
  var audio = null;
  var seen = {};
  var unseen = 0;
  var baseTitle = document.title;
  var alarmTimer = null;
  var MAX_ITEMS = 200;

  function soundState() {
    var on = audio !== null && audio.state === "running";
    soundBtn.setAttribute("aria-pressed", on ? "true" : "false");
    soundBtn.textContent = on ? "Sound is on (test it)" : "Turn sound on";
    soundBtn.classList.toggle("attention", !on);
    feed.setAttribute("data-sound", on ? "on" : "off");
    return on;
  }

  function makeAudio() {
    var Ctx = window.AudioContext || window.webkitAudioContext;
    if (!Ctx) { return null; }
    if (audio === null) {
      audio = new Ctx();
      audio.onstatechange = soundState;
    }
    return audio;
  }

  function beep() {
    if (audio === null || audio.state !== "running") {
      soundState();
      return false;
    }
    var t = audio.currentTime + 0.02;
    for (var i = 0; i < 3; i++) {
      var osc = audio.createOscillator();
      var gain = audio.createGain();
      osc.type = "square";
      osc.frequency.value = 880;
      gain.gain.setValueAtTime(0.0001, t);
      gain.gain.exponentialRampToValueAtTime(0.4, t + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, t + 0.2);
      osc.connect(gain);
      gain.connect(audio.destination);
      osc.start(t);
      osc.stop(t + 0.22);
      t += 0.3;
    }
    feed.setAttribute("data-beeps", String(Number(feed.getAttribute("data-beeps") || "0") + 1));
    return true;
  }

  function span(cls, text) {
    var s = document.createElement("span");
    s.className = cls;
    s.textContent = text;
    return s;
  }

  function show(a) {
    if (a.type !== "panic" || seen[a.id]) { return; }
    seen[a.id] = true;
    var li = document.createElement("li");
    li.className = "panic flash";
    li.setAttribute("data-alert-id", String(a.id));
    var where = span("where", "");
    where.appendChild(span("room", a.room));
    where.appendChild(document.createTextNode(" "));
    where.appendChild(span("building", a.building));
    li.appendChild(where);
    li.appendChild(span("what", "PANIC · " + a.device_id + " · " + a.tenant));
    var at = span("at", "");
    at.appendChild(SS.timeEl(a.received_at));
    li.appendChild(at);
    (a.anomalies || []).forEach(function (x) { li.appendChild(span("anomaly", "⚠ " + x)); });
    feed.insertBefore(li, feed.firstChild);
    while (feed.children.length > MAX_ITEMS) { feed.removeChild(feed.lastChild); }
    empty.hidden = true;
    SS.times(li);
    window.setTimeout(function () { li.classList.remove("flash"); }, 15000);

    document.body.classList.add("alarm");
    if (alarmTimer !== null) { window.clearTimeout(alarmTimer); }
    alarmTimer = window.setTimeout(function () { document.body.classList.remove("alarm"); }, 8000);
    if (document.hidden || !document.hasFocus()) {
      unseen += 1;
      document.title = "(" + unseen + ") PANIC " + a.room + " · " + baseTitle;
    }
    beep();
  }

  document.addEventListener("DOMContentLoaded", function () {
    feed = document.getElementById("feed");
    empty = document.getElementById("feed-empty");
    soundBtn = document.getElementById("sound");
    statusEl = document.getElementById("live-status");
    var items = feed.querySelectorAll("li[data-alert-id]");
    for (var i = 0; i < items.length; i++) { seen[items[i].getAttribute("data-alert-id")] = true; }

    makeAudio();  // running at once where the browser allows it; otherwise after the click below
    soundState();
    soundBtn.addEventListener("click", function () {
      var ctx = makeAudio();
      if (ctx === null) {
        soundBtn.textContent = "No sound in this browser";
        return;
      }
      ctx.resume().then(function () { if (soundState()) { beep(); } });  // on: a test beep
    });
    function seenAll() { unseen = 0; document.title = baseTitle; }
    window.addEventListener("focus", seenAll);
    document.addEventListener("visibilitychange", function () { if (!document.hidden) { seenAll(); } });

    SS.live(feed.getAttribute("data-events"), statusEl, show);
  });
}());
