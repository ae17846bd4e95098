"""The ingress's FastAPI app. RouterIngress and the route groups it is made of (responses_api, specialist_api)
register their routes here; Serve's @serve.ingress binds them to the replica."""
from fastapi import FastAPI

from router.serving.errors import install_error_handlers
from router.version import package_version

api = FastAPI(title="ensemble-router", version=package_version())
install_error_handlers(api)
