"""`rema serve`: the OpenAI-compatible server over real HTTP (uvicorn on a free port, tiny model, transformers
engine), its batching, its refusals, a client leaving mid-stream, separate weights; `rema chat` on a run."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from rema.config import Config, load_config, save_config  # noqa: E402
from rema.rollout import END_CODES, Engine, HFEngine  # noqa: E402
from rema.serve import api  # noqa: E402
from rema.serve.app import create_app  # noqa: E402
from rema.serve.batcher import Batcher, Busy  # noqa: E402
from rema.serve.service import Service  # noqa: E402

SERVE_KEYS = ["model.name=tiny-random", "rollout.max_turns=2", "rollout.max_tokens_per_turn=6",
              "rollout.max_context_tokens=1024", "serve.batch_wait_ms=50", "serve.max_request_bytes=4096"]


class CountingEngine(Engine):
    """The real engine, counting calls (the batch size of each) and optionally slowed down."""

    def __init__(self, inner: Engine, delay_s: float = 0.0):
        self.inner, self.tokenizer, self.model = inner, inner.tokenizer, getattr(inner, "model", None)
        self.delay_s = delay_s
        self.calls: list[int] = []

    def generate(self, prompts, params):
        self.calls.append(len(prompts))
        if self.delay_s:
            time.sleep(self.delay_s)
        return self.inner.generate(prompts, params)


@contextmanager
def serving(app):
    """``app`` under uvicorn on a free port of 127.0.0.1, in a thread; yields the base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.fixture(scope="module")
def server(tiny):
    """One server for the module: tiny model, multi-turn ReMA (2 rounds), shared weights, counted engine calls."""
    model, tok = tiny
    engine = CountingEngine(HFEngine(model, tok, seed=0))
    cfg = load_config(None, SERVE_KEYS)
    service = Service(cfg, {"mta": engine, "ra": engine}, "tiny")
    app = create_app(service, cfg.serve)
    with serving(app) as url:
        yield SimpleNamespace(url=url, engine=engine, service=service, app=app, cfg=cfg)


def _wait_idle(url: str) -> dict:
    for _ in range(500):
        health = httpx.get(f"{url}/health").json()
        if health["pending"] == 0:
            return health
        time.sleep(0.02)
    raise AssertionError("requests still pending")


# --- the openai client ----------------------------------------------------------------------------------


def test_openai_client_gets_the_dialogue(server):
    import openai

    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused")
    assert [m.id for m in client.models.list().data] == ["tiny"]
    resp = client.chat.completions.create(model="tiny", messages=[
        {"role": "system", "content": "ignored: each agent has its own"},
        {"role": "user", "content": "What is 1 + 1?"}, {"role": "assistant", "content": "2"},
        {"role": "user", "content": "What is 2 + 3?"}], max_tokens=100, temperature=0)
    rema = resp.model_extra["rema"]
    assert rema["method"] == "rema-multi" and rema["end_code"] in END_CODES
    agents = [t["agent"] for t in rema["dialogue"]]
    assert agents[:2] == ["mta", "ra"] and len(agents) <= 4  # two rounds at most
    assert resp.choices[0].message.content == [t for t in rema["dialogue"] if t["agent"] == "ra"][-1]["content"]
    assert resp.choices[0].finish_reason == ("stop" if rema["end_code"] == "finished" else "length")
    assert rema["limits"]["max_tokens_per_turn"] == 6  # 100 asked, the config's 6 is the most
    assert all(t["tokens"] <= 6 for t in rema["dialogue"])
    generated = sum(t["tokens"] for t in rema["dialogue"])
    assert resp.usage.completion_tokens == generated == sum(rema["tokens"]["generated"].values())
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + generated
    # the question is the last user message: the MTA's opening context holds it, not the first one
    mta_prompt = server.service._codec.start(server.service.prompts.mta, "What is 2 + 3?")
    assert resp.usage.prompt_tokens == len(mta_prompt)

    stream = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "What is 4 * 2?"}],
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    final = [c for c in chunks if c.choices and c.choices[0].finish_reason][-1]
    assert text == [t for t in final.model_extra["rema"]["dialogue"] if t["agent"] == "ra"][-1]["content"]
    assert chunks[-1].usage.completion_tokens == sum(t["tokens"] for t in final.model_extra["rema"]["dialogue"])

    with pytest.raises(openai.BadRequestError, match="no user message"):
        client.chat.completions.create(model="tiny", messages=[{"role": "system", "content": "hi"}])
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])


