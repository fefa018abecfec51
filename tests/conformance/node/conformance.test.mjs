// Switchyard's NATS API (docs/nats-api.md) driven from nats.js: the contract as a caller in
// another language sees it, with none of switchyard.client's help.
//
// Run by tests/test_conformance_node.py against a real stack; the stack's coordinates arrive
// as JSON in $CONFORMANCE_STACK (see that test for the fields). Every case follows the
// documented reply protocol on its own inbox: optional `accepted`, keepalives, chunks in
// `Sy-Seq` order, exactly one `final` or `error`, then a zero-length terminator without headers.

import { randomBytes, randomUUID } from "node:crypto";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { connect, createInbox, headers as natsHeaders } from "nats";

const cfg = JSON.parse(process.env.CONFORMANCE_STACK ?? "{}");
// "main": the stack is whole; "no-head": the test runner stopped every head first.
const phase = cfg.phase ?? "main";
const inPhase = (name) => (phase === name ? describe : describe.skip);
const enc = new TextEncoder();
const dec = new TextDecoder();
const REPLY_TIMEOUT_MS = 10_000;
let nc;

before(async () => {
  nc = await connect({
    servers: cfg.servers,
    name: `${cfg.identity}-conformance`,
    // The server refuses the default `_INBOX` prefix for this identity (docs: Getting an identity).
    inboxPrefix: `_INBOX_${cfg.identity}`,
    tls: {
      caFile: join(cfg.certDir, "ca.pem"),
      certFile: join(cfg.certDir, `${cfg.identity}.pem`),
      keyFile: join(cfg.certDir, `${cfg.identity}-key.pem`),
    },
    maxReconnectAttempts: 0,
  });
});

after(async () => {
  await nc?.close();
});

const chatBody = (model, extra = {}) => ({
  model,
  messages: [{ role: "user", content: "hello conformance" }],
  ...extra,
});

function traceparent() {
  return `00-${randomBytes(16).toString("hex")}-${randomBytes(8).toString("hex")}-01`;
}

/** Every optional request header, with a valid value. */
function optionalHeaders() {
  return {
    "Sy-Request-Id": `node-${randomUUID()}`,
    "Sy-Attempt": "1",
    "Sy-Deadline": String(Date.now() + 60_000),
    traceparent: traceparent(),
    tracestate: "conformance=1",
  };
}

/**
 * Send one request and collect every reply until the terminator.
 * Returns {messages: [{kind, status, headers, body}], terminated, ms}.
 */
async function ask(subject, body, hdrs = {}, { timeoutMs = REPLY_TIMEOUT_MS } = {}) {
  const inbox = createInbox(`_INBOX_${cfg.identity}`);
  const sub = nc.subscribe(inbox);
  const h = natsHeaders();
  for (const [k, v] of Object.entries(hdrs)) h.set(k, v);
  const data = typeof body === "string" || body instanceof Uint8Array
    ? body
    : enc.encode(JSON.stringify(body));
  const started = Date.now();
  const timer = setTimeout(() => sub.unsubscribe(), timeoutMs);
  nc.publish(subject, data, { reply: inbox, headers: h });
  const messages = [];
  let terminated = false;
  for await (const m of sub) {
    if (m.data.length === 0 && !m.headers) {
      terminated = true;
      sub.unsubscribe();
      break;
    }
    const get = (name) => m.headers?.get(name) || undefined;
    messages.push({
      kind: get("Sy-Kind"),
      natsStatus: m.headers?.code || undefined,
      status: get("Sy-Status") ? Number(get("Sy-Status")) : undefined,
      get,
      body: m.data,
    });
  }
  clearTimeout(timer);
  return { messages, terminated, ms: Date.now() - started };
}

function describeReplies(r) {
  const kinds = r.messages.map((m) => m.kind + (m.status ? `(${m.status})` : "")).join(", ");
  return `[${kinds}]${r.terminated ? " + terminator" : " and no terminator"} after ${r.ms} ms`;
}

