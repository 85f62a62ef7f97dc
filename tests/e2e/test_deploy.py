"""The deployment material: the Kubernetes manifests in deploy/kubernetes/ parse and hang
together (namespaces first, Services and the PodDisruptionBudget select the pods, named
ports exist), the Role grants exactly the rules `gateway/src/kubernetes/` declares between
`// rbac:begin` and `// rbac:end` (and covers every call a running Portico makes to a fake
API server), the ConfigMap's config.toml validates with the real binary and matches the
manifests (names, ports, paths, grace periods), the Deployment runs hardened non-root pods,
the systemd unit has the keys it relies on, and the Dockerfile builds with --locked into a
non-root image."""

import configparser
import hashlib
import http.server
import json
import re
import shutil
import signal
import subprocess
import threading
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request

import pytest
import yaml

from conftest import BIN_DIR, ROOT

KUBE_DIR = ROOT / "deploy" / "kubernetes"
KUBE_SRC = ROOT / "gateway" / "src" / "kubernetes"
UNIT = ROOT / "deploy" / "systemd" / "portico.service"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

# Kinds that live in a namespace (every other kind used here is cluster-wide).
CLUSTER_KINDS = {"Namespace", "ClusterRole", "ClusterRoleBinding"}

# The keys only `kind = "kubernetes"` workers have: a binary that predates that kind calls
# each of them an unknown field.
KUBERNETES_KEYS = {"namespace", "deployment", "statefulset", "service", "port",
                   "api_server", "token_file", "ca_file"}
UNSUPPORTED = '"kubernetes" is not supported yet'


# --- helpers ---------------------------------------------------------------------------------

def manifest_files():
    return sorted(p for p in KUBE_DIR.iterdir() if p.suffix in (".yaml", ".yml"))


def documents():
    """Every (file, document) of deploy/kubernetes, in `kubectl apply -f` order."""
    found = []
    for path in manifest_files():
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                found.append((path, doc))
    return found


def one(kind, name, namespace=None):
    matches = [doc for _, doc in documents()
               if doc.get("kind") == kind and doc["metadata"]["name"] == name
               and (namespace is None or doc["metadata"].get("namespace") == namespace)]
    assert len(matches) == 1, f"expected one {kind} {name!r}, found {len(matches)}"
    return matches[0]


def config_text():
    return one("ConfigMap", "portico-config", "portico")["data"]["config.toml"]


def config():
    return tomllib.loads(config_text())


def port_of(address):
    return int(address.rsplit(":", 1)[1])


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def container_ports(pod_spec):
    return {p["name"]: p["containerPort"]
            for c in pod_spec["containers"] for p in c.get("ports", []) if "name" in p}


def triples(rules):
    """Role rules as a set of (API group, resource, verb)."""
    return {(group, resource, verb)
            for rule in rules
            for group in rule["apiGroups"]
            for resource in rule["resources"]
            for verb in rule["verbs"]}


def validate(path):
    return subprocess.run([str(BIN_DIR / "portico"), "validate", "--config", str(path)],
                          capture_output=True, text=True, timeout=60)


def only_kubernetes_unsupported(output):
    """True when every problem `portico validate` printed comes from a binary that does not
    know `kind = "kubernetes"` yet: the exact refusal, plus the kind's own keys reported as
    unknown fields."""
    problems = [line for line in output.splitlines()
                if line.strip() and not re.search(r": \d+ problems?$", line)]
    if not any(UNSUPPORTED in line for line in problems):
        return False
    for line in problems:
        if UNSUPPORTED in line:
            continue
        unknown = re.search(r"\.workers\.(\w+): unknown field `(\w+)`", line)
        if not (unknown and unknown.group(2) in KUBERNETES_KEYS):
            return False
    return True


def skip_if_kubernetes_unsupported(result):
    if result.returncode != 0 and only_kubernetes_unsupported(result.stdout + result.stderr):
        pytest.skip(f'{BIN_DIR / "portico"} does not support kind = "kubernetes" yet '
                    f"(rebuild it): {UNSUPPORTED}")


# --- (a) the manifests parse --------------------------------------------------------------

