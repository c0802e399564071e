"""``bertology serve``: the JSON API and the pages, through a real server on 127.0.0.1 (``bertology serve`` in
a subprocess), on the tiny workflow's results; every number checked against the index or the store read
directly; hostile sample texts; bad parameters; an index rebuilt under a running server; headless Chromium."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import duckdb
import numpy as np
import pytest

from bertology.analysis.token_strength import default_layer
from bertology.store import open_store, sample_attention
from bertology.store.sweep import open_sweep

from .browser import chromium, non_blank
from .conftest import make_split


# -- a real server ----------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(results: Path, db: Path | None = None):
    """``bertology serve RESULTS`` on a free port of 127.0.0.1 until the block ends: its base URL."""
    port = _free_port()
    cmd = [sys.executable, "-m", "bertology.cli", "serve", str(results), "--port", str(port), "--quiet"]
    if db is not None:
        cmd += ["--db", str(db)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"bertology serve exited {proc.returncode}: {proc.stdout.read()[-3000:]}")
            try:
                urllib.request.urlopen(base + "/api/runs", timeout=5).read()
                break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    raise AssertionError("bertology serve did not answer within 90 s") from None
                time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def get(base: str, path: str, **params):
    """(status, body: parsed JSON or text, headers) of a GET."""
    url = base + path + ("?" + urllib.parse.urlencode(params) if params else "")
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            status, raw, headers = r.status, r.read(), r.headers
    except urllib.error.HTTPError as e:
        status, raw, headers = e.code, e.read(), e.headers
    text = raw.decode("utf-8")
    body = json.loads(text) if headers.get("content-type", "").startswith("application/json") else text
    return status, body, headers


def post(base: str, path: str, payload, content_type: str = "application/json"):
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    req = urllib.request.Request(base + path, data=data, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def index_rows(db: Path, sql: str, params=()):
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql, list(params)).df()


@pytest.fixture(scope="module")
def served(tiny_workflow):
    """The tiny workflow's results, served: (base URL, results folder, index)."""
    with running_server(tiny_workflow) as base:
        yield base, tiny_workflow, tiny_workflow / "bertology.duckdb"


def _run_by_id(db: Path, rid: str) -> dict:
    return index_rows(db, "SELECT * FROM runs WHERE run_id = ?", [rid]).iloc[0].to_dict()


def _run(db: Path, task: str) -> dict:
    return index_rows(db, "SELECT * FROM runs WHERE task = ? AND split = 'dev'", [task]).iloc[0].to_dict()


# -- the API ----------------------------------------------------------------------------------------------
def test_api_runs_are_the_index_runs_with_their_metrics(served):
    base, _, db = served
    status, runs, _ = get(base, "/api/runs")
    assert status == 200
    expected = index_rows(db, "SELECT run_id, task, split, model, n_samples FROM runs ORDER BY run_id")
    assert sorted(r["run_id"] for r in runs) == list(expected["run_id"])
    metrics = index_rows(db, "SELECT run_id, statistic, estimate, ci_low, ci_high FROM task_metrics")
    for r in runs:
        row = expected[expected["run_id"] == r["run_id"]].iloc[0]
        assert (r["task"], r["split"], r["model"], r["n_samples"]) == (row["task"], row["split"], row["model"],
                                                                       row["n_samples"])
        m = metrics[metrics["run_id"] == r["run_id"]].set_index("statistic")
        assert set(r["metrics"]) == set(m.index)
        if r["analysis_path"]:   # every analysed run (not the train stores) has them; STS-B its correlations
            assert set(m.index) >= ({"pearson", "spearman"} if r["task"] == "stsb" else {"accuracy", "f1", "mcc"})
        for name, v in r["metrics"].items():
            assert v["estimate"] == pytest.approx(m.loc[name, "estimate"])
            assert v["ci_low"] == pytest.approx(m.loc[name, "ci_low"]) and v["ci_high"] == pytest.approx(m.loc[name, "ci_high"])


