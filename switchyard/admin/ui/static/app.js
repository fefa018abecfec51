// Small enhancements for every page; everything also works without JavaScript.
"use strict";
(function () {
  const csrf = document.body.dataset.csrf || "";
  const readOnly = document.body.dataset.readOnly === "1";

  // Signed in read-only: every change is refused (403), so no form that makes one is usable.
  // Its fields stay (disabled) to show what is set; a form a live page adds later is stopped
  // when sent. Sign-out is the one form a read-only session sends.
  const changes = "form[method=post]:not(.signout)";
  if (readOnly) {
    document.querySelectorAll(changes).forEach((form) => {
      form.querySelectorAll("button, input, select, textarea").forEach((c) => { c.disabled = true; });
    });
    document.addEventListener("submit", (event) => {
      if (event.target.matches && event.target.matches(changes)) {
        event.preventDefault();
        event.stopImmediatePropagation();
      }
    }, true);
  }

  // Copy buttons: <button data-copy="input-id">
  document.querySelectorAll("[data-copy]").forEach((button) => {
    button.addEventListener("click", async () => {
      const input = document.getElementById(button.dataset.copy);
      if (!input) return;
      input.select();
      try {
        await navigator.clipboard.writeText(input.value);
      } catch (e) {
        document.execCommand("copy");
      }
      button.textContent = "Copied";
      setTimeout(() => { button.textContent = "Copy"; }, 2000);
    });
  });

  // <input type=file data-load-into="textarea-id">: read the file into the textarea.
  document.querySelectorAll("input[type=file][data-load-into]").forEach((input) => {
    input.addEventListener("change", () => {
      const file = input.files && input.files[0];
      const target = document.getElementById(input.dataset.loadInto);
      if (!file || !target) return;
      file.text().then((text) => { target.value = text; });
    });
  });

  // "Send a test request": post with the CSRF header, show status and latency in place. One
  // listener on the document, so a card the Queues page adds live (a new deployment) has it too.
  document.addEventListener("submit", async (event) => {
    const form = event.target.closest("form[data-test]");
    if (!form) return;
    event.preventDefault();
    const card = form.closest("[data-dep]");
    const out = card && card.querySelector("[data-f=test-result]");
    const button = form.querySelector("button");
    button.disabled = true;
    if (out) { out.textContent = "sending…"; out.className = "result"; }
    try {
      const resp = await fetch(form.action, {
        method: "POST",
        headers: { "X-CSRF-Token": csrf, "Accept": "application/json" },
        credentials: "same-origin",
      });
      const doc = await resp.json();
      if (out) {
        const status = doc.status || resp.status;
        const ms = doc.latency_ms !== undefined ? ` in ${doc.latency_ms} ms` : "";
        out.textContent = `${status}${ms}` + (doc.ok ? " ✓" : ` – ${doc.error || "failed"}`);
        out.className = "result " + (doc.ok ? "ok" : "bad");
        out.dataset.status = String(status);
      }
    } catch (e) {
      if (out) { out.textContent = "could not reach the gateway"; out.className = "result bad"; }
    } finally {
      button.disabled = false;
    }
  });

  // <form data-confirm="Really revoke?">: the first click arms the button (its text becomes the
  // question) and only a second click within 5 s submits. No dialog: pages never open one.
  document.querySelectorAll("form[data-confirm]").forEach((form) => {
    const button = form.querySelector("button[type=submit]");
    if (!button) return;
    const label = button.textContent;
    let armed = null;
    form.addEventListener("submit", (event) => {
      if (armed) { clearTimeout(armed); armed = null; return; }
      event.preventDefault();
      button.textContent = form.dataset.confirm;
      button.classList.add("armed");
      armed = setTimeout(() => {
        armed = null;
        button.textContent = label;
        button.classList.remove("armed");
      }, 5000);
    });
  });

  window.Switchyard = { csrf };
})();