/** The protocol's shape: accepted?, keepalive*, chunk*, exactly one final|error, terminator. */
function assertShape(r) {
  assert.ok(r.terminated, `no zero-length terminator: ${describeReplies(r)}`);
  const kinds = r.messages.map((m) => m.kind);
  const ends = kinds.filter((k) => k === "final" || k === "error");
  assert.equal(ends.length, 1, `want exactly one final or error: ${describeReplies(r)}`);
  assert.ok(
    ["final", "error"].includes(kinds.at(-1)),
    `final/error must come last before the terminator: ${describeReplies(r)}`,
  );
  // `accepted` comes from the head, everything else from a model-proxy: it may arrive after
  // chunks (the model-proxy was faster than the head's publish ack), or after the terminator.
  assert.ok(kinds.filter((k) => k === "accepted").length <= 1, `accepted twice: ${describeReplies(r)}`);
  for (const k of kinds) {
    assert.ok(
      ["accepted", "keepalive", "chunk", "final", "error"].includes(k),
      `unknown Sy-Kind ${k}`,
    );
  }
  return r.messages.at(-1);
}

function assertFinal(r, { provider = true } = {}) {
  const last = assertShape(r);
  assert.equal(last.kind, "final", `want a final: ${describeReplies(r)} ${dec.decode(last.body)}`);
  assert.equal(last.status, 200);
  if (provider) {
    assert.ok(last.get("Sy-Deployment"), "final names the deployment (Sy-Deployment)");
    assert.ok(Number(last.get("Sy-Attempts")) >= 1, "final carries Sy-Attempts");
  }
  return last;
}

function assertCompletion(r) {
  const last = assertFinal(r);
  assert.ok(r.messages.every((m) => m.kind !== "chunk"), "no chunks for a non-streaming request");
  const completion = JSON.parse(dec.decode(last.body));
  assert.equal(completion.object, "chat.completion");
  assert.equal(completion.choices[0].message.content, "echo: hello conformance");
  return completion;
}

function assertStream(r) {
  const last = assertFinal(r);
  assert.equal(last.body.length, 0, "a streaming final is empty");
  const chunks = r.messages.filter((m) => m.kind === "chunk");
  assert.ok(chunks.length >= 2, `want several chunks: ${describeReplies(r)}`);
  chunks.forEach((c, i) => {
    assert.equal(c.get("Sy-Seq"), String(i), "chunks arrive in Sy-Seq order from 0");
    assert.match(c.get("Sy-Attempt") ?? "", /^\d+\.\d+$/, "chunk Sy-Attempt is <client>.<delivery>");
  });
  assert.ok(r.messages.indexOf(chunks.at(-1)) < r.messages.indexOf(last), "final after chunks");
  const text = chunks
    .map((c) => JSON.parse(dec.decode(c.body)))
    .map((c) => {
      assert.equal(c.object, "chat.completion.chunk");
      return c.choices[0]?.delta?.content ?? "";
    })
    .join("");
  assert.equal(text, "echo: hello conformance");
}

function assertError(r, status, code, { param } = {}) {
  const last = assertShape(r);
  const text = dec.decode(last.body);
  assert.equal(last.kind, "error", `want an error ${status}: ${describeReplies(r)} ${text}`);
  assert.equal(last.status, status, `want status ${status}, got ${last.status}: ${text}`);
  const body = JSON.parse(text);
  assert.deepEqual(
    Object.keys(body.error).sort(),
    ["code", "message", "param", "type"],
    "the OpenAI error shape",
  );
  if (code !== undefined) assert.equal(body.error.code, code, text);
  if (param !== undefined) assert.equal(body.error.param, param, text);
  assert.ok(body.error.message, "an error says what happened");
  return { last, error: body.error };
}

const auth = (key = cfg.apiKey) => ({ Authorization: `Bearer ${key}` });
const A = cfg.aliases ?? {};