def test_api_samples_filter_sort_and_page_like_sql(served):
    base, _, db = served
    run = _run(db, "mrpc")
    rid = run["run_id"]
    every = index_rows(db, "SELECT * FROM samples WHERE run_id = ? ORDER BY sample_index", [rid])
    status, body, _ = get(base, "/api/samples", run_id=rid, limit=1000)
    assert status == 200 and body["total"] == len(every) == run["n_samples"]
    assert [s["sample_index"] for s in body["samples"]] == list(every["sample_index"])
    first = body["samples"][0]
    assert set(first) >= {"run_id", "sample_index", "sample_id", "text_a", "text_b", "label_name", "pred_name",
                          "margin", "correct"}
    assert first["text_b"] == every["text_b"][0] != ""          # a pair task: both segments
    # errors / correct / confident-wrong / margin range / length / text search: the same rows as SQL
    cases = [({"errors": "true"}, ~every["correct"]), ({"errors": "false"}, every["correct"]),
             ({"confident": "true"}, ~every["correct"] & (every["margin"] > 0.3)),
             ({"min_margin": 0.05, "max_margin": 0.2}, (every["margin"] >= 0.05) & (every["margin"] <= 0.2)),
             ({"min_length": 40, "max_length": 60}, (every["length"] >= 40) & (every["length"] <= 60))]
    word = every["text_a"][5].split()[2]
    cases.append(({"q": word.upper()}, every["text_a"].str.lower().str.contains(word.lower(), regex=False)
                   | every["text_b"].str.lower().str.contains(word.lower(), regex=False)))
    for params, mask in cases:
        status, body, _ = get(base, "/api/samples", run_id=rid, limit=1000, **params)
        assert status == 200, body
        assert body["total"] == int(mask.sum()), params
        assert body["total"] > 0 or "confident" in params, params   # the tiny model is rarely confident
        assert [s["sample_index"] for s in body["samples"]] == list(every["sample_index"][mask]), params
    # sorted by margin, descending; pages of 7 concatenate to the whole list
    _, whole, _ = get(base, "/api/samples", run_id=rid, sort="margin", order="desc", limit=1000)
    margins = [s["margin"] for s in whole["samples"]]
    assert margins == sorted(margins, reverse=True)
    paged = []
    for offset in range(0, len(every), 7):
        _, page, _ = get(base, "/api/samples", run_id=rid, sort="margin", order="desc", limit=7, offset=offset)
        assert page["total"] == len(every)
        paged += page["samples"]
    assert paged == whole["samples"]
    _, by_task, _ = get(base, "/api/samples", task="sst2", limit=1)
    assert by_task["total"] == int(index_rows(db, "SELECT count(*) AS n FROM samples WHERE task = 'sst2'")["n"][0])


def test_api_sample_detail_matches_the_store_and_the_index(served):
    base, results, db = served
    run = _run(db, "sst2")
    rid = run["run_id"]
    ds = open_store(run["store_path"])
    wrong = index_rows(db, "SELECT sample_index FROM samples WHERE run_id = ? AND NOT correct ORDER BY sample_index",
                       [rid])["sample_index"]
    i = int(wrong.iloc[0]) if len(wrong) else 0
    status, s, _ = get(base, f"/api/samples/{rid}/{i}")
    assert status == 200
    assert s["text_a"] == str(ds["text_a"].values[i]) and s["sample_id"] == int(ds["sample"].values[i])
    probs = ds["probs"].values[i].astype(np.float64)
    np.testing.assert_allclose(s["probs"], probs, rtol=1e-6)
    assert s["classes"] == [str(c) for c in ds["class"].values]
    label = int(ds["label"].values[i])
    assert s["label_name"] == s["classes"][label] and s["pred_name"] == s["classes"][int(np.argmax(probs))]
    assert s["margin"] == pytest.approx(probs.max() - probs[label], abs=1e-6)
    # per-layer readouts: the index's layer_predictions rows, layer 0 (embeddings) to L
    lp = index_rows(db, "SELECT * FROM layer_predictions WHERE run_id = ? AND sample_index = ? ORDER BY layer", [rid, i])
    assert [r["layer"] for r in s["layers"]] == list(range(ds.sizes["layer"] + 1)) == list(lp["layer"])
    assert [r["probe_pred"] for r in s["layers"]] == list(lp["probe_pred"])
    np.testing.assert_allclose([r["cls_norm"] for r in s["layers"]][1:],
                               np.linalg.norm(ds["cls"].sel(site="ln2").values[i].astype(np.float64), axis=1),
                               rtol=1e-5)
    # tokens and their strength: the store's token texts and ‖h‖ at the strength layer, by plain numpy
    start, n = int(ds["token_start"].values[i]), int(ds["length"].values[i])
    tokens = s["tokens"]
    layer = default_layer(ds.sizes["layer"])
    assert tokens["source"] == "index" and tokens["layer"] == layer and tokens["site"] == "ln2"
    assert [t["token"] for t in tokens["rows"]] == [str(t) for t in ds["token_text"].values[start:start + n]]
    h = ds["token_ln2"].sel(token_layer=layer).values[start:start + n].astype(np.float32)
    np.testing.assert_allclose([t["strength"] for t in tokens["rows"]], np.linalg.norm(h, axis=1), rtol=1e-5)
    assert {t["bucket_corpus"] for t in tokens["rows"] if t["category"] != "special"} <= {"HIGH", "LOW"}
    # the interventions that flip it: the sweep's predictions that differ from the unmodified model's
    sweep = open_sweep(Path(run["store_path"]).with_name("dev.sweep"))
    names = [str(v) for v in sweep["intervention"].values]
    pred = sweep["pred"].values
    flipped = {names[k] for k in range(len(names)) if pred[k, i] != pred[names.index("none"), i]}
    assert {f["intervention"] for f in s["flips"]} == flipped
    assert s["available"] == {"attention": True, "attribution": True, "interventions": True}