def test_every_manifest_parses_with_kind_and_name():
    files = manifest_files()
    assert files, f"no YAML file in {KUBE_DIR}"
    seen = set()
    for path in files:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert docs, f"{path.name}: no document"
        for doc in docs:
            assert isinstance(doc, dict), f"{path.name}: a document is not a mapping"
            assert doc.get("apiVersion"), f"{path.name}: a document has no apiVersion"
            assert doc.get("kind"), f"{path.name}: a document has no kind"
            name = (doc.get("metadata") or {}).get("name")
            assert isinstance(name, str) and name, (
                f"{path.name}: a {doc['kind']} has no metadata.name")
            key = (doc["kind"], doc["metadata"].get("namespace"), name)
            assert key not in seen, f"{path.name}: {key} defined twice"
            seen.add(key)


def test_namespaces_come_before_what_lives_in_them():
    """`kubectl apply -f deploy/kubernetes/` goes file by file in name order: a namespaced
    object must name its namespace, created by an earlier Namespace."""
    created = set()
    for path, doc in documents():
        if doc["kind"] == "Namespace":
            created.add(doc["metadata"]["name"])
        elif doc["kind"] not in CLUSTER_KINDS:
            namespace = doc["metadata"].get("namespace")
            assert namespace, (
                f"{path.name}: {doc['kind']} {doc['metadata']['name']} names no namespace")
            assert namespace in created, (
                f"{path.name}: {doc['kind']} {doc['metadata']['name']} is applied before "
                f"Namespace {namespace}")
    assert {"portico", "models"} <= created


def test_services_select_pods_and_name_their_ports():
    workloads = [doc for _, doc in documents() if doc["kind"] in ("Deployment", "StatefulSet")]
    services = [doc for _, doc in documents() if doc["kind"] == "Service"]
    for service in services:
        namespace = service["metadata"]["namespace"]
        matched = [w for w in workloads
                   if w["metadata"]["namespace"] == namespace
                   and selects(service["spec"]["selector"],
                               w["spec"]["template"]["metadata"]["labels"])]
        assert matched, f"Service {service['metadata']['name']} selects no pods"
        for workload in matched:
            ports = container_ports(workload["spec"]["template"]["spec"])
            for port in service["spec"]["ports"]:
                target = port.get("targetPort", port["port"])
                assert target in ports or target in ports.values(), (
                    f"Service {service['metadata']['name']}: targetPort {target} is not a port of "
                    f"{workload['metadata']['name']}")


# --- (b) the Role is exactly what the code declares ---------------------------------------

RULE = re.compile(r'Rule\s*\{\s*group:\s*"([^"]*)"\s*,\s*resources:\s*&\[([^\]]*)\]\s*,'
                  r'\s*verbs:\s*&\[([^\]]*)\]\s*,?\s*\}')
MARKER = re.compile(r"^\s*(?://[/!]?\s*)?//\s*rbac:(begin|end)\s*$")


def declared_rbac_blocks():
    """Each `// rbac:begin … // rbac:end` block of gateway/src/kubernetes/ (as code, or
    inside doc comments) as a set of (group, resource, verb)."""
    blocks = []
    for path in sorted(KUBE_SRC.rglob("*.rs")):
        block = None
        for number, line in enumerate(path.read_text().splitlines(), 1):
            marker = MARKER.match(line)
            where = f"{path.relative_to(ROOT)}:{number}"
            if marker and marker.group(1) == "begin":
                assert block is None, f"{where}: rbac:begin inside a block"
                block = (where, set())
            elif marker:
                assert block is not None, f"{where}: rbac:end without rbac:begin"
                assert block[1], f"{block[0]}: an rbac block without a Rule"
                blocks.append(block)
                block = None
            elif block is not None and "Rule" in line:
                rule = RULE.search(line)
                assert rule, f"{where}: a Rule line the test cannot read: {line.strip()}"
                group, resources, verbs = rule.groups()
                for resource in re.findall(r'"([^"]*)"', resources):
                    for verb in re.findall(r'"([^"]*)"', verbs):
                        block[1].add((group, resource, verb))
        assert block is None, f"{path.relative_to(ROOT)}: rbac:begin without rbac:end"
    return blocks


