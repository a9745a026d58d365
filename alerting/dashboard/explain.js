/* Explainability view: a beat's waveform coloured by its per-timestep reconstruction error,
   cyan (well reconstructed) -> amber -> crimson (poorly reconstructed). Used by the bed detail
   and the upload views. No dependencies. */
"use strict";

const ExplainView = (() => {
  const STOPS = [[0, 216, 255], [255, 176, 0], [220, 20, 60]];

  /** Colour of a normalised error u in [0, 1]. */
  function ramp(u) {
    const x = Math.max(0, Math.min(1, u)) * (STOPS.length - 1);
    const i = Math.min(STOPS.length - 2, Math.floor(x));
    const f = x - i;
    const c = STOPS[i].map((a, k) => Math.round(a + (STOPS[i + 1][k] - a) * f));
    return `rgb(${c[0]},${c[1]},${c[2]})`;
  }

  /**
   * Draw one beat.
   * sig: {fs, start, y}: signal samples (mV) with the index of y[0] in the same count as `peak`.
   * peak: the R-peak index; errors: per-timestep errors on the model grid;
   * win: {pre_s, post_s, fs, n_points}: where the model window sits around the peak.
   */
  function draw(canvas, sig, peak, errors, win) {
    const ctx = canvas.getContext("2d");
    const W = canvas.width, H = canvas.height;
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, W, H);
    if (!sig || !sig.y || sig.y.length < 2) {
      ctx.fillStyle = "#7d8b99";
      ctx.font = "16px sans-serif";
      ctx.fillText("signal no longer held for this beat", 20, 30);
      return;
    }
    const y = sig.y;
    let lo = Infinity, hi = -Infinity;
    for (const v of y) if (v !== null) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    if (!isFinite(lo)) return;
    const pad = 0.1 * (hi - lo || 1);
    lo -= pad; hi += pad;
    const errH = Math.round(H * 0.18);
    const plotH = H - errH - 24;
    const X = (i) => (i / (y.length - 1)) * (W - 20) + 10;
    const Y = (v) => 8 + (1 - (v - lo) / (hi - lo)) * plotH;

    // grid: 0.2 s / 0.5 mV like ECG paper
    ctx.strokeStyle = "#10261a";
    ctx.lineWidth = 1;
    const stepX = 0.2 * sig.fs;
    for (let i = 0; i < y.length; i += stepX) {
      ctx.beginPath(); ctx.moveTo(X(i), 8); ctx.lineTo(X(i), 8 + plotH); ctx.stroke();
    }
    for (let v = Math.ceil(lo * 2) / 2; v <= hi; v += 0.5) {
      ctx.beginPath(); ctx.moveTo(10, Y(v)); ctx.lineTo(W - 10, Y(v)); ctx.stroke();
    }

    const errs = errors || [];
    let emax = 0;
    for (const e of errs) if (e !== null && e > emax) emax = e;
    const errAt = (i) => {
      if (!errs.length || emax <= 0) return null;
      const tau = (sig.start + i - peak) / sig.fs; // seconds from the peak
      const k = Math.floor((tau + win.pre_s) * win.fs);
      if (k < 0 || k >= errs.length || errs[k] === null) return null;
      return errs[k] / emax;
    };

    // window span
    const w0 = peak - win.pre_s * sig.fs - sig.start;
    const w1 = peak + win.post_s * sig.fs - sig.start;
    ctx.fillStyle = "rgba(255,255,255,0.04)";
    ctx.fillRect(X(w0), 8, X(w1) - X(w0), plotH);

    ctx.lineWidth = 2.5;
    ctx.lineJoin = "round";
    for (let i = 1; i < y.length; i++) {
      if (y[i - 1] === null || y[i] === null) continue;
      const u = errAt(i - 0.5);
      ctx.strokeStyle = u === null ? "#4d5b66" : ramp(u);
      ctx.beginPath();
      ctx.moveTo(X(i - 1), Y(y[i - 1]));
      ctx.lineTo(X(i), Y(y[i]));
      ctx.stroke();
    }

    // error strip along the bottom
    const base = H - 20;
    for (let k = 0; k < errs.length && emax > 0; k++) {
      const i0 = peak - sig.start + (k / win.fs - win.pre_s) * sig.fs;
      const i1 = i0 + sig.fs / win.fs;
      const u = (errs[k] || 0) / emax;
      ctx.fillStyle = ramp(u);
      ctx.fillRect(X(i0), base - u * errH, Math.max(1, X(i1) - X(i0) - 1), u * errH);
    }
    ctx.fillStyle = "#7d8b99";
    ctx.font = "12px sans-serif";
    ctx.fillText(`per-timestep error (max ${emax.toPrecision(3)})`, 12, H - 5);
    ctx.fillText(`${(hi - lo).toFixed(2)} mV span · grid 0.2 s / 0.5 mV`, W - 240, H - 5);
  }

  return { draw, ramp };
})();
