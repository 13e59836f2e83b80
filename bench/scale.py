#!/usr/bin/env python3
"""`make bench-scale` driver: many ImageRepositories of many tags against the project's
Kubernetes API stand-in and its paginating registry stand-in, measured on a release build
of `image-reflector serve`. Prints figures beside their targets and beside baselines
measured in the same run. It never asserts a timing; it fails only when the stack does
not work (a process dies, objects never become Ready).

Run through bench/scale.sh (which builds the binaries); knobs are environment variables
documented there.
"""

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse

GROUP = "image.toolkit.fluxcd.io"
RESOURCE = f"imagerepositories.{GROUP}"


def env_int(name, default):
    return int(os.environ.get(name, default))


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("BIN_DIR", os.path.join(ROOT, "target", "release"))
WORK = os.environ["WORK"]
REPOS = env_int("REPOS", 1000)
TAGS = env_int("TAGS", 1000)
NAMESPACES = env_int("NAMESPACES", 10)
PAGE_SIZE = env_int("PAGE_SIZE", 1000)
REGISTRY_PAGE_DEFAULT = env_int("REGISTRY_DEFAULT_PAGE_SIZE", 100)
REGISTRY_MAX_PAGE = env_int("REGISTRY_MAX_PAGE_SIZE", 0)
RESCAN_OBJECTS = env_int("RESCAN_OBJECTS", 200)
RESCAN_INTERVAL = os.environ.get("RESCAN_INTERVAL", "10s")
RESCAN_WINDOW = env_int("RESCAN_WINDOW", 35)
RESTART_WINDOW = env_int("RESTART_WINDOW", 60)
READY_TIMEOUT = env_int("READY_TIMEOUT", 600)
WEBHOOKS = os.environ.get("WEBHOOKS", "0") == "1"
EXTRA_SERVE_ARGS = os.environ.get("SERVE_ARGS", "").split()

procs = []


def log(msg):
    print(msg, flush=True)