inPhase("main")("chat", () => {
  test("with only Authorization: answered, twice in a row", async () => {
    // Two id-less requests: the second was silently dropped as a JetStream duplicate of the
    // first (both had Nats-Msg-Id ":1:0"), answered only with `accepted`.
    for (let i = 0; i < 2; i++) {
      assertCompletion(await ask("llm.v1.chat", chatBody(A.echo), auth()));
    }
  });

  test("with every optional header", async () => {
    assertCompletion(await ask("llm.v1.chat", chatBody(A.echo), { ...auth(), ...optionalHeaders() }));
  });

  for (const left of ["Sy-Request-Id", "Sy-Attempt", "Sy-Deadline", "traceparent", "tracestate"]) {
    test(`without ${left}`, async () => {
      const hdrs = { ...auth(), ...optionalHeaders() };
      delete hdrs[left];
      if (left === "traceparent") delete hdrs.tracestate; // tracestate alone is meaningless
      assertCompletion(await ask("llm.v1.chat", chatBody(A.echo), hdrs));
    });
  }

  test("a re-send with the same Sy-Request-Id and Sy-Attempt + 1 is answered", async () => {
    const hdrs = { ...auth(), ...optionalHeaders() };
    assertCompletion(await ask("llm.v1.chat", chatBody(A.echo), hdrs));
    assertCompletion(
      await ask("llm.v1.chat", chatBody(A.echo), { ...hdrs, "Sy-Attempt": "2" }),
    );
  });

  test("keepalives during provider silence, then the final", async () => {
    const r = await ask("llm.v1.chat", chatBody(A.slow), auth());
    assertCompletion(r);
    assert.ok(
      r.messages.some((m) => m.kind === "keepalive"),
      `want a keepalive while the provider is silent: ${describeReplies(r)}`,
    );
  });
});

inPhase("main")("stream", () => {
  test("with only Authorization: chunks in order, empty final, terminator; twice", async () => {
    for (let i = 0; i < 2; i++) {
      assertStream(await ask("llm.v1.chat", chatBody(A.echo, { stream: true }), auth()));
    }
  });

  test("with every optional header", async () => {
    const hdrs = { ...auth(), ...optionalHeaders() };
    assertStream(await ask("llm.v1.chat", chatBody(A.echo, { stream: true }), hdrs));
  });

  for (const left of ["Sy-Request-Id", "Sy-Attempt", "Sy-Deadline", "traceparent"]) {
    test(`without ${left}`, async () => {
      const hdrs = { ...auth(), ...optionalHeaders() };
      delete hdrs[left];
      if (left === "traceparent") delete hdrs.tracestate;
      assertStream(await ask("llm.v1.chat", chatBody(A.echo, { stream: true }), hdrs));
    });
  }
});

inPhase("main")("other subjects", () => {
  test("llm.v1.models lists the key's models", async () => {
    const last = assertFinal(await ask("llm.v1.models", {}, auth()), { provider: false });
    const listing = JSON.parse(dec.decode(last.body));
    assert.equal(listing.object, "list");
    const ids = listing.data.map((m) => m.id);
    assert.ok(ids.includes(A.echo), `${A.echo} in ${ids}`);
  });

  test("llm.v1.complete answers a text_completion", async () => {
    const last = assertFinal(
      await ask("llm.v1.complete", { model: A.echo, prompt: "hello conformance" }, auth()),
    );
    assert.equal(JSON.parse(dec.decode(last.body)).object, "text_completion");
  });

  test("llm.v1.embed answers an embeddings list", async () => {
    const last = assertFinal(
      await ask("llm.v1.embed", { model: A.echo, input: "hello conformance" }, auth()),
    );
    assert.equal(JSON.parse(dec.decode(last.body)).object, "list");
  });
});

/** A dialect stream: chunks are whole SSE events in Sy-Seq order, the final is empty. */
function assertEventStream(r, lastEvent) {
  const last = assertFinal(r);
  assert.equal(last.body.length, 0, "a streaming final is empty");
  const chunks = r.messages.filter((m) => m.kind === "chunk");
  chunks.forEach((c, i) => assert.equal(c.get("Sy-Seq"), String(i), "chunks in Sy-Seq order"));
  const text = chunks.map((c) => dec.decode(c.body)).join("");
  assert.match(text, /^event: /, "chunks are SSE events");
  assert.ok(text.includes(`event: ${lastEvent}`), `the dialect's own end event ${lastEvent}`);
  return text;
}

