// fedge console: draws every [data-chart] element with uPlot (vendored). No inline script (CSP).
// data-chart holds {"rounds": [x...], "series": {"name": [y or null, ...]}}; data-x names the x axis.
(function () {
  "use strict";
  var COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563", "#ca8a04"];

  function draw(el) {
    var data;
    try { data = JSON.parse(el.getAttribute("data-chart")); } catch (e) { return; }
    var names = Object.keys(data.series || {});
    if (!data.rounds || data.rounds.length === 0 || names.length === 0) {
      el.textContent = "Nothing recorded yet.";
      return;
    }
    var xLabel = el.getAttribute("data-x") || "round";
    var series = [{ label: xLabel }];
    var columns = [data.rounds];
    names.forEach(function (name, i) {
      var isLoss = name.indexOf("loss") >= 0;
      series.push({
        label: name,
        stroke: COLORS[i % COLORS.length],
        width: 2,
        scale: isLoss ? "loss" : "y",
        points: { show: true, size: 7 },
        spanGaps: true,
      });
      columns.push(data.series[name]);
    });
    var hasLoss = names.some(function (n) { return n.indexOf("loss") >= 0; });
    var axes = [{ label: xLabel }, { scale: "y", label: hasLoss && names.length > 1 ? "accuracy / statistic" : "" }];
    if (hasLoss) { axes.push({ scale: "loss", side: 1, label: "loss", grid: { show: false } }); }
    var opts = {
      width: Math.max(320, Math.min(960, el.clientWidth || 800)),
      height: 300,
      scales: { x: { time: false } },
      series: series,
      axes: axes,
    };
    var plot = new uPlot(opts, columns, el);
    el.setAttribute("data-rendered-points", String(plot.data[0].length));
    el.setAttribute("data-rendered-series", String(plot.series.length - 1));
  }

  function start() {
    if (typeof uPlot === "undefined") { return; }
    document.querySelectorAll("[data-chart]").forEach(draw);
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
