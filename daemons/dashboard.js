// SPDX-License-Identifier: MIT
// Shared by both daemons' /.cdn/dashboard; embedded at build time. Reads the
// daemon's status stream (/.cdn/status?watch=MS: one JSON document a line)
// and hands each document to the page; reconnects when the stream ends.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";

function $(id) { return document.getElementById(id); }

function setText(node, text) {
  const s = String(text);
  if (node.textContent !== s) node.textContent = s;
}

function fmtNumber(n, digits) {
  if (n === null || n === undefined || Number.isNaN(n)) return "–";
  return Number(n).toLocaleString("en", { maximumFractionDigits: digits ?? 0 });
}

function fmtBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = Number(n), i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; ++i; }
  return (i === 0 ? v.toFixed(0) : v.toFixed(1)) + " " + units[i];
}

function fmtDuration(s) {
  s = Math.floor(s);
  const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
  const [big, small] = d ? [d + "d", h + "h"] : h ? [h + "h", m + "m"]
                     : m ? [m + "m", (s % 60) + "s"] : [s + "s", "0"];
  // "5m", not "5m 0s".
  return small.startsWith("0") ? big : big + " " + small;
}

// A bar chart of `values` (each 0..max) as inline SVG, redrawn in place.
function drawBars(svg, values, max, title) {
  const w = 4, gap = 1, h = Number(svg.getAttribute("height"));
  svg.setAttribute("width", values.length * (w + gap));
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  values.forEach((v, i) => {
    const bg = document.createElementNS(SVG_NS, "rect");
    bg.setAttribute("class", "bg");
    bg.setAttribute("x", i * (w + gap));
    bg.setAttribute("y", 0);
    bg.setAttribute("width", w);
    bg.setAttribute("height", h);
    svg.appendChild(bg);
    const bh = max > 0 ? Math.round((Math.min(v, max) / max) * h) : 0;
    const bar = document.createElementNS(SVG_NS, "rect");
    bar.setAttribute("class", "bar");
    bar.setAttribute("x", i * (w + gap));
    bar.setAttribute("y", h - bh);
    bar.setAttribute("width", w);
    bar.setAttribute("height", bh);
    const t = document.createElementNS(SVG_NS, "title");
    t.textContent = title(i, v);
    bar.appendChild(t);
    svg.appendChild(bar);
  });
}

// Calls onDoc(doc) for every status document, for ever: the stream ends
// after `count` documents, when the daemon drains, or when the connection
// breaks; the page then asks again (after a second when it failed).
function followStatus(everyMs, onDoc) {
  let updates = 0;
  const live = $("live");
  const url = "/.cdn/status?watch=" + everyMs + "&count=600";
  const mark = (ok, why) => {
    live.className = ok ? "ok" : "lost";
    setText(live, ok ? "live" : "reconnecting (" + why + ")");
  };
  const deliver = (line) => {
    if (!line.trim()) return;
    onDoc(JSON.parse(line));
    setText($("updates"), ++updates);
    setText($("updated"), new Date().toLocaleTimeString());
    mark(true);
  };
  async function once() {
    const res = await fetch(url, { cache: "no-store" });
    if (!res.ok) throw new Error("HTTP " + res.status);
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        deliver(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
      }
    }
    deliver(buf);
  }
  async function loop() {
    for (;;) {
      // A pause either way: a draining daemon ends each stream at once.
      let pause = 300;
      try {
        await once();
      } catch (e) {
        mark(false, e.message);
        pause = 1000;
      }
      await new Promise((r) => setTimeout(r, pause));
    }
  }
  loop();
}
