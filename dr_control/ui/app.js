// Hybrid DR dashboard: polls the REST API (/v1/...) and renders plans, running cycles,
// recovery points and nodes. Plain DOM, no build step; every value goes in as text.
"use strict";

const POLL_MS = 1500;
const ROLES = ["viewer", "operator", "admin"];
const state = { role: "", operations: {} };

function takeTokenFromUrl() {
  // ?token=... once: keep it for this tab's session and drop it from the address bar.
  const url = new URL(window.location.href);
  const token = url.searchParams.get("token");
  if (token) {
    sessionStorage.setItem("drToken", token);
    url.searchParams.delete("token");
    history.replaceState(null, "", url.pathname + url.search);
  }
}

async function api(path, method = "GET", body = undefined) {
  const headers = { "Accept": "application/json" };
  const token = sessionStorage.getItem("drToken");
  if (token) headers["Authorization"] = "Bearer " + token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, { method, headers,
    body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const e = data.error || {};
    throw new Error((e.code || resp.status) + ": " + (e.message || resp.statusText) +
                    (e.field ? " (field " + e.field + ")" : ""));
  }
  return data;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "onclick") node.addEventListener("click", v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : String(c));
  return node;
}

function bytes(n) {
  n = Number(n || 0);
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}

function allows(needed) {
  return ROLES.indexOf(state.role) >= ROLES.indexOf(needed);
}

function showError(message) {
  document.getElementById("error").textContent = message || "";
}

function id(name) { return name.split("/").pop(); }

function progressOf(cycle) {
  let done = 0, total = 0;
  for (const d of cycle.disks || []) {
    done += Number(d.watermark_bytes || 0);
    total += Number(d.size_bytes || 0);
  }
  return { done, total };
}

function progressElement(cycle) {
  const { done, total } = progressOf(cycle);
  return el("span", { "class": "cycle-progress", "data-cycle": cycle.name },
            el("progress", { value: String(done), max: String(total || 1) }), " ",
            el("span", { "class": "progress-text" }, bytes(done) + " / " + bytes(total)));
}

async function act(label, path, body) {
  try {
    const result = await api(path, "POST", body);
    if (result.name && result.name.startsWith("operations/")) {
      state.operations[result.name] = result;
    }
    showError("");
    await refresh();
  } catch (err) {
    showError(label + ": " + err.message);
  }
}

function actionButtons(plan) {
  const cell = el("td", { "class": "actions" });
  if (!allows("operator")) return cell;
  const p = id(plan.name);
  cell.append(el("button", { "class": "run", type: "button",
                             onclick: () => act("run now", `/v1/plans/${p}:run`) }, "Run now"));
  if (plan.paused) {
    cell.append(el("button", { "class": "resume", type: "button",
                               onclick: () => act("resume", `/v1/plans/${p}:resume`) }, "Resume"));
  } else {
    cell.append(el("button", { "class": "pause", type: "button",
                               onclick: () => act("pause", `/v1/plans/${p}:pause`) }, "Pause"));
  }
  return cell;
}

function setCell(row, cls, content, extraClass = "") {
  const cell = row.querySelector("td." + cls);
  cell.className = cls + (extraClass ? " " + extraClass : "");
  if (content instanceof Node) cell.replaceChildren(content);
  else cell.textContent = content;
}

function renderPlan(tbody, plan, status, cycles, points) {
  let row = tbody.querySelector(`tr[data-plan="${CSS.escape(plan.name)}"]`);
  if (!row) {
    row = el("tr", { "class": "plan", "data-plan": plan.name },
             el("td", { "class": "name" }, plan.name), el("td", { "class": "state" }),
             el("td", { "class": "rpo" }), el("td", { "class": "lag" }),
             el("td", { "class": "last-cycle" }), el("td", { "class": "points-count" }),
             el("td", { "class": "actions" }));
    tbody.append(row);
  }
  setCell(row, "state", plan.state + (plan.paused ? " (paused)" : ""));
  const met = !!status.rpo_met;
  setCell(row, "rpo", met ? "met" : "breached", met ? "met" : "breached");
  setCell(row, "lag", Number(status.rpo_lag_seconds || 0) + " s of " + plan.rpo_seconds + " s");
  const last = cycles[cycles.length - 1];
  setCell(row, "last-cycle", last ? el("span", {}, id(last.name) + " " + last.state + " ",
                                       progressElement(last)) : "none");
  setCell(row, "points-count", String(points.length));
  // Rebuilt only when what it shows changes, so a click never lands on a stale button.
  const signature = state.role + "|" + plan.paused;
  if (row.dataset.actions !== signature) {
    row.querySelector("td.actions").replaceWith(actionButtons(plan));
    row.dataset.actions = signature;
  }
}