def test_api_attention_is_the_stored_map(served):
    base, _, db = served
    run = _run(db, "rte")
    rid = run["run_id"]
    ds = open_store(run["store_path"])
    i = 3
    stored = sample_attention(ds, i).values.astype(np.float64)       # (layer, head, query, key)
    tokens = [str(t) for t in ds["token_text"].values[int(ds["token_start"][i]):][:int(ds["length"][i])]]
    for layer in range(1, ds.sizes["layer"] + 1):
        for head in range(1, ds.sizes["head"] + 1):
            status, a, _ = get(base, f"/api/samples/{rid}/{i}/attention", layer=layer, head=head)
            assert status == 200 and a["tokens"] == tokens
            np.testing.assert_allclose(a["map"], stored[layer - 1, head - 1], atol=1e-6)
        _, mean, _ = get(base, f"/api/samples/{rid}/{i}/attention", layer=layer)
        np.testing.assert_allclose(mean["map"], stored[layer - 1].mean(axis=0), atol=1e-6)
        np.testing.assert_allclose(np.sum(mean["map"], axis=1), 1.0, atol=2e-3)   # float16 maps, rows sum to 1


def test_api_attribution_equals_the_analysed_example_and_the_attention(served):
    base, _, db = served
    run = _run(db, "sst2")
    rid = run["run_id"]
    ex = index_rows(db, "SELECT * FROM attribution_example WHERE run_id = ?", [rid])
    sample_id = int(ex["sample_id"].iloc[0])
    i = int(index_rows(db, "SELECT sample_index FROM samples WHERE run_id = ? AND sample_id = ?",
                       [rid, sample_id])["sample_index"][0])
    ds = open_store(run["store_path"])
    alpha = sample_attention(ds, i).values.astype(np.float64)
    for (layer, scope), g in ex.groupby(["layer", "scope"]):
        status, a, _ = get(base, f"/api/samples/{rid}/{i}/attribution", layer=int(layer), scope=scope)
        assert status == 200, a
        n = len(a["tokens"])
        expected = np.zeros((n, n))
        expected[g["output"], g["input"]] = g["value"]
        np.testing.assert_allclose(a["map"], expected, rtol=2e-3, atol=1e-5)  # analyze computes in float32
        if scope == "ATTN-W":  # independent: the head-mean of the stored attention
            np.testing.assert_allclose(a["map"], alpha[layer - 1].mean(axis=0), atol=1e-6)
        assert max(a["completeness_error"].values()) < 1e-2   # the decomposition sums to the stored sites


