"""The services one server holds, created in dependency order by `faas.app` and reached by handlers
through the application's `SERVICES` key."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from faas.arn import Arns
from faas.config import Config
from faas.events.mappings import MappingManager
from faas.invoke.async_queue import AsyncQueue
from faas.invoke.provisioning import Provisioner
from faas.invoke.router import Router
from faas.metrics import Metrics
from faas.runtime.pool import Pools
from faas.runtime.spawner import Interpreters
from faas.services.autoscaling import Autoscaler
from faas.services.bus import EventBus
from faas.services.queues import Queues
from faas.services.streams import Streams
from faas.services.topics import Topics
from faas.store.async_events import AsyncEvents
from faas.store.code import CodeStore
from faas.store.db import Database
from faas.store.layers import Layers
from faas.store.logstore import LogStore
from faas.store.mappings import Mappings
from faas.store.urls import FunctionUrls
from faas.store.provisioned import ConcurrencySettings
from faas.store.registry import Registry


@dataclass
class Services:
    config: Config
    arns: Arns
    db: Database
    registry: Registry
    code: CodeStore
    interpreters: Interpreters
    pools: Pools
    router: Router
    layers: Layers
    concurrency: ConcurrencySettings
    provisioner: Provisioner
    async_events: AsyncEvents
    async_queue: AsyncQueue
    mappings: Mappings
    mapping_manager: MappingManager
    streams: Streams
    autoscaler: Autoscaler
    events: EventBus
    queues: Queues
    topics: Topics
    urls: FunctionUrls
    logs: LogStore
    metrics: Metrics


SERVICES: web.AppKey[Services] = web.AppKey("services", Services)
