// Hybrid DR dashboard: polls the REST API (/v1/...) and renders plans, running cycles,
// recovery points, recovery plans with their executions, and nodes. Plain DOM, no build
// step; every value goes in as text.
"use strict";

const POLL_MS = 1500;
// An execution being watched is polled faster: its steps are seconds apart.
const EXECUTION_POLL_MS = 1000;
const ROLES = ["viewer", "operator", "admin"];
// recoveryPlan, execution: the names the user opened ("" none); executionTimer: the
// pending poll of that execution.
const state = { role: "", operations: {}, recoveryPlan: "", execution: "", executionTimer: 0 };

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

function secs(n) {
  return Number(n || 0).toFixed(1) + " s";
}

// Replaces `container`'s children with build() only when `signature` changed, so a poll
// that shows the same thing never swaps a button from under a click.
function renderIfChanged(container, signature, build) {
  if (container.dataset.signature === signature) return;
  container.replaceChildren(...build());
  container.dataset.signature = signature;
}

function table(cls, headings, rows, attrs = {}) {
  return el("table", { "class": cls, ...attrs },
            el("thead", {}, el("tr", {}, ...headings.map((h) => el("th", {}, h)))),
            el("tbody", {}, ...rows));
}

function groupWorkloads(plan) {
  return (plan.boot_groups || []).reduce((n, g) => n + (g.workloads || []).length, 0);
}

function renderRecoveryPlans(plans) {
  const rows = plans.map((rp) => el("tr", { "class": "recovery-plan", "data-recovery-plan": rp.name },
    el("td", { "class": "name" }, rp.name), el("td", { "class": "protection-plan" }, rp.protection_plan),
    el("td", { "class": "recovery-site" }, rp.recovery_site),
    el("td", { "class": "groups-count" }, String((rp.boot_groups || []).length)),
    el("td", { "class": "workloads-count" }, String(groupWorkloads(rp))),
    el("td", { "class": "failed-over-by" }, rp.failed_over_by || "never"),
    el("td", {}, el("button", { "class": "open-recovery-plan", type: "button",
                                onclick: () => openRecoveryPlan(rp.name) }, "Open"))));
  if (!rows.length) rows.push(el("tr", {}, el("td", { "class": "muted", colspan: "7" }, "none")));
  renderIfChanged(document.getElementById("recovery-plans"), JSON.stringify(plans), () => rows);
}

function openRecoveryPlan(name) {
  state.recoveryPlan = name;
  refreshRecoveryPlan();
}

async function startRecovery(plan, mode) {
  // A failover or migrate acts on production: ask first. A test is a drill.
  const what = mode === "failback" ? "fail back " + plan + " to its original site?"
    : mode + " " + plan + " from its newest recovery point?";
  if (mode !== "test" && !window.confirm(what)) return;
  try {
    const execution = await api(`/v1/${plan}:start`, "POST", { mode });
    showError("");
    watchExecution(execution.name);
    refreshRecoveryPlan();
  } catch (err) {
    showError(mode + ": " + err.message);
  }
}

function recoveryPlanActions(plan) {
  const box = el("div", { "class": "recovery-actions" });
  if (!allows("operator")) return box;
  // Failing back is offered once the plan has failed over; the others until then.
  const modes = plan.failed_over_by ? [["failback", "Fail back"]]
    : [["test", "Run test"], ["failover", "Failover"], ["migrate", "Migrate"]];
  for (const [mode, label] of modes) {
    box.append(el("button", { "class": "start-" + mode, type: "button",
                              onclick: () => startRecovery(plan.name, mode) }, label));
  }
  return box;
}

function bootGroupRows(plan) {
  return (plan.boot_groups || []).map((g, i) => {
    const workloads = g.workloads || [];
    const checks = workloads.reduce((n, w) => n + (w.checks || []).length, 0);
    const scripts = workloads.reduce(
      (n, w) => n + (w.pre_scripts || []).length + (w.post_scripts || []).length, 0);
    return el("tr", { "class": "boot-group", "data-group": g.name },
      el("td", {}, String(i + 1)), el("td", { "class": "group-name" }, g.name),
      el("td", { "class": "group-workloads" }, workloads.map((w) => w.workload).join(", ")),
      el("td", { "class": "group-delay" }, Number(g.delay_seconds || 0) + " s"),
      el("td", { "class": "group-checks" }, String(checks)),
      el("td", { "class": "group-scripts" }, String(scripts)));
  });
}

