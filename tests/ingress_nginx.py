"""Real nginx configured as ingress-nginx configures it for the chart's rendered Ingress of the gateway.

No Ingress controller can run here, but nginx can (Debian's ``nginx``, which .ci/run installs): :func:`render_ingress` takes
the chart's Ingress from ``helm template`` (so its annotations are the chart's, ``gateway.ingress.nginxAnnotations``),
:func:`nginx_conf` writes the nginx.conf ingress-nginx's template would write for it, and :class:`IngressNginx` runs
nginx on it, in front of a gateway on loopback.

What is modelled, from kubernetes/ingress-nginx at dbb11b92 (``rootfs/etc/nginx/template/nginx.tmpl``; its defaults
are ``NewDefault`` in ``internal/ingress/controller/config/config.go`` lines 751-891, the annotations it reads are
``internal/ingress/annotations/proxy/main.go`` lines 29-46):

- the ``http`` block (nginx.tmpl 256-273): ``tcp_nodelay``, ``reset_timedout_connection``, ``keepalive_timeout``
  75 s / ``keepalive_requests`` 1000 toward clients, ``client_header_buffer_size`` 1k, ``large_client_header_buffers``
  ``4 8k``, ``client_body_buffer_size`` 8k, ``client_header_timeout``/``client_body_timeout`` 60 s (ConfigMap keys,
  :data:`CONFIG_DEFAULTS`, which a test may override as a platform team's ConfigMap does);
- ``map $http_upgrade $connection_upgrade`` with ``'' ''`` when upstream keepalive is on (nginx.tmpl 380-388) and
  ``map $http_x_request_id $req_id`` (390-396);
- ``upstream upstream_balancer`` with ``keepalive`` 320, ``keepalive_time`` 1h, ``keepalive_timeout`` 60 s,
  ``keepalive_requests`` 10000 (nginx.tmpl 518-539);
- the Ingress rule's server (``server_name`` its host) and, for any other host, the default server's 404 (nginx.tmpl
  669-680);
- the location (nginx.tmpl 1150-1356): ``$pass_access_scheme``/``$best_http_host``/``$pass_port`` (1190-1199),
  ``client_max_body_size`` (1271-1273), the proxied headers (``Host``, ``Upgrade``, ``Connection
  $connection_upgrade``, ``X-Request-ID``, ``X-Real-IP``, ``X-Forwarded-For $remote_addr`` as
  ``use-forwarded-headers`` is off by default, ``X-Forwarded-Host/Port/Proto/Scheme``, ``X-Scheme``,
  ``X-Original-Forwarded-For``, ``Proxy ""``: 1281-1330), ``proxy_connect/send/read_timeout`` (1333-1335),
  ``proxy_buffering``/``proxy_buffer_size``/``proxy_buffers``/``proxy_max_temp_file_size``/
  ``proxy_request_buffering``/``proxy_http_version`` (1337-1347), ``proxy_next_upstream`` as ``buildNextUpstream``
  writes it (non_idempotent only if asked: internal/ingress/controller/template/template.go 977-1008) with its
  timeout and tries (1353-1355), ``proxy_redirect off`` (1422-1423);
- each ``nginx.ingress.kubernetes.io/`` annotation of :data:`LOCATION_DEFAULTS` replaces its default, as the proxy
  annotation parser does; an nginx annotation this model does not know is an error, not ignored.

Not modelled: TLS (plain HTTP on loopback; ingress-nginx serves TLS with ``http2 on``, nginx.tmpl 642, so an
HTTP/2 client's WebSocket goes over HTTP/1.1 anyway: the Speech SDK's does), the Lua balancer (a plain ``upstream``
with one server, the gateway: ingress-nginx balances over the Service's endpoints itself), the default backend
service, rate limits, auth, ModSecurity, OpenTelemetry, metrics, custom error pages, the stream (TCP/UDP) block, the
status server, and ``worker_processes`` (one here; ingress-nginx starts one per CPU, each with its own keepalive pool).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.loopback import Loopback, free_port
from tests.ship import tools
from tests.ship.conftest import helm_template

#: The prefix of ingress-nginx's annotations.
NGINX = "nginx.ingress.kubernetes.io/"

#: The location's settings an annotation may change, with ingress-nginx's defaults (config.go 856-884).
LOCATION_DEFAULTS: dict[str, str] = {
    "proxy-connect-timeout": "5",
    "proxy-send-timeout": "60",
    "proxy-read-timeout": "60",
    "proxy-body-size": "1m",
    "proxy-buffering": "off",
    "proxy-buffer-size": "4k",
    "proxy-buffers-number": "4",
    "proxy-max-temp-file-size": "1024m",
    "proxy-request-buffering": "on",
    "proxy-http-version": "1.1",
    "proxy-next-upstream": "error timeout",
    "proxy-next-upstream-timeout": "0",
    "proxy-next-upstream-tries": "3",
}

#: ConfigMap keys (the controller's ``--configmap``) of what is modelled, with their defaults (config.go 782-891).
CONFIG_DEFAULTS: dict[str, str] = {
    "client-header-buffer-size": "1k",
    "large-client-header-buffers": "4 8k",
    "client-body-buffer-size": "8k",
    "client-header-timeout": "60",
    "client-body-timeout": "60",
    "keep-alive": "75",
    "keep-alive-requests": "1000",
    "upstream-keepalive-connections": "320",
    "upstream-keepalive-time": "1h",
    "upstream-keepalive-timeout": "60",
    "upstream-keepalive-requests": "10000",
    "retry-non-idempotent": "false",
}


def render_ingress(*args: str) -> dict[str, Any]:
    """The gateway's Ingress as the chart renders it (``helm template``, helm 3) with ``gateway.ingress.enabled=true``,
    class ``nginx`` and ``args`` (more of helm's arguments: ``--set``, ``--set-string``)."""
    on = ("--set", "gateway.ingress.enabled=true", "--set", "gateway.ingress.className=nginx")
    (ingress,) = [d for d in helm_template(tools.helm(3), *on, *args) if d["kind"] == "Ingress"]
    return ingress


def next_upstream(value: str, retry_non_idempotent: bool) -> str:
    """``proxy_next_upstream`` as template.go's ``buildNextUpstream`` writes it."""
    parts = [p for p in value.split(" ") if p and p != "non_idempotent"]
    if retry_non_idempotent or "non_idempotent" in value.split(" "):
        parts.append("non_idempotent")
    return " ".join(parts)


def nginx_conf(ingress: Mapping[str, Any], upstream_port: int, listen_port: int, prefix: Path,
               config: Mapping[str, str] | None = None) -> str:
    """The nginx.conf ingress-nginx writes for ``ingress`` (its ConfigMap ``config``), listening on 127.0.0.1:
    ``listen_port`` and proxying to 127.0.0.1:``upstream_port`` (the gateway, as its Service's endpoint)."""
    annotations = ingress["metadata"].get("annotations") or {}
    unknown = sorted(k for k in annotations if k.startswith(NGINX) and k.removeprefix(NGINX) not in LOCATION_DEFAULTS)
    if unknown:
        raise ValueError(f"ingress-nginx annotations this model does not know: {unknown}")
    loc = {**LOCATION_DEFAULTS, **{k.removeprefix(NGINX): str(v) for k, v in annotations.items() if k.startswith(NGINX)}}
    cfg = {**CONFIG_DEFAULTS, **(config or {})}
    if unknown_keys := sorted(set(cfg) - set(CONFIG_DEFAULTS)):
        raise ValueError(f"ConfigMap keys this model does not know: {unknown_keys}")
    (rule,) = ingress["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    if (path["path"], path["pathType"]) != ("/", "Prefix"):
        raise ValueError(f"only the path / (Prefix) is modelled, not {path}")
    backend = path["backend"]["service"]
    upstream_name = f"{ingress['metadata']['namespace']}-{backend['name']}-{backend['port']['number']}"
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""  # workers stay who we are
    retry = cfg["retry-non-idempotent"] == "true"
    return f"""\
# ingress-nginx's nginx.conf for Ingress {ingress['metadata']['namespace']}/{ingress['metadata']['name']} (tests/ingress_nginx.py)
{user}
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 1024; }}
http {{
    client_body_temp_path {prefix}/client-body;
    proxy_temp_path {prefix}/proxy-temp;
    fastcgi_temp_path {prefix}/fastcgi-temp;
    uwsgi_temp_path {prefix}/uwsgi-temp;
    scgi_temp_path {prefix}/scgi-temp;
    access_log {prefix}/access.log;

    tcp_nopush on;
    tcp_nodelay on;
    reset_timedout_connection on;
    keepalive_timeout {cfg['keep-alive']}s;
    keepalive_requests {cfg['keep-alive-requests']};
    client_header_buffer_size {cfg['client-header-buffer-size']};
    client_header_timeout {cfg['client-header-timeout']}s;
    large_client_header_buffers {cfg['large-client-header-buffers']};
    client_body_buffer_size {cfg['client-body-buffer-size']};
    client_body_timeout {cfg['client-body-timeout']}s;
    server_name_in_redirect off;
    port_in_redirect off;

    map $http_upgrade $connection_upgrade {{
        default upgrade;
        {"'' '';" if int(cfg['upstream-keepalive-connections']) > 0 else "'' close;"}
    }}
    map $http_x_request_id $req_id {{
        default $http_x_request_id;
        "" $request_id;
    }}

    upstream upstream_balancer {{
        server 127.0.0.1:{upstream_port};
        keepalive {cfg['upstream-keepalive-connections']};
        keepalive_time {cfg['upstream-keepalive-time']};
        keepalive_timeout {cfg['upstream-keepalive-timeout']}s;
        keepalive_requests {cfg['upstream-keepalive-requests']};
    }}

    server {{
        server_name "{rule['host']}";
        listen 127.0.0.1:{listen_port};
        set $proxy_upstream_name "-";

        location / {{
            set $namespace "{ingress['metadata']['namespace']}";
            set $ingress_name "{ingress['metadata']['name']}";
            set $service_name "{backend['name']}";
            set $service_port "{backend['port']['number']}";
            set $proxy_upstream_name "{upstream_name}";
            set $pass_access_scheme $scheme;
            set $pass_server_port $server_port;
            set $best_http_host $http_host;
            set $pass_port $pass_server_port;

            client_max_body_size {loc['proxy-body-size']};

            proxy_set_header Host $best_http_host;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header X-Request-ID $req_id;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Host $best_http_host;
            proxy_set_header X-Forwarded-Port $pass_port;
            proxy_set_header X-Forwarded-Proto $pass_access_scheme;
            proxy_set_header X-Forwarded-Scheme $pass_access_scheme;
            proxy_set_header X-Scheme $pass_access_scheme;
            proxy_set_header X-Original-Forwarded-For $http_x_forwarded_for;
            proxy_set_header X-Original-Forwarded-Host $http_x_forwarded_host;
            proxy_set_header Proxy "";

            proxy_connect_timeout {loc['proxy-connect-timeout']}s;
            proxy_send_timeout {loc['proxy-send-timeout']}s;
            proxy_read_timeout {loc['proxy-read-timeout']}s;

            proxy_buffering {loc['proxy-buffering']};
            proxy_buffer_size {loc['proxy-buffer-size']};
            proxy_buffers {loc['proxy-buffers-number']} {loc['proxy-buffer-size']};
            proxy_max_temp_file_size {loc['proxy-max-temp-file-size']};
            proxy_request_buffering {loc['proxy-request-buffering']};
            proxy_http_version {loc['proxy-http-version']};

            proxy_next_upstream {next_upstream(loc['proxy-next-upstream'], retry)};
            proxy_next_upstream_timeout {loc['proxy-next-upstream-timeout']};
            proxy_next_upstream_tries {loc['proxy-next-upstream-tries']};

            proxy_pass http://upstream_balancer;
            proxy_redirect off;
        }}
    }}

    # any other host: ingress-nginx's default server
    server {{
        listen 127.0.0.1:{listen_port} default_server;
        access_log off;
        location / {{
            return 404;
        }}
    }}
}}
"""


@dataclass
class IngressNginx(Loopback):
    """nginx running :func:`nginx_conf` in the foreground (``daemon off``, a master and one worker)."""

    process: subprocess.Popen[bytes]
    port: int
    prefix: Path
    conf: str

    def error_log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def access_log(self) -> str:
        path = self.prefix / "access.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextlib.contextmanager
def ingress_nginx(ingress: Mapping[str, Any], upstream_port: int, prefix: Path,
                  config: Mapping[str, str] | None = None) -> Iterator[IngressNginx]:
    """Run nginx for ``ingress`` in front of 127.0.0.1:``upstream_port`` in the folder ``prefix`` (its conf, temp
    folders, pid file and logs); stopped (SIGTERM) on exit. Fails with nginx's error log if it does not
    start listening within 5 s."""
    if shutil.which("nginx") is None:
        raise RuntimeError("nginx is not installed: run `apt-get install nginx` (.ci/run installs it)")
    prefix.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = nginx_conf(ingress, upstream_port, port, prefix, config)
    (prefix / "nginx.conf").write_text(conf)
    process = subprocess.Popen(["nginx", "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", str(prefix / "nginx.conf"),
                                "-g", "daemon off; master_process on;"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    server = IngressNginx(process, port, prefix, conf)
    try:
        deadline = time.monotonic() + 5
        while True:
            assert process.poll() is None, f"nginx exited {process.returncode}: {server.error_log()}"
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            assert time.monotonic() < deadline, f"nginx did not listen within 5 s: {server.error_log()}"
            time.sleep(0.01)
        yield server
    finally:
        if process.poll() is None:
            process.terminate()  # SIGTERM: nginx's fast stop (its workers with it), not waiting for connections
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
