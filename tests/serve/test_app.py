"""The real Serve app on the local Ray, over HTTP on 127.0.0.1 and through a DeploymentHandle."""

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pyarrow.parquet as pq
import pytest

from cl3dor_ray.data.prepared import Prepared
from cl3dor_ray.eval.evaluate import evaluate
from cl3dor_ray.eval.metrics import exact_match
from cl3dor_ray.serve.client import Cl3dorClient, Cl3dorRequestError
from cl3dor_ray.text.normalize import NORMALIZER_VERSION
from tests.serve.conftest import TOKEN

pytestmark = pytest.mark.slow


def raw(url, path, body=None, token=TOKEN, method=None):
    data = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(url + path, data=data, method=method or ("POST" if data is not None else "GET"))
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_health_is_open_and_everything_else_needs_the_token(app):
    url, _ = app
    assert raw(url, "/healthz", token=None) == (200, {"status": "ok"})
    for token in (None, "wrong", TOKEN + "x"):
        status, body = raw(url, "/v1/scenes", token=token)
        assert status == 401 and "Bearer" in body["detail"]
        assert raw(url, "/v1/answer", {"scene_id": "scene0000_00", "question": "q?"}, token=token)[0] == 401
    assert raw(url, "/v1/scenes")[0] == 200


def test_endpoints(app, prepared_dir):
    url, _ = app
    client = Cl3dorClient.over_http(url, token=TOKEN)
    scenes = client.scenes()
    expected = sorted(set(pq.read_table(prepared_dir / "objects", columns=["scene_id"])["scene_id"].to_pylist()))
    assert [s["scene_id"] for s in scenes] == expected
    scene, obj = scenes[0]["scene_id"], scenes[0]["objects"][0]["object_id"]
    answer = client.answer("What color is the table?", scene_id=scene)
    assert isinstance(answer["answer"], str) and answer["latency_ms"] > 0
    assert isinstance(client.caption(scene, obj)["caption"], str)
    ranked = client.score("Is there a chair in the room?", ["yes", "no", "maybe"], scene_id=scene)["ranked"]
    assert sorted(r["text"] for r in ranked) == ["maybe", "no", "yes"]
    assert [r["logp"] for r in ranked] == sorted((r["logp"] for r in ranked), reverse=True)
    assert all(r["logp"] < 0 for r in ranked)
    uploaded = [
        {"points": [[0.0, 0.0, 0.0], [0.1, 0.0, 0.2], [0.0, 0.3, 0.1]], "colors": [[200, 10, 10]] * 3},
        {"points": [[1.0, 1.0, 0.0], [1.2, 1.0, 0.5]]},
    ]
    answer_uploaded = client.answer("What is this?", objects=uploaded)
    assert isinstance(answer_uploaded["answer"], str) and set(answer_uploaded["objects"]) <= {0, 1}
    assert len(client.score("What color is it?", ["red", "blue"], objects=uploaded)["ranked"]) == 2


def test_an_answer_names_the_objects_its_grounding_head_read_the_question_as_about(
    app, trained_model_dir, prepared_dir
):
    import torch

    from cl3dor_ray.data.prepared import Prepared
    from cl3dor_ray.model.batch import SceneCollator, select_objects
    from cl3dor_ray.model.io import load_model

    url, _ = app
    model = load_model(trained_model_dir)
    objects = Prepared(prepared_dir).objects(model.cfg.num_points)
    collate = SceneCollator.for_model(model, objects)
    client = Cl3dorClient.over_http(url, token=TOKEN)
    assert model.grounding is not None
    for scene in sorted(objects):
        question = "What color is the chair?"
        batch = collate([{"scene_id": scene, "object_ids": [], "question": question}], [[]])
        with torch.no_grad():
            order, count = model.focus_order(batch, model.point_feats(batch))
        columns = [o["object_id"] for o in select_objects(objects[scene], [], model.cfg.max_objects)]
        expected = [columns[j] for j in order[0, : int(count[0])].tolist()]
        assert client.answer(question, scene_id=scene)["objects"] == expected