def test_concurrent_requests_are_batched(server):
    """20 requests at once: all answered, in batches (far fewer engine calls than requests x turns)."""
    import openai

    client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    questions = [f"What is {i} + {i}?" for i in range(20)]

    async def ask_all():
        return await asyncio.gather(*[client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": q}], temperature=0.7) for q in questions])

    before = len(server.engine.calls)
    responses = asyncio.run(ask_all())
    calls = server.engine.calls[before:]
    turns = [len(r.model_extra["rema"]["dialogue"]) for r in responses]
    assert len(responses) == 20 and all(t >= 2 for t in turns)
    assert sum(calls) == sum(turns)  # every turn generated once, inside some engine call
    assert len(calls) < sum(turns) / 2, calls  # unbatched, each turn would be an engine call of its own
    assert max(r.model_extra["rema"]["batch"]["size"] for r in responses) > 1


# --- refusals ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("body, status, message", [
    (b"{not json", 400, "malformed JSON"),
    (b"[1, 2]", 400, "must be a JSON object"),
    (json.dumps({"messages": [{"role": "system", "content": "x"}]}).encode(), 400, "no user message"),
    (json.dumps({"messages": []}).encode(), 400, "non-empty list"),
    (json.dumps({"model": "other", "messages": [{"role": "user", "content": "x"}]}).encode(), 404, "not served"),
    (json.dumps({"messages": [{"role": "user", "content": "x"}], "n": 0}).encode(), 400, "n must be an integer"),
    (json.dumps({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}],
                 "logprobs": True}).encode(), 400, "unsupported field(s) 'tools', 'logprobs'"),
    (json.dumps({"messages": [{"role": "user", "content": "x"}], "stop": ["a", "b", "c", "d", "e"]}).encode(), 400,
     "stop must be"),
    (json.dumps({"messages": [{"role": "user", "content": "x"}], "seed": 1.5}).encode(), 400, "seed must be"),
    (json.dumps({"messages": [{"role": "user", "content": "x"}], "temperature": 5}).encode(), 400, "temperature"),
    (json.dumps({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}).encode(), 400, "max_tokens"),
    (json.dumps({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}).encode(), 400, "text parts"),
    (json.dumps({"messages": [{"role": "user", "content": "7 + " * 200}]}).encode(), 400, "does not fit the context"),
    (json.dumps({"messages": [{"role": "user", "content": "x" * 5000}]}).encode(), 413, "over the limit"),
], ids=["malformed", "not-object", "no-user", "no-messages", "unknown-model", "n", "unsupported", "stop", "seed",
        "temperature", "max-tokens", "image", "context", "oversize"])
