"""`Cl3dorClient`: one class for the app, through a Serve DeploymentHandle inside the cluster or over
HTTP from outside, with the same methods either way.

    client = Cl3dorClient.over_http("http://127.0.0.1:8000", token="...")
    client = Cl3dorClient.over_handle()            # in a Ray job / actor: serve.get_app_handle("cl3dor")
    client.answer("What color is the chair?", scene_id="scene0000_00")   -> {"answer", "objects", "latency_ms"}
    client.answer("What is on my left?", scene_id="scene0000_00",        (SQA3D: situation and pose)
                  situation="I am sitting on the bed facing the desk.", pose=[x, y, z, qx, qy, qz, qw])
    client.caption("scene0000_00", object_id=3)                          -> {"caption", "latency_ms"}
    client.score("Is there a cup?", ["yes", "no"], scene_id="scene0000_00") -> {"ranked", "latency_ms"}
A refused request raises `Cl3dorRequestError` with the HTTP status and the app's JSON body; a 503
(the app is at its admission bound, or the replica serving the request was lost) is retried after
its Retry-After, `retries` times, over HTTP and through the handle alike.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

APP_NAME = "cl3dor"


class Cl3dorRequestError(Exception):
    def __init__(self, status: int, body: dict, retry_after: str | None = None):
        self.status, self.body = status, body
        self.retry_after = float(retry_after or 1)  # seconds, for a 503
        super().__init__(f"{status}: {body}")


class Cl3dorClient:
    def __init__(
        self, url: str | None = None, token: str | None = None, handle=None, timeout: float = 120.0, retries: int = 3
    ):
        if (url is None) == (handle is None):
            raise ValueError("give exactly one of url (HTTP) or handle (DeploymentHandle)")
        self.url, self.token, self.handle, self.timeout = (url or "").rstrip("/"), token, handle, timeout
        self.retries = retries  # of a 503 (admission control, a lost replica), after its Retry-After

    @classmethod
    def over_http(
        cls, url: str = "http://127.0.0.1:8000", token: str | None = None, timeout: float = 120.0, retries: int = 3
    ):
        return cls(url=url, token=token, timeout=timeout, retries=retries)

    @classmethod
    def over_handle(cls, app_name: str = APP_NAME, handle=None):
        from ray import serve

        return cls(handle=handle or serve.get_app_handle(app_name))

    # ---- the API
    def answer(
        self,
        question: str,
        scene_id: str | None = None,
        objects: list[dict] | None = None,
        max_new_tokens: int | None = None,
        num_beams: int = 1,
        situation: str | None = None,
        pose: list[float] | None = None,
    ) -> dict:
        payload = {
            "question": question,
            "scene_id": scene_id,
            "objects": objects,
            "situation": situation,
            "pose": pose,
            "max_new_tokens": max_new_tokens,
            "num_beams": num_beams,
        }
        return self._call("answer", "POST", "/v1/answer", payload)

    def caption(self, scene_id: str, object_id: int, max_new_tokens: int | None = None) -> dict:
        payload = {"scene_id": scene_id, "object_id": object_id, "max_new_tokens": max_new_tokens}
        return self._call("caption", "POST", "/v1/caption", payload)

    def score(
        self,
        question: str,
        candidates: list[str],
        scene_id: str | None = None,
        objects: list[dict] | None = None,
        situation: str | None = None,
        pose: list[float] | None = None,
        object_id: int | None = None,
    ) -> dict:
        """`object_id`: score the candidates as captions of that object (the question is then not read)."""
        payload = {
            "question": question,
            "candidates": candidates,
            "scene_id": scene_id,
            "objects": objects,
            "situation": situation,
            "pose": pose,
            "object_id": object_id,
        }
        return self._call("score", "POST", "/v1/score", payload)

    def scenes(self) -> list[dict]:
        return self._call("scenes", "GET", "/v1/scenes", None)["scenes"]

    # ---- transport
    def _call(self, method: str, http_method: str, path: str, payload: dict | None) -> dict:
        if payload is not None:
            payload = {k: v for k, v in payload.items() if v is not None}
        for attempt in range(self.retries + 1):
            try:
                if self.handle is not None:
                    return self._over_handle(method, payload)
                return self._over_http(http_method, path, payload)
            except Cl3dorRequestError as e:
                # 503: the app is full, or the replica serving the request was lost; come back when it says
                if e.status != 503 or attempt == self.retries:
                    raise
                time.sleep(e.retry_after)

    def _over_handle(self, method: str, payload: dict | None) -> dict:
        from cl3dor_ray.serve.app import RequestError

        try:
            call = getattr(self.handle, method)
            return (call.remote(payload) if payload is not None else call.remote()).result(timeout_s=self.timeout)
        except RequestError as e:
            raise Cl3dorRequestError(e.status, e.body, (e.headers or {}).get("Retry-After")) from None

    def _over_http(self, http_method: str, path: str, payload: dict | None) -> dict:
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(
            self.url + path, data=data, method=http_method, headers={"Content-Type": "application/json"}
        )
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            body = e.read()
            try:
                parsed = json.loads(body)
            except json.JSONDecodeError:
                parsed = {"error": body.decode(errors="replace")}
            raise Cl3dorRequestError(e.code, parsed, e.headers.get("Retry-After")) from None