BAD = [
    (b'{"scene_id": "scene0000_00", "question": ', 400, "malformed JSON"),
    ({"scene_id": "scene0000_00"}, 422, "question"),
    ({"question": "What?"}, 422, "exactly one of scene_id or objects"),
    ({"scene_id": "scene9999_00", "question": "What?"}, 404, "scene_id"),
    ({"objects": [{"points": [[0, 0], [1, 1]]}], "question": "What?"}, 422, "expected N x 3"),
    ({"objects": [{"points": [[0, 0, float("nan")]]}], "question": "What?"}, 422, "not finite"),
    ({"objects": [{"points": [[0, 0, 0]] * 501}], "question": "What?"}, 422, "at most 500"),
    ({"objects": [{"points": [[0, 0, 0]]}] * 4, "question": "What?"}, 422, "expected 1 to 3"),
    ({"scene_id": "scene0000_00", "question": "x" * 81}, 422, "at most 80"),
    ({"scene_id": "scene0000_00", "question": "What?", "situation": "I am " + "x" * 80}, 422, "at most 80"),
    ({"scene_id": "scene0000_00", "question": "What?", "pose": [0, 0, 0, 1]}, 422, "7 numbers"),
    ({"scene_id": "scene0000_00", "question": "What?", "pose": [0, 0, 0, 0, 0, 0, 0]}, 422, "quaternion"),
    ({"scene_id": "scene0000_00", "question": "What?", "max_new_tokens": 49}, 422, "expected 1 to 48"),
    ({"scene_id": "scene0000_00", "question": "What?", "max_new_tokens": 0}, 422, "expected 1 to 48"),
    ([1, 2, 3], 422, "expected a JSON object"),
    ({"objects": [{"points": [[0, 0, 0]] * 400}] * 3, "question": "What?"}, 422, "1200 points in all; at most 1000"),
    ({"scene_id": "scene0000_00", "question": "x" * 250_000}, 413, "at most 200000"),
]


@pytest.mark.parametrize("body, status, words", BAD)
def test_bad_requests_get_a_clear_4xx_and_the_app_keeps_answering(app, body, status, words):
    url, _ = app
    got, detail = raw(url, "/v1/answer", body)
    assert got == status and words in json.dumps(detail), detail
    assert raw(url, "/v1/answer", {"scene_id": "scene0000_00", "question": "What is on the table?"})[0] == 200


def test_admission_control_refuses_past_its_bounds_and_recovers():
    from cl3dor_ray.config import ServeConfig
    from cl3dor_ray.serve.app import Admission, RequestError

    admission = Admission(ServeConfig(max_in_flight=2, max_body_bytes=100, max_bytes_in_flight=150))
    first = admission.admit("100")
    with pytest.raises(RequestError) as refused:  # the bytes in flight would pass 150
        admission.admit("60")
    assert refused.value.status == 503 and refused.value.headers == {"Retry-After": "1"}
    second = admission.admit("40")
    with pytest.raises(RequestError) as busy:  # two requests in flight already
        admission.admit(None)
    assert busy.value.status == 503 and "2 requests" in busy.value.body["detail"]
    with pytest.raises(RequestError) as large:
        admission.admit("101")
    assert large.value.status == 413
    admission.release(first)
    admission.release(second)
    assert admission.admit("100") == 100 and (admission.requests, admission.bytes) == (1, 100)


def test_unknown_object_and_bad_candidates(app):
    url, _ = app
    status, body = raw(url, "/v1/caption", {"scene_id": "scene0000_00", "object_id": 999})
    assert status == 404 and body["field"] == "object_id"
    status, body = raw(url, "/v1/score", {"scene_id": "scene0000_00", "question": "Q?", "candidates": []})
    assert status == 422 and body["fields"][0]["field"] == "candidates"


def test_client_over_handle_and_http_agree(app):
    url, handle = app
    http, local = Cl3dorClient.over_http(url, token=TOKEN), Cl3dorClient.over_handle(handle=handle)
    for client in (http, local):
        with pytest.raises(Cl3dorRequestError) as err:
            client.answer("What?", scene_id="nope")
        assert err.value.status == 404
    question = "How many chairs are in the room?"
    assert (
        http.answer(question, scene_id="scene0001_00")["answer"]
        == local.answer(question, scene_id="scene0001_00")["answer"]
    )
    assert http.scenes() == local.scenes()