def test_bad_requests_are_refused_with_a_message(server, body, status, message):
    r = httpx.post(f"{server.url}/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status
    error = r.json()["error"]
    assert message in error["message"] and set(error) == {"message", "type", "param", "code"}
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"


def test_every_error_is_an_openai_error_object(server):
    """Not only refusals: an unknown route, a wrong method, a neutral field accepted, an unknown one named."""
    for r, status in ((httpx.get(f"{server.url}/v1/nothing"), 404),
                      (httpx.get(f"{server.url}/v1/chat/completions"), 405),
                      (httpx.post(f"{server.url}/v1/completions", json={}), 404)):
        assert r.status_code == status and set(r.json()["error"]) == {"message", "type", "param", "code"}, r.text
    msg = [{"role": "user", "content": "What is 1 + 1?"}]
    ok = httpx.post(f"{server.url}/v1/chat/completions", timeout=30, json={
        "messages": msg, "logprobs": False, "frequency_penalty": 0, "tools": [], "user": "u1", "top_logprobs": None})
    assert ok.status_code == 200, ok.text
    r = httpx.post(f"{server.url}/v1/chat/completions", json={"messages": msg, "frequency_penalty": 0.5})
    assert r.status_code == 400 and r.json()["error"]["param"] == "frequency_penalty"


def test_n_seed_and_stop_follow_the_openai_contract(server):
    """``n`` choices; ``seed`` gives the same dialogues again (alone or batched with others); ``stop`` cuts each
    answer before the stop string, finish_reason ``stop``."""
    msg = {"model": "tiny", "messages": [{"role": "user", "content": "What is 6 + 1?"}], "temperature": 1.0}

    def ask(**extra) -> dict:
        r = httpx.post(f"{server.url}/v1/chat/completions", json={**msg, **extra}, timeout=60)
        assert r.status_code == 200, r.text
        return r.json()

    three = ask(n=3, seed=11)
    assert [c["index"] for c in three["choices"]] == [0, 1, 2] and all("rema" in c for c in three["choices"])
    again = ask(n=3, seed=11)
    texts = [[t["content"] for t in c["rema"]["dialogue"]] for c in three["choices"]]
    assert texts == [[t["content"] for t in c["rema"]["dialogue"]] for c in again["choices"]]
    assert len({tuple(t) for t in texts}) > 1  # choice k samples with seed + k: not three copies
    assert three["usage"]["completion_tokens"] == sum(t["tokens"] for c in three["choices"]
                                                      for t in c["rema"]["dialogue"])
    with httpx.Client(timeout=60) as c:  # the same seed inside a batch of other requests
        others = [threading.Thread(target=lambda: c.post(f"{server.url}/v1/chat/completions", json=msg))
                  for _ in range(3)]
        for t in others:
            t.start()
        batched = ask(n=3, seed=11)
        for t in others:
            t.join()
    assert [[t["content"] for t in ch["rema"]["dialogue"]] for ch in batched["choices"]] == texts
    answer = three["choices"][0]["message"]["content"]
    assert answer
    stop = answer[len(answer) // 2:][:2]
    cut = ask(n=3, seed=11, stop=[stop, "never there"])["choices"][0]
    assert cut["message"]["content"] == answer[:answer.find(stop)] and cut["finish_reason"] == "stop"


def test_a_stream_of_several_choices(server):
    msg = {"model": "tiny", "messages": [{"role": "user", "content": "What is 2 + 2?"}], "n": 2, "seed": 3,
           "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=msg, timeout=60) as r:
        events = [json.loads(line.removeprefix("data: ")) for line in r.iter_lines()
                  if line.startswith("data: ") and line != "data: [DONE]"]
    finals = [e for e in events if e["choices"] and e["choices"][0]["finish_reason"]]
    assert sorted(e["choices"][0]["index"] for e in finals) == [0, 1]
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] > 0


def test_oversize_body_without_content_length_is_refused(server):
    def body():  # chunked: the size is known only by reading
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}]}'

    r = httpx.post(f"{server.url}/v1/chat/completions", content=body())
    assert r.status_code == 413


def test_a_client_leaving_mid_stream_does_not_break_the_server(server, monkeypatch):
    """A streaming client disconnects while its request waits behind a running batch: its request is dropped
    before its batch begins, the running one finishes, and the next request is answered."""
    from rema.serve import app as app_module

    monkeypatch.setattr(app_module, "KEEPALIVE_S", 0.05)
    server.engine.delay_s = 0.3
    sizes: list[int] = []
    run_batch = server.service.run_batch
    monkeypatch.setattr(server.service, "run_batch", lambda reqs: (sizes.append(len(reqs)), run_batch(reqs))[1])
    server.app.state.batcher.run = server.service.run_batch
    try:
        msg = {"model": "tiny", "messages": [{"role": "user", "content": "What is 5 + 5?"}]}
        with httpx.Client(timeout=30) as c:
            holder = threading.Thread(target=lambda: c.post(f"{server.url}/v1/chat/completions", json=msg))
            holder.start()  # occupies the engine for ~1 s
            time.sleep(0.2)
            with httpx.stream("POST", f"{server.url}/v1/chat/completions", json={**msg, "stream": True}) as r:
                assert r.status_code == 200
                first = next(r.iter_lines())
                assert json.loads(first.removeprefix("data: "))["choices"][0]["delta"]["role"] == "assistant"
            # the stream is closed here, while its request waits for the running batch
            holder.join()
        server.engine.delay_s = 0.0
        _wait_idle(server.url)
        r = httpx.post(f"{server.url}/v1/chat/completions", json=msg, timeout=30)
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["role"] == "assistant"
        assert sizes == [1, 1]  # the request of the client that left never ran
    finally:
        server.engine.delay_s = 0.0
        server.app.state.batcher.run = run_batch


def test_a_full_server_answers_429(server):
    """Past ``serve.max_concurrency`` requests held, one more is refused with 429 at once, not queued."""
    batcher = server.app.state.batcher
    server.engine.delay_s, batcher.max_pending = 0.2, 1
    try:
        msg = {"model": "tiny", "messages": [{"role": "user", "content": "What is 5 + 5?"}]}
        holder = threading.Thread(target=lambda: httpx.post(f"{server.url}/v1/chat/completions", json=msg,
                                                            timeout=30))
        holder.start()
        for _ in range(200):
            if batcher.pending:
                break
            time.sleep(0.01)
        r = httpx.post(f"{server.url}/v1/chat/completions", json=msg, timeout=30)
        assert r.status_code == 429 and "serve.max_concurrency=1" in r.json()["error"]["message"]
        holder.join()
    finally:
        server.engine.delay_s, batcher.max_pending = 0.0, server.cfg.serve.max_concurrency


