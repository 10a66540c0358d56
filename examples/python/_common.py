"""Shared by the examples: connect to ETCD_ENDPOINTS, or start a throwaway etcd."""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from collections.abc import AsyncIterator

import etcd_recipes
from etcd_recipes.testing import EtcdCluster


@asynccontextmanager
async def connect() -> AsyncIterator[etcd_recipes.Client]:
    endpoints = os.environ.get("ETCD_ENDPOINTS", "")
    cluster = None if endpoints else EtcdCluster.start(1)
    eps = endpoints.split(",") if endpoints else cluster.endpoints if cluster else []
    try:
        async with await etcd_recipes.Client.connect(eps) as client:
            yield client
    finally:
        if cluster is not None:
            cluster.close()
