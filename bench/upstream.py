"""The fake OpenAI upstream: nginx serving fixed bodies, so it is never the bottleneck.

nginx answers from memory in a few microseconds of CPU, far below anything Switchyard spends, so
the "direct" baseline measures the load generator and the loopback network, not a model. Each
scenario gets its own path prefix, because Switchyard always calls ``{api_base}/chat/completions``
and the prefix is the only thing a provider's ``api_base`` can vary:

* ``/fast/v1``    a chat.completion JSON with usage, at once (``return``);
* ``/sse/v1``     an SSE stream of several chunks then ``[DONE]`` (one write, at once);
* ``/delay50/v1`` the same JSON after 50 ms (``echo_sleep`` from the echo module);
* ``/delay500/v1`` the same after 500 ms.

Streams paced like a model's (a chunk every N ms) come from :mod:`bench.paced`, a small Python
server started beside nginx (:func:`start_paced`), since nginx cannot pace a stream.

nginx runs as one process (``master_process off``) in the foreground, so its pid is the one whose
CPU we read and the one we stop; its config, logs and temp files live in a private directory.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.deps import Tools

MODEL = "bench-model"
ANSWER_WORDS = ("Hello", " from", " the", " benchmark", " upstream", ".")
DELAYS_MS = (50, 500)


def completion_body() -> bytes:
    """A complete non-streamed chat.completion, with usage (what OpenAI returns)."""
    doc = {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(ANSWER_WORDS)},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18},
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def _chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def sse_body() -> bytes:
    """An OpenAI-style stream: role, one chunk per word, finish, usage chunk, ``[DONE]``."""
    chunks: list[dict[str, Any]] = [_chunk({"role": "assistant", "content": ""}, None)]
    chunks += [_chunk({"content": word}, None) for word in ANSWER_WORDS]
    chunks.append(_chunk({}, "stop"))
    usage = _chunk({}, None)
    usage["choices"] = []
    usage["usage"] = {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18}
    chunks.append(usage)
    lines = [b"data: " + json.dumps(c, separators=(",", ":")).encode() + b"\n\n" for c in chunks]
    return b"".join(lines) + b"data: [DONE]\n\n"


def _nginx_string(body: bytes) -> str:
    """Quote a body for nginx's config parser (single quotes; ``\\n`` escapes are understood)."""
    text = body.decode()
    if "$" in text:
        raise ValueError("nginx would expand '$' in a fixed body")
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def nginx_config(tools: Tools, workdir: Path, port: int) -> str:
    """The whole nginx.conf: one foreground process, no access log, keep-alive without limits."""
    json_body = _nginx_string(completion_body())
    sse = _nginx_string(sse_body())
    delays = "".join(
        f"""
        location = /delay{ms}/v1/chat/completions {{
            default_type application/json;
            echo_read_request_body;
            echo_sleep {ms / 1000};
            echo -n {json_body};
        }}"""
        for ms in DELAYS_MS
    )
    return f"""\
load_module {tools.echo_module};
daemon off;
master_process off;
worker_rlimit_nofile 65536;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{
    worker_connections 16384;
    multi_accept on;
}}
http {{
    access_log off;
    client_body_temp_path {workdir}/client_body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    client_body_buffer_size 64k;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    tcp_nodelay on;
    server_tokens off;
    server {{
        listen 127.0.0.1:{port} backlog=4096 reuseport;
        location = /fast/v1/chat/completions {{
            default_type application/json;
            return 200 {json_body};
        }}
        location = /sse/v1/chat/completions {{
            default_type text/event-stream;
            add_header Cache-Control no-cache;
            return 200 {sse};
        }}
{delays}
        # An OTLP/HTTP trace sink for --trace-sample runs: accepts and discards the spans.
        location = /otlp/v1/traces {{
            default_type application/x-protobuf;
            return 200 '';
        }}
        location / {{
            return 404 'bench upstream: unknown path';
        }}
    }}
}}
"""


@dataclass
class Upstream:
    """A running nginx; ``base(path)`` is the OpenAI ``api_base`` of one scenario."""

    port: int
    process: subprocess.Popen[bytes]
    workdir: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def base(self, scenario: str) -> str:
        return f"http://127.0.0.1:{self.port}/{scenario}/v1"

    def url(self, scenario: str) -> str:
        return f"{self.base(scenario)}/chat/completions"

    @property
    def otlp(self) -> str:
        """The trace sink's OTLP/HTTP traces URL."""
        return f"http://127.0.0.1:{self.port}/otlp/v1/traces"

    def stop(self) -> None:
        """Graceful stop (SIGQUIT), then SIGKILL if nginx lingers."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGQUIT)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


def start_upstream(tools: Tools, workdir: Path, port: int) -> Upstream:
    """Write the config, check it with ``nginx -t``, start nginx and wait until it accepts."""
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "nginx.conf"
    conf.write_text(nginx_config(tools, workdir, port), encoding="utf-8")
    cmd = [str(tools.nginx), "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "error.log")]
    check = subprocess.run([*cmd, "-t"], capture_output=True, text=True, check=False)
    if check.returncode != 0:
        raise RuntimeError(f"nginx rejected its config {conf}:\n{check.stderr}")
    log = (workdir / "stderr.log").open("wb")
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    log.close()
    upstream = Upstream(port=port, process=proc, workdir=workdir)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = (workdir / "error.log").read_text(errors="replace")
            raise RuntimeError(f"nginx exited with code {proc.returncode}:\n{err}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return upstream
        time.sleep(0.05)
    upstream.stop()
    raise RuntimeError(f"nginx did not start listening on port {port}")


@dataclass
class PacedUpstream:
    """A running :mod:`bench.paced` server; ``base(prefix)`` is one behaviour's ``api_base``."""

    port: int
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    def base(self, prefix: str) -> str:
        return f"http://127.0.0.1:{self.port}/{prefix}/v1"

    def url(self, prefix: str) -> str:
        return f"{self.base(prefix)}/chat/completions"

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


def start_paced(workdir: Path, port: int) -> PacedUpstream:
    """Start ``python -m bench.paced`` on ``port`` and wait until it accepts connections."""
    workdir.mkdir(parents=True, exist_ok=True)
    log = (workdir / "paced.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.paced", "--port", str(port)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    paced = PacedUpstream(port=port, process=proc)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the paced upstream exited with code {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return paced
        time.sleep(0.05)
    paced.stop()
    raise RuntimeError(f"the paced upstream did not start listening on port {port}")