def test_a_situated_question_is_read_from_the_agents_pose(app, prepared_dir):
    """The pose turns the room into the agent's frame: the model's scores for the same situated
    question differ between two poses, and equal those of the same pose given twice."""
    _, handle = app
    client = Cl3dorClient.over_handle(handle=handle)
    row = next(r for r in Prepared(prepared_dir).samples("val", ["sqa"]).to_pylist())
    question, situation, pose = row["question"], row["situation"], list(row["pose"])
    turned = pose[:3] + [0.0, 0.0, 1.0, 0.0]  # the same place, facing the other way
    candidates = [row["answers"][0], *row["negatives"]]

    def logps(p):
        ranked = client.score(question, candidates, scene_id=row["scene_id"], situation=situation, pose=p)["ranked"]
        return {c["text"]: c["logp"] for c in ranked}

    first, again, other = logps(pose), logps(pose), logps(turned)
    assert first == again and first != other
    answer = client.answer(question, scene_id=row["scene_id"], situation=situation, pose=pose, max_new_tokens=8)
    assert (
        answer["answer"]
        == client.answer(question, scene_id=row["scene_id"], situation=situation, pose=pose, max_new_tokens=8)["answer"]
    )


def test_questions_about_a_scene_reuse_its_cached_prefix(app):
    from ray import serve

    _, handle = app
    model = serve.get_deployment_handle("Scene3DLMDeployment", app_name="cl3dor")
    client = Cl3dorClient.over_handle(handle=handle)
    before = model.cache_stats.remote().result()
    first = client.answer("What is on the table?", scene_id="scene0002_00", max_new_tokens=6)["answer"]
    again = client.answer("What is on the table?", scene_id="scene0002_00", max_new_tokens=6)["answer"]
    other = client.answer("What color is the chair?", scene_id="scene0002_00", max_new_tokens=6)
    after = model.cache_stats.remote().result()
    assert first == again and other["answer"] is not None
    assert after["hits"] - before["hits"] >= 2 and after["entries"] >= 1 and after["bytes"] <= after["max_bytes"]
    client.answer("What?", objects=[{"points": [[0, 0, 0], [1, 1, 1]]}], max_new_tokens=2)  # uploads bypass it
    assert model.cache_stats.remote().result()["misses"] == after["misses"]


def test_concurrent_requests_are_batched_without_changing_answers(app):
    url, _ = app
    client = Cl3dorClient.over_http(url, token=TOKEN)
    questions = [
        ("scene0000_00", "What color is the chair?"),
        ("scene0001_00", "What is on the desk?"),
        ("scene0002_00", "How many books are in the room?"),
        ("scene0003_00", "Is there a cup?"),
    ] * 3
    alone = [client.answer(q, scene_id=s, max_new_tokens=8)["answer"] for s, q in questions]
    with ThreadPoolExecutor(12) as pool:
        together = list(
            pool.map(lambda sq: client.answer(sq[1], scene_id=sq[0], max_new_tokens=8)["answer"], questions)
        )
    assert together == alone


def test_evaluation_through_the_deployment(app, prepared_dir, tmp_path):
    _, handle = app
    metrics = evaluate(Cl3dorClient.over_handle(handle=handle), prepared_dir, tmp_path, concurrency=8, limit=60)
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 60 == metrics["samples"] and metrics["failed"] == 0
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["normalizer_version"] == NORMALIZER_VERSION
    # the figures are the predictions' own: EM recomputed from predictions.jsonl, CIDEr & co. present
    qa = [r for r in rows if r["task"] == "qa"]
    assert saved["scanqa.em"] == sum(exact_match(r["prediction"], r["answers"]) for r in qa) / len(qa)
    assert saved["scanqa.n"] == len(qa) and all(
        k in saved for k in ("scanqa.cider", "scanqa.bleu4", "scanqa.meteor", "scanqa.rouge_l")
    )
    # every QA sample names an object of a prepared scene, so the size split covers all of them
    assert saved.get("scanqa.n.small_objects", 0) + saved.get("scanqa.n.large_objects", 0) == saved["scanqa.n"]
    pope_keys = [k for k in saved if k.startswith("existence.") and k.endswith(".f1")]
    assert pope_keys or not any(r["task"] == "existence" for r in rows)
    assert "| scanqa.em |" in (tmp_path / "report.md").read_text()


class RecordingClient:
    """The real client, noting the room of every question it is asked to send."""

    def __init__(self, client):
        self.client, self.asked = client, []

    def answer(self, question, scene_id=None, **kw):
        self.asked.append((question, scene_id))
        return self.client.answer(question, scene_id=scene_id, **kw)

    def caption(self, *args, **kw):
        return self.client.caption(*args, **kw)

    def score(self, *args, **kw):
        return self.client.score(*args, **kw)


