// The demo page: plain JS over the JSON API. Data is only ever inserted as text.
"use strict";

const $ = (id) => document.getElementById(id);

async function api(path, options) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new Error(body.detail || `${response.status} ${response.statusText}`);
  }
  return body;
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (className) td.className = className;
  return td;
}

function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
}

// Artifacts without item titles: hide the column rather than show it empty.
function hideEmptyTitles(table, items) {
  table.classList.toggle("no-titles", !items.some((item) => item.title));
}

function renderHistory(history) {
  const body = $("history").tBodies[0];
  body.replaceChildren();
  for (const item of history.items) {
    const row = body.insertRow();
    if (item.source === "event") row.className = "event";
    cell(row, item.item_id);
    cell(row, item.title || "", "title");
    cell(row, (item.genres || []).join(", "));
    cell(row, item.source);
  }
  hideEmptyTitles($("history"), history.items);
  const shown = history.items.length;
  $("history-count").textContent = history.known || history.n_items
    ? `${history.n_items} items${shown < history.n_items ? `, ${shown} shown` : ""}`
    : "unknown user: no history";
}

function renderRecommendations(recs, userId) {
  const body = $("recommendations").tBodies[0];
  body.replaceChildren();
  for (const item of recs.items) {
    const row = body.insertRow();
    cell(row, item.rank, "num");
    cell(row, item.item_id);
    cell(row, item.title || "", "title");
    cell(row, (item.genres || []).join(", "));
    cell(row, item.score.toFixed(3), "num");
    cell(row, item.sources.join(", "));
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = "seen it";
    button.title = "send an event: the next recommendations fold it in";
    button.addEventListener("click", () => sendEvent(userId, item.item_id));
    row.insertCell().appendChild(button);
  }
  hideEmptyTitles($("recommendations"), recs.items);
  $("strategy").textContent = recs.strategy;
  $("model-version").textContent = `model ${recs.model_version}`;
}

async function show() {
  const userId = $("user-id").value.trim();
  if (!userId) return;
  const k = Number($("k").value) || 10;
  const genre = $("genre").value;
  showError("");
  try {
    const request = { user_id: userId, k, details: true };
    if (genre) request.filters = { genres: [genre] };
    const [history, recs] = await Promise.all([
      api(`/users/${encodeURIComponent(userId)}/history?limit=100`),
      api("/recommend", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(request),
      }),
    ]);
    renderHistory(history);
    renderRecommendations(recs, userId);
    document.body.dataset.loadedUser = userId;
  } catch (err) {
    showError(err.message);
  }
}

async function sendEvent(userId, itemId) {
  try {
    await api("/events", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ user_id: userId, item_id: itemId }),
    });
    await show();
  } catch (err) {
    showError(err.message);
  }
}

async function init() {
  $("query").addEventListener("submit", (event) => {
    event.preventDefault();
    show();
  });
  try {
    const [ready, users] = await Promise.all([api("/readyz"), api("/users?limit=500")]);
    $("model-version").textContent = `model ${ready.model_version}`;
    const list = $("user-ids");
    for (const id of users.user_ids) {
      const option = document.createElement("option");
      option.value = String(id);
      list.appendChild(option);
    }
    if (!$("user-id").value && users.user_ids.length) $("user-id").value = String(users.user_ids[0]);
    const genres = await api("/genres");
    for (const name of genres.genres) {
      const option = document.createElement("option");
      option.value = name;
      option.textContent = name;
      $("genre").appendChild(option);
    }
    document.body.dataset.ready = "true";
  } catch (err) {
    showError(err.message);
  }
}

init();
