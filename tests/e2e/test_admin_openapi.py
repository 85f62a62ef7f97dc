"""docs/openapi.yaml against the live admin API: schemathesis sends generated requests, valid
and invalid, to every operation of a running Portico (a static endpoint on a fakeworker and a
process endpoint running fakeworker) and checks that no answer is a 5xx, and that every
status, content type and body is the one the spec documents. A plain test checks that every
route the admin router serves is in the spec."""

import copy
import hashlib
import re
import types

import pytest
import requests
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from conftest import ROOT, binary

SPEC = ROOT / "docs" / "openapi.yaml"
ADMIN_SOURCES = ROOT / "gateway" / "src" / "admin"
ADMIN_TOKEN = "portico-openapi-test-admin-token"
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
# The process endpoint's ceiling: generated settings never start more worker processes.
MAX_WORKERS = 2
# Examples per operation and mode: the whole module stays well under a minute and a half.
MAX_EXAMPLES = 50
REQUEST_TIMEOUT_SECONDS = 10

CONFIG = """
[server]
admin_listen = "127.0.0.1:0"
admin_token_sha256 = "{token_hash}"
grace_period_seconds = 2
state_dir = "{state_dir}"

[[listener]]
name = "public"
address = "127.0.0.1:0"

[[project]]
id = "p1"

[[endpoint]]
id = "static1"
project = "p1"
public = true

[endpoint.workers]
kind = "static"
urls = ["{static_url}"]

[[endpoint]]
id = "proc1"
project = "p1"
public = true

[endpoint.workers]
kind = "process"
command = ["{fakeworker}", "--port", "{{port}}"]
startup_timeout_seconds = 30

[endpoint.scaling]
min_workers = 0
max_workers = {max_workers}
"""


def load_spec():
    return yaml.safe_load(SPEC.read_text())


@pytest.fixture
def admin_api(portico_from_config, fakeworker, tmp_path):
    """A running Portico with an admin token, `static1` (static, one fakeworker) and `proc1`
    (process workers running fakeworker, 0 to 2): a namespace with the admin `url`."""
    text = CONFIG.format(
        token_hash=hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest(),
        state_dir=tmp_path / "state",
        static_url=fakeworker(),
        fakeworker=binary("fakeworker"),
        max_workers=MAX_WORKERS,
    )
    proc = portico_from_config(text)
    return types.SimpleNamespace(url="http://" + proc.listening["admin"], proc=proc)


def fuzzing_spec(spec):
    """The spec as fuzzed: path ids drawn from the real endpoints and one unknown (negative
    cases still send others), and no `follow` on logs, whose stream never ends."""
    spec = copy.deepcopy(spec)
    spec["components"]["parameters"]["EndpointId"]["schema"] = {
        "type": "string",
        "enum": ["static1", "proc1", "missing"],
    }
    logs = spec["paths"]["/admin/endpoints/{id}/logs"]["get"]
    logs["parameters"] = [p for p in logs["parameters"] if p["name"] != "follow"]
    return spec


# Loaded at import so that pytest sees one test per operation; the base URL of the running
# Portico is given at each call.
schema = schemathesis.openapi.from_dict(
    fuzzing_spec(load_spec()),
    config=schemathesis.Config.from_dict({
        "headers": AUTH,
        "request-timeout": REQUEST_TIMEOUT_SECONDS,
        "generation": {"mode": "all", "max-examples": MAX_EXAMPLES},
    }),
)


# The spec's ceiling for worker counts (u32): larger values are negative cases, which must be
# refused as sent.
WORKER_COUNT_MAXIMUM = 4294967295


def keep_workers_bounded(case):
    """Settings that would let the autoscaler or a pin start more than `MAX_WORKERS`
    processes are lowered to it: the fuzzer tests the API, not the machine. Values beyond
    the spec's range are left as they are: they start nothing, and must be refused."""
    if case.method.upper() == "PATCH" and isinstance(case.body, dict):
        for key in ("min_workers", "max_workers"):
            value = case.body.get(key)
            if (
                isinstance(value, int)
                and not isinstance(value, bool)
                and MAX_WORKERS < value <= WORKER_COUNT_MAXIMUM
            ):
                case.body[key] = MAX_WORKERS


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_admin_api_conforms_to_openapi(case, admin_api):
    """Generated requests (valid and invalid) to every admin operation get no 5xx and only
    documented statuses, content types and bodies."""
    keep_workers_bounded(case)
    case.call_and_validate(
        base_url=admin_api.url,
        headers=AUTH,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
            negative_data_rejection,
        ],
        timeout=REQUEST_TIMEOUT_SECONDS,
    )