def test_the_scene_swap_probe_asks_each_question_about_the_other_room(app, prepared_dir, tmp_path):
    """Two validation rooms (two training rooms relabelled): every QA question goes out a second time,
    about the partner room, and the probe's figures are computed from those answers."""
    import shutil

    import pyarrow as pa

    _, handle = app
    two = tmp_path / "two_val_rooms"
    shutil.copytree(prepared_dir, two)
    table = pq.read_table(two / "samples")
    scenes = sorted(set(table.column("scene_id").to_pylist()))[:2]
    split = ["val" if s in scenes else "train" for s in table.column("scene_id").to_pylist()]
    shutil.rmtree(two / "samples")
    (two / "samples").mkdir()
    pq.write_table(
        table.set_column(table.schema.get_field_index("split"), "split", pa.array(split)),
        two / "samples" / "part-0.parquet",
    )
    client = RecordingClient(Cl3dorClient.over_handle(handle=handle))
    metrics = evaluate(client, two, tmp_path / "eval", concurrency=4, limit=40)
    rows = {
        json.loads(line)["sample_id"]: json.loads(line)
        for line in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()
    }
    swapped = [
        json.loads(line) for line in (tmp_path / "eval" / "predictions_scene_swap.jsonl").read_text().splitlines()
    ]
    qa = [r for r in rows.values() if r["task"] == "qa"]
    assert qa and len(swapped) == len(qa)
    for r in swapped:
        true_room = rows[r["sample_id"]]["scene_id"]
        assert r["asked_about"] == r["scene_id"] != true_room and {r["scene_id"], true_room} == set(scenes)
        assert (r["question"], r["scene_id"]) in client.asked and (r["question"], true_room) in client.asked
    same = sum(exact_match(r["prediction"], rows[r["sample_id"]]["answers"]) for r in swapped) / len(swapped)
    assert metrics["grounding.scene_swap.em"] == same


def test_the_app_answers_the_same_with_and_without_the_prefix_cache(app, trained_model_dir, prepared_dir):
    """The cached prefix is an optimisation only: a second app with the cache off gives the same answers."""
    from ray import serve

    from cl3dor_ray.config import ServeConfig
    from cl3dor_ray.serve.app import Cl3dorIngress, Scene3DLMDeployment

    _, handle = app
    model = Scene3DLMDeployment.options(ray_actor_options={"num_cpus": 0}).bind(
        str(trained_model_dir), str(prepared_dir), 4, 0.01, 0.0
    )
    uncached = serve.run(Cl3dorIngress.bind(model, ServeConfig(prefix_cache_mb=0)), name="no-cache", route_prefix=None)
    try:
        questions = [
            ("scene0000_00", "What color is the chair?"),
            ("scene0001_00", "What is on the desk?"),
            ("scene0000_00", "Where is the lamp placed?"),
            ("scene0002_00", "How many books are there?"),
        ]
        with_cache, without = Cl3dorClient.over_handle(handle=handle), Cl3dorClient.over_handle(handle=uncached)
        for scene, q in questions * 2:  # the second round is served from the cache
            assert (
                with_cache.answer(q, scene_id=scene, max_new_tokens=8)["answer"]
                == without.answer(q, scene_id=scene, max_new_tokens=8)["answer"]
            ), (scene, q)
        ranked = [
            c.score("Is there a chair?", ["yes", "no"], scene_id="scene0001_00")["ranked"]
            for c in (with_cache, without)
        ]
        assert [r["text"] for r in ranked[0]] == [r["text"] for r in ranked[1]]
        assert ranked[0][0]["logp"] == pytest.approx(ranked[1][0]["logp"], abs=1e-4)
    finally:
        serve.delete("no-cache")


def test_scene_points_need_the_token_and_an_unknown_scene_is_a_404(app, prepared_dir):
    url, _ = app
    assert raw(url, "/v1/scenes/scene0000_00/points", token=None)[0] == 401
    assert raw(url, "/v1/scenes/scene0000_00/points", token="wrong")[0] == 401
    status, body = raw(url, "/v1/scenes/scene9999_99/points")
    assert status == 404 and "scene9999_99" in body["detail"]
    status, body = raw(url, "/v1/scenes/scene0000_00/points")
    objects = pq.read_table(prepared_dir / "objects", columns=["scene_id"]).column("scene_id").to_pylist()
    assert status == 200 and len(body["objects"]) == objects.count("scene0000_00")