def test_a_judge_run_renders_the_pair_from_a_json_question(tiny):
    """rollout.task=judge: the question's prompt/response_a/response_b are rendered by the judge template."""
    from fastapi.testclient import TestClient

    model, tok = tiny
    engine = CountingEngine(HFEngine(model, tok, seed=0))
    seen: list[list[int]] = []
    real = engine.generate
    engine.generate = lambda prompts, params: (seen.extend(prompts), real(prompts, params))[1]
    cfg = load_config(None, ["rollout.task=judge", "rollout.mode=single_turn", "rollout.max_tokens_per_turn=4",
                             "rollout.max_context_tokens=1024"])
    service = Service(cfg, {"mta": engine, "ra": engine}, "judge")
    pair = {"prompt": "Name a colour.", "response_a": "Blue.", "response_b": "Seven."}
    with TestClient(create_app(service, cfg.serve)) as client:
        r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": json.dumps(pair)}]})
    assert r.status_code == 200, r.text
    assert r.json()["rema"]["method"] == cfg.method_name
    first = tok.decode(seen[0])
    assert "[Response A]\nBlue." in first and "[Response B]\nSeven." in first and '"response_a"' not in first


# --- pieces -----------------------------------------------------------------------------------------------


def test_parse_request_maps_sampling_onto_the_config_limits():
    limits = api.Limits(max_tokens_per_turn=64, default_temperature=0.0, default_top_p=0.9)
    msg = [{"role": "user", "content": [{"type": "text", "text": "What is"}, {"type": "text", "text": "2 + 2?"}]}]
    req = api.parse_request({"messages": msg}, limits)
    assert (req.question, req.temperature, req.top_p, req.max_tokens) == ("What is\n2 + 2?", 0.0, 1.0, 64)
    nulls = api.parse_request({"messages": msg, "n": None, "stream": None, "temperature": None}, limits)
    assert (nulls.stream, nulls.temperature) == (False, 0.0)  # null means the default, as OpenAI reads it
    req = api.parse_request({"messages": msg, "temperature": 0.7, "max_completion_tokens": 10, "max_tokens": 99},
                            limits)
    assert (req.temperature, req.top_p, req.max_tokens) == (0.7, 0.9, 10)
    assert api.parse_request({"messages": msg, "max_tokens": 1000}, limits).max_tokens == 64
    with pytest.raises(api.RequestError, match="top_p"):
        api.parse_request({"messages": msg, "top_p": 0}, limits)
    judge = api.Limits(max_tokens_per_turn=64, default_temperature=0.0, default_top_p=1.0, judge=True)
    parts = {"prompt": "Say hi", "response_a": "hi", "response_b": "bye"}
    assert api.parse_request({"messages": [{"role": "user", "content": json.dumps(parts)}]}, judge).meta == parts
    assert api.parse_request({"messages": [{"role": "user", "content": "A or B?"}]}, judge).meta == {}


def test_batcher_batches_refuses_when_full_and_survives_a_failing_batch():
    seen: list[list] = []

    def run(items):
        seen.append(list(items))
        if "boom" in items:
            raise ValueError("boom")
        return [x * 2 for x in items]

    async def scenario():
        b = Batcher(run, max_pending=3, wait_s=0.01)
        b.start()
        futures = [b.submit(i) for i in (1, 2, 3)]
        with pytest.raises(Busy):
            b.submit(4)
        results = await asyncio.gather(*futures)
        assert [r for r, _ in results] == [2, 4, 6] and {info.size for _, info in results} == {3}
        with pytest.raises(ValueError, match="boom"):
            await b.submit("boom")
        dropped = b.submit(5)
        dropped.cancel()  # its client left before the batch began
        assert (await b.submit(7))[0] == 14
        assert b.pending == 0  # the dropped job left the count when its batch skipped it
        # a job in a batch the engine is still running when the server stops: it gets an error, and stop()
        # returns only once the engine thread is done (the caller closes the engines next)
        slow = threading.Event()
        b.run = lambda items: (slow.wait(5), [x for x in items])[1]
        held = b.submit(9)
        await asyncio.sleep(0.05)
        asyncio.get_running_loop().call_later(0.1, slow.set)
        await b.stop()
        with pytest.raises(RuntimeError, match="shutting down"):
            held.result()
        assert slow.is_set()

    asyncio.run(scenario())
    assert seen == [[1, 2, 3], ["boom"], [7]]


