// Static charts from data the server put on the element (JSON in data-* attributes).
"use strict";
(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const COLORS = ["#f59e0b", "#4f46e5", "#10b981", "#ec4899", "#0ea5e9", "#94a3b8"];

  function node(tag, attrs, text) {
    const n = document.createElementNS(SVG, tag);
    Object.entries(attrs).forEach(([k, v]) => n.setAttribute(k, String(v)));
    if (text !== undefined) n.textContent = text;
    return n;
  }

  function money(v) { return v >= 1 ? `$${v.toFixed(2)}` : `$${v.toFixed(4)}`; }
  function count(v) { return `${Math.round(v).toLocaleString()}`; }

  function axis(svg, W, H, P, max, label = money) {
    svg.appendChild(node("line", { x1: P, x2: W - 8, y1: H - P, y2: H - P, stroke: "#d0d5e2" }));
    svg.appendChild(node("text", { x: P + 4, y: 22, "font-size": 10, fill: "#6b7280" }, label(max)));
    svg.appendChild(node("line", { x1: P, x2: W - 8, y1: 10, y2: 10, stroke: "#eef0f6", "stroke-dasharray": "4 4" }));
  }

  // <svg data-bars='[{"day": ..., "<value>": n}, ...]' data-value="cost_usd" (or "requests":
  // a key whose models are free would otherwise show an empty chart).
  document.querySelectorAll("svg[data-bars]").forEach((svg) => {
    const rows = JSON.parse(svg.dataset.bars);
    const key = svg.dataset.value || "cost_usd";
    const label = key === "cost_usd" ? money : (v) => `${count(v)} requests`;
    const [W, H, P] = [600, 140, 46];
    const max = Math.max(1e-9, ...rows.map((r) => r[key]));
    axis(svg, W, H, P, max, label);
    const step = (W - P - 8) / Math.max(1, rows.length);
    rows.forEach((r, i) => {
      const h = (r[key] / max) * (H - P - 10);
      const bar = node("rect", { x: P + i * step + 1, y: H - P - h, width: Math.max(1, step - 2), height: h, fill: "#4f46e5", rx: 2 });
      bar.appendChild(node("title", {}, `${r.day}: ${money(r.cost_usd)}, ${count(r.requests)} requests`));
      svg.appendChild(bar);
    });
    if (rows.length) {
      svg.appendChild(node("text", { x: P, y: H - P + 16, "font-size": 10, fill: "#6b7280" }, rows[0].day));
      svg.appendChild(node("text", { x: W - 8, y: H - P + 16, "font-size": 10, fill: "#6b7280", "text-anchor": "end" }, rows[rows.length - 1].day));
    }
  });

  // <svg data-stacked='{"days": [...], "total": [...], "series": [{"name", "values"}]}'>
  document.querySelectorAll("svg[data-stacked]").forEach((svg) => {
    const chart = JSON.parse(svg.dataset.stacked);
    const [W, H, P] = [720, 200, 56];
    const max = Math.max(1e-9, ...chart.total);
    axis(svg, W, H, P - 20, max);
    const step = (W - P - 8) / Math.max(1, chart.days.length);
    const plotH = H - (P - 20) - 10;
    chart.days.forEach((day, i) => {
      let y = H - (P - 20);
      let shown = 0;
      chart.series.forEach((s, j) => {
        const v = s.values[i] || 0;
        shown += v;
        const h = (v / max) * plotH;
        y -= h;
        const r = node("rect", { x: P - 20 + i * step + 2, y, width: Math.max(1, step - 4), height: h, fill: COLORS[j % COLORS.length] });
        r.appendChild(node("title", {}, `${day} · ${s.name}: ${money(v)}`));
        svg.appendChild(r);
      });
      const rest = Math.max(0, chart.total[i] - shown);
      if (rest > 0) {
        const h = (rest / max) * plotH;
        y -= h;
        const r = node("rect", { x: P - 20 + i * step + 2, y, width: Math.max(1, step - 4), height: h, fill: COLORS[5] });
        r.appendChild(node("title", {}, `${day} · others: ${money(rest)}`));
        svg.appendChild(r);
      }
      if (chart.days.length <= 10 || i % Math.ceil(chart.days.length / 8) === 0) {
        svg.appendChild(node("text", { x: P - 20 + i * step + step / 2, y: H - (P - 20) + 14, "font-size": 10, fill: "#6b7280", "text-anchor": "middle" }, day.slice(5)));
      }
    });
    const legend = svg.parentElement.querySelector("[data-legend]");
    if (legend) {
      const others = chart.total.some((t, i) => t - chart.series.reduce((a, s) => a + (s.values[i] || 0), 0) > 1e-9);
      const items = chart.series.map((s, j) => [s.name, j]).concat(others ? [["others", 5]] : []);
      legend.replaceChildren(...items.map(([name, j]) => {
        const span = document.createElement("span");
        const key = document.createElement("span");
        key.className = `key s${j}`;
        span.append(key, document.createTextNode(name));
        return span;
      }));
    }
  });
})();