function forecastList(f) {
  const parts = [["Restore", f.restore_seconds], ["Provider waits", f.provider_seconds],
                 ["Validation", f.validation_seconds], ["Scripts", f.script_seconds],
                 ["Delays", f.delay_seconds], ["Orchestration", f.overhead_seconds]];
  const items = [];
  for (const [label, value] of parts) {
    items.push(el("dt", {}, label), el("dd", { "class": "forecast-part" }, secs(value)));
  }
  items.push(el("dt", {}, "Predicted RTO"), el("dd", { "class": "forecast-rto" }, secs(f.rto_seconds)),
             el("dt", {}, "Last measured RTO"),
             el("dd", { "class": "forecast-last" }, f.last_execution
               ? secs(f.last_measured_rto_seconds) + " (" + f.last_execution + ")" : "none yet"),
             el("dt", {}, "Based on"), el("dd", { "class": "forecast-basis" }, f.basis || ""));
  return el("dl", { "class": "forecast" }, ...items);
}

function executionRows(executions) {
  return executions.slice().reverse().map((e) => el("tr", { "class": "execution", "data-execution": e.name },
    el("td", {}, id(e.name)), el("td", { "class": "mode" }, e.mode),
    el("td", { "class": "state" }, e.state), el("td", {}, e.recovery_point),
    el("td", {}, e.create_time || ""), el("td", {}, e.end_time || ""),
    el("td", {}, el("button", { "class": "view-execution", type: "button",
                                onclick: () => watchExecution(e.name) }, "View"))));
}

// A panel of parts that each re-render on their own (see renderIfChanged), made once per
// thing shown: `box` holds it while its data-name is `name`.
function panel(box, name, parts) {
  let div = box.firstElementChild;
  if (!div || div.dataset.name !== name) {
    div = el("div", { "class": "panel", "data-name": name },
             ...parts.map((p) => el("div", { "class": p })));
    box.replaceChildren(div);
  }
  return Object.fromEntries(parts.map((p) => [p, div.querySelector("div." + p)]));
}

async function refreshRecoveryPlan() {
  const box = document.getElementById("recovery-plan");
  const name = state.recoveryPlan;
  if (!name) { box.replaceChildren(); return; }
  const [plan, forecast, executions] = await Promise.all([
    api("/v1/" + name), api(`/v1/${name}:forecast`), api(`/v1/${name}/executions`)]);
  if (state.recoveryPlan !== name) return;  // another plan was opened meanwhile
  const list = executions.executions || [];
  const parts = panel(box, name, ["rp-title", "rp-actions", "rp-groups", "rp-forecast", "rp-executions"]);
  renderIfChanged(parts["rp-title"], plan.name + "|" + plan.recovery_site, () => [
    el("h3", {}, "Recovery plan " + plan.name + " → " + plan.recovery_site)]);
  renderIfChanged(parts["rp-actions"], state.role + "|" + plan.name, () => [recoveryPlanActions(plan)]);
  renderIfChanged(parts["rp-groups"], JSON.stringify(plan.boot_groups || []), () => [
    el("h4", {}, "Boot groups"),
    table("boot-groups", ["#", "Group", "Workloads", "Delay", "Checks", "Scripts"], bootGroupRows(plan))]);
  renderIfChanged(parts["rp-forecast"], JSON.stringify(forecast), () => [
    el("h4", {}, "RTO forecast"), forecastList(forecast)]);
  renderIfChanged(parts["rp-executions"], JSON.stringify(list), () => [
    el("h4", {}, "Executions"),
    list.length ? table("executions", ["Execution", "Mode", "State", "Recovery point", "Created",
                                       "Ended", ""], executionRows(list))
                : el("span", { "class": "muted" }, "none")]);
}

function watchExecution(name) {
  state.execution = name;
  clearTimeout(state.executionTimer);
  pollExecution();
}

async function pollExecution() {
  const name = state.execution;
  if (!name) return;
  let execution;
  try {
    execution = await api("/v1/" + name);
  } catch (err) {
    showError(err.message);
    state.executionTimer = setTimeout(pollExecution, EXECUTION_POLL_MS);
    return;
  }
  if (state.execution !== name) return;
  renderExecution(execution);
  // Polled while it still changes by itself; an action (cancel, cleanup) polls again.
  if (!execution.done) state.executionTimer = setTimeout(pollExecution, EXECUTION_POLL_MS);
}

