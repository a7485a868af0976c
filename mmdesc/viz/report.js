// mmdesc HTML report: draws each view's attention in the browser, keyed by layout kind.
// The data (JSON in #mmdesc-data) comes from mmdesc/viz/html.py; the geometry of each kind
// from the kind's module in mmdesc/viz (grid.py, timeline.py, tokens.py), which draws the
// same pictures as PNGs: same colour maps, same cell centres, same per-word normalisation.
"use strict";
(function () {
  const R = JSON.parse(document.getElementById("mmdesc-data").textContent);
  const MAPS = R.maps;
  const ACCENT = "rgb(230,85,13)";

  function bytes(b64) {
    const s = atob(b64);
    const out = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }

  function colour(name, v) {
    const a = MAPS[name];
    v = Math.min(1, Math.max(0, v || 0));
    const p = v * (a.length - 1);
    const i = Math.min(Math.floor(p), a.length - 2);
    const w = p - i;
    return [0, 1, 2].map((c) => Math.round(a[i][c] * (1 - w) + a[i + 1][c] * w));
  }

  function rgb(c) { return "rgb(" + c[0] + "," + c[1] + "," + c[2] + ")"; }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // linear interpolation weights between increasing knots, clamped at the ends (grid.py's _interp)
  function interp(knots, positions) {
    const i0 = new Int32Array(positions.length), i1 = new Int32Array(positions.length);
    const w = new Float32Array(positions.length);
    if (knots.length === 1) return { i0, i1, w };
    for (let p = 0; p < positions.length; p++) {
      let j = 1;
      while (j < knots.length - 1 && knots[j] < positions[p]) j++;
      i1[p] = j; i0[p] = j - 1;
      const span = Math.max(knots[j] - knots[j - 1], 1e-9);
      w[p] = Math.min(1, Math.max(0, (positions[p] - knots[j - 1]) / span));
    }
    return { i0, i1, w };
  }

  function normalised(row) {
    let peak = 0, arg = 0;
    for (let n = 0; n < row.length; n++) if (row[n] > peak) { peak = row[n]; arg = n; }
    return { values: Array.from(row, (v) => (peak > 0 ? v / peak : v)), arg };
  }

  function picture(view, onload) {
    const img = new Image();
    img.onload = onload;
    img.src = view.v.picture;
    return img;
  }

  const RENDER = {
    // a heatmap over the picture, bilinear between cell centres, blended like grid.py's panels
    grid: {
      build(view) {
        const g = view.v.geometry, size = view.v.picture_size;
        const scale = 240 / Math.max(size[0], size[1]);
        const c = el("canvas", "display");
        c.width = Math.round(size[0] * scale); c.height = Math.round(size[1] * scale);
        const xs = [], ys = [];
        for (let x = 0; x < c.width; x++) xs.push(x + 0.5);
        for (let y = 0; y < c.height; y++) ys.push(y + 0.5);
        view.ix = interp(g.col_x.map((v) => v * c.width), xs);
        view.iy = interp(g.row_y.map((v) => v * c.height), ys);
        view.canvas = c;
        view.img = picture(view, () => view.ready());
        return c;
      },
      draw(view, t) {
        const c = view.canvas, ctx = c.getContext("2d"), g = view.v.geometry;
        const [gh, gw] = g.grid, W = c.width, H = c.height;
        ctx.drawImage(view.img, 0, 0, W, H);
        if (t < 0) return;
        const { values, arg } = normalised(view.rows[t]);
        const cells = [];  // (gh, gw) in sorted row/column order
        for (const r of g.row_order) cells.push(g.col_order.map((cc) => values[r * gw + cc]));
        const across = cells.map((row) => Float32Array.from({ length: W }, (_, x) =>
          row[view.ix.i0[x]] * (1 - view.ix.w[x]) + row[view.ix.i1[x]] * view.ix.w[x]));
        const im = ctx.getImageData(0, 0, W, H), px = im.data, b = g.blend;
        for (let y = 0; y < H; y++) {
          const a0 = across[view.iy.i0[y]], a1 = across[view.iy.i1[y]], wy = view.iy.w[y];
          for (let x = 0; x < W; x++) {
            const col = colour("inferno", a0[x] * (1 - wy) + a1[x] * wy), k = 4 * (y * W + x);
            for (let ch = 0; ch < 3; ch++) px[k + ch] = Math.round(px[k + ch] * (1 - b) + col[ch] * b);
          }
        }
        ctx.putImageData(im, 0, 0);
        const [x0, y0, x1, y1] = g.boxes[arg];
        ctx.lineWidth = 3; ctx.strokeStyle = "#000";
        ctx.strokeRect(x0 * W + 1.5, y0 * H + 1.5, (x1 - x0) * W - 3, (y1 - y0) * H - 3);
        ctx.lineWidth = 1; ctx.strokeStyle = "#fff";
        ctx.strokeRect(x0 * W + 3.5, y0 * H + 3.5, (x1 - x0) * W - 7, (y1 - y0) * H - 7);
      },
    },

    // the picture over time (key frames, spectrogram) with a band on the peak segment, and the
    // attention as a shaded strip and a curve on the same time axis (timeline.py's strips)
    time: {
      build(view) {
        const c = el("canvas", "display");
        c.width = 480;
        view.pic_h = view.v.picture ? Math.min(96, Math.round(480 * view.v.picture_size[1] / view.v.picture_size[0])) : 0;
        view.top = view.pic_h ? view.pic_h + 4 : 0;
        c.height = view.top + 60 + 18;
        view.canvas = c;
        if (view.v.picture) view.img = picture(view, () => view.ready());
        else setTimeout(() => view.ready(), 0);
        return c;
      },
      draw(view, t) {
        const c = view.canvas, ctx = c.getContext("2d"), g = view.v.geometry, W = c.width;
        ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, W, c.height);
        if (view.img) ctx.drawImage(view.img, 0, 0, W, view.pic_h);
        const top = view.top, h = 60;
        ctx.fillStyle = "rgb(244,244,244)"; ctx.fillRect(0, top, W, h);
        if (t >= 0) {
          const { values, arg } = normalised(view.rows[t]);
          g.spans.forEach(([s, e], n) => {
            ctx.fillStyle = rgb(colour("blues", values[n]));
            ctx.fillRect(s * W, top + h - 14, Math.max((e - s) * W, 1), 14);
          });
          ctx.beginPath();
          g.spans.forEach(([s, e], n) => {
            const x = (s + e) / 2 * W, y = top + h - 16 - values[n] * (h - 20);
            if (n === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
          });
          ctx.strokeStyle = "rgb(8,81,156)"; ctx.lineWidth = 2; ctx.stroke();
          const [s, e] = g.spans[arg];
          ctx.fillStyle = "rgba(230,85,13,0.30)";
          ctx.fillRect(s * W, 0, Math.max((e - s) * W, 2), top + h);
          ctx.strokeStyle = ACCENT; ctx.lineWidth = 2;
          ctx.strokeRect(s * W, 1, Math.max((e - s) * W, 2), top + h - 2);
        }
        ctx.fillStyle = "#333"; ctx.font = "11px sans-serif"; ctx.textAlign = "center";
        g.ticks.forEach((tk, k) => {
          const x = Math.min(Math.max(tk / g.duration * W, 8), W - 8);
          ctx.fillRect(tk / g.duration * W, top + h, 1, 4);
          ctx.fillText(g.tick_labels[k], x, top + h + 15);
        });
      },
    },

    // the source sentence, each token shaded by its raw weight (tokens.py's matrix row)
    tokens: {
      build(view) {
        const box = el("div", "display source");
        view.tokens = view.v.geometry.labels.map((label, n) => {
          const s = el("span", "token", label);
          if (n > 0 && view.v.geometry.words[n] === view.v.geometry.words[n - 1]) s.classList.add("cont");
          box.appendChild(s);
          return s;
        });
        setTimeout(() => view.ready(), 0);
        return box;
      },
      draw(view, t) {
        const row = t >= 0 ? view.rows[t] : null, arg = row ? normalised(row).arg : -1;
        view.tokens.forEach((s, n) => {
          const v = row ? row[n] : 0;
          s.style.background = rgb(colour("blues", v));
          s.style.color = v > 0.55 ? "#fff" : "#222";
          s.classList.toggle("peak", n === arg);
          s.title = row ? v.toFixed(3) : "";
        });
      },
    },
  };

  class View {
    constructor(group, v) {
      this.group = group; this.v = v; this.sel = 0; this.shown = -1; this.timer = null;
      const q = bytes(v.att), N = v.n;
      this.rows = v.words.map((_, t) => Float32Array.from({ length: N }, (_, n) => q[t * N + n] / 255 * v.scale[t]));
      const e = this.el = el("div", "view");
      e.dataset.kind = v.kind; e.dataset.modality = v.modality; e.dataset.word = "0"; e.dataset.ready = "0";
      const head = el("div", "head");
      head.appendChild(el("span", "modality", v.modality));
      if (v.model) head.appendChild(el("span", "model", v.model));
      head.appendChild(el("span", "label", v.label));
      e.appendChild(head);
      const sentence = el("p", "sentence");
      this.wordEls = v.words.map((w, t) => {
        const s = el("span", "word", w);
        s.dataset.t = String(t);
        s.addEventListener("mouseenter", () => this.show(t));
        s.addEventListener("mouseleave", () => this.show(this.sel));
        s.addEventListener("click", () => { this.stop(); this.pick(t, true); });
        sentence.appendChild(s);
        sentence.appendChild(document.createTextNode(" "));
        return s;
      });
      if (!v.words.length) sentence.appendChild(el("em", "", "(empty output)"));
      e.appendChild(sentence);
      e.appendChild(RENDER[v.kind].build(this));
      const controls = el("div", "controls");
      this.play = el("button", "play", "\u25b6 play");
      this.play.type = "button";
      this.play.addEventListener("click", () => this.toggle());
      controls.appendChild(this.play);
      this.whereEl = el("span", "where", "");
      controls.appendChild(this.whereEl);
      e.appendChild(controls);
      if (v.reference) e.appendChild(el("p", "reference", "reference: " + v.reference));
      const st = v.stats.sentence, parts = [];
      for (const [k, label] of [["entropy", "entropy"], ["peak", "peak"], ["coverage", "coverage"],
        ["backward", "backward %"], ["jump", "jump"]]) if (k in st) parts.push(label + " " + st[k]);
      e.appendChild(el("p", "sentence-stats", parts.join(" \u00b7 ")));
      const table = el("table", "words");
      table.innerHTML = "<thead><tr><th>word</th><th>entropy</th><th>peak</th><th>looks at</th></tr></thead>";
      const body = el("tbody");
      this.rowEls = v.words.map((w, t) => {
        const tr = el("tr");
        for (const x of [w, v.stats.entropy[t], v.stats.peak[t], v.stats.where[t]]) tr.appendChild(el("td", "", String(x)));
        tr.addEventListener("click", () => { this.stop(); this.pick(t, true); });
        body.appendChild(tr);
        return tr;
      });
      table.appendChild(body);
      const box = el("div", "words-box");
      box.appendChild(table);
      e.appendChild(box);
      const nbest = el("ol", "nbest");
      for (const h of v.nbest) {
        const li = el("li");
        li.appendChild(el("span", "score", h.score.toFixed(3)));
        li.appendChild(document.createTextNode(" " + h.text));
        nbest.appendChild(li);
      }
      const details = el("details", "nbest-box");
      details.open = v.nbest.length > 1;
      details.appendChild(el("summary", "", v.nbest.length + "-best"));
      details.appendChild(nbest);
      e.appendChild(details);
    }

    ready() { this.isReady = true; this.pick(this.sel, false); this.el.dataset.ready = "1"; }

    show(t) {
      if (!this.isReady || !this.v.words.length) return;
      this.shown = t;
      RENDER[this.v.kind].draw(this, t);
      this.wordEls.forEach((s, k) => s.classList.toggle("shown", k === t));
      this.el.dataset.shown = String(t);
      this.whereEl.textContent = t >= 0 ? this.v.words[t] + " \u2192 " + this.v.stats.where[t] : "";
    }

    pick(t, link) {
      if (!this.v.words.length) return;
      this.sel = t;
      this.el.dataset.word = String(t);
      this.wordEls.forEach((s, k) => s.classList.toggle("sel", k === t));
      this.rowEls.forEach((r, k) => r.classList.toggle("sel", k === t));
      this.show(t);
      if (link) this.group.link(this, this.v.link[t]);
    }

    toggle() { if (this.timer) this.stop(); else this.start(); }

    start() {
      if (!this.v.words.length) return;
      this.play.textContent = "\u275a\u275a pause";
      this.pick(0, true);
      this.timer = setInterval(() => {
        if (this.sel + 1 >= this.v.words.length) { this.stop(); return; }
        this.pick(this.sel + 1, true);
      }, 700);
    }

    stop() {
      if (this.timer) clearInterval(this.timer);
      this.timer = null;
      this.play.textContent = "\u25b6 play";
    }
  }

  class Group {
    constructor(g) {
      this.el = el("section", "group");
      this.el.dataset.id = g.id;
      this.el.appendChild(el("h2", "", g.title));
      if (g.caption) this.el.appendChild(el("p", "caption", g.caption));
      const views = el("div", "views");
      this.views = g.views.map((v) => new View(this, v));
      this.views.forEach((v) => views.appendChild(v.el));
      this.el.appendChild(views);
    }

    // select, in every other view, the first word that links to ``key``
    link(origin, key) {
      for (const v of this.views) {
        if (v === origin) continue;
        const t = v.v.link.indexOf(key);
        v.el.dataset.linked = t >= 0 ? "yes" : "no";
        if (t >= 0) { v.stop(); v.pick(t, false); }
      }
    }
  }

  const main = document.getElementById("groups");
  for (const g of R.groups) main.appendChild(new Group(g).el);
  document.body.dataset.loaded = "1";
})();
