/* Search results without raw TeX (loaded on every page, deferred, after searchtools.js).
 *
 * Sphinx builds a result's title from the index and its snippet from the page's text, and
 * both carry the TeX source of the math on the page ("Temperature × \alpha",
 * "\(\alpha\) weights ..."). Each text that the search adds to #search-results is rewritten
 * into plain characters: delimiters dropped, common commands mapped to their symbols
 * (\alpha -> α, \le -> ≤), \frac{a}{b} -> a/b, other commands reduced to their argument.
 */
(function () {
  "use strict";
  const SYMBOLS = {
    alpha: "α", beta: "β", gamma: "γ", delta: "δ", epsilon: "ε", varepsilon: "ε",
    theta: "θ", lambda: "λ", mu: "μ", pi: "π", rho: "ρ", sigma: "σ", tau: "τ", phi: "φ",
    omega: "ω", Delta: "Δ", Sigma: "Σ", sum: "Σ", prod: "Π", infty: "∞", cdot: "·",
    times: "×", le: "≤", leq: "≤", ge: "≥", geq: "≥", ne: "≠", neq: "≠", approx: "≈",
    to: "→", rightarrow: "→", leftarrow: "←", in: "∈", mid: "|", propto: "∝",
    partial: "∂", nabla: "∇", ell: "ℓ", star: "*", ldots: "…", dots: "…", cdots: "…",
    quad: " ", qquad: " ", log: "log", exp: "exp", min: "min", max: "max",
    lVert: "‖", rVert: "‖", Vert: "‖", langle: "⟨", rangle: "⟩",
  };

  function plainTex(text) {
    if (!/[\\$]/.test(text)) return text;
    let out = text
      .replace(/\\[()[\]]|\$\$?/g, "")
      .replace(/\\frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}/g, "$1/$2")
      .replace(/\\(?:big|Big|bigg|Bigg|left|right)(?![A-Za-z])/g, "")
      .replace(/\\[,;:! ]/g, " ");
    for (let pass = 0; pass < 3; pass++) {
      out = out.replace(/\\([A-Za-z]+)\s*(\{([^{}]*)\})?/g, (all, name, group, arg) =>
        (name in SYMBOLS ? SYMBOLS[name] : "") + (group ? arg : ""));
    }
    return out.replace(/[{}]/g, "").replace(/\\/g, "").replace(/ {2,}/g, " ");
  }

  function clean(node) {
    const walker = document.createTreeWalker(node, NodeFilter.SHOW_TEXT);
    for (let text = walker.nextNode(); text; text = walker.nextNode()) {
      const plain = plainTex(text.nodeValue);
      if (plain !== text.nodeValue) text.nodeValue = plain;
    }
  }

  window.kdPlainTex = plainTex; // for tests/site/test_site.py
  const results = document.getElementById("search-results");
  if (!results) return;
  clean(results);
  new MutationObserver((records) => {
    for (const record of records) {
      for (const node of record.addedNodes) clean(node);
      if (record.type === "characterData") clean(record.target.parentNode || results);
    }
  }).observe(results, { childList: true, subtree: true, characterData: true });
})();