function renderPoints(container, plan, points) {
  const canRestore = allows("operator");
  const rows = points.slice().reverse().map((pt) => el("tr", { "class": "point", "data-point": pt.name },
    el("td", {}, pt.name), el("td", {}, pt.create_time || ""), el("td", {}, pt.state || ""),
    el("td", {}, (pt.disks || []).map((d) => id(d.disk) + " " + bytes(d.size_bytes)).join(", ")),
    el("td", {}, canRestore ? el("button", { "class": "restore", type: "button", onclick: () => {
      const dest = window.prompt("Restore " + pt.name + " to (path of a file on the node):");
      if (dest) {
        const [, p, , rp] = pt.name.split("/");
        act("restore", `/v1/plans/${p}/recoveryPoints/${rp}:restore`, { destination_path: dest });
      }
    } }, "Restore") : "")));
  container.append(el("h3", {}, plan.name),
    el("table", { "class": "points", "data-plan": plan.name },
       el("thead", {}, el("tr", {}, ...["Point", "Created", "State", "Disks", ""].map((h) => el("th", {}, h)))),
       el("tbody", {}, ...rows)));
}

async function refresh() {
  try {
    const me = await api("/v1/me");
    state.role = me.role;
    document.getElementById("role").textContent = me.role + (me.name ? " (" + me.name + ")" : "");
    const [plansResp, nodesResp] = await Promise.all([api("/v1/plans"), api("/v1/nodes")]);
    const plans = plansResp.plans || [];
    const details = await Promise.all(plans.map(async (plan) => {
      const p = id(plan.name);
      const [status, cycles, points] = await Promise.all([
        api(`/v1/plans/${p}/status`), api(`/v1/plans/${p}/cycles`),
        api(`/v1/plans/${p}/recoveryPoints`)]);
      return { plan, status, cycles: cycles.cycles || [], points: points.recovery_points || [] };
    }));

    const tbody = document.getElementById("plans");
    const names = new Set(plans.map((p) => p.name));
    for (const row of tbody.querySelectorAll("tr.plan")) {
      if (!names.has(row.dataset.plan)) row.remove();
    }
    const running = [];
    const pointsBox = el("div", { id: "points" });
    for (const d of details) {
      renderPlan(tbody, d.plan, d.status, d.cycles, d.points);
      if (d.status.current_cycle) running.push(d.status.current_cycle);
      renderPoints(pointsBox, d.plan, d.points);
    }
    document.getElementById("points").replaceWith(pointsBox);

    const cyclesBox = el("div", { id: "cycles" });
    if (!running.length) cyclesBox.append(el("span", { "class": "muted" }, "none"));
    for (const c of running) {
      cyclesBox.append(el("div", { "class": "running-cycle", "data-cycle": c.name },
                          c.name + " " + c.state + " ", progressElement(c)));
    }
    for (const [name, op] of Object.entries(state.operations)) {
      const now = op.done ? op : await api("/v1/" + name);
      state.operations[name] = now;
      cyclesBox.append(el("div", { "class": "operation", "data-operation": name },
        name + " " + now.kind + " " + now.state + " " + bytes(now.bytes_done) + " / " +
        bytes(now.bytes_total) + (now.error && now.error.message ? " — " + now.error.message : "")));
    }
    document.getElementById("cycles").replaceWith(cyclesBox);

    document.getElementById("nodes").replaceChildren(...(nodesResp.nodes || []).map((n) =>
      el("tr", { "class": "node", "data-node": n.name }, el("td", {}, n.name), el("td", {}, n.state),
         el("td", { "class": "load" }, (n.running_tasks || 0) + " / " + (n.max_tasks || 0)),
         el("td", {}, bytes(n.inflight_bytes)), el("td", {}, n.version || ""))));
    document.body.dataset.loaded = "true";
    showError("");
  } catch (err) {
    showError(err.message);
  }
}

takeTokenFromUrl();
document.getElementById("save-token").addEventListener("click", () => {
  const value = document.getElementById("token").value.trim();
  if (value) sessionStorage.setItem("drToken", value);
  else sessionStorage.removeItem("drToken");
  document.getElementById("token").value = "";
  for (const row of document.querySelectorAll("tr.plan")) delete row.dataset.actions;
  refresh();
});
refresh();
setInterval(refresh, POLL_MS);