async function executionAction(label, name, verb) {
  try {
    await api(`/v1/${name}:${verb}`, "POST");
    showError("");
  } catch (err) {
    showError(label + ": " + err.message);
  }
  watchExecution(name);
}

function executionActions(e) {
  const box = el("div", { "class": "execution-actions" });
  if (!allows("operator")) return box;
  if (!e.done && !e.cancel_requested) {
    box.append(el("button", { "class": "cancel", type: "button",
                              onclick: () => executionAction("cancel", e.name, "cancel") }, "Cancel"));
  }
  if (e.done && e.state !== "cleaned-up") {
    box.append(el("button", { "class": "cleanup", type: "button",
                              onclick: () => executionAction("clean up", e.name, "cleanup") }, "Clean up"));
  }
  return box;
}

function workloadRows(e) {
  return (e.workloads || []).map((w) => {
    const checks = w.checks || [];
    const passed = checks.filter((c) => c.passed).length;
    return el("tr", { "class": "workload-result", "data-workload": w.workload },
      el("td", { "class": "workload" }, w.workload), el("td", { "class": "group" }, w.group),
      el("td", { "class": "state" }, w.state),
      el("td", { "class": "checks-count" }, passed + "/" + checks.length),
      el("td", { "class": "checks" }, el("ul", { "class": "checks" }, ...checks.map((c) =>
        el("li", { "class": "check " + (c.passed ? "passed" : "failed") },
           (c.passed ? "passed: " : "failed: ") + c.check + " — " + (c.detail || "") +
           " (" + (c.attempts || 0) + " attempts, " + secs(c.seconds) + ")")))),
      el("td", { "class": "reason" }, w.reason || ""));
  });
}

function eventRows(e) {
  return (e.events || []).map((v) => el("tr", { "class": "event", "data-step": v.step },
    el("td", {}, v.time || ""), el("td", { "class": "group" }, v.group || ""),
    el("td", { "class": "workload" }, v.workload || ""), el("td", { "class": "step" }, v.step),
    el("td", { "class": "detail" }, v.detail || "")));
}

function renderExecution(e) {
  const parts = panel(document.getElementById("execution"), e.name,
                      ["ex-title", "ex-actions", "ex-workloads", "ex-events"]);
  renderIfChanged(parts["ex-title"], JSON.stringify([e.state, e.done, e.cancel_requested, e.error]), () => [
    el("h3", {}, "Execution " + e.name),
    el("p", {}, e.mode + " from " + e.recovery_point + ": ", el("b", { "class": "execution-state" }, e.state),
       e.cancel_requested ? " (cancel requested)" : "", e.done ? "" : " …"),
    e.error && e.error.message ? el("p", { "class": "execution-error failed" }, e.error.message) : ""]);
  renderIfChanged(parts["ex-actions"], JSON.stringify([state.role, e.state, e.done, e.cancel_requested]),
                  () => [executionActions(e)]);
  renderIfChanged(parts["ex-workloads"], JSON.stringify(e.workloads || []), () => [
    el("h4", {}, "Workloads"),
    table("workload-results", ["Workload", "Group", "State", "Checks", "Check results", "Reason"],
          workloadRows(e))]);
  renderIfChanged(parts["ex-events"], JSON.stringify(e.events || []), () => [
    el("h4", {}, "Events"), table("events", ["Time", "Group", "Workload", "Step", "Detail"], eventRows(e))]);
}

async function refresh() {
  try {
    const me = await api("/v1/me");
    state.role = me.role;
    document.getElementById("role").textContent = me.role + (me.name ? " (" + me.name + ")" : "");
    const [plansResp, nodesResp, recoveryResp] = await Promise.all([
      api("/v1/plans"), api("/v1/nodes"), api("/v1/recoveryPlans")]);
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

    const recoveryPlans = recoveryResp.recovery_plans || [];
    renderRecoveryPlans(recoveryPlans);
    // A deleted plan's detail goes, rather than a NOT_FOUND on every poll.
    if (!recoveryPlans.some((rp) => rp.name === state.recoveryPlan)) state.recoveryPlan = "";
    await refreshRecoveryPlan();

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
  // The execution's actions depend on the role, which refresh learns.
  refresh().then(() => watchExecution(state.execution));
});
refresh();
setInterval(refresh, POLL_MS);