def test_api_sql_reads_and_refuses_with_400(served):
    base, _, db = served
    status, r = post(base, "/api/sql", {"query": "SELECT task, count(*) AS n FROM samples GROUP BY task ORDER BY task"})
    expected = index_rows(db, "SELECT task, count(*) AS n FROM samples GROUP BY task ORDER BY task")
    assert status == 200 and r["columns"] == ["task", "n"]
    assert r["rows"] == [[t, int(n)] for t, n in zip(expected["task"], expected["n"])]
    refused = {"CREATE TABLE x AS SELECT 1": "CREATE", "DELETE FROM samples": "DELETE",
               "COPY samples TO '/tmp/bertology-leak.csv'": "COPY", "SELECT * FROM read_csv('/etc/passwd')": "outside",
               "ATTACH '/tmp/other.duckdb' AS o": "ATTACH", "SELECT 1; SELECT 2": "one statement",
               "SET enable_external_access = true": "SET", "INSTALL httpfs": "LOAD"}
    for query, why in refused.items():
        status, r = post(base, "/api/sql", {"query": query})
        assert status == 400 and why in r["error"], (query, r)
    assert not Path("/tmp/bertology-leak.csv").exists()
    status, r = post(base, "/api/sql", b"{not json")
    assert status == 422 and "not valid JSON" in r["error"]
    status, r = post(base, "/api/sql", {"sql": "SELECT 1"})
    assert status == 422 and "query" in r["error"]
    status, r = post(base, "/api/sql", {"query": "SELECT * FROM no_such_table"})
    assert status == 400 and "no_such_table" in r["error"]
    # values JSON has no type for come back as text; a type pandas cannot hold is a 400 with the fix
    status, r = post(base, "/api/sql", {"query": "SELECT '\\xAA'::BLOB AS b, INTERVAL 1 DAY AS i, "
                                                 "TIMESTAMP '2020-01-02 03:04:05' AS t, [1, 2] AS l, NULL AS n, "
                                                 "'nan'::DOUBLE AS f"})
    assert status == 200, r
    assert r["rows"][0][0] == "\\xaa" and r["rows"][0][2] == "2020-01-02T03:04:05" and r["rows"][0][3:] == [[1, 2], None, None]
    status, r = post(base, "/api/sql", {"query": "SELECT union_value(k := 1) AS u"})
    assert status == 400 and "CAST" in r["error"]