def portico_role():
    """The Role bound to the `portico` ServiceAccount (there must be exactly one, and no
    cluster-wide grant)."""
    bindings = [doc for _, doc in documents()
                if doc["kind"] in ("RoleBinding", "ClusterRoleBinding")
                and any(s.get("kind") == "ServiceAccount" and s.get("name") == "portico"
                        and s.get("namespace") == "portico" for s in doc.get("subjects", []))]
    assert len(bindings) == 1, (
        f"expected one binding of ServiceAccount portico, found {len(bindings)}")
    binding = bindings[0]
    assert binding["kind"] == "RoleBinding", "Portico needs no cluster-wide rights"
    assert binding["roleRef"]["kind"] == "Role"
    return one("Role", binding["roleRef"]["name"], binding["metadata"]["namespace"])


def test_role_grants_exactly_the_rules_the_code_declares():
    if not KUBE_SRC.is_dir() or not any(KUBE_SRC.rglob("*.rs")):
        pytest.skip(f"{KUBE_SRC.relative_to(ROOT)}/ does not exist yet: no declared RBAC rules "
                    "to compare the Role with")
    blocks = declared_rbac_blocks()
    assert blocks, f"no `// rbac:begin … // rbac:end` block in {KUBE_SRC.relative_to(ROOT)}/"
    role = portico_role()
    assert role["metadata"]["namespace"] == config()["endpoint"][0]["workers"]["namespace"]
    for rule in role["rules"]:
        assert set(rule) <= {"apiGroups", "resources", "verbs", "resourceNames"}, (
            f"unexpected keys in a Role rule: {sorted(rule)}")
        for key in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[key], f"a wildcard in a Role rule's {key}"
    granted = triples(role["rules"])
    for where, declared in blocks:
        assert granted == declared, (
            f"Role {role['metadata']['name']} differs from {where}: granted but not declared "
            f"{sorted(granted - declared)}, declared but not granted {sorted(declared - granted)}")


# --- (c) the ConfigMap's config validates and matches the manifests -----------------------

def test_configmap_config_validates(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(config_text())
    result = validate(path)
    skip_if_kubernetes_unsupported(result)
    assert result.returncode == 0, f"portico validate failed:\n{result.stdout}{result.stderr}"


def test_config_matches_the_manifests():
    cfg = config()
    deployment = one("Deployment", "portico", "portico")
    pod = deployment["spec"]["template"]["spec"]
    ports = container_ports(pod)
    assert ports["admin"] == port_of(cfg["server"]["admin_listen"])
    assert cfg["server"]["admin_listen"].startswith("0.0.0.0:"), "probes reach the pod's IP"
    assert [port_of(l["address"]) for l in cfg["listener"]] == [ports["http"]]

    # state_dir is a writable volume (the root filesystem is read-only).
    container = pod["containers"][0]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    state = cfg["server"]["state_dir"]
    assert state in mounts and "emptyDir" in volumes[mounts[state]]
    assert not mounts.get(state, "").startswith("/etc/portico")

    # Cluster state in the Redis of the manifests.
    redis = one("Service", "redis", "portico")
    url = urllib.parse.urlparse(cfg["cluster"]["redis"])
    assert url.hostname == "redis.portico.svc.cluster.local"
    assert url.port == redis["spec"]["ports"][0]["port"]

    # The kubernetes workers are the vLLM Deployment and its headless Service.
    (endpoint,) = cfg["endpoint"]
    workers = endpoint["workers"]
    assert workers["kind"] == "kubernetes"
    vllm = one("Deployment", workers["deployment"], workers["namespace"])
    service = one("Service", workers.get("service", workers["deployment"]), workers["namespace"])
    assert service["spec"].get("clusterIP") == "None", "the workers' Service is headless"
    assert selects(service["spec"]["selector"], vllm["spec"]["template"]["metadata"]["labels"])
    assert workers["port"] in container_ports(vllm["spec"]["template"]["spec"]).values()
    assert vllm["spec"]["replicas"] == endpoint["scaling"]["min_workers"] == 0

    # Shutdown: preStop pause + Portico's drain fit in the termination grace period, with
    # the 10 s Portico gives its own workers and a margin.
    grace = cfg["server"]["grace_period_seconds"]
    pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] >= pause + grace + 10