def test_unauthorized_and_unknown_routes_are_documented_json(admin_api):
    """Without the token every admin route is a JSON 401 with a challenge, `/healthz` stays
    open, and an unknown path is a JSON 404 — the shapes the spec's Error schema names."""
    spec = load_spec()
    for path, item in spec["paths"].items():
        concrete = path.replace("{id}", "proc1").replace("{path}", "index.html")
        for method, operation in item.items():
            if method == "parameters":
                continue
            answer = requests.request(
                method, admin_api.url + concrete, timeout=10, allow_redirects=False
            )
            if operation.get("security") == []:
                assert answer.status_code in (200, 303), (method, path, answer.text)
                assert str(answer.status_code) in operation["responses"], (method, path)
                continue
            assert "401" in operation["responses"], (method, path)
            assert answer.status_code == 401, (method, path, answer.text)
            assert answer.headers["content-type"] == "application/json"
            assert answer.headers["www-authenticate"].startswith("Bearer realm=")
            assert answer.json()["error"]["code"] == "missing_token"
    missing = requests.get(admin_api.url + "/admin/nope", headers=AUTH, timeout=10)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


def test_wrong_method_is_a_json_405(admin_api):
    """A method a known path does not serve is 405 with `Allow` and the JSON error shape."""
    answer = requests.delete(admin_api.url + "/admin/endpoints", headers=AUTH, timeout=10)
    assert answer.status_code == 405
    assert "GET" in answer.headers["allow"]
    assert_json_error(answer)


def test_path_id_that_is_not_utf8_is_a_json_400(admin_api):
    """An endpoint id that does not percent-decode to UTF-8 is 400 in the JSON error shape."""
    answer = requests.get(admin_api.url + "/admin/endpoints/%FF", headers=AUTH, timeout=10)
    assert answer.status_code == 400
    assert_json_error(answer)


def test_body_over_the_limit_is_a_json_413(admin_api):
    """A body over 2 MiB on `…/scale` is 413 in the JSON error shape."""
    answer = requests.post(
        admin_api.url + "/admin/endpoints/proc1/scale",
        headers=AUTH,
        data=b"{" + b" " * (3 << 20) + b"}",
        timeout=30,
    )
    assert answer.status_code == 413
    assert_json_error(answer)


def test_huge_since_seconds_is_answered(admin_api):
    """The largest `since_seconds` the spec allows is answered (every line), not dropped."""
    answer = requests.get(
        admin_api.url + "/admin/endpoints/proc1/logs",
        params={"since_seconds": 18446744073709551615},
        headers=AUTH,
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"endpoint": "proc1", "lines": []}


def assert_json_error(answer):
    assert answer.headers.get("content-type", "").startswith("application/json"), (
        answer.status_code,
        answer.headers,
        answer.text,
    )
    error = answer.json()["error"]
    assert {"message", "type", "code"} <= error.keys(), error


def served_routes():
    """`(path, method)` of every `.route(…)` in gateway/src/admin/*.rs."""
    routes = set()
    pattern = re.compile(r'\.route\(\s*"([^"]+)",\s*(get|post|patch|put|delete)\(', re.S)
    for source in sorted(ADMIN_SOURCES.glob("*.rs")):
        for path, method in pattern.findall(source.read_text()):
            # axum's catch-all `{*name}` is OpenAPI's `{name}`.
            routes.add((re.sub(r"\{\*(\w+)\}", r"{\1}", path), method))
    return routes


def test_every_served_route_is_in_the_spec():
    """Each route the admin router serves is documented with its method, and the spec has
    no path the router lacks."""
    served = served_routes()
    assert ("/admin/endpoints", "get") in served, served
    spec = load_spec()
    documented = {
        (path, method)
        for path, item in spec["paths"].items()
        for method in item
        if method != "parameters"
    }
    assert served - documented == set(), "routes missing from docs/openapi.yaml"
    assert documented - served == set(), "docs/openapi.yaml documents routes nobody serves"


def test_spec_is_valid_openapi():
    """The spec loads as OpenAPI 3.1 and every operation lists a 2xx answer."""
    spec = load_spec()
    assert spec["openapi"].startswith("3.1")
    loaded = schemathesis.openapi.from_dict(spec)
    operations = [result.ok() for result in loaded.get_all_operations()]
    assert len(operations) == sum(
        1 for item in spec["paths"].values() for method in item if method != "parameters"
    )
    for operation in operations:
        statuses = operation.definition.raw["responses"].keys()
        # The console's `/` and `/ui` only redirect (303) to `/ui/`.
        assert any(status.startswith("2") or status == "303" for status in statuses), (
            operation.label
        )