# --- separate weights: rema serve and rema chat on a run folder --------------------------------------------


@pytest.fixture
def separate_run(tiny, tmp_path):
    """A finished run folder with separate weights: config.yaml and final/mta + final/ra."""
    from rema.models import export_model

    model, tok = tiny
    run = tmp_path / "sep-run"
    run.mkdir()
    cfg = load_config(None, ["model.name=tiny-random", "train.shared_weights=false", "rollout.mode=single_turn",
                             "rollout.max_tokens_per_turn=6", "rollout.max_context_tokens=1024"])
    save_config(cfg, run / "config.yaml")
    export_model(model, tok, run / "final" / "mta")
    export_model(model, tok, run / "final" / "ra")
    return run


def test_a_run_with_separate_weights_is_served(separate_run):
    from fastapi.testclient import TestClient

    from rema.cli import parse_args
    from rema.runtime import load_engines
    from rema.serve.command import model_id, serve_config

    cfg = serve_config(parse_args(["serve", str(separate_run), "--port", "9999", "serve.max_concurrency=4"]))
    assert isinstance(cfg, Config) and (cfg.serve.port, cfg.serve.max_concurrency) == (9999, 4)
    assert cfg.rollout.mode == "single_turn" and not cfg.train.shared_weights  # the run's own config
    engines = load_engines(cfg)
    assert engines["mta"] is not engines["ra"]
    assert engines["mta"].model.name_or_path.endswith("mta") and engines["ra"].model.name_or_path.endswith("ra")
    service = Service(cfg, engines, model_id(cfg))
    assert service.model_id == "sep-run" and "separate weights" in service.describe()
    hub = Config()
    hub.model.name = "Qwen/Qwen2.5-0.5B-Instruct"
    assert model_id(hub) == "Qwen/Qwen2.5-0.5B-Instruct"  # a Hub id stays whole, as vllm serve names it
    hub.model.name = str(separate_run / "final" / "mta") + "/"
    assert model_id(hub) == "mta"  # a model folder: its name
    with TestClient(create_app(service, cfg.serve)) as client:
        r = client.post("/v1/chat/completions", json={"model": "sep-run",
                                                      "messages": [{"role": "user", "content": "What is 2 + 3?"}]})
    assert r.status_code == 200, r.text
    rema = r.json()["rema"]
    assert rema["method"] == "rema-single" and [t["agent"] for t in rema["dialogue"]] == ["mta", "ra"]


def test_chat_takes_a_run_folder_with_separate_weights_and_a_dtype(separate_run, capsys, monkeypatch):
    import rema.runtime as runtime
    from rema.cli import main

    loaded = []
    real = runtime.load_engines
    monkeypatch.setattr(runtime, "load_engines", lambda cfg: loaded.append(real(cfg)) or loaded[-1])
    assert main(["chat", "What is 2 + 3?", "--model", str(separate_run), "--dtype", "bfloat16", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["method"] == "rema-single" and [t["agent"] for t in record["turns"]] == ["mta", "ra"]
    [engines] = loaded  # two models, each from its own folder, in the dtype asked for
    assert engines["mta"].model.name_or_path.endswith("mta") and engines["ra"].model.name_or_path.endswith("ra")
    assert {next(e.model.parameters()).dtype for e in engines.values()} == {torch.bfloat16}
    # a folder of two models (no config.yaml): the pair, under the default config
    assert main(["chat", "What is 2 + 3?", "--model", str(separate_run / "final"), "--max-turns", "1",
                 "--max-tokens", "4", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["method"] == "rema-multi" and [t["agent"] for t in record["turns"]] == ["mta", "ra"]


def test_chat_on_an_unfinished_run_says_what_is_missing(tmp_path, capsys):
    from rema.cli import main

    run = tmp_path / "unfinished"
    (run / "checkpoints").mkdir(parents=True)
    save_config(load_config(None, ["model.name=tiny-random"]), run / "config.yaml")
    assert main(["chat", "What is 2 + 3?", "--model", str(run)]) == 2
    err = capsys.readouterr().err
    assert "final: no model found" in err and "rema train --resume" in err
