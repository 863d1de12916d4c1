"""``roro serve`` and the ``roro/<route>`` LiteLLM provider, tested as their users meet them: the
official ``openai`` client (and curl, and LiteLLM) against servers started here on 127.0.0.1,
over the sim bench or over FakeOpenAIServer (whose fault injection plays a failing provider)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from roro_sdk import ConfigError, ModelPool, StepwiseRuntime, Trajectory, make_router, read_trajectories
from roro_sdk.serve import (
    RoutedService,
    ServeBudgets,
    ServeConfig,
    ServeLimits,
    UnknownRouteError,
    parse_chat_request,
    register_roro_provider,
    start_server,
)
from roro_sdk.sim import sim_pool, sim_queries, SimConfig
from roro_sdk.testing import FakeModel, FakeOpenAIServer

from .conftest import FAST_RETRY

ROOT = Path(__file__).resolve().parents[1]
ROUTES = {"steer-0.8": "steer:0.8", "cheap": "all-small", "large": "all-large"}
KEY = "test-key-0123456789abcdef"


def _client(url: str, key: str = "unused-on-loopback") -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=60)


def _ask(q) -> list[dict]:
    return [{"role": "user", "content": q.question}]


@pytest.fixture(scope="module")
def sim_server(tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "served.jsonl"
    srv = start_server(ServeConfig(pool="sim:careful", routes=ROUTES, port=0, trajectory_log=str(log)))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def queries():
    return sim_queries("sim:careful", n=6, seed=3)


# ----- the official client: completions, usage and cost, the roro field, models --------------------

def test_completion_is_the_routed_answer_with_usage_cost_and_steps(sim_server, queries):
    q = queries[0]
    r = _client(sim_server.url).chat.completions.create(model="steer-0.8", messages=_ask(q),
                                                         extra_body={"roro": {"answer": q.answer}})
    # the same query routed in process: the server adds nothing and loses nothing
    ref = StepwiseRuntime(sim_pool(SimConfig.careful()), make_router("steer:0.8")).run(q)
    assert r.object == "chat.completion" and r.model == "steer-0.8"
    assert r.choices[0].message.content == ref.text() and r.choices[0].finish_reason == "stop"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (ref.usage.input_tokens, ref.usage.output_tokens)
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.usage.cost == pytest.approx(ref.cost_usd) and r.usage.cost > 0 and r.usage.cost_priced is True
    meta = r.roro
    assert meta["route"] == "steer-0.8" and meta["router"] == ref.router and meta["stop_reason"] == "answer"
    assert meta["answer"] == ref.answer and meta["correct"] == ref.correct
    assert [s["model"] for s in meta["steps"]] == [s.model for s in ref.steps]
    assert {"large", "small"} == {s["model"] for s in meta["steps"]}  # steer escalated some steps, not all
    for s, rs in zip(meta["steps"], ref.steps):
        assert (s["text"], s["input_tokens"], s["output_tokens"]) == (rs.text, rs.input_tokens, rs.output_tokens)
        assert s["cost_usd"] == pytest.approx(rs.usage.cost_usd) and s["latency_s"] >= 0 and s["reason"]
    assert sum(s["cost_usd"] for s in meta["steps"]) == pytest.approx(r.usage.cost)


def test_streamed_completion_parses_in_the_official_client(sim_server, queries):
    client = _client(sim_server.url)
    plain = client.chat.completions.create(model="cheap", messages=_ask(queries[1]))
    chunks = list(client.chat.completions.create(model="cheap", messages=_ask(queries[1]), stream=True,
                                                 stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    steps = [c.roro["step"] for c in chunks if c.choices and "step" in (getattr(c, "roro", None) or {})]
    assert [s["text"] for s in steps] == [s["text"] for s in plain.roro["steps"]]
    assert chunks[0].choices[0].delta.role == "assistant"
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason][-1]
    assert final.choices[0].finish_reason == "stop" and final.roro["stop_reason"] == "answer"
    assert chunks[-1].choices == [] and chunks[-1].usage.cost == pytest.approx(plain.usage.cost)
    assert len({c.id for c in chunks}) == 1


def test_models_health_and_the_ad_hoc_router_spec(sim_server, queries):
    client = _client(sim_server.url)
    models = client.models.list()
    assert [m.id for m in models.data] == list(ROUTES) and all(m.owned_by == "roro" for m in models.data)
    health = httpx.get(sim_server.url + "/health").json()
    assert health["status"] == "ok" and health["routes"] == list(ROUTES)
    r = client.chat.completions.create(model="random:0.5", messages=_ask(queries[2]))  # any spec without weights
    assert r.roro["router"] == "random:0.5" and r.choices[0].message.content


def test_metrics_are_prometheus_text(sim_server, queries):
    client = _client(sim_server.url)
    client.chat.completions.create(model="large", messages=_ask(queries[3]))
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-route", messages=_ask(queries[3]))
    resp = httpx.get(sim_server.url + "/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    text = resp.text
    sample = re.compile(r'^[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? -?[0-9.e+-]+$')
    for line in text.splitlines():
        assert line.startswith("# HELP ") or line.startswith("# TYPE ") or sample.match(line), line
    values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if not line.startswith("#")}
    assert values['roro_requests_total{code="200",route="large"}'] >= 1
    assert values['roro_requests_total{code="404",route="-"}'] >= 1 and values['roro_errors_total{kind="not_found"}'] >= 1
    assert values['roro_steps_total{model="large"}'] >= 1 and values['roro_cost_usd_total{model="large"}'] > 0
    assert values['roro_tokens_total{direction="output",model="large"}'] > 0
    assert values['roro_request_duration_seconds_bucket{route="large",le="+Inf"}'] == values['roro_request_duration_seconds_count{route="large"}']
    assert 'roro_step_duration_seconds_bucket{model="large",le="0.005"}' in values


def test_every_served_trajectory_is_in_the_log(sim_server, queries):
    client = _client(sim_server.url)
    before = len(read_trajectories(sim_server.service.trajectory_log))
    r = client.chat.completions.create(model="cheap", messages=_ask(queries[4]))
    trajs = read_trajectories(sim_server.service.trajectory_log)
    assert len(trajs) == before + 1
    t = trajs[-1]
    assert t.id == r.roro["trajectory_id"] and t.metadata["route"] == "cheap" and t.query.question == queries[4].question


# ----- budgets ------------------------------------------------------------------------------------

def test_request_budgets_map_to_the_runtime_and_stay_under_the_servers(sim_server, queries):
    client = _client(sim_server.url)
    r = client.chat.completions.create(model="large", messages=_ask(queries[0]), max_tokens=50)
    assert r.roro["stop_reason"] == "token_budget" and r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens <= 50
    r = client.chat.completions.create(model="large", messages=_ask(queries[0]), extra_body={"roro": {"max_cost_usd": 0.0003}})
    assert r.roro["stop_reason"] == "cost_budget" and r.usage.cost <= 0.0003
    r = client.chat.completions.create(model="large", messages=_ask(queries[0]), extra_body={"roro": {"max_steps": 2}})
    assert r.roro["stop_reason"] == "max_steps" and len(r.roro["steps"]) == 2
    # the server's ceiling wins over a request that asks for more
    svc = RoutedService(sim_pool(SimConfig.careful()), ROUTES, budgets=ServeBudgets(max_steps=3, cost_budget=0.0002))
    _, rt = svc.prepare(parse_chat_request({"model": "large", "messages": _ask(queries[0]), "roro": {"max_steps": 10, "max_cost_usd": 5}}))
    assert (rt.max_steps, rt.cost_budget) == (3, 0.0002)


# ----- bad input: the right 4xx, OpenAI's error shape ---------------------------------------------

def _is_openai_error(resp: httpx.Response, status: int) -> dict:
    assert resp.status_code == status, (resp.status_code, resp.text)
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"] and err["type"]
    return err


@pytest.mark.parametrize("body, status, fragment", [
    (b'{"model": "cheap", "messages": [', 400, "not valid JSON"),
    (b'["a list"]', 400, "JSON object"),
    (json.dumps({"model": "cheap"}).encode(), 400, "messages"),
    (json.dumps({"model": "cheap", "messages": [{"role": "assistant", "content": "hi"}]}).encode(), 400, "last message"),
    (json.dumps({"model": "cheap", "messages": [{"role": "user", "content": "q"}], "n": 2}).encode(), 400, "'n'"),
    (json.dumps({"model": "cheap", "messages": [{"role": "user", "content": "q"}], "max_tokens": -5}).encode(), 400, "max_tokens"),
    (json.dumps({"model": "cheap", "messages": [{"role": "user", "content": "q"}], "roro": {"max_cost_usd": -1}}).encode(), 400, "max_cost_usd"),
    (json.dumps({"model": "cheap", "messages": [{"role": "user", "content": "q"}], "tools": [{"type": "function"}]}).encode(), 400, "tool"),
    (json.dumps({"model": "nope", "messages": [{"role": "user", "content": "q"}]}).encode(), 404, "no route 'nope'"),
    (json.dumps({"model": "policy:/etc", "messages": [{"role": "user", "content": "q"}]}).encode(), 404, "no route"),
])
def test_bad_requests_get_openai_errors(sim_server, body, status, fragment):
    resp = httpx.post(sim_server.url + "/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
    err = _is_openai_error(resp, status)
    assert fragment in err["message"]
    if status == 404:
        assert err["code"] == "model_not_found"


def test_official_client_raises_its_own_error_types(sim_server):
    client = _client(sim_server.url)
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "q"}])
    assert e.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="cheap", messages=[{"role": "user", "content": "q"}], max_tokens=-1)


def test_unknown_path_and_method_are_openai_errors(sim_server):
    _is_openai_error(httpx.get(sim_server.url + "/v1/nothing"), 404)
    _is_openai_error(httpx.get(sim_server.url + "/v1/chat/completions"), 405)


def test_oversized_bodies_are_refused_with_413(queries):
    with start_server(ServeConfig(pool="sim", port=0, limits=ServeLimits(max_body_bytes=2048))) as srv:
        big = json.dumps({"model": "all-small", "messages": [{"role": "user", "content": "x" * 5000}]}).encode()
        err = _is_openai_error(httpx.post(srv.url + "/v1/chat/completions", content=big), 413)
        assert err["code"] == "request_too_large"
        chunked = httpx.post(srv.url + "/v1/chat/completions", content=iter([big[:1500], big[1500:]]))  # no Content-Length
        _is_openai_error(chunked, 413)
        with pytest.raises(openai.APIStatusError) as e:
            _client(srv.url).chat.completions.create(model="all-small", messages=[{"role": "user", "content": "x" * 5000}])
        assert e.value.status_code == 413
        ok = _client(srv.url).chat.completions.create(model="all-small", messages=_ask(queries[0]))
        assert ok.choices[0].message.content  # the server still serves


# ----- auth ---------------------------------------------------------------------------------------

def test_keys_are_required_once_configured_and_compared_exactly(monkeypatch, queries):
    monkeypatch.setenv("RORO_TEST_KEYS", f"{KEY},second-key-abcdefgh")
    with start_server(ServeConfig(pool="sim", port=0, api_key_env="RORO_TEST_KEYS")) as srv:
        for key in (None, "wrong-key-0123456789", KEY[:-1], KEY + "x"):
            headers = {} if key is None else {"Authorization": f"Bearer {key}"}
            err = _is_openai_error(httpx.post(srv.url + "/v1/chat/completions", json={"model": "all-small", "messages": _ask(queries[0])},
                                              headers=headers), 401)
            assert err["code"] == "invalid_api_key" and (key is None or key not in err["message"])
        with pytest.raises(openai.AuthenticationError):
            _client(srv.url, "wrong-key-0123456789").models.list()
        for key in (KEY, "second-key-abcdefgh"):
            assert _client(srv.url, key).chat.completions.create(model="all-small", messages=_ask(queries[0])).choices
        assert httpx.get(srv.url + "/metrics").status_code == 401  # traffic figures are not public either
        assert httpx.get(srv.url + "/health").status_code == 200  # a load balancer's probe needs no key


def test_listening_beyond_loopback_needs_keys(monkeypatch, tmp_path):
    monkeypatch.delenv("RORO_SERVE_API_KEYS", raising=False)
    with pytest.raises(ConfigError, match="API keys are required"):
        start_server(ServeConfig(pool="sim", host="0.0.0.0", port=0))
    from roro_sdk.cli import main

    assert main(["serve", "--pool", "sim", "--host", "0.0.0.0"]) == 2  # refused before binding
    short = tmp_path / "keys.txt"
    short.write_text("# one key a line\nabc\n")
    with pytest.raises(ConfigError, match="shorter than"):
        start_server(ServeConfig(pool="sim", port=0, api_key_file=str(short)))
    from roro_sdk.serve.auth import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and not is_loopback("0.0.0.0")


# ----- upstream faults: retries, then 502, and the server lives on -------------------------------

@pytest.fixture
def fake_upstream():
    srv = FakeOpenAIServer({"small": FakeModel(answer="41", steps=3), "large": FakeModel(answer="42", steps=3)})
    srv.start()
    yield srv
    srv.stop()


def _fake_pool(up: FakeOpenAIServer, **kw) -> ModelPool:
    return ModelPool([up.spec("small", price=(0.1, 0.4), **kw), up.spec("large", price=(1.0, 4.0), **kw)], retry=FAST_RETRY)


def test_upstream_faults_are_retried_then_502_and_the_server_survives(fake_upstream):
    svc = RoutedService(_fake_pool(fake_upstream), {"small": "all-small"})
    with start_server(ServeConfig(port=0), service=svc) as srv:
        client = _client(srv.url)
        fake_upstream.inject("small", [500, 503])  # transient: retried, the request succeeds
        r = client.chat.completions.create(model="small", messages=[{"role": "user", "content": "What is 6 * 7?"}])
        assert r.roro["steps"][0]["retries"] == 2 and r.roro["stop_reason"] == "answer"
        fake_upstream.inject("small", [500, 429, "reset", 502])  # more faults than 3 retries cover
        with pytest.raises(openai.APIStatusError) as e:
            client.chat.completions.create(model="small", messages=[{"role": "user", "content": "What is 6 * 8?"}])
        assert e.value.status_code == 502 and e.value.body["code"] == "upstream_error"
        assert "failed after 4 attempt" in e.value.body["message"]
        fake_upstream.inject("small", [401])  # permanent: no retry, also the provider's failure
        with pytest.raises(openai.APIStatusError) as e:
            client.chat.completions.create(model="small", messages=[{"role": "user", "content": "What is 6 * 9?"}], stream=True)
        assert e.value.status_code == 502  # failed before any step: a plain status, not a broken stream
        r = client.chat.completions.create(model="small", messages=[{"role": "user", "content": "What is 7 * 7?"}])
        assert r.choices[0].message.content.endswith("Answer: 41")
        assert srv.service.metrics.value("roro_errors_total", kind="upstream") == 2


def test_a_failure_after_some_steps_ends_the_stream_with_an_error_event(fake_upstream):
    svc = RoutedService(_fake_pool(fake_upstream), {"small": "all-small"})
    with start_server(ServeConfig(port=0), service=svc) as srv:
        fake_upstream.inject("small", [200, 500, 500, 500, 500])  # step 1 written, step 2 fails for good
        seen = []
        with pytest.raises(openai.APIError, match="routing failed after 1 step"):
            for c in _client(srv.url).chat.completions.create(model="small", messages=[{"role": "user", "content": "4+4?"}],
                                                              stream=True):
                if c.choices and c.choices[0].delta.content:
                    seen.append(c.choices[0].delta.content)
        assert seen == ["small step 1: so so so so"]
        assert httpx.get(srv.url + "/health").json()["status"] == "ok"


def test_provider_secrets_never_reach_a_response(fake_upstream, monkeypatch):
    secret = "sk-upstream-secret-0123456789"
    monkeypatch.setenv("RORO_TEST_UPSTREAM_KEY", secret)
    pool = _fake_pool(fake_upstream, api_key_env="RORO_TEST_UPSTREAM_KEY")
    with start_server(ServeConfig(port=0), service=RoutedService(pool, {"small": "all-small"})) as srv:
        fake_upstream.inject("small", ["echo_key"])  # the provider's 401 echoes the Authorization header
        resp = httpx.post(srv.url + "/v1/chat/completions", json={"model": "small", "messages": [{"role": "user", "content": "1?"}]})
        err = _is_openai_error(resp, 502)
        assert "invalid credentials" in err["message"] and secret not in resp.text


def test_steps_stream_as_they_are_written(fake_upstream):
    fake_upstream.latency_s = 0.25
    svc = RoutedService(_fake_pool(fake_upstream), {"small": "all-small"})
    with start_server(ServeConfig(port=0), service=svc) as srv:
        t0 = time.perf_counter()
        arrivals = []
        for c in _client(srv.url).chat.completions.create(model="small", messages=[{"role": "user", "content": "2+2?"}], stream=True):
            if c.choices and c.choices[0].delta.content:
                arrivals.append(time.perf_counter() - t0)
        assert len(arrivals) == 4  # 3 steps and the answer, each ~0.25 s apart
        assert arrivals[-1] - arrivals[0] > 0.5, arrivals  # not all at the end


def test_a_full_queue_is_refused_with_429_and_retry_after(fake_upstream):
    fake_upstream.latency_s = 0.3
    svc = RoutedService(_fake_pool(fake_upstream), {"small": "all-small"})
    limits = ServeLimits(max_concurrency=1, max_queue=1, retry_after_s=2)
    with start_server(ServeConfig(port=0, limits=limits), service=svc) as srv:
        results: list[httpx.Response] = []

        def post() -> None:
            results.append(httpx.post(srv.url + "/v1/chat/completions", timeout=30,
                                      json={"model": "small", "messages": [{"role": "user", "content": "3+3?"}]}))

        threads = [threading.Thread(target=post) for _ in range(4)]
        for t in threads:
            t.start()
            time.sleep(0.05)
        for t in threads:
            t.join()
        codes = sorted(r.status_code for r in results)
        assert codes == [200, 200, 429, 429], codes
        refused = next(r for r in results if r.status_code == 429)
        assert refused.headers["Retry-After"] == "2" and refused.json()["error"]["type"] == "rate_limit_error"


# ----- the LiteLLM provider: same routes, same shape -----------------------------------------------

def test_litellm_provider_answers_like_the_server(sim_server, queries):
    import litellm

    service = register_roro_provider(sim_server.service)
    assert service.routes.names == [m.id for m in _client(sim_server.url).models.list().data]
    q = queries[5]
    via_http = _client(sim_server.url).chat.completions.create(model="steer-0.8", messages=_ask(q))
    via_litellm = litellm.completion(model="roro/steer-0.8", messages=_ask(q))
    assert via_litellm.choices[0].message.content == via_http.choices[0].message.content
    assert via_litellm.usage.completion_tokens == via_http.usage.completion_tokens
    assert via_litellm.usage.cost == pytest.approx(via_http.usage.cost)
    assert [s["model"] for s in via_litellm.roro["steps"]] == [s["model"] for s in via_http.roro["steps"]]
    assert via_litellm._hidden_params["response_cost"] == pytest.approx(via_http.usage.cost)

    chunks = list(litellm.completion(model="roro/steer-0.8", messages=_ask(q), stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == via_http.choices[0].message.content
    steps = [c.choices[0].delta.provider_specific_fields["roro"]["step"] for c in chunks
             if c.choices and (c.choices[0].delta.provider_specific_fields or {}).get("roro", {}).get("step")]
    assert [s["model"] for s in steps] == [s["model"] for s in via_http.roro["steps"]]
    assert chunks[-1].usage.completion_tokens == via_http.usage.completion_tokens

    import asyncio

    r = asyncio.run(litellm.acompletion(model="roro/cheap", messages=_ask(q), max_tokens=30))
    assert r.roro["stop_reason"] == "token_budget"
    with pytest.raises(litellm.exceptions.NotFoundError):
        litellm.completion(model="roro/nope", messages=_ask(q))
    with pytest.raises(litellm.exceptions.BadRequestError):
        litellm.completion(model="roro/cheap", messages=_ask(q), roro={"max_cost_usd": -1})


def test_the_proxy_handler_reads_its_config_from_the_environment(tmp_path, monkeypatch, queries):
    cfg = tmp_path / "serve.yaml"
    cfg.write_text("pool: sim:careful\nroutes:\n  steer: steer:0.8\n")
    monkeypatch.setenv("RORO_SERVE_CONFIG", str(cfg))
    from roro_sdk.serve.provider import make_handler

    handler = make_handler()  # what roro_sdk.serve.litellm_proxy.handler is: the LiteLLM proxy imports it
    assert handler.service.routes.names == ["steer"]


# ----- configuration --------------------------------------------------------------------------------

def test_config_file_and_command_line_overrides(tmp_path):
    (tmp_path / "pool.yaml").write_text("models:\n  - {name: a, model: openai/a, api_base: 'http://127.0.0.1:9/v1', "
                                        "input_price_per_m: 0.1, output_price_per_m: 0.2}\n")
    cfg_path = tmp_path / "serve.yaml"
    cfg_path.write_text("pool: pool.yaml\nroutes:\n  cheap: all-small\nlimits: {max_concurrency: 8}\n"
                        "budgets: {cost_budget: 0.01}\ntrajectory_log: logs/served.jsonl\n")
    cfg = ServeConfig.from_file(cfg_path, routes={"big": "all-large"}, limits={"max_queue": 4}, port=9000)
    assert cfg.pool == str(tmp_path / "pool.yaml") and cfg.trajectory_log == str(tmp_path / "logs/served.jsonl")
    assert cfg.routes == {"cheap": "all-small", "big": "all-large"} and cfg.port == 9000
    assert (cfg.limits.max_concurrency, cfg.limits.max_queue, cfg.budgets.cost_budget) == (8, 4, 0.01)
    assert ServeConfig().merged(routes={"x": "steer:0.7"}).routes == {"x": "steer:0.7"}  # replaces the defaults
    with pytest.raises(ConfigError, match="route name"):
        ServeConfig(routes={"bad name": "all-small"})
    with pytest.raises(ConfigError, match="route 'x'"):
        RoutedService(sim_pool(), {"x": "fixed:nosuch"})
    example = ServeConfig.from_file(ROOT / "examples" / "configs" / "serve.yaml")
    assert RoutedService.from_config(example).routes.names == list(example.routes)


def test_routers_are_built_once_at_start_up_and_shared(monkeypatch, queries):
    import roro_sdk.serve.service as service_module

    built = []
    real = service_module.make_router
    monkeypatch.setattr(service_module, "make_router", lambda spec, **kw: built.append(spec) or real(spec, **kw))
    svc = RoutedService(sim_pool(SimConfig.careful()), {"a": "steer:0.8", "b": "all-large"})
    assert built == ["steer:0.8", "all-large"]
    routers = set()
    for q in queries[:3]:
        req = parse_chat_request({"model": "a", "messages": _ask(q)})
        routers.add(id(svc.prepare(req)[1].router))
    assert len(routers) == 1 and built == ["steer:0.8", "all-large"]
    with pytest.raises(UnknownRouteError):
        svc.routes.resolve("policy:/tmp/anything")
    for alias in ("learned", "budget:learned", "budget:budget:learned"):  # the shipped router's alias has weights too
        with pytest.raises(UnknownRouteError):
            svc.routes.resolve(alias)


def test_a_learned_policy_route_loads_once_at_start_up(tmp_path, monkeypatch, queries):
    pytest.importorskip("torch")
    pytest.importorskip("peft")
    from roro_sdk.train import build_policy, load_grpo_config, pool_and_queries

    cfg = load_grpo_config(dataset="sim:careful", train_queries=4, eval_queries=2, out_dir=str(tmp_path / "run"))
    pool, train_qs, _ = pool_and_queries(cfg)
    folder = build_policy(cfg, pool.names, train_qs).save(tmp_path / "router")
    from roro_sdk import PolicyRouter

    loads = []
    real = PolicyRouter.load.__func__
    monkeypatch.setattr(PolicyRouter, "load", classmethod(lambda cls, *a, **kw: loads.append(a) or real(cls, *a, **kw)))
    with start_server(ServeConfig(pool="sim:careful", routes={"learned": f"policy:{folder}"}, port=0)) as srv:
        assert len(loads) == 1
        client = _client(srv.url)
        for q in queries[:2]:
            r = client.chat.completions.create(model="learned", messages=_ask(q))
            assert r.roro["router"].startswith("policy") and r.roro["stop_reason"] == "answer"
        assert len(loads) == 1  # shared by every request


def test_the_runtime_reports_each_step_as_it_is_recorded(queries):
    seen: list[int] = []

    async def on_step(step) -> None:
        seen.append(step.index)

    traj = StepwiseRuntime(sim_pool(SimConfig.careful()), make_router("all-small")).run(queries[0], on_step=on_step)
    assert seen == [s.index for s in traj.steps] and seen


# ----- the real command: graceful shutdown, kill -9, keys never logged -----------------------------

def _start_cli(args: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {})}
    proc = subprocess.Popen([sys.executable, "-m", "roro_sdk", "serve", "--port", "0", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=full_env)
    line = proc.stdout.readline()  # the start-up line, printed once the socket listens
    m = re.search(r"http://127\.0\.0\.1:(\d+)/v1", line)
    if not m:
        proc.kill()
        raise AssertionError(f"no start-up line: {line!r} {proc.stderr.read()[-2000:]}")
    return proc, f"http://127.0.0.1:{m.group(1)}"


def test_graceful_shutdown_finishes_in_flight_requests_and_logs_them(tmp_path, fake_upstream):
    fake_upstream.latency_s = 0.4
    pool = tmp_path / "pool.yaml"
    pool.write_text("models:\n" + "".join(
        f"  - {{name: {n}, model: openai/{n}, api_base: '{fake_upstream.api_base}', input_price_per_m: {p}, output_price_per_m: {p}}}\n"
        for n, p in (("small", 0.1), ("large", 1.0))))
    log = tmp_path / "served.jsonl"
    proc, url = _start_cli(["--pool", str(pool), "--route", "s=all-small", "--trajectory-log", str(log), "--access-log"],
                           env={"RORO_SERVE_API_KEYS": KEY})
    try:
        got: list[httpx.Response] = []
        t = threading.Thread(target=lambda: got.append(httpx.post(
            url + "/v1/chat/completions", timeout=30, headers={"Authorization": f"Bearer {KEY}"},
            json={"model": "s", "messages": [{"role": "user", "content": "What is 1 + 1?"}]})))
        httpx.get(url + "/v1/models", headers={"Authorization": "Bearer wrong-key-but-logged?"}, timeout=30)  # a busy host: its first request may take more than httpx's 5 s
        t.start()
        time.sleep(0.6)  # the request is between its steps (4 x 0.4 s)
        proc.send_signal(signal.SIGTERM)
        t.join(30)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert got and got[0].status_code == 200 and got[0].json()["choices"][0]["message"]["content"].endswith("Answer: 41")
    lines = log.read_text().splitlines()
    assert len(lines) == 1 and Trajectory.from_jsonl(lines[0]).id == got[0].json()["roro"]["trajectory_id"]
    assert '"POST /v1/chat/completions' in err  # the access log is on ...
    assert KEY not in out + err and "wrong-key-but-logged" not in out + err  # ... and holds no key


def test_kill_9_under_load_leaves_every_log_line_valid(tmp_path):
    log = tmp_path / "served.jsonl"
    cfg = tmp_path / "serve.yaml"
    cfg.write_text("pool: sim:careful\nroutes: {steer: steer:0.8}\nlimits: {max_concurrency: 8}\n")
    proc, url = _start_cli(["--config", str(cfg), "--trajectory-log", str(log)])
    qs = sim_queries("sim:careful", n=200, seed=9)
    stop = threading.Event()
    ok = [0]

    def load(offset: int) -> None:
        with httpx.Client(timeout=10) as c:
            for q in qs[offset::8]:
                if stop.is_set():
                    return
                try:
                    if c.post(url + "/v1/chat/completions", json={"model": "steer", "messages": _ask(q)}).status_code == 200:
                        ok[0] += 1
                except httpx.HTTPError:
                    return  # the server is gone
    threads = [threading.Thread(target=load, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while ok[0] < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.kill()  # SIGKILL while 8 clients keep requests in flight
    proc.wait(10)
    stop.set()
    for t in threads:
        t.join(15)
    assert ok[0] >= 20
    raw = log.read_bytes()
    lines = raw.split(b"\n")
    assert lines[-1] == b"", "the last line is cut short"
    trajs = [Trajectory.from_jsonl(line.decode()) for line in lines[:-1]]  # every line parses
    assert len(trajs) >= ok[0] and len({t.id for t in trajs}) == len(trajs)


# ----- the docs' curl snippets run against a live server -------------------------------------------

def test_the_docs_curl_snippets_work():
    text = (ROOT / "docs" / "serve.md").read_text()
    blocks = [b for b in re.findall(r"^```bash\n(.*?)^```", text, re.S | re.M) if b.lstrip().startswith("curl")]
    assert blocks, "docs/serve.md shows curl"
    with start_server(ServeConfig(pool="sim:careful", routes={"steer-0.8": "steer:0.8", "cheap": "all-small"}, port=0)) as srv:
        for block in blocks:
            script = block.replace("http://127.0.0.1:8000", srv.url)
            r = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r.stderr
            assert '"object": "list"' in r.stdout and '"object": "chat.completion"' in r.stdout
            assert '"stop_reason": "answer"' in r.stdout and "roro_requests_total" in r.stdout
