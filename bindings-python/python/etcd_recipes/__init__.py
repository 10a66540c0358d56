"""etcd-recipes: a distributed lock, leader election, a service registry with
discovery, and a watched configuration cache on etcd, asyncio-native and typed.

The recipes are written once in Rust (crate ``etcd-recipes``); this package is a
thin binding. Locks, elections and registrations use the key layout of etcd's Go
``concurrency`` and ``naming/endpoints`` packages, so they interoperate with
``etcdctl lock``, ``etcdctl elect`` and Go services.

    import asyncio, etcd_recipes

    async def main() -> None:
        async with await etcd_recipes.Client.connect(["127.0.0.1:2379"]) as client:
            async with await client.session(ttl=10) as session:
                print(f"lease {session.lease_id:x} alive: {session.is_alive}")

    asyncio.run(main())

Core ``tracing`` events are forwarded to the ``logging`` logger ``"etcd_recipes"``.

At process exit (normal end, exception, ``sys.exit``, SIGTERM, SIGINT) every lease the
process still owns is revoked within 2 s: nothing it held outlives it by a TTL.
"""

from etcd_recipes import _exit, _native
from etcd_recipes._config import ConfigSnapshot
from etcd_recipes._native import (
    Client,
    Lock,
    LockGuard,
    Semaphore,
    RwLock,
    Election,
    Campaign,
    Leadership,
    LeaderInfo,
    LeaderObserver,
    LeaderLoop,
    LeaderLatch,
    LeaderEvent,
    LeaderEvents,
    Instance,
    Registering,
    Registration,
    ServiceView,
    InstanceSets,
    InstanceEvent,
    InstanceEvents,
    ConfigView,
    ConfigChange,
    ConfigChanges,
    ConnectionStates,
    EndpointHealth,
    WorkQueue,
    WorkItem,
    DeadLetter,
    Counter,
    Barrier,
    DoubleBarrier,
    Queue,
    PriorityQueue,
    QueueItem,
    ClosedError,
    UnknownOutcomeError,
    CompactedError,
    ConnectError,
    DecodeError,
    EtcdError,
    EtcdRecipesError,
    EtcdTimeoutError,
    FencedError,
    InvalidArgumentError,
    LockLostError,
    LockTimeoutError,
    NotLeaderError,
    PermissionDeniedError,
    Session,
    SessionLostError,
    Health,
    SessionHealth,
    ViewHealth,
    ComponentHealth,
    MetricFamily,
    MetricSample,
    metrics_snapshot,
    metrics_text,
)

__version__: str = _native.__version__

_exit.install()

__all__ = [
    "Client",
    "Session",
    "Lock",
    "LockGuard",
    "Semaphore",
    "RwLock",
    "Election",
    "Campaign",
    "Leadership",
    "LeaderInfo",
    "LeaderObserver",
    "LeaderLoop",
    "LeaderLatch",
    "LeaderEvent",
    "LeaderEvents",
    "Instance",
    "Registering",
    "Registration",
    "ServiceView",
    "InstanceSets",
    "InstanceEvent",
    "InstanceEvents",
    "ConfigView",
    "ConfigChange",
    "ConfigSnapshot",
    "ConfigChanges",
    "ConnectionStates",
    "EndpointHealth",
    "WorkQueue",
    "WorkItem",
    "DeadLetter",
    "Counter",
    "Barrier",
    "DoubleBarrier",
    "Queue",
    "PriorityQueue",
    "QueueItem",
    "EtcdRecipesError",
    "InvalidArgumentError",
    "ConnectError",
    "EtcdTimeoutError",
    "SessionLostError",
    "LockTimeoutError",
    "LockLostError",
    "NotLeaderError",
    "FencedError",
    "CompactedError",
    "PermissionDeniedError",
    "DecodeError",
    "ClosedError",
    "UnknownOutcomeError",
    "EtcdError",
    "Health",
    "SessionHealth",
    "ViewHealth",
    "ComponentHealth",
    "MetricFamily",
    "MetricSample",
    "metrics_snapshot",
    "metrics_text",
]