def test_demo_image_config_validates():
    """The config of the Dockerfile's demo stage validates too."""
    result = validate(ROOT / "deploy" / "docker" / "demo.toml")
    assert result.returncode == 0, result.stdout + result.stderr


# --- (d) the systemd unit -----------------------------------------------------------------

def seconds(text):
    total, rest = 0, text.replace(" ", "")
    for number, unit in re.findall(r"(\d+)(min|ms|s|m|h|)", rest):
        total += int(number) * {"": 1, "s": 1, "ms": 0.001, "m": 60, "min": 60, "h": 3600}[unit]
    return total


def test_systemd_unit_has_the_keys_it_relies_on(tmp_path):
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string(UNIT.read_text())
    service = parser["Service"]
    exec_start = service["ExecStart"].split()
    assert exec_start[0].startswith("/") and exec_start[0].endswith("/portico")
    assert exec_start[1:] == ["run", "--config", "/etc/portico/config.toml"]
    assert re.fullmatch(r"(/usr)?/bin/kill -HUP \$MAINPID", service["ExecReload"])
    assert service["KillSignal"] == "SIGTERM"
    assert service["Restart"] == "on-failure"
    assert service["StateDirectory"] == "portico"
    assert service["ConfigurationDirectory"] == "portico"
    assert service.get("DynamicUser") == "yes" or service.get("User") not in (None, "", "root")
    for key, value in [("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                       ("ProtectHome", "yes"), ("PrivateTmp", "yes")]:
        assert service[key] == value, f"{key}={service.get(key)}"
    assert set(service["CapabilityBoundingSet"].split()) <= {"CAP_NET_BIND_SERVICE"}
    ambient = set(service.get("AmbientCapabilities", "").split())
    assert ambient <= set(service["CapabilityBoundingSet"].split())
    assert int(service["LimitNOFILE"]) >= 65536
    # The drain of the default config must end before systemd's SIGKILL.
    grace = tomllib.loads((ROOT / "config.toml").read_text())["server"]["grace_period_seconds"]
    assert seconds(service["TimeoutStopSec"]) > grace + 10

    if shutil.which("systemd-analyze") and (BIN_DIR / "portico").exists():
        unit = tmp_path / "portico.service"
        unit.write_text(UNIT.read_text().replace(exec_start[0], str(BIN_DIR / "portico")))
        result = subprocess.run(["systemd-analyze", "verify", str(unit)],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and str(unit) not in result.stderr, result.stderr


# --- (e) the Dockerfile -------------------------------------------------------------------

def dockerfile_stages():
    """[(image, name, [(instruction, arguments)])] with continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            words = args.split()
            name = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
            stages.append((words[0], name, []))
        else:
            assert stages, f"{instruction} before FROM"
            stages[-1][2].append((instruction, args.strip()))
    return stages


def runs_as_non_root(image, instructions):
    users = [args for instruction, args in instructions if instruction == "USER"]
    if users:
        return users[-1].split(":")[0] not in ("root", "0")
    return image.endswith(":nonroot") and "distroless" in image


def test_dockerfile_builds_locked_into_a_non_root_image():
    stages = dockerfile_stages()
    names = {name for _, name, _ in stages if name}
    builds = [(image, args) for image, _, instructions in stages
              for instruction, args in instructions
              if instruction == "RUN" and "cargo build" in args]
    assert builds, "no cargo build in the Dockerfile"
    for image, args in builds:
        assert "--locked" in args.split(), f"cargo build without --locked: {args}"
    assert any("-p gateway --bin portico" in args for _, args in builds)
    rust = [image for image, _, _ in stages if image.startswith("rust:")]
    assert rust, "no rust builder stage"
    want = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["package"]["rust-version"]
    have = re.match(r"rust:(\d+)\.(\d+)", rust[0]).groups()
    assert tuple(map(int, have)) >= tuple(map(int, want.split(".")[:2]))

    # The default target is the last stage: the runtime image.
    image, _, instructions = stages[-1]
    assert image not in names and not image.startswith("rust:"), (
        "the last stage is not a runtime image")
    assert runs_as_non_root(image, instructions), "the runtime stage runs as root"
    for base, _, stage in stages:
        if any(instruction == "ENTRYPOINT" for instruction, _ in stage):
            assert runs_as_non_root(base, stage), f"a stage from {base} runs as root"
    final = dict(instructions)
    assert json.loads(final["ENTRYPOINT"]) == ["portico"]
    assert json.loads(final["CMD"]) == ["run", "--config", "/etc/portico/config.toml"]
    assert set(final["EXPOSE"].split()) == {"8080", "9090"}

    # Files copied from the build context exist and are not ignored.
    ignored = [line.strip().rstrip("/") for line in DOCKERIGNORE.read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    assert {"target", "data", ".git"} <= set(ignored)
    members = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["members"]
    for member in [*members, "Cargo.toml", "Cargo.lock", "gateway/ui"]:
        assert member not in ignored, f".dockerignore leaves out {member}, which the build needs"
    for _, _, stage in stages:
        for instruction, args in stage:
            if instruction == "COPY" and not args.startswith("--from"):
                *sources, _ = [w for w in args.split() if not w.startswith("--")]
                for source in sources:
                    assert source == "." or (ROOT / source).exists(), f"COPY {source}: no such file"


# --- (f) the Portico Deployment and its disruption budget ---------------------------------

def test_portico_deployment_is_hardened_and_covered_by_the_pdb():
    deployment = one("Deployment", "portico", "portico")
    assert deployment["spec"]["replicas"] == 3
    template = deployment["spec"]["template"]
    labels = template["metadata"]["labels"]
    assert selects(deployment["spec"]["selector"]["matchLabels"], labels)
    pod = template["spec"]
    assert pod["serviceAccountName"] == "portico"
    one("ServiceAccount", "portico", "portico")

    pod_security = pod.get("securityContext", {})
    for container in pod["containers"]:
        security = container.get("securityContext", {})
        merged = {**pod_security, **security}
        assert merged.get("runAsNonRoot") is True, f"{container['name']} may run as root"
        assert merged.get("runAsUser", 1) != 0
        assert merged.get("seccompProfile", {}).get("type") == "RuntimeDefault"
        assert security.get("readOnlyRootFilesystem") is True
        assert security.get("allowPrivilegeEscalation") is False
        assert "ALL" in security.get("capabilities", {}).get("drop", [])
        assert "resources" in container

    # The ConfigMap is mounted where --config points.
    volumes = {v["name"]: v for v in pod["volumes"]}
    (container,) = pod["containers"]
    config_mounts = [m["mountPath"] for m in container["volumeMounts"]
                     if volumes[m["name"]].get("configMap", {}).get("name") == "portico-config"]
    assert config_mounts == ["/etc/portico"]
    args = container["args"]
    assert args[args.index("--config") + 1] == "/etc/portico/config.toml"

    # Probes: liveness on the admin /healthz, readiness on the data listener's /readyz.
    ports = container_ports(pod)
    cfg = config()
    live, ready = container["livenessProbe"]["httpGet"], container["readinessProbe"]["httpGet"]
    assert live["path"] == "/healthz"
    assert ports.get(live["port"], live["port"]) == port_of(cfg["server"]["admin_listen"])
    assert ready["path"] == "/readyz"
    assert ports.get(ready["port"], ready["port"]) == port_of(cfg["listener"][0]["address"])

    # Spread over nodes.
    spread = [c["topologyKey"] for c in pod.get("topologySpreadConstraints", [])]
    anti = pod.get("affinity", {}).get("podAntiAffinity")
    assert "kubernetes.io/hostname" in spread or anti

    # The PDB covers these pods and keeps at least two of three.
    pdbs = [doc for _, doc in documents() if doc["kind"] == "PodDisruptionBudget"
            and doc["metadata"]["namespace"] == "portico"
            and selects(doc["spec"]["selector"]["matchLabels"], labels)]
    assert len(pdbs) == 1
    spec = pdbs[0]["spec"]
    assert spec.get("maxUnavailable") == 1 or spec.get("minAvailable", 0) >= 2


# --- (g) a running Portico on the ConfigMap's config against a fake API server ------------

class FakeApiServer:
    """A Kubernetes API server that knows one Deployment's scale subresource and an empty,
    watchable EndpointSlice list, and records every request as (verb, group, resource,
    namespace)."""

    def __init__(self):
        self.calls = []
        self.replicas = []
        self.scale = 0
        self.stopping = threading.Event()
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                fake.handle(self, "GET")

            def do_PATCH(self):
                fake.handle(self, "PATCH")

            def do_PUT(self):
                fake.handle(self, "PUT")

            def do_POST(self):
                fake.handle(self, "POST")

            def do_DELETE(self):
                fake.handle(self, "DELETE")

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()

    def handle(self, request, method):
        url = urllib.parse.urlparse(request.path)
        query = urllib.parse.parse_qs(url.query)
        path = re.fullmatch(r"/(?:api/v1|apis/(?P<group>[^/]+)/[^/]+)/namespaces/(?P<ns>[^/]+)/"
                            r"(?P<resource>[^/]+)(?:/(?P<name>[^/]+)(?:/(?P<sub>[^/]+))?)?",
                            url.path)
        length = int(request.headers.get("content-length") or 0)
        body = request.rfile.read(length) if length else b""
        if not path:
            self.calls.append((method, None, url.path, None))
            return self.reply(request, 404, {"kind": "Status", "code": 404})
        group = path["group"] or ""
        resource = path["resource"] + (f"/{path['sub']}" if path["sub"] else "")
        if method == "GET" and not path["name"]:
            verb = "watch" if query.get("watch", [""])[0] in ("true", "1") else "list"
        else:
            verb = {"GET": "get", "PATCH": "patch", "PUT": "update", "POST": "create",
                    "DELETE": "delete"}[method]
        self.calls.append((verb, group, resource, path["ns"]))
        if path["sub"] == "scale":
            if verb in ("patch", "update"):
                self.scale = json.loads(body)["spec"]["replicas"]
                self.replicas.append(self.scale)
            return self.reply(request, 200, {
                "kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {"name": path["name"], "namespace": path["ns"], "resourceVersion": "1"},
                "spec": {"replicas": self.scale},
                "status": {"replicas": self.scale, "selector": "app.kubernetes.io/name=vllm"}})
        if resource == "endpointslices" and verb == "list":
            return self.reply(request, 200, {
                "kind": "EndpointSliceList", "apiVersion": "discovery.k8s.io/v1",
                "metadata": {"resourceVersion": "1"}, "items": []})
        if resource == "endpointslices" and verb == "watch":
            # No event: the stream stays open until the test ends.
            request.send_response(200)
            request.send_header("content-type", "application/json")
            request.end_headers()
            request.wfile.flush()
            self.stopping.wait()
            return None
        return self.reply(request, 404, {"kind": "Status", "code": 404})

    @staticmethod
    def reply(request, status, document):
        data = json.dumps(document).encode()
        request.send_response(status)
        request.send_header("content-type", "application/json")
        request.send_header("content-length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)


def substitute(text, key, value):
    """Replaces the value of `key = …` lines (not comments); exactly one must exist."""
    text, count = re.subn(rf"(?m)^(\s*{key}\s*=\s*).*$", lambda m: m.group(1) + value, text)
    assert count == 1, f"{key}: {count} lines in the ConfigMap's config"
    return text


@pytest.fixture
def api_server():
    server = FakeApiServer()
    yield server
    server.stop()


def test_running_config_serves_probes_and_stays_within_the_role(
        tmp_path, api_server, redis_server, portico_from_config):
    """Portico on the ConfigMap's config (addresses on loopback, state in a temporary
    directory, a test Redis, a fake API server instead of the in-cluster one): the probe
    paths of the Deployment answer on the listeners they point at, a request wakes the
    endpoint through the `scale` subresource, every call it makes is one the Role grants in
    the workers' namespace, and SIGTERM ends it well within the pod's grace period."""
    check = tmp_path / "check.toml"
    check.write_text(config_text())
    result = validate(check)
    skip_if_kubernetes_unsupported(result)
    assert result.returncode == 0, f"portico validate failed:\n{result.stdout}{result.stderr}"

    token, admin = "ptk_deploy_test_token", "ptk_deploy_test_admin"
    token_hash = hashlib.sha256(token.encode()).hexdigest()
    admin_hash = hashlib.sha256(admin.encode()).hexdigest()
    text = config_text()
    for key, value in [("admin_listen", '"127.0.0.1:0"'), ("address", '"127.0.0.1:0"'),
                       ("state_dir", json.dumps(str(tmp_path / "state"))),
                       ("url", json.dumps(f"file://{tmp_path}/results")),
                       ("redis", json.dumps(redis_server.url)),
                       ("grace_period_seconds", "5"),
                       ("admin_token_sha256", json.dumps(admin_hash))]:
        text = substitute(text, key, value)
    # The project's token placeholder: a token the test knows.
    text, count = re.subn(r'(\{\s*name\s*=\s*"[^"]+"\s*,\s*sha256\s*=\s*)"[0-9a-f]{64}"',
                          lambda m: m.group(1) + json.dumps(token_hash),
                          text)
    assert count == 1, f"{count} project tokens in the ConfigMap's config"
    text, count = re.subn(r'(?m)^kind = "kubernetes"$',
                          f'kind = "kubernetes"\napi_server = "{api_server.url}"', text)
    assert count == 1
    cfg = tomllib.loads(text)
    workers = cfg["endpoint"][0]["workers"]
    proc = portico_from_config(text, listeners=[l["name"] for l in cfg["listener"]])

    # The Deployment's probes, on the listeners their ports name.
    pod = one("Deployment", "portico", "portico")["spec"]["template"]["spec"]
    ports = container_ports(pod)
    by_port = {port_of(config()["server"]["admin_listen"]): "admin",
               **{port_of(l["address"]): l["name"] for l in config()["listener"]}}
    for probe in ("livenessProbe", "readinessProbe"):
        get = pod["containers"][0][probe]["httpGet"]
        listener = by_port[ports.get(get["port"], get["port"])]
        url = f"http://{proc.listening[listener]}{get['path']}"
        with urllib.request.urlopen(url, timeout=5) as answer:
            assert answer.status == 200, probe

    # A request at zero workers is held and wakes the endpoint: the leader scales to 1.
    public = proc.listening[cfg["listener"][0]["name"]]
    request = urllib.request.Request(
        f"http://{public}/project/{cfg['project'][0]['id']}/endpoint/{cfg['endpoint'][0]['id']}"
        "/v1/chat/completions",
        data=json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode(),
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"})
    try:
        urllib.request.urlopen(request, timeout=2).close()
    except (urllib.error.URLError, TimeoutError, OSError):
        pass  # held: no worker will ever be ready here
    deadline = time.monotonic() + 15
    while 1 not in api_server.replicas and time.monotonic() < deadline:
        time.sleep(0.1)
    assert 1 in api_server.replicas, (
        f"no scale to 1; calls: {api_server.calls}; stderr: {proc.stderr[-20:]}")
    watched = [c for c in api_server.calls if c[0] == "watch" and c[2] == "endpointslices"]
    assert watched, api_server.calls

    role = portico_role()
    granted = triples(role["rules"])
    for verb, group, resource, namespace in api_server.calls:
        assert (group, resource, verb) in granted, f"{verb} {group}/{resource} is not in the Role"
        assert namespace == role["metadata"]["namespace"] == workers["namespace"]

    # Graceful stop well within terminationGracePeriodSeconds.
    started = time.monotonic()
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.proc.wait(timeout=30) == 0
    assert time.monotonic() - started < pod["terminationGracePeriodSeconds"]
