// The console works without this script; it only enhances: filters apply as they change,
// and a shown-once upload link gets a copy button.
(function () {
  "use strict";
  // Filters apply as they change, without reloading the page: the same GET the form would
  // send, its <main> swapped in, the address updated (so Back and a shared link work).
  // Anything unexpected falls back to the plain form submission.
  function applyFilters(form) {
    var query = new URLSearchParams(new FormData(form)).toString();
    var url = form.getAttribute("action") + "?" + query;
    fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) {
        if (!response.ok || response.redirected) { throw new Error("fall back"); }
        return response.text();
      })
      .then(function (html) {
        var next = new DOMParser().parseFromString(html, "text/html").querySelector("main");
        var main = document.querySelector("main");
        if (!next || !main) { throw new Error("fall back"); }
        var results = next.querySelector("[data-results]");
        var current = main.querySelector("[data-results]");
        if (!results || !current) { throw new Error("fall back"); }
        current.replaceWith(results);
        history.replaceState(null, "", url);
        var status = document.getElementById("filter-status");
        if (status) { status.textContent = results.getAttribute("data-summary") || ""; }
      })
      .catch(function () { form.submit(); });
  }
  document.querySelectorAll("form[data-autosubmit]").forEach(function (form) {
    form.querySelectorAll("select, input[type=checkbox]").forEach(function (input) {
      input.addEventListener("change", function () { applyFilters(form); });
    });
  });
  // A second click while the first submission is on its way sends nothing (the server also
  // runs each drawn form once).
  document.querySelectorAll("form[method=post]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (form.getAttribute("data-sent")) { event.preventDefault(); return; }
      form.setAttribute("data-sent", "1");
    });
  });
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    var field = document.getElementById(button.getAttribute("data-copy"));
    if (!field || !navigator.clipboard) { return; }
    button.hidden = false;
    button.addEventListener("click", function () {
      navigator.clipboard.writeText(field.value).then(function () {
        button.textContent = "Copied";
      });
    });
  });
})();