inPhase("main")("dialects", () => {
  test("llm.v1.responses answers a response object", async () => {
    const body = { model: A.echo, input: "hello conformance" };
    const response = JSON.parse(dec.decode(assertFinal(await ask("llm.v1.responses", body, auth())).body));
    assert.equal(response.object, "response");
    assert.equal(response.output[0].content[0].text, "echo: hello conformance");
  });

  test("llm.v1.responses streams Responses events", async () => {
    const body = { model: A.echo, input: "hello conformance", stream: true };
    assertEventStream(await ask("llm.v1.responses", body, auth()), "response.completed");
  });

  test("llm.v1.responses refuses stored state (400 naming the field)", async () => {
    const body = { model: A.echo, input: "x", previous_response_id: "resp_1" };
    assertError(await ask("llm.v1.responses", body, auth()), 400, undefined, {
      param: "previous_response_id",
    });
  });

  const anthropic = (extra = {}) => ({
    model: A.echo,
    max_tokens: 64,
    messages: [{ role: "user", content: "hello conformance" }],
    ...extra,
  });

  test("llm.v1.messages answers an Anthropic message", async () => {
    const last = assertFinal(await ask("llm.v1.messages", anthropic(), auth()));
    const message = JSON.parse(dec.decode(last.body));
    assert.equal(message.type, "message");
    assert.equal(message.content[0].text, "echo: hello conformance");
  });

  test("llm.v1.messages streams Anthropic events", async () => {
    assertEventStream(await ask("llm.v1.messages", anthropic({ stream: true }), auth()), "message_stop");
  });

  test("llm.v1.messages without max_tokens is a 400 naming it", async () => {
    const body = anthropic();
    delete body.max_tokens;
    assertError(await ask("llm.v1.messages", body, auth()), 400, undefined, { param: "max_tokens" });
  });

  test("llm.v1.count_tokens estimates a message's input tokens", async () => {
    const body = anthropic();
    delete body.max_tokens;
    const count = JSON.parse(dec.decode(assertFinal(await ask("llm.v1.count_tokens", body, auth())).body));
    assert.ok(Number.isInteger(count.input_tokens) && count.input_tokens > 3, JSON.stringify(count));
  });

  test("llm.v1.input_tokens estimates a response request's input tokens", async () => {
    const body = { model: A.echo, input: "hello conformance" };
    const count = JSON.parse(dec.decode(assertFinal(await ask("llm.v1.input_tokens", body, auth())).body));
    assert.equal(count.object, "response.input_tokens");
    assert.ok(Number.isInteger(count.input_tokens) && count.input_tokens > 3, JSON.stringify(count));
  });
});

