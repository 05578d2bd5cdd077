"""The web application factory: one composition root for the HTTP role."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from sqlalchemy import text

from posthorn import __version__
from posthorn.api import errors
from posthorn.api.deps import ServicesDep
from posthorn.api.limits import BodySizeLimit
from posthorn.api.routes import api_keys, domains, emails, logs, relays, senders, suppressions
from posthorn.services.container import Services, build_services
from posthorn.settings import Settings


def create_app(settings: Settings, *, services: Services | None = None) -> FastAPI:
    svc = services or build_services(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await svc.close()
        if services is None:
            await svc.db.dispose()

    app = FastAPI(
        title="Posthorn",
        version=__version__,
        description="Transactional email: send, deliver, track.",
        lifespan=lifespan,
    )
    app.state.services = svc
    errors.install(app)
    app.include_router(emails.router)
    app.include_router(api_keys.router)
    app.include_router(domains.router)
    app.include_router(senders.router)
    app.include_router(logs.router)
    app.include_router(suppressions.router)
    app.include_router(relays.router)

    @app.get("/healthz", tags=["ops"])
    async def healthz(svc: ServicesDep) -> dict[str, Any]:
        async with svc.db.read() as conn:
            await conn.execute(text("SELECT 1"))
        return {"status": "ok", "version": __version__}

    app.add_middleware(BodySizeLimit, limit=settings.max_message_bytes)
    return app
