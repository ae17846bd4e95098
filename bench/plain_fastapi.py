"""The same routing decision behind plain FastAPI + uvicorn (no Ray), as the baseline for Serve's overhead.
Run by bench/bench_router.py on a loopback port: python bench/plain_fastapi.py PORT"""
import sys

import uvicorn
from fastapi import FastAPI

from router.features import Encoder
from router.policy import load_policy
from router.serving.schemas import ChatCompletionRequest
from router.service import RoutingService

app = FastAPI()
service = RoutingService(Encoder(threads=2))  # as the Serve ingress runs it
service.apply_policy(load_policy().model_dump(mode="json"))


@app.post("/v1/route")
def route(body: ChatCompletionRequest) -> dict:
    tokens = sum(service.encoder.count_tokens(m.text()) for m in body.messages)
    return service.route(body.routing_text(), tokens, body.model).as_dict()


@app.get("/healthz")
def healthz() -> dict:
    return {"status": "ok"}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