inPhase("main")("errors", () => {
  test("400: body is not JSON", async () => {
    assertError(await ask("llm.v1.chat", "not json", auth()), 400, "invalid_json");
  });

  test("400: no model (param names the field)", async () => {
    assertError(
      await ask("llm.v1.chat", { messages: [{ role: "user", content: "x" }] }, auth()),
      400,
      undefined,
      { param: "model" },
    );
  });

  test("400: no messages (param names the field)", async () => {
    assertError(await ask("llm.v1.chat", { model: A.echo }, auth()), 400, undefined, {
      param: "messages",
    });
  });

  for (const [header, value] of [
    ["Sy-Request-Id", "has spaces"],
    ["Sy-Attempt", "first"],
    ["Sy-Deadline", "soon"],
    ["traceparent", "not-a-trace"],
  ]) {
    test(`400: malformed ${header} (invalid_header, param names it)`, async () => {
      assertError(
        await ask("llm.v1.chat", chatBody(A.echo), { ...auth(), [header]: value }),
        400,
        "invalid_header",
        { param: header },
      );
    });
  }

  test("400: the provider rejected the request", async () => {
    assertError(await ask("llm.v1.chat", chatBody(A.reject400), auth()), 400);
  });

  test("401: no key", async () => {
    assertError(await ask("llm.v1.chat", chatBody(A.echo), {}), 401, "missing_api_key");
  });

  test("401: bad key", async () => {
    assertError(
      await ask("llm.v1.chat", chatBody(A.echo), auth("sk-sy-not-a-key")),
      401,
      "invalid_api_key",
    );
  });

  test("403: the key may not use this model", async () => {
    assertError(
      await ask("llm.v1.chat", chatBody(A.echo), auth(cfg.restrictedKey)),
      403,
      "model_not_allowed",
      { param: "model" },
    );
  });

  test("404: unknown model alias", async () => {
    assertError(
      await ask("llm.v1.chat", chatBody("no-such-model"), auth()),
      404,
      "model_not_found",
    );
  });

  test("413: body larger than ingress.max_body_bytes", async () => {
    const big = "x".repeat(cfg.maxBodyBytes + 1);
    const r = await ask("llm.v1.chat", chatBody(A.echo, { padding: big }), auth());
    assertError(r, 413, "request_too_large");
    assert.ok(r.ms < 5000, `refused at once, not after retries (${r.ms} ms)`);
  });

  test("429: every deployment was rate limited upstream (Sy-Retry-After)", async () => {
    const { last } = assertError(await ask("llm.v1.chat", chatBody(A.limited429), auth()), 429);
    assert.ok(Number(last.get("Sy-Retry-After")) > 0, "429 carries Sy-Retry-After");
  });

  test("502: the provider failed on every deployment (each attempt listed)", async () => {
    const { error } = assertError(await ask("llm.v1.chat", chatBody(A.fail500), auth()), 502);
    assert.match(error.message, /500/, "the message lists the attempt's failure");
  });

  test("503: a provider key is unavailable (secret_unavailable, naming the secret)", async () => {
    const { error } = assertError(
      await ask("llm.v1.chat", chatBody(A.noKey), auth()),
      503,
      "secret_unavailable",
    );
    assert.match(error.message, new RegExp(cfg.missingSecret));
  });

  test("429: this tenant's queue for a saturated deployment is full (tenant_queue_full, Sy-Retry-After)", async () => {
    // The deployment serves one request at a time; while it is saturated each tenant may have
    // `holdLimit` requests waiting, and its next ones are refused (nobody else's are).
    const n = cfg.holdLimit + 4;
    const all = await Promise.all(
      Array.from({ length: n }, () => ask("llm.v1.chat", chatBody(A.narrow), auth())),
    );
    const refused = all.filter((r) => r.messages.at(-1)?.status === 429);
    assert.ok(refused.length >= 1, `want a tenant_queue_full refusal: ${all.map(describeReplies)}`);
    for (const r of refused) {
      const { last } = assertError(r, 429, "tenant_queue_full");
      assert.ok(Number(last.get("Sy-Retry-After")) > 0, "429 tenant_queue_full carries Sy-Retry-After");
    }
    const served = all.filter((x) => !refused.includes(x));
    assert.ok(served.length >= 1, "the requests that fit were served");
    for (const r of served) assertCompletion(r);
  });

  test("504: Sy-Deadline already passed", async () => {
    const hdrs = { ...auth(), "Sy-Deadline": String(Date.now() - 1000) };
    assertError(await ask("llm.v1.chat", chatBody(A.echo), hdrs), 504, "deadline_exceeded");
  });

  test("504: Sy-Deadline passes while the provider works", async () => {
    const hdrs = { ...auth(), "Sy-Deadline": String(Date.now() + 800) };
    const r = await ask("llm.v1.chat", chatBody(A.slow), hdrs);
    assertError(r, 504, "deadline_exceeded");
    assert.ok(r.ms < 2500, `answered at the deadline, not after the provider (${r.ms} ms)`);
  });
});

inPhase("no-head")("no head running", () => {
  test("no responders: a NATS status 503 on the inbox, then nothing", async () => {
    // Not a Switchyard reply: nats-server answers for the absent heads (no Sy-Kind, no body,
    // no terminator). LLMClient retries twice, then raises 503 no_workers.
    const r = await ask("llm.v1.chat", chatBody(A.echo), auth(), { timeoutMs: 2000 });
    assert.equal(r.messages.length, 1, describeReplies(r));
    assert.equal(r.messages[0].natsStatus, 503);
    assert.equal(r.messages[0].kind, undefined);
    assert.equal(r.messages[0].body.length, 0);
    assert.ok(!r.terminated);
  });
});