def fail(msg):
    print(f"bench-scale: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def free_port():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start(name, argv, env=None, stdout_lines=0):
    """Starts a process; returns (Popen, first stdout lines)."""
    err = open(os.path.join(WORK, f"{name}.log"), "ab")
    p = subprocess.Popen(
        argv, stdout=subprocess.PIPE if stdout_lines else err, stderr=err, env=env
    )
    procs.append(p)
    lines = []
    for _ in range(stdout_lines):
        line = p.stdout.readline().decode().strip()
        if not line:
            fail(f"{name} exited before printing its address; see {WORK}/{name}.log")
        lines.append(line)
    return p, lines


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def proc_status(pid):
    """VmRSS and VmHWM in KiB from /proc/PID/status."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


class Http:
    """One keep-alive HTTP connection (per thread)."""

    def __init__(self, base):
        u = urllib.parse.urlparse(base)
        self.host, self.port = u.hostname, u.port
        self.conn = None

    def request(self, method, path, body=None, content_type="application/json"):
        for attempt in range(3):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
                headers = {"Accept": "application/json"}
                data = None
                if body is not None:
                    data = json.dumps(body).encode()
                    headers["Content-Type"] = content_type
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                payload = resp.read()
                self.last_headers = resp.headers
                return resp.status, payload
            except (http.client.HTTPException, OSError):
                self.conn = None
                if attempt == 2:
                    raise
        raise RuntimeError("unreachable")

    def json(self, method, path, body=None, content_type="application/json", ok=(200, 201)):
        status, payload = self.request(method, path, body, content_type)
        if status not in ok:
            fail(f"{method} {path}: HTTP {status}: {payload[:300]!r}")
        return json.loads(payload) if payload else None


def parallel(items, threads, work):
    """Runs work(http_thread_state, item) over items with `threads` threads."""
    chunks = [items[i::threads] for i in range(threads)]
    errors = []

    def run(chunk):
        try:
            for item in chunk:
                work(item)
        except BaseException as e:  # reported after join
            errors.append(e)

    ts = [threading.Thread(target=run, args=(c,)) for c in chunks]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]


local = threading.local()


def api_conn(base):
    c = getattr(local, "api", None)
    if c is None:
        c = local.api = Http(base)
    return c


def repo_names():
    return [(f"bench-{i % NAMESPACES}", f"repo-{i:05d}") for i in range(REPOS)]


def write_counts(api):
    return api.json("GET", "/debug/write-counts")


def diff_counts(after, before):
    out = {}
    for k, v in after.items():
        b = before.get(k, {"requests": 0, "persisted": 0})
        d = (v["requests"] - b["requests"], v["persisted"] - b["persisted"])
        if d != (0, 0):
            out[k] = d
    return out


def registry_counts(counter):
    return counter.json("GET", "/requests")


def metric(metrics_base, name, labels):
    """Sum of a Prometheus counter's samples whose labels include `labels`."""
    c = Http(metrics_base)
    status, payload = c.request("GET", "/metrics")
    if status != 200:
        return 0.0
    total = 0.0
    for line in payload.decode().splitlines():
        if not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def list_repos(api):
    return api.json("GET", f"/apis/{GROUP}/v1/imagerepositories")["items"]


def ready(obj):
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c.get("status") == "True"
    return False


def settled(obj):
    st = obj.get("status") or {}
    return ready(obj) and st.get("observedGeneration") == obj["metadata"].get("generation")


def fmt_counts(d):
    if not d:
        return "none"
    return ", ".join(f"{k}: {r} requests ({p} persisted)" for k, (r, p) in sorted(d.items()))


def main():
    os.makedirs(WORK, exist_ok=True)
    log(f"== bench-scale: {REPOS} ImageRepositories x {TAGS} tags, {NAMESPACES} namespaces")
    log(f"   work dir {WORK}; binaries from {BIN}")

    # --- the registry stand-in
    reg_proc, lines = start(
        "bench_registry",
        [
            f"{BIN}/bench_registry",
            "--tags", str(TAGS),
            "--default-page-size", str(REGISTRY_PAGE_DEFAULT),
            "--max-page-size", str(REGISTRY_MAX_PAGE),
        ],
        stdout_lines=2,
    )
    registry = lines[0].split()[1]
    counter = Http(lines[1].split()[1].rsplit("/", 1)[0])
    log(f"   registry stand-in {registry} (pages of {REGISTRY_PAGE_DEFAULT} without n"
        f"{', n above %d refused' % REGISTRY_MAX_PAGE if REGISTRY_MAX_PAGE else ''})")

    # --- certificates (the webhook server needs them even when no webhook is registered)
    certs = os.path.join(WORK, "certs")
    subprocess.run(
        [os.path.join(ROOT, "certs", "make-certs.sh")],
        env={**os.environ, "OUT": certs}, check=True, stdout=subprocess.DEVNULL,
    )
    webhook_port = free_port()

    # --- the API stand-in
    argv = [
        f"{BIN}/kube-standin", "--crds", os.path.join(ROOT, "manifests", "crds"),
        "--kubeconfig-out", os.path.join(WORK, "kubeconfig"),
    ]
    if WEBHOOKS:
        argv += [
            "--webhooks", certs,
            "--service", f"flux-system/image-reflector-webhook=127.0.0.1:{webhook_port}",
        ]
    standin_proc, lines = start("kube-standin", argv, stdout_lines=1)
    api_base = lines[0].split()[-1]
    api = Http(api_base)
    log(f"   API stand-in {api_base}; admission webhooks "
        f"{'INCLUDED (every create goes through /mutate and /validate over HTTPS)' if WEBHOOKS else 'left out (no webhook configuration loaded; WEBHOOKS=1 includes them)'}")
    for i in range(NAMESPACES):
        api.json("POST", "/api/v1/namespaces",
                 {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"bench-{i}"}})

    # --- baseline: the registry swept directly (no controller, no API): every repository's
    # tags/list, same page size, 8 connections (the scanner's per-host concurrency).
    names = repo_names()
    before = registry_counts(counter)
    t = time.monotonic()

    def sweep(item):
        c = getattr(local, "reg", None)
        if c is None:
            c = local.reg = Http(f"http://{registry}")
        path = f"/v2/bench/{item[1]}/tags/list?n={PAGE_SIZE}"
        got = 0
        while path:
            status, payload = c.request("GET", path)
            if status != 200:
                fail(f"registry sweep: {path}: HTTP {status}")
            got += len(json.loads(payload)["tags"])
            link = c.last_headers.get("Link") or ""
            path = link[link.index("<") + 1:link.index(">")] if "<" in link else None
        if got != TAGS:
            fail(f"registry sweep: {got} tags, expected {TAGS}")

    parallel(names, 8, sweep)
    sweep_s = time.monotonic() - t
    after = registry_counts(counter)
    sweep_requests = after["tag_requests"] - before["tag_requests"]

    # --- image-reflector serve
    data = os.path.join(WORK, "store")
    os.makedirs(data, exist_ok=True)
    health_port, metrics_port = free_port(), free_port()
    serve_argv = [
        f"{BIN}/image-reflector", "serve",
        "--webhook-addr", f"127.0.0.1:{webhook_port}",
        "--health-addr", f"127.0.0.1:{health_port}",
        "--metrics-addr", f"127.0.0.1:{metrics_port}",
        "--tls-cert-file", os.path.join(certs, "tls.crt"),
        "--tls-key-file", os.path.join(certs, "tls.key"),
        "--storage-path", data,
        "--registry-page-size", str(PAGE_SIZE),
    ] + EXTRA_SERVE_ARGS
    serve_env = {**os.environ, "KUBECONFIG": os.path.join(WORK, "kubeconfig"),
                 "RUST_LOG": os.environ.get("RUST_LOG", "info")}
    metrics_base = f"http://127.0.0.1:{metrics_port}"

    def start_reflector():
        p, _ = start("image-reflector", serve_argv, env=serve_env)
        health = Http(f"http://127.0.0.1:{health_port}")
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60:
            if p.poll() is not None:
                fail(f"image-reflector exited ({p.returncode}); see {WORK}/image-reflector.log")
            try:
                if health.request("GET", "/readyz")[0] == 200:
                    return p, time.monotonic() - t0
            except OSError:
                pass
            time.sleep(0.05)
        fail(f"image-reflector not ready after 60 s; see {WORK}/image-reflector.log")

    reflector, _ = start_reflector()
    time.sleep(1)
    idle = proc_status(reflector.pid)
    log(f"   image-reflector serve (release) pid {reflector.pid}, default flags plus "
        f"--registry-page-size {PAGE_SIZE} {' '.join(EXTRA_SERVE_ARGS)}")
    log(f"   idle after cache sync, no objects: RSS {idle['VmRSS'] / 1024:.1f} MiB")

    # --- 1. create every object, wait until all are Ready
    log("")
    log(f"== 1. create {REPOS} ImageRepositories (interval 1h), wait until every one is Ready")
    w0 = write_counts(api)
    r0 = registry_counts(counter)
    t_create = time.monotonic()

    def create(item):
        ns, name = item
        api_conn(api_base).json(
            "POST", f"/apis/{GROUP}/v1/namespaces/{ns}/imagerepositories",
            {
                "apiVersion": f"{GROUP}/v1", "kind": "ImageRepository",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"image": f"{registry}/bench/{name}", "interval": "1h", "insecure": True},
            },
        )

    parallel(names, 4, create)
    created_s = time.monotonic() - t_create
    peak_during = 0
    n_ready = 0
    while True:
        items = list_repos(api)
        n_ready = sum(1 for o in items if ready(o))
        try:
            peak_during = max(peak_during, proc_status(reflector.pid)["VmHWM"])
        except FileNotFoundError:
            fail(f"image-reflector died; see {WORK}/image-reflector.log")
        if n_ready == REPOS:
            break
        if time.monotonic() - t_create > READY_TIMEOUT:
            fail(f"only {n_ready}/{REPOS} Ready after {READY_TIMEOUT} s; see {WORK}/image-reflector.log")
        time.sleep(0.25)
    ready_s = time.monotonic() - t_create
    time.sleep(2)  # let trailing writes (events) land before counting
    w1 = write_counts(api)
    r1 = registry_counts(counter)
    first = diff_counts(w1, w0)
    # The driver's own creates are not the controller's writes.
    r, p = first.get(RESOURCE, (0, 0))
    first[RESOURCE] = (r - REPOS, p - REPOS)
    if first[RESOURCE] == (0, 0):
        del first[RESOURCE]
    first_reg = r1["tag_requests"] - r0["tag_requests"]
    tag_counts = {o["status"]["lastScanResult"]["tagCount"] for o in items}
    revisions = {f'{o["metadata"]["namespace"]}/{o["metadata"]["name"]}':
                 o["status"]["lastScanResult"]["revision"] for o in items}
    log(f"   created in {created_s:.1f} s; all {REPOS} Ready {ready_s:.1f} s after the first create "
        f"(tagCount {sorted(tag_counts)})")
    log(f"   registry: {first_reg} tags/list requests ({first_reg / REPOS:.2f} per repository)")
    log(f"   API writes by image-reflector during the first scans: {fmt_counts(first)}")

    # --- 2. unchanged rescans: a subset gets a short interval; count writes per rescan
    log("")
    subset = names[:RESCAN_OBJECTS]
    log(f"== 2. unchanged rescans: {len(subset)} objects patched to interval {RESCAN_INTERVAL}, "
        f"counted for {RESCAN_WINDOW} s")

    def set_interval(interval):
        def patch(item):
            ns, name = item
            api_conn(api_base).json(
                "PATCH", f"/apis/{GROUP}/v1/namespaces/{ns}/imagerepositories/{name}",
                {"spec": {"interval": interval}}, content_type="application/merge-patch+json",
            )
        parallel(subset, 4, patch)
        wanted = {f"{ns}/{n}" for ns, n in subset}
        t = time.monotonic()
        while time.monotonic() - t < 120:
            items = list_repos(api)
            done = [o for o in items
                    if f'{o["metadata"]["namespace"]}/{o["metadata"]["name"]}' in wanted and settled(o)]
            if len(done) == len(wanted):
                return
            time.sleep(0.25)
        fail(f"objects patched to interval {interval} did not settle within 120 s")

    set_interval(RESCAN_INTERVAL)
    w2 = write_counts(api)
    s2 = metric(metrics_base, "image_reflector_scans_total", {"result": "succeeded"})
    r2 = registry_counts(counter)
    time.sleep(RESCAN_WINDOW)
    w3 = write_counts(api)
    s3 = metric(metrics_base, "image_reflector_scans_total", {"result": "succeeded"})
    r3 = registry_counts(counter)
    rescans = s3 - s2
    rescan_writes = diff_counts(w3, w2)
    status_key = f"{RESOURCE}/status"
    status_writes = rescan_writes.get(status_key, (0, 0))[0]
    all_writes = sum(r for r, _ in rescan_writes.values())
    log(f"   {rescans:.0f} rescans (scans_total{{result=succeeded}}), "
        f"{r3['tag_requests'] - r2['tag_requests']} tags/list requests")
    log(f"   API writes in the window: {fmt_counts(rescan_writes)} (scans in flight at the "
        f"window's edges can skew the ratio by a few per cent)")
    peak_during = max(peak_during, proc_status(reflector.pid)["VmHWM"])
    set_interval("1h")

    # --- 3. restart: nothing is due, so nothing should reach the registry
    log("")
    log(f"== 3. restart image-reflector (same --storage-path), count for {RESTART_WINDOW} s")
    peak_first = max(peak_during, proc_status(reflector.pid)["VmHWM"])
    stop(reflector)
    w4 = write_counts(api)
    r4 = registry_counts(counter)
    reflector, restart_ready_s = start_reflector()
    t_restart = time.monotonic() - restart_ready_s
    while time.monotonic() - t_restart < RESTART_WINDOW:
        time.sleep(1)
    w5 = write_counts(api)
    r5 = registry_counts(counter)
    restart_requests = r5["requests"] - r4["requests"]
    restart_writes = diff_counts(w5, w4)
    items = list_repos(api)
    still_ready = sum(1 for o in items if ready(o))
    changed = sum(1 for o in items
                  if revisions.get(f'{o["metadata"]["namespace"]}/{o["metadata"]["name"]}')
                  != o["status"]["lastScanResult"]["revision"])
    peak_restart = proc_status(reflector.pid)["VmHWM"]
    log(f"   ready (caches synced) {restart_ready_s:.1f} s after start; "
        f"{still_ready}/{REPOS} still Ready, {changed} revisions changed")
    log(f"   registry requests: {restart_requests}; API writes: {fmt_counts(restart_writes)}")
    stop(reflector)

    # --- summary
    pages = first_reg / REPOS if REPOS else 0
    qps = None
    for i, a in enumerate(serve_argv):
        if a == "--registry-qps" and i + 1 < len(serve_argv):
            qps = float(serve_argv[i + 1])
    if qps is None:
        qps = 50.0  # the flag's default
    floor = first_reg / qps if qps > 0 else 0.0
    first_writes = sum(r for r, _ in first.values())
    per_object_first = first_writes / REPOS
    kube_qps, kube_burst = 50.0, 300
    for i, a in enumerate(serve_argv[:-1]):
        if a == "--kube-api-qps":
            kube_qps = float(serve_argv[i + 1])
        if a == "--kube-api-burst":
            kube_burst = int(serve_argv[i + 1])
    api_floor = max(0, first_writes - kube_burst) / kube_qps if kube_qps > 0 else 0.0
    log("")
    log("== results (targets from issue 5)")
    rows = [
        ("all Ready after creating", f"{ready_s:.1f} s", "<= 60 s",
         f"floor set by the client-side API limit: {first_writes} writes at --kube-api-qps "
         f"{kube_qps:g} (burst {kube_burst}) = {api_floor:.1f} s; by --registry-qps {qps:g}/host: "
         f"{first_reg} requests = {floor:.1f} s; raw: create alone {created_s:.1f} s, "
         f"registry swept directly {sweep_s:.1f} s ({sweep_requests} requests, 8 connections)"),
        ("peak RSS (VmHWM)", f"{peak_first / 1024:.1f} MiB", "< 64 MiB",
         f"idle with no objects {idle['VmRSS'] / 1024:.1f} MiB; after restart (store read "
         f"back) {peak_restart / 1024:.1f} MiB"),
        ("API writes per unchanged rescan",
         f"{(all_writes / rescans) if rescans else float('nan'):.2f} "
         f"({status_writes / rescans if rescans else float('nan'):.2f} status)", "1",
         f"a first scan: {per_object_first:.2f} writes per object (finalizer, status, event); "
         f"{sum(r for r, _ in restart_writes.values())} writes in {RESTART_WINDOW} s after the restart"),
        (f"registry requests, first {RESTART_WINDOW} s after restart", str(restart_requests), "0",
         f"the first scan of the same objects took {first_reg} tags/list requests "
         f"({pages:.2f} per repository)"),
    ]
    w = max(len(r[0]) for r in rows)
    for name, value, target, base in rows:
        log(f"  {name:<{w}}  {value:>18}   target {target}")
        log(f"      baseline: {base}")
    log("")
    log("Figures only: this benchmark never fails on a timing.")


if __name__ == "__main__":
    # SIGTERM ends like Ctrl-C: the finally clause stops every process started here.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        main()
    finally:
        for p in reversed(procs):
            stop(p)
