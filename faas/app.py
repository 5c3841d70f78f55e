"""Builds the aiohttp application: services created in dependency order, closed in reverse."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

import faas.api.aliases  # noqa: F401  (each module registers its operation handlers)
import faas.api.concurrency  # noqa: F401
import faas.api.event_invoke  # noqa: F401
import faas.api.functions  # noqa: F401
import faas.api.invoke  # noqa: F401
import faas.api.layers  # noqa: F401
import faas.api.mappings  # noqa: F401
import faas.api.streaming  # noqa: F401
import faas.api.tags  # noqa: F401
import faas.api.urls  # noqa: F401
import faas.api.versions  # noqa: F401
import faas.services.autoscaling_api  # noqa: F401
import faas.services.cloudwatch_logs  # noqa: F401
import faas.services.eventbridge_api  # noqa: F401
import faas.services.kinesis_api  # noqa: F401
import faas.services.sns_api  # noqa: F401
import faas.services.sqs_api  # noqa: F401
from faas.api.json_protocol import JsonServices
from faas.api.middleware import aws_errors
from faas.api.model import LAMBDA_MODEL, add_routes, load_service_model
from faas.api.server_routes import add_server_routes
from faas.arn import Arns
from faas.config import Config
from faas.events.mappings import MappingManager, PollSettings
from faas.invoke.async_queue import AsyncQueue, AsyncSettings
from faas.invoke.destinations import Destinations
from faas.invoke.provisioning import Provisioner
from faas.invoke.router import Router
from faas.metrics import Metrics
from faas.runtime.cgroups import MemoryCgroups
from faas.runtime.pool import Limits, Pools
from faas.runtime.sandbox import detect as detect_sandbox
from faas.runtime.spawner import Interpreters
from faas.runtime.zygote import Zygotes
from faas.services import SERVICES, Services
from faas.services.autoscaling import Autoscaler
from faas.services.bus import EventBus
from faas.services.queues import Queues
from faas.services.streams import Streams
from faas.services.topic_delivery import DeliverySettings, Envelopes, TopicDeliverer
from faas.services.topics import Topics, TopicSettings
from faas.store.async_events import AsyncEvents
from faas.store.autoscaling import AutoscalingStore
from faas.store.code import CodeStore
from faas.store.db import Database
from faas.store.events import EventStore
from faas.store.layers import Layers, prune_opt
from faas.store.logdb import LogSettings
from faas.store.logstore import LogStore
from faas.store.mappings import Mappings
from faas.store.provisioned import ConcurrencySettings
from faas.store.registry import Registry
from faas.store.topics import TopicStore
from faas.store.urls import FunctionUrls
from faas.tracing import SpanExporter, Tracer, trace_file

log = logging.getLogger(__name__)

# Built-in AWS services on the same port, told apart by X-Amz-Target (botocore model names).
JSON_SERVICES: list[str] = ["kinesis", "application-autoscaling", "events", "sqs", "logs"]

_DATABASE: web.AppKey[Database] = web.AppKey("database", Database)
_POOLS: web.AppKey[Pools] = web.AppKey("pools", Pools)
_LOGS: web.AppKey[LogStore] = web.AppKey("logs", LogStore)
_TRACER: web.AppKey[Tracer] = web.AppKey("tracer", Tracer)


def create_app(config: Config) -> web.Application:
    # Function URL requests (by Host, or under /_faas/url/) are answered by the one middleware before its API
    # error handling (faas.api.middleware.aws_errors).
    app = web.Application(middlewares=[aws_errors], client_max_size=config.limits.create_request_bytes)

    metrics = Metrics()

    async def database(app: web.Application) -> AsyncIterator[None]:
        db = Database(config.data_path / "registry.db")
        await db.open()
        app[_DATABASE] = db
        yield
        await db.close()

    async def logs(app: web.Application) -> AsyncIterator[None]:
        # Closed after the pools have drained, so the last invocations' logs are written.
        lc = config.logs
        store = LogStore(config.data_path / "logs.db", LogSettings(
            retention_days=lc.retention_days, max_bytes=lc.max_bytes, flush_interval=lc.flush_interval,
            flush_records=lc.flush_records, maintenance_interval=lc.maintenance_interval,
            day_seconds=lc.day_seconds,
        ), process=lc.writer == "process")
        await store.open()
        store.start()
        metrics.watch_logs(store)
        app[_LOGS] = store
        yield
        await store.close(config.server.shutdown_timeout)

    async def tracing(app: web.Application) -> AsyncIterator[None]:
        # Closed after the pools have drained, so the last invocations' spans are exported.
        tc = config.tracing
        exporter = SpanExporter(
            otlp_endpoint=tc.otlp_endpoint, file=trace_file(tc.file, config.data_path),
            batch_interval=tc.batch_interval, region=config.account.region, account_id=config.account.account_id,
        )
        if not exporter.enabled:
            app[_TRACER] = Tracer(None)
            yield
            return
        exporter.start()
        app[_TRACER] = Tracer(exporter)
        yield
        await exporter.close(config.server.shutdown_timeout)

    async def zygotes(app: web.Application) -> AsyncIterator[None]:
        # Closed after the pools: stopping an instance waits for its exit status, which its zygote reports.
        async with Zygotes(enabled=config.runtime.spawner == "fork"):
            yield

    async def pools(app: web.Application) -> AsyncIterator[None]:
        rt = config.runtime
        pools = Pools(Limits(
            concurrency=config.account.concurrent_executions,
            minimum_unreserved=config.account.minimum_unreserved,
            memory_budget_mb=config.memory_budget_mb,
            idle_timeout=rt.idle_timeout,
            max_lifetime=rt.max_lifetime,
            reap_interval=rt.reap_interval,
            scale_burst=rt.scale_burst,
            scale_rate=rt.scale_rate,
            freeze=rt.freeze,
            freeze_after=rt.freeze_after,
            queue_wait=rt.queue_wait,
            max_starting=rt.max_starting,
            batch_scheduling=rt.batch_scheduling,
            cgroups=await asyncio.to_thread(MemoryCgroups.detect) if rt.memory_limits else None,
        ))
        pools.reserved = await ConcurrencySettings(app[_DATABASE]).reserved()
        pools.start()
        app[_POOLS] = pools
        metrics.watch_pools(pools)
        yield
        await pools.close(config.server.shutdown_timeout)

    async def services(app: web.Application) -> AsyncIterator[None]:
        db, pools = app[_DATABASE], app[_POOLS]
        arns = Arns(config.account.region, config.account.account_id)
        registry = Registry(db)
        code = CodeStore(
            config.data_path / "code",
            max_zipped=config.limits.code_size_zipped,
            max_unzipped=config.limits.code_size_unzipped,
        )
        interpreters = Interpreters(config.runtime.interpreters, python_fallback=config.runtime.python_fallback)
        sandbox = await asyncio.to_thread(detect_sandbox, config.runtime.sandbox, config.runtime.network)
        router = Router(config, arns, registry, code, pools, interpreters, sandbox, logs=app[_LOGS],
                        metrics=metrics, tracer=app[_TRACER])
        pruned = await prune_opt(config.data_path / "opt", await registry.layer_lists())
        if pruned:
            log.info("removed %d merged /opt director%s no function version uses", pruned, "y" if pruned == 1 else "ies")
        concurrency = ConcurrencySettings(db)
        provisioner = Provisioner(router, pools, concurrency, config.runtime.provision_interval)
        async_events = AsyncEvents(db)
        destinations = Destinations(arns)
        a = config.async_
        async_queue = AsyncQueue(async_events, router, destinations, AsyncSettings(
            retry_delays=tuple(a.retry_delays), throttle_backoff=a.throttle_backoff,
            throttle_backoff_max=a.throttle_backoff_max, workers=a.workers, per_function=a.per_function,
            age_scale=a.age_scale,
        ))
        streams = Streams(db, arns, config.streams)
        queues = Queues(db, arns, config.queues)
        await queues.open()
        mappings = Mappings(db)
        m = config.mappings
        mapping_manager = MappingManager(mappings, PollSettings(m.idle_poll, m.retry_delay, m.scale_interval))
        scaling = config.autoscaling
        autoscaler = Autoscaler(
            AutoscalingStore(db), registry, concurrency, provisioner, pools,
            minimum_unreserved=config.account.minimum_unreserved, interval=scaling.interval,
            sample_interval=scaling.sample_interval, window=scaling.window,
        )
        events = EventBus(EventStore(db), arns, config.events)
        sns = config.sns
        topic_store = TopicStore(db)
        deliverer = TopicDeliverer(
            topic_store, arns, DeliverySettings(sns.retry_min_delay, sns.retry_max_delay, sns.max_attempts,
                                                dispatch=sns.dispatch),
            Envelopes(config), async_queue, queues,
        )
        topics = Topics(topic_store, arns, TopicSettings(sns.deduplication_window), deliverer)
        await topics.open()
        svc = app[SERVICES] = Services(
            config, arns, db, registry, code, interpreters, pools, router, Layers(db), concurrency, provisioner,
            async_events, async_queue, mappings, mapping_manager, streams, autoscaler, events, queues, topics,
            FunctionUrls(db),
            logs=app[_LOGS], metrics=metrics,
        )
        events.attach(svc)
        destinations.services = svc
        metrics.watch_async(async_events.depth)
        mapping_manager.svc = svc
        provisioner.start()
        await async_queue.begin()
        async_queue.start()
        await events.begin()
        events.start()
        streams.start()
        queues.start()
        await mapping_manager.begin()
        autoscaler.start()
        deliverer.start()
        yield
        await deliverer.close(config.server.shutdown_timeout)
        await autoscaler.close(config.server.shutdown_timeout)
        await mapping_manager.close()
        await streams.close(config.server.shutdown_timeout)
        await events.close(config.server.shutdown_timeout)
        await async_queue.close(config.server.shutdown_timeout)
        await provisioner.close()
        await queues.close()

    async def end_long_polls(app: web.Application) -> None:
        # Before the server waits for requests in progress: a ReceiveMessage may be waiting up to 20 s.
        if SERVICES in app:
            app[SERVICES].queues.stop_waiting()

    app.on_shutdown.append(end_long_polls)
    app.cleanup_ctx.extend([database, logs, tracing, zygotes, pools, services])
    add_server_routes(app)
    app.router.add_get("/metrics", metrics.handle)
    JsonServices(JSON_SERVICES).add_routes(app)
    app[LAMBDA_MODEL] = load_service_model()
    add_routes(app, app[LAMBDA_MODEL])
    return app
