// The attention heatmap, one for both pages: the exported in-browser translator (translator.js)
// and the page `seq2seq serve` shows at / (serve_page.html, which the service serves this file to).
// Rows: output pieces; columns: source pieces; darker = more attention.

export function heatmap(sourcePieces, rowLabels, weights) {
  const table = document.createElement("table");
  table.className = "heat";
  const head = table.insertRow();
  head.appendChild(document.createElement("th"));
  for (const piece of sourcePieces) {
    const th = document.createElement("th");
    th.textContent = piece;
    head.appendChild(th);
  }
  weights.forEach((row, i) => {
    const tr = table.insertRow();
    const th = document.createElement("th");
    th.className = "row";
    th.textContent = rowLabels[i];
    tr.appendChild(th);
    for (const w of row) {
      const td = tr.insertCell();
      td.style.background = `rgba(30, 80, 200, ${w})`;
      td.title = w.toFixed(3);
    }
  });
  return table;
}