def test_an_oversized_upload_gets_a_readable_413_over_plain_urllib_and_the_app_lives(app):
    """20 MB sent to an app that takes 200 kB: the client reads the 413 and its message, by declared
    length and chunked alike (the body is drained, not left unread behind a reset connection)."""
    url, _ = app
    body = b'{"scene_id": "scene0000_00", "question": "' + b"x" * 20_000_000 + b'"}'
    status, reply = raw(url, "/v1/answer", body)
    assert status == 413 and "serve.max_body_bytes" in reply["detail"]

    def chunks():
        for i in range(0, len(body), 1 << 20):
            yield body[i : i + (1 << 20)]

    req = urllib.request.Request(
        url + "/v1/answer",
        data=chunks(),
        method="POST",
        headers={"Authorization": f"Bearer {TOKEN}", "Transfer-Encoding": "chunked"},
    )
    try:
        urllib.request.urlopen(req, timeout=60)
        raise AssertionError("expected 413")
    except urllib.error.HTTPError as e:
        assert e.code == 413 and "serve.max_body_bytes" in json.loads(e.read())["detail"]
    assert raw(url, "/v1/answer", {"scene_id": "scene0000_00", "question": "What color is the chair?"})[0] == 200


def test_a_replica_killed_mid_request_is_a_retry_not_an_error(local_ray, trained_model_dir, prepared_dir, app):
    """SIGKILL of the model replica with questions in flight: every request that lost it gets 503 with
    Retry-After, which the client retries, so all of them are answered and none is a 500; Serve starts a
    new replica, and the app answers again within 60 s."""
    import os
    import signal
    import time

    import ray
    from ray import serve

    from cl3dor_ray.config import ServeConfig
    from cl3dor_ray.serve.app import Cl3dorIngress, Scene3DLMDeployment

    url, _ = app
    # no CPU reserved for this second model replica, nor for its successor: the test's Ray has 2 in all
    model = Scene3DLMDeployment.options(ray_actor_options={"num_cpus": 0}).bind(
        str(trained_model_dir), str(prepared_dir)
    )
    serve.run(Cl3dorIngress.bind(model, ServeConfig()), name="kill-me", route_prefix="/kill-me")
    try:
        client = Cl3dorClient.over_http(url + "/kill-me", retries=40, timeout=60)
        client.answer("What color is the chair?", scene_id="scene0000_00", max_new_tokens=4)
        name = next(
            a["name"]
            for a in ray.util.list_named_actors(all_namespaces=True)
            if "kill-me" in a["name"] and "Scene3DLMDeployment" in a["name"]
        )
        replica = ray.get_actor(name, namespace="serve")
        pid = ray.get(replica.__ray_call__.remote(lambda self: os.getpid()))
        statuses = []

        def ask(i):
            try:
                return client.answer(f"What is on the table? {i}", scene_id="scene0000_00", max_new_tokens=48)["answer"]
            except Cl3dorRequestError as e:
                statuses.append(e.status)
                return None

        with ThreadPoolExecutor(16) as pool:
            futures = [pool.submit(ask, i) for i in range(48)]
            time.sleep(0.5)  # some answered, others in flight
            killed_at = time.time()
            os.kill(pid, signal.SIGKILL)
            answers = [f.result(timeout=180) for f in futures]
        assert statuses == [] and all(a is not None for a in answers)
        assert time.time() - killed_at < 60
    finally:
        serve.delete("kill-me")


def test_the_page_says_when_three_js_is_missing_and_how_to_install_it(app, trained_model_dir, prepared_dir, tmp_path):
    """A second app whose web folder has no three.js: its page says so in place of the 3D view, names the
    command that installs it, and the library's path answers 503 with the same command."""
    from ray import serve

    from cl3dor_ray.config import ServeConfig
    from cl3dor_ray.serve.app import Cl3dorIngress, Scene3DLMDeployment

    url, _ = app
    model = Scene3DLMDeployment.options(ray_actor_options={"num_cpus": 0}).bind(
        str(trained_model_dir), str(prepared_dir)
    )
    serve.run(Cl3dorIngress.bind(model, ServeConfig(), None, str(tmp_path)), name="no-three", route_prefix="/no-three")
    try:
        with urllib.request.urlopen(url + "/no-three/", timeout=60) as r:
            page = r.read().decode()
        assert 'id="no-three"' in page and "three.js, which is not installed" in page and "make web" in page
        with urllib.request.urlopen(url + "/", timeout=60) as r:  # the app with three.js installed has no note
            assert 'id="no-three"' not in r.read().decode()
        try:
            urllib.request.urlopen(url + "/no-three/static/three/three.module.js", timeout=60)
            raise AssertionError("expected 503")
        except urllib.error.HTTPError as e:
            assert e.code == 503 and "make web" in json.loads(e.read())["detail"]
    finally:
        serve.delete("no-three")