def test_bad_parameters_answer_4xx_with_a_message_never_500(served):
    base, _, db = served
    rid = _run(db, "cola")["run_id"]
    n = int(_run(db, "cola")["n_samples"])
    cases = {
        f"/api/samples/{rid}/{n}": 404, "/api/samples/0123456789abcdef/0": 404, f"/api/samples/{rid}/-1": 422,
        f"/api/samples/{rid}/abc": 422, "/api/samples/../../etc/0": 404, "/api/samples/..%2F..%2Fetc%2Fpasswd/0": 404,
        f"/api/samples/{rid}/0/attention?layer=99": 400, f"/api/samples/{rid}/0/attention?layer=1&head=99": 400,
        f"/api/samples/{rid}/0/attention": 422, f"/api/samples/{rid}/0/attention?layer=x": 422,
        f"/api/samples/{rid}/0/attribution?layer=1&scope=NOPE": 422, "/api/samples?limit=0": 422,
        "/api/samples?limit=100000": 422, "/api/samples?offset=-5": 422, "/api/samples?min_margin=nan": 422,
        "/api/samples?min_margin=inf": 422, "/api/samples?sort=text_a": 422, "/api/samples?order=sideways": 422,
        "/api/samples?run_id=../../etc": 422, "/api/samples?run_id=0123456789abcdef": 404,
        "/api/samples?errors=maybe": 422, "/api/nothing": 404, "/nothing": 404, "/report/../../../etc/passwd": 404,
        "/static/../explorer.py": 404, f"/runs/{rid}/samples/{n}": 404, f"/runs/{rid}/samples/0?layer=0": 422,
        "/errors?min_margin=abc": 400, "/errors?min_margin=5": 400, "/errors?page=0": 422,
        "/sql?query=DROP+TABLE+runs": 400, "/sql.csv?query=DELETE+FROM+runs": 400, "/runs/xyz/layers": 422,
        "/api/samples?errors=false&confident=true": 400, "/api/samples?min_margin=0.5&max_margin=0.1": 400,
        "/api/samples?min_length=50&max_length=10": 400,
    }
    for path, code in cases.items():
        status, body, headers = get(base, path)
        assert status == code, (path, status, body)
        text = json.dumps(body) if isinstance(body, dict) else body
        assert "Traceback" not in text and 'File "' not in text, path
        if path.startswith("/api"):
            assert isinstance(body, dict) and body["error"], path
    assert not index_rows(db, "SELECT count(*) AS n FROM runs")["n"].eq(0).any()  # nothing was dropped
    # DNS rebinding: a request naming another host is refused (the server listens on 127.0.0.1)
    req = urllib.request.Request(base + "/api/runs", headers={"Host": "attacker.example"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
    assert e.value.code == 400
    req = urllib.request.Request(base + "/api/runs", headers={"Host": f"localhost:{base.rsplit(':', 1)[1]}"})
    assert urllib.request.urlopen(req, timeout=30).status == 200


def test_what_a_store_lacks_is_a_404_with_the_reason(served):
    base, _, db = served
    train = index_rows(db, "SELECT run_id FROM runs WHERE split = 'train' ORDER BY run_id")["run_id"]
    assert len(train), "the tiny workflow indexes its --cls-only train stores"
    rid = train[0]
    status, s, _ = get(base, f"/api/samples/{rid}/0")
    assert status == 200 and s["layers"] == [] and s["flips"] is None
    run = _run_by_id(db, rid)
    ds = open_store(run["store_path"])
    n = int(ds["length"].values[0])   # a --cls-only store keeps its tokens' texts, not their states
    assert s["tokens"] == {"source": "store", "rows": [{"position": k, "token": str(t)} for k, t in
                                                       enumerate(ds["token_text"].values[:n])]}
    assert "no attention maps" in s["available"]["attention"] and "full capture" in s["available"]["attribution"]
    for path in (f"/api/samples/{rid}/0/attention?layer=1", f"/api/samples/{rid}/0/attribution?layer=1"):
        status, body, _ = get(base, path)
        assert status == 404 and f"run {rid}" in body["error"], body
    status, html, _ = get(base, f"/runs/{rid}/samples/0")
    assert status == 200 and "holds no attention maps" in html


def test_pages_render_and_link_the_runs_samples_and_layers(served):
    base, results, db = served
    run = _run(db, "qnli")
    rid = run["run_id"]
    status, html, headers = get(base, "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert f"/runs/{rid}/layers" in html and f"/errors?run_id={rid}" in html and "/report/" in html
    assert "train carved out of dev" in html                                     # QNLI's carve-out
    status, html, _ = get(base, "/errors", run_id=rid, show="all", sort="sample_index", order="asc")
    assert status == 200 and f"/runs/{rid}/samples/0" in html
    assert f"{run['n_samples']} samples" in html
    status, html, _ = get(base, f"/runs/{rid}/samples/2", layer=1, head=2, attr_layer=2)
    assert status == 200 and 'id="attention-map"' in html and 'id="attribution-map"' in html
    status, html, _ = get(base, f"/runs/{rid}/layers")
    assert status == 200 and html.count("<svg") >= 3 and "skip candidates" in html.lower()
    status, csv, headers = get(base, "/sql.csv", query="SELECT run_id, task FROM runs ORDER BY run_id")
    assert status == 200 and headers["content-type"].startswith("text/csv")
    assert csv.splitlines()[0] == "run_id,task" and len(csv.splitlines()) == 1 + len(index_rows(db, "SELECT * FROM runs"))
    status, html, _ = get(base, "/report/")
    assert status == 200 and "bertology report" in html
    status, spec, _ = get(base, "/api/openapi.json")
    assert status == 200 and {"/api/runs", "/api/samples", "/api/samples/{run_id}/{sample_index}",
                              "/api/samples/{run_id}/{sample_index}/attention", "/api/sql"} <= set(spec["paths"])


# -- hostile text -----------------------------------------------------------------------------------------
HOSTILE = ['<script>alert("a")</script> the film', "fish &amp; chips &lt;b&gt; bold", '"><img src=x onerror=alert(1)>',
           "</script><script>alert(2)</script>", "{{ 7 * 7 }} {% raw %}", "it 's <b>not</b> good"]


@pytest.fixture(scope="module")
def hostile_results(tmp_path_factory, tiny_models):
    """A results folder whose sample texts are HTML, script and template syntax: one analysed full-capture
    tiny-BERT SST-2 store and its index."""
    from bertology.analysis.index import build_index
    from bertology.analysis.run import AnalyzeConfig, analyze
    from bertology.extract.extraction import ExtractConfig, extract
    from bertology.extract.tasks import Example, Split

    root = tmp_path_factory.mktemp("hostile") / "results"
    base = make_split(24, seed=5)
    examples = [Example(e.sample_id, HOSTILE[k % len(HOSTILE)] + " " + e.text_a, None, e.label)
                for k, e in enumerate(base.examples)]
    split = Split(base.task, "dev", examples, source="synthetic", sha256="0" * 64)
    store = extract(str(tiny_models["bert"]), split, root / "sst2" / "dev.zarr", ExtractConfig(window=64),
                    progress=False)
    analyze(store, root / "sst2" / "analysis", AnalyzeConfig(resamples=20, probe=False, permutations=0,
                                                             attribution_samples=2))
    build_index(root, root / "bertology.duckdb")
    return root


def test_pages_escape_sample_text_and_the_api_returns_it_unchanged(hostile_results):
    db = hostile_results / "bertology.duckdb"
    with running_server(hostile_results) as base:
        rid = index_rows(db, "SELECT run_id FROM runs")["run_id"][0]
        texts = index_rows(db, "SELECT text_a FROM samples ORDER BY sample_index")["text_a"]
        _, body, _ = get(base, "/api/samples", run_id=rid, q="<script>", limit=100)
        assert body["total"] == sum("<script>" in t for t in texts) > 0
        assert {s["text_a"] for s in body["samples"]} == {t for t in texts if "<script>" in t}
        pages = [("/errors", {"show": "all"}), ("/errors", {"show": "all", "q": "<script>"}),
                 ("/sql", {"query": "SELECT text_a, '<i>x</i>' AS tag FROM samples"})]
        pages += [(f"/runs/{rid}/samples/{i}", {"attr_layer": 1}) for i in range(len(HOSTILE))]
        for path, params in pages:
            status, html, _ = get(base, path, **params)
            assert status == 200, (path, html[-500:])
            assert "<script>alert" not in html and "<img src=x" not in html and "<b>not</b>" not in html, path
            assert "<i>x</i>" not in html
        _, html, _ = get(base, f"/runs/{rid}/samples/0")
        assert "&lt;script&gt;alert(&#34;a&#34;)&lt;/script&gt;" in html or "&lt;script&gt;alert(&quot;a&quot;)" in html
        _, html, _ = get(base, f"/runs/{rid}/samples/1")
        assert "fish &amp;amp; chips &amp;lt;b&amp;gt;" in html          # entities shown as typed, not decoded
        _, html, _ = get(base, f"/runs/{rid}/samples/4")
        segment = html.split('class="segment">', 1)[1].split("</p>", 1)[0]
        assert "{{ 7 * 7 }}" in segment and "{% raw %}" in segment    # shown, not evaluated
        # the heatmap's data block: no "</script>" from a token can close it
        _, html, _ = get(base, f"/runs/{rid}/samples/3")
        block = html.split('id="attention-data">', 1)[1].split("</script>", 1)[0]
        assert "<" not in block and json.loads(block)["tokens"]


def test_only_stores_under_the_results_folder_are_read(hostile_results, tiny_results, tmp_path):
    """An index may name runs elsewhere (its SQL shows them), but the server reads no store outside RESULTS."""
    from bertology.analysis.index import build_index, run_id

    db = tmp_path / "both.duckdb"
    build_index([hostile_results, tiny_results], db)
    outside = run_id(tiny_results / "sst2" / "dev.zarr")
    with running_server(hostile_results, db) as base:
        status, s, _ = get(base, f"/api/samples/{outside}/0")
        assert status == 200 and "not under the served results folder" in s["available"]["attention"]
        status, body, _ = get(base, f"/api/samples/{outside}/0/attention", layer=1)
        assert status == 404 and "not under the served results folder" in body["error"]


def test_the_server_keeps_serving_while_the_index_is_rebuilt(hostile_results, tiny_results, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(hostile_results, results)
    (results / "bertology.duckdb").unlink()
    subprocess.run([sys.executable, "-m", "bertology.cli", "index", str(results), "--quiet"], check=True,
                   capture_output=True)
    with running_server(results) as base:
        _, runs, _ = get(base, "/api/runs")
        assert len(runs) == 1
        statuses, stop = [], threading.Event()

        def hammer():
            while not stop.is_set():
                for path in ("/api/runs", "/api/samples?limit=5", "/errors?show=all"):
                    statuses.append(get(base, path)[0])

        threads = [threading.Thread(target=hammer) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            shutil.copytree(tiny_results / "sst2", results / "more" / "sst2")
            for _ in range(2):  # a new run, then an unchanged rebuild
                proc = subprocess.run([sys.executable, "-m", "bertology.cli", "index", str(results), "--quiet"],
                                      capture_output=True, text=True)
                assert proc.returncode == 0, proc.stderr
            time.sleep(1.0)
        finally:
            stop.set()
            for t in threads:
                t.join()
        assert len(statuses) > 20 and set(statuses) == {200}
        _, runs, _ = get(base, "/api/runs")
        assert len(runs) == 2
        _, body, _ = get(base, "/api/samples", limit=1)
        assert body["total"] == sum(r["n_samples"] for r in runs)


def test_serve_refuses_a_missing_index_and_a_bad_port_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bertology.cli", "serve", str(tmp_path)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "bertology index" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "bertology.cli", "serve", str(tmp_path), "--port", "70000"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "not a port number" in proc.stderr


# -- headless Chromium ------------------------------------------------------------------------------------
def test_every_page_in_headless_chromium(served, tmp_path):
    path, why = chromium()
    if path is None:
        pytest.skip(why)
    from playwright.sync_api import sync_playwright

    base, _, db = served
    run = _run(db, "mrpc")
    rid = run["run_id"]
    pages = {"runs": "/", "errors": f"/errors?run_id={rid}&show=all", "sample": f"/runs/{rid}/samples/1?attr_layer=2",
             "layers": f"/runs/{rid}/layers", "sql": "/sql?query=" + urllib.parse.quote("SELECT task, count(*) FROM errors GROUP BY task"),
             "api": "/api", "report": "/report/"}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=["--no-sandbox"])
        try:
            for name, url in pages.items():
                page = browser.new_page(viewport={"width": 1100, "height": 900})
                problems, requests = [], []
                page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
                        if m.type in ("error", "warning") else None)
                page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
                page.on("requestfailed", lambda r: problems.append(f"failed: {r.url}"))
                page.on("request", lambda r: requests.append(r.url))
                response = page.goto(base + url)
                page.wait_for_load_state("networkidle")
                assert response.status == 200, name
                assert not problems, (name, problems)
                assert requests and all(u.startswith(base + "/") or u.startswith("data:") for u in requests), requests
                shot = page.screenshot(full_page=True)
                (tmp_path / f"{name}.png").write_bytes(shot)
                _, ink = non_blank(shot)
                assert ink > 0.03, f"{name}: the page is (nearly) blank ({ink:.1%} ink)"
                if name == "sample":   # both heatmaps drawn, with more than one colour
                    for canvas in ("attention-map", "attribution-map"):
                        assert page.get_attribute(f"#{canvas}", "data-drawn") == "true"
                        colours = page.evaluate("""(id) => { const c = document.getElementById(id);
                            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                            const seen = new Set(); for (let k = 0; k < d.length; k += 64) seen.add(d[k] + ',' + d[k+1] + ',' + d[k+2]);
                            return seen.size; }""", canvas)
                        assert colours > 3, (canvas, colours)
                if name == "errors":   # the keyboard: Tab reaches the skip link first, then the page's links
                    page.keyboard.press("Tab")
                    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
                    page.keyboard.press("Enter")
                    for _ in range(6):
                        page.keyboard.press("Tab")
                    assert page.evaluate("document.activeElement.closest('form') !== null")
                page.close()
        finally:
            browser.close()


def test_a_replacing_file_that_is_no_index_answers_503_until_a_good_one_comes(tiny_index, tmp_path):
    """The explorer, without the web: a swap to a foreign file refuses (503), the next good file is served."""
    import os

    from bertology.analysis.index import IndexUnavailable
    from bertology.reports.serve.explorer import Explorer

    results = tmp_path / "results"
    results.mkdir()
    db = results / "bertology.duckdb"
    shutil.copyfile(tiny_index, db)
    ex = Explorer(results)
    n = len(ex.runs())
    foreign = tmp_path / "foreign.duckdb"
    with duckdb.connect(str(foreign)) as con:
        con.execute("CREATE TABLE t AS SELECT 1 AS x")
    os.replace(foreign, db)
    with pytest.raises(IndexUnavailable, match="cannot be served"):
        ex.runs()
    with pytest.raises(IndexUnavailable):
        ex.runs()                       # still refused, never a closed connection
    good = tmp_path / "good.duckdb"
    shutil.copyfile(tiny_index, good)
    os.replace(good, db)
    assert len(ex.runs()) == n
