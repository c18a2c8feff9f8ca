/// @file explorer/page.hpp
/// @brief The explorer's page: a prompt box (and a second one to compare), tokens to generate, a target token,
/// tokens to track; the lens grid of each run drawn from the server's JSON (`Session::lens`), views and statistics
/// switched as on the offline page, the top-k in each cell's hover; difference views of two runs (KL per cell, a
/// tracked token's probability B − A); per-layer curves of the tracked tokens' probability and rank at a chosen
/// position; a run exported as JSON and imported again beside a live one. The
/// script is the only one its Content-Security-Policy lets run, it reaches only this server, and it builds the grid
/// from text nodes (no HTML from the model's tokens is ever parsed).
#pragma once

#include <fmt/format.h>

#include <baukit/explorer/session.hpp>
#include <baukit/show.hpp>
#include <string>

namespace baukit::explorer {

/// The page's Content-Security-Policy for a script `nonce`: nothing but this page's style and script, requests only
/// to this server, no forms or base URL. (The server's header adds `frame-ancestors 'none'`, which a meta element
/// cannot carry.)
inline std::string page_security_policy(const std::string& nonce) {
  return fmt::format(
      "default-src 'none'; style-src 'unsafe-inline'; script-src 'nonce-{}'; connect-src 'self'; img-src 'self'; "
      "base-uri 'none'; form-action 'none'",
      nonce);
}

/// The explorer's page for `session`, its script allowed by `nonce`.
inline std::string explorer_page_html(const Session& session, const std::string& nonce) {
  const auto& limits = session.limits();
  const std::string head =
      "<meta http-equiv=\"Content-Security-Policy\" content=\"" + page_security_policy(nonce) +
      "\"><style>body { font-family: sans-serif; font-size: 13px; } textarea { width: 40em; height: 3em; } "
      ".runs { display: flex; gap: 2em; align-items: flex-start; } .run h3 { margin: 0.3em 0; } "
      ".lens-cell { min-width: 6em; max-width: 6em; overflow: hidden; white-space: nowrap; padding: 1px 4px; } "
      ".lens-label { min-width: 4.5em; padding: 1px 4px; font-weight: bold; } table { border-collapse: collapse; } "
      ".controls label { margin-right: 1.5em; } #error { color: #b00; } #progress { color: #555; } "
      "#hover { display: none; position: absolute; margin: 0; padding: 4px 8px; background: #fffbe0; border: 1px solid "
      "#bba; font-size: 12px; pointer-events: none; z-index: 2; }</style>";
  const std::string body = fmt::format(
      R"HTML(<h2>Lens explorer: {name}</h2>
<p><textarea id="prompt-a" maxlength="{max_prompt}">. The Space Needle is located in</textarea></p>
<p><label><input type="checkbox" id="compare"> Compare with </label><textarea id="prompt-b" maxlength="{max_prompt}">. The Eiffel Tower is located in</textarea></p>
<p class="controls"><label>Generate <input type="number" id="generate" min="0" max="{max_generate}" value="0"> tokens</label>
<label>Top-k <input type="number" id="topk" min="1" max="{max_topk}" value="5"></label>
<label>Target <input type="text" id="target" placeholder="e.g. &quot; Seattle&quot;"></label>
<label>Track <input type="text" id="track" placeholder="&quot; Seattle| Paris&quot;" title="tokens separated by |"></label>
<button id="run">Run</button> <span id="progress"></span> <span id="error"></span></p>
<p class="controls"><label>View <select id="view"></select></label><label>Text shows <select id="stat"></select></label>
<label>Curves at position <select id="position"></select></label>
<button id="export" disabled>Export run A</button> <label>Import a run as B <input type="file" id="import" accept="application/json,.json"></label></p>
<pre id="hover"></pre>
<div id="curves"></div>
<div class="runs"><div class="run" id="run-a"></div><div class="run" id="run-b"></div></div>
)HTML",
      fmt::arg("name", show::escape(session.name())), fmt::arg("max_prompt", limits.max_prompt_bytes()),
      fmt::arg("max_generate", limits.max_generate()), fmt::arg("max_topk", limits.max_topk()));
  const std::string script = R"JS(
(function () {
  var token = new URLSearchParams(location.search).get('token') || '';
  var runs = { a: null, b: null }, divergence = null;
  var $ = function (id) { return document.getElementById(id); };
  var view = $('view'), stat = $('stat'), position = $('position'), progress = $('progress'), error = $('error');
  var SVG = 'http://www.w3.org/2000/svg', palette = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#e377c2', '#17becf'];
  function api(path, body) {
    var init = { method: body ? 'POST' : 'GET', headers: { 'X-Baukit-Token': token } };
    if (body) { init.headers['Content-Type'] = 'application/json'; init.body = JSON.stringify(body); }
    return fetch(path, init).then(function (r) {
      return r.json().then(function (j) { if (!r.ok) throw new Error(j.error || ('HTTP ' + r.status)); return j; });
    });
  }
  function channel(v) { return Math.max(0, Math.min(255, Math.floor(v))); }
  function options(select, list) {
    var keep = select.value;
    while (select.firstChild) select.removeChild(select.firstChild);
    list.forEach(function (o) { var el = document.createElement('option'); el.value = o.key; el.textContent = o.label; select.appendChild(el); });
    if (list.some(function (o) { return String(o.key) === keep; })) select.value = keep;
  }
  function cell(tag, text, cls) { var el = document.createElement(tag); el.textContent = text; if (cls) el.className = cls; return el; }
  function clear(el) { while (el.firstChild) el.removeChild(el.firstChild); }
  function header(run, count) {
    var tr = document.createElement('tr'); tr.appendChild(cell('td', 'Layer', 'lens-label'));
    run.tokens.slice(0, count).forEach(function (t, i) {
      var td = cell('td', t, 'lens-cell lens-head'); var generated = i >= run.tokens.length - run.generated;
      td.style.background = generated ? '#b8f0b8' : 'yellow'; td.title = 'Token ' + i + (generated ? ' (generated)' : '');
      tr.appendChild(td);
    });
    return tr;
  }
  function title(run) { return run.prompt + (run.generated ? ' \u2192 ' + run.continuation : ''); }
  // A tracked token's entry in a run, by id.
  function tracked(run, id) { return (run.tracked || []).filter(function (t) { return t.id === id; })[0]; }
  // The difference views both runs allow: KL per cell (a live comparison), each token both runs track.
  function differences() {
    var list = [];
    if (!runs.a || !runs.b) return list;
    if (divergence) list.push({ key: 'kl_ab', label: 'difference: KL(A \u2016 B) per cell' });
    (runs.a.tracked || []).forEach(function (t) {
      if (tracked(runs.b, t.id)) list.push({ key: 'dp:' + t.id, label: 'difference: p(' + t.token + ') in B \u2212 A' });
    });
    return list;
  }
  function draw(slot) {
    var box = $('run-' + slot), run = runs[slot];
    clear(box);
    if (!run) return;
    var v = run.data.views[view.value] || run.data.views.lens, s = v[stat.value] || v.prob, c = run.data.color;
    box.appendChild(cell('h3', (slot === 'a' ? 'A' : 'B') + (run.imported ? ' (imported)' : '') + ': ' + title(run)));
    var table = document.createElement('table'); table.className = 'lens-grid'; table.appendChild(header(run));
    run.rows.forEach(function (label, r) {
      var tr = document.createElement('tr'); tr.className = 'lens-row'; tr.appendChild(cell('td', label, 'lens-label'));
      run.tokens.forEach(function (_, t) {
        var td = cell('td', v.text[r][t], 'lens-cell'); td.title = v.title[r][t];
        td.setAttribute('data-r', r); td.setAttribute('data-t', t);
        var m = Math.max(0, Math.min(1, v.magnitude[r][t])), p = Math.max(0, Math.min(1, s[r][t])), g = channel(255 * (1 - p));
        td.style.background = 'rgb(' + channel(255 * (1 - m) + c[0] * m) + ', ' + channel(255 * (1 - m) + c[1] * m) + ', ' + channel(255 * (1 - m) + c[2] * m) + ')';
        td.style.color = 'rgb(' + g + ', ' + g + ', ' + g + ')';
        tr.appendChild(td);
      });
      table.appendChild(tr);
    });
    table.appendChild(header(run));
    box.appendChild(table);
  }
  // One grid of A against B, cell by cell over the positions both have: red as the difference grows (blue below 0).
  function drawDifference(key) {
    var box = $('run-a'), a = runs.a, b = runs.b, values, rows = a.block_rows, what;
    clear(box); clear($('run-b'));
    if (key === 'kl_ab') { values = divergence; what = 'KL(A \u2016 B)'; }
    else {
      var id = +key.slice(3), ta = tracked(a, id), tb = tracked(b, id);
      what = 'p(' + ta.token + ') B \u2212 A';
      values = ta.probs.map(function (row, r) { return row.map(function (p, t) { return t < tb.probs[r].length ? tb.probs[r][t] - p : null; }); });
    }
    var count = Math.min(a.tokens.length, b.tokens.length), top = 1e-9;
    values.forEach(function (row) { row.slice(0, count).forEach(function (x) { if (x !== null) top = Math.max(top, Math.abs(x)); }); });
    box.appendChild(cell('h3', what + ': A ' + title(a) + ' | B ' + title(b)));
    var table = document.createElement('table'); table.className = 'lens-grid diff-grid'; table.appendChild(header(a, count));
    var second = header(b, count); second.firstChild.textContent = 'B'; table.appendChild(second);
    values.forEach(function (row, r) {
      var tr = document.createElement('tr'); tr.className = 'lens-row'; tr.appendChild(cell('td', rows[r], 'lens-label'));
      for (var t = 0; t < count; ++t) {
        var x = row[t], td = cell('td', x === null ? '' : x.toFixed(3), 'lens-cell'), f = x === null ? 0 : Math.abs(x) / top;
        td.setAttribute('data-r', r); td.setAttribute('data-t', t);
        td.title = what + ' = ' + (x === null ? 'n/a' : x.toPrecision(4)) + ' at layer ' + rows[r] + ', position ' + t;
        td.style.background = x !== null && x < 0 ? 'rgb(' + channel(255 * (1 - f)) + ', ' + channel(255 * (1 - f)) + ', 255)' : 'rgb(255, ' + channel(255 * (1 - f)) + ', ' + channel(255 * (1 - f)) + ')';
        tr.appendChild(td);
      }
      table.appendChild(tr);
    });
    box.appendChild(table);
  }
  // Per-layer curves of each tracked token's probability and rank at the chosen position, for each run.
  function chart(titleText, series, rows, logScale, ceiling) {
    var w = 420, h = 200, left = 45, bottom = 28, svg = document.createElementNS(SVG, 'svg');
    svg.setAttribute('width', w); svg.setAttribute('height', h + 20); svg.setAttribute('class', 'curve');
    function text(x, y, s, anchor) { var el = document.createElementNS(SVG, 'text'); el.setAttribute('x', x); el.setAttribute('y', y); el.setAttribute('font-size', '11'); if (anchor) el.setAttribute('text-anchor', anchor); el.textContent = s; svg.appendChild(el); return el; }
    var top = logScale ? Math.log10(Math.max(10, ceiling)) : 1;
    function X(i) { return left + (w - left - 10) * (rows.length > 1 ? i / (rows.length - 1) : 0); }
    function Y(v) { var f = logScale ? Math.log10(Math.max(1, v)) / top : v; return 10 + (h - bottom - 10) * (logScale ? f : 1 - f); }
    var axis = document.createElementNS(SVG, 'path'); axis.setAttribute('d', 'M' + left + ' 10 V' + (h - bottom) + ' H' + (w - 10)); axis.setAttribute('stroke', '#888'); axis.setAttribute('fill', 'none'); svg.appendChild(axis);
    text(w / 2, h + 12, titleText + ' per layer', 'middle');
    text(left - 4, 14, '1', 'end'); text(left - 4, h - bottom, logScale ? String(Math.round(Math.pow(10, top))) : '0', 'end');
    text(left, h - bottom + 14, rows[0], 'middle'); text(w - 10, h - bottom + 14, rows[rows.length - 1], 'middle');
    series.forEach(function (s, k) {
      var line = document.createElementNS(SVG, 'polyline');
      line.setAttribute('points', s.values.map(function (v, i) { return X(i) + ',' + Y(v); }).join(' '));
      line.setAttribute('fill', 'none'); line.setAttribute('stroke', palette[k % palette.length]); line.setAttribute('stroke-width', '2');
      if (s.dashed) line.setAttribute('stroke-dasharray', '5,3');
      var label = document.createElementNS(SVG, 'title'); label.textContent = s.label; line.appendChild(label);
      svg.appendChild(line);
      text(w - 12, 22 + 12 * k, s.label, 'end').setAttribute('fill', palette[k % palette.length]);
    });
    return svg;
  }
  function drawCurves() {
    var box = $('curves'); clear(box);
    var present = ['a', 'b'].filter(function (k) { return runs[k] && (runs[k].tracked || []).length; });
    if (!present.length) return;
    var t = +position.value, prob = [], rank = [], rows = runs[present[0]].block_rows, ceiling = 10;
    present.forEach(function (k) {
      var run = runs[k]; if (t >= run.tokens.length) return;
      run.tracked.forEach(function (tok) {
        var label = (k === 'a' ? 'A' : 'B') + ' ' + tok.token;
        prob.push({ label: label, dashed: k === 'b', values: tok.probs.map(function (row) { return row[t]; }) });
        var r = tok.ranks.map(function (row) { return row[t]; }); r.forEach(function (x) { ceiling = Math.max(ceiling, x); });
        rank.push({ label: label, dashed: k === 'b', values: r });
      });
    });
    box.appendChild(chart('probability', prob, rows, false, 1));
    box.appendChild(chart('rank (log scale)', rank, rows, true, ceiling));
  }
  function redraw() {
    var first = runs.a || runs.b;
    if (first) {
      options(view, first.views.concat(differences()));
      options(stat, first.statistics);
      var keep = position.value;
      options(position, first.tokens.map(function (t, i) { return { key: i, label: i + ': ' + t }; }));
      // By default the prompt's last position: where the model predicts its first continuation token.
      position.value = keep !== '' && +keep < first.tokens.length ? keep : String(first.tokens.length - first.generated - 1);
    }
    var diff = view.value === 'kl_ab' || view.value.indexOf('dp:') === 0;
    if (diff && runs.a && runs.b) drawDifference(view.value); else { draw('a'); draw('b'); }
    drawCurves();
    $('export').disabled = !runs.a;
    document.body.setAttribute('data-explorer-ready', (runs.a ? 'a' : '') + (runs.b ? 'b' : '') + ' ' + view.value + ' ' + stat.value);
  }
  view.addEventListener('change', redraw);
  stat.addEventListener('change', redraw);
  position.addEventListener('change', redraw);
  // The hovered cell's top-k (its title) in a panel that follows the pointer.
  var hover = $('hover');
  document.addEventListener('mouseover', function (e) {
    var el = e.target.closest ? e.target.closest('[data-r]') : null;
    if (!el || !el.title) { hover.style.display = 'none'; return; }
    hover.textContent = el.title; hover.style.display = 'block';
    hover.style.left = (e.pageX + 14) + 'px'; hover.style.top = (e.pageY + 14) + 'px';
  });
  var polling = null;
  function poll() {
    api('/api/status').then(function (s) { if (polling) progress.textContent = s.running ? s.running + (s.waiting ? ' (' + s.waiting + ' waiting)' : '') : 'waiting for the model'; }, function () {});
  }
  $('run').addEventListener('click', function () {
    error.textContent = ''; progress.textContent = 'starting'; $('run').disabled = true;
    polling = setInterval(poll, 250);
    var body = { prompt: $('prompt-a').value, generate: +$('generate').value || 0, topk: +$('topk').value || 5 };
    if ($('target').value) body.target = $('target').value;
    var track = $('track').value.split('|').filter(function (t) { return t.length; });
    if (track.length) body.track = track;
    if ($('compare').checked) body.compare = $('prompt-b').value;
    api('/api/lens', body).then(function (answer) {
      if (answer.a) { runs.a = answer.a; runs.b = answer.b; divergence = answer.divergence; }
      else { runs.a = answer; divergence = null; if (runs.b && !runs.b.imported) runs.b = null; }
      progress.textContent = 'done in ' + answer.seconds.toFixed(2) + ' s';
    }, function (e) { error.textContent = e.message; progress.textContent = ''; })
      .then(function () { clearInterval(polling); polling = null; $('run').disabled = false; redraw(); });
  });
  $('export').addEventListener('click', function () {
    var blob = new Blob([JSON.stringify(runs.a)], { type: 'application/json' });
    var link = document.createElement('a'); link.href = URL.createObjectURL(blob); link.download = 'lens-run.json';
    document.body.appendChild(link); link.click(); document.body.removeChild(link);
  });
  $('import').addEventListener('change', function () {
    var file = this.files[0]; if (!file) return;
    file.text().then(function (text) {
      var run = JSON.parse(text);
      if (!run || !Array.isArray(run.tokens) || !Array.isArray(run.rows) || !run.data || !run.data.views || !run.data.views.lens) throw new Error('not an exported run');
      run.imported = true; runs.b = run; divergence = null; error.textContent = ''; redraw();
    }).catch(function (e) { error.textContent = 'import: ' + e.message; });
  });
  redraw();
})();
)JS";
  return show::page("Lens explorer: " + session.name(),
                    body + "<script nonce=\"" + nonce + "\">" + script + "</script>", head);
}

}  // namespace baukit::explorer
