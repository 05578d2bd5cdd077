"""The web application factory: one composition root for the HTTP role."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from posthorn import __version__
from posthorn.api import errors
from posthorn.api.limits import BodySizeLimit
from posthorn.api.routes import account as account_routes
from posthorn.api.routes import api_keys, domains, emails, logs, ops, relays, senders, suppressions
from posthorn.api.routes import bulk_jobs as bulk_job_routes
from posthorn.api.routes import lists as list_routes
from posthorn.api.routes import send_configs as send_config_routes
from posthorn.api.routes import stats as stats_routes
from posthorn.api.routes import templates as template_routes
from posthorn.api.routes import webhooks as webhook_routes
from posthorn.dialects import billionmail, bizmail, mailpass, v2
from posthorn.services.container import Services, build_services
from posthorn.settings import Settings
from posthorn.web import tracking as tracking_pages


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
    app.include_router(ops.router)
    app.include_router(emails.router)
    app.include_router(api_keys.router)
    app.include_router(account_routes.router)
    app.include_router(domains.router)
    app.include_router(senders.router)
    app.include_router(logs.router)
    app.include_router(suppressions.router)
    app.include_router(relays.router)
    app.include_router(template_routes.router)
    app.include_router(stats_routes.router)
    app.include_router(webhook_routes.router)
    app.include_router(tracking_pages.router)
    app.include_router(bizmail.router)
    app.include_router(send_config_routes.router)
    app.include_router(mailpass.router)
    app.include_router(billionmail.router)
    app.include_router(list_routes.router)
    app.include_router(bulk_job_routes.router)
    app.include_router(v2.router)

    app.add_middleware(BodySizeLimit, limit=settings.max_message_bytes)
    return app
