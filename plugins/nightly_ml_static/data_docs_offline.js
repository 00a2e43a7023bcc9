/* nightly-ml: a small stand-in for the CDN scripts of Great Expectations' Data Docs (jQuery, Bootstrap,
   bootstrap-table, Vega), inlined by the reports app so that the pages work with no internet: the index
   tables are drawn from the data the page carries (one row per validation run, with a link to it), tabs and
   collapsible sections open and close. What the pages do beyond that (search, filters, charts) is left out. */
(function () {
  "use strict";

  function onReady(fn) {
    if (document.readyState === "loading") {
      document.addEventListener("DOMContentLoaded", function () { fn(); });
    } else {
      fn();
    }
  }

  function elements(target) {
    if (target === document || target === window) return [document];
    if (typeof target === "string") {
      try { return Array.prototype.slice.call(document.querySelectorAll(target)); } catch (e) { return []; }
    }
    if (target && target.nodeType) return [target];
    return [];
  }

  function text(value) {
    return value === undefined || value === null ? "" : String(value);
  }

  function renderTable(table, options) {
    var columns = (options.columns || []).filter(function (c) { return c && c.field; });
    var rows = options.data || [];
    var linked = rows.some(function (row) { return row && row._table_row_link_path; });
    var head = "<thead><tr>" + columns.map(function (c) { return "<th>" + text(c.title) + "</th>"; }).join("")
      + (linked ? "<th>Details</th>" : "") + "</tr></thead>";
    table.innerHTML = head + "<tbody></tbody>";
    table.classList.add("table", "table-sm");
    var body = table.querySelector("tbody");
    rows.forEach(function (row) {
      var tr = document.createElement("tr");
      tr.innerHTML = columns.map(function (c) { return "<td>" + text(row[c.field]) + "</td>"; }).join("");
      var path = row._table_row_link_path;
      if (path) {
        var cell = document.createElement("td");
        var link = document.createElement("a");
        link.setAttribute("href", path);
        link.textContent = "open";
        cell.appendChild(link);
        tr.appendChild(cell);
        tr.classList.add("clickable-row");
        tr.addEventListener("click", function (event) {
          if (!event.target.closest("a")) window.location.href = path;
        });
      }
      body.appendChild(tr);
    });
  }

  function Selection(list) { this.list = list; this.length = list.length; }
  Selection.prototype = {
    each: function (fn) { this.list.forEach(function (el, i) { fn.call(el, i, el); }); return this; },
    ready: function (fn) { onReady(fn); return this; },
    on: function (event, fn) {
      this.list.forEach(function (el) { el.addEventListener(String(event).split(".")[0], fn); });
      return this;
    },
    addClass: function (name) { this.list.forEach(function (el) { el.classList.add(name); }); return this; },
    removeClass: function (name) { this.list.forEach(function (el) { el.classList.remove(name); }); return this; },
    fadeIn: function () { this.list.forEach(function (el) { el.style.display = ""; }); return this; },
    fadeOut: function () { this.list.forEach(function (el) { el.style.display = "none"; }); return this; },
    parent: function () {
      return wrap(this.list.map(function (el) { return el.parentElement; }).filter(Boolean));
    },
    prepend: function (html) {
      this.list.forEach(function (el) { el.insertAdjacentHTML("afterbegin", text(html)); });
      return this;
    },
    bootstrapTable: function (options) {
      if (options && typeof options === "object") this.list.forEach(function (el) { renderTable(el, options); });
      return this;
    }
  };

  function wrap(list) {
    // methods of the real libraries these pages call but that need nothing offline (modal, tooltip, …)
    var selection = new Selection(list);
    return new Proxy(selection, {
      get: function (target, name) {
        if (name in target) return target[name];
        return function () { return wrap(target.list); };
      }
    });
  }

  function $(target) {
    if (typeof target === "function") { onReady(target); return wrap([]); }
    return wrap(elements(target));
  }
  window.$ = window.jQuery = $;
  window.vegaEmbed = function () { return Promise.resolve(); };

  function targetOf(toggle) {
    var selector = toggle.getAttribute("data-target") || toggle.getAttribute("href") || "";
    if (selector.charAt(0) !== "#") return null;
    try { return document.querySelector(selector); } catch (e) { return null; }
  }

  document.addEventListener("click", function (event) {
    var toggle = event.target.closest("[data-toggle]");
    if (!toggle) return;
    var kind = toggle.getAttribute("data-toggle");
    var target = targetOf(toggle);
    if (kind === "collapse" && target) {
      event.preventDefault();
      target.classList.toggle("show");
    } else if ((kind === "tab" || kind === "pill") && target) {
      event.preventDefault();
      var nav = toggle.closest(".nav") || document;
      nav.querySelectorAll("[data-toggle]").forEach(function (other) {
        other.classList.remove("active");
        var pane = targetOf(other);
        if (pane) pane.classList.remove("active", "show");
      });
      toggle.classList.add("active");
      target.classList.add("active", "show");
    }
  });
})();
