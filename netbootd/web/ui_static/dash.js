// The dashboard's only script (the pages' CSP allows no other): the admin token box and the
// action buttons. Every action is a fetch to /api/v1 with "Authorization: Bearer <token>";
// the token is typed once and kept in sessionStorage (this tab only, never a cookie), so a
// page from another site cannot make the browser send it. Server messages are shown with
// textContent, never parsed as HTML.
"use strict";
(function () {
  const KEY = "netbootd-admin-token";
  const FLASH = "netbootd-flash";
  const REFRESH = "netbootd-refresh";

  function token() {
    return sessionStorage.getItem(KEY) || "";
  }

  function show(message, ok) {
    const box = document.getElementById("status");
    box.textContent = message;
    box.className = ok ? "ok" : "error";
  }

  function tokenState() {
    const state = document.getElementById("token-state");
    const has = token() !== "";
    state.textContent = has ? "token set: actions enabled" : "read-only";
    state.className = has ? "armed" : "readonly";
  }

  async function api(method, path, body) {
    const headers = { "Content-Type": "application/json", "Accept": "application/json" };
    if (token()) {
      headers["Authorization"] = "Bearer " + token();
    }
    const response = await fetch(path, {
      method: method, headers: headers, body: JSON.stringify(body || {}),
      credentials: "omit", cache: "no-store", redirect: "error",
    });
    let data = null;
    try {
      data = await response.json();
    } catch (e) {
      data = null;
    }
    return { ok: response.ok, status: response.status, data: data };
  }

  function refused(what, r) {
    const why = r.data && r.data.error ? r.data.error : "no answer";
    const hint = r.status === 401 ? " (type the admin token above)" : "";
    show(what + " refused (" + r.status + "): " + why + hint, false);
  }

  function done(message) {
    // The page is re-read from the server so it shows what the server now says.
    sessionStorage.setItem(FLASH, message);
    window.location.reload();
  }

  async function rollback(button) {
    const channel = button.dataset.channel;
    const target = button.dataset.target;
    if (!window.confirm("Roll channel " + channel + " back to " + target + "?")) {
      return;
    }
    button.disabled = true;
    try {
      const r = await api("POST", "/api/v1/channels/" + encodeURIComponent(channel) +
                          "/rollback", { why: "rollback from the dashboard" });
      if (r.ok) {
        done("channel " + channel + " rolled back to " + r.data.to);
      } else {
        refused("rollback of " + channel, r);
      }
    } catch (e) {
      show("rollback of " + channel + " failed: " + e, false);
    } finally {
      button.disabled = false;
    }
  }

  async function rolloutAction(button) {
    const id = button.dataset.rollout;
    const verb = button.dataset.verb;
    if (verb === "abort" &&
        !window.confirm("Abort rollout " + id + " and send its nodes back to the previous build?")) {
      return;
    }
    button.disabled = true;
    try {
      const body = verb === "abort" ? { why: "aborted from the dashboard" } : {};
      const r = await api("POST", "/api/v1/rollouts/" + encodeURIComponent(id) + "/" + verb,
                          body);
      if (r.ok) {
        done("rollout " + id + ": " + r.data.phase);
      } else {
        refused(verb + " of rollout " + id, r);
      }
    } catch (e) {
      show(verb + " of rollout " + id + " failed: " + e, false);
    } finally {
      button.disabled = false;
    }
  }

  async function adopt(form) {
    const body = { mac: form.dataset.mac, name: form.elements.name.value };
    if (form.elements.group.value) {
      body.group = form.elements.group.value;
    }
    if (form.elements.hostname.value) {
      body.hostname = form.elements.hostname.value;
    }
    const r = await api("POST", "/api/v1/nodes", body);
    if (r.ok) {
      done("adopted " + body.mac + " as node " + r.data.name);
    } else {
      refused("adopting " + body.mac, r);
    }
  }

  // Pages that change by themselves (the fleet, rollouts) offer to reload every few seconds;
  // the choice is kept for the tab, and a reload waits while the admin is typing.
  function autoRefresh() {
    const box = document.getElementById("auto-refresh");
    const every = Number(document.body.dataset.refresh || 0);
    if (!box || every <= 0) {
      return;
    }
    box.checked = sessionStorage.getItem(REFRESH) === "on";
    box.addEventListener("change", function () {
      sessionStorage.setItem(REFRESH, box.checked ? "on" : "off");
    });
    window.setInterval(function () {
      const active = document.activeElement;
      const typing = active && (active.tagName === "INPUT" && active !== box ||
                                active.tagName === "SELECT");
      if (box.checked && !typing && !document.hidden) {
        window.location.reload();
      }
    }, every * 1000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    const flash = sessionStorage.getItem(FLASH);
    if (flash) {
      sessionStorage.removeItem(FLASH);
      show(flash, true);
    }
    tokenState();
    autoRefresh();
    document.getElementById("token-form").addEventListener("submit", function (ev) {
      ev.preventDefault();
      const input = document.getElementById("token");
      if (input.value.trim()) {
        sessionStorage.setItem(KEY, input.value.trim());
      }
      input.value = "";
      tokenState();
    });
    document.getElementById("token-forget").addEventListener("click", function () {
      sessionStorage.removeItem(KEY);
      tokenState();
    });
    document.addEventListener("click", function (ev) {
      const button = ev.target.closest("button[data-action='rollback']");
      if (button) {
        ev.preventDefault();
        rollback(button);
      }
      const step = ev.target.closest("button[data-action='rollout']");
      if (step) {
        ev.preventDefault();
        rolloutAction(step);
      }
    });
    document.addEventListener("submit", function (ev) {
      const form = ev.target.closest("form[data-action='adopt']");
      if (form) {
        ev.preventDefault();
        adopt(form);
      }
    });
  });
})();
