"""Shared fixtures. The `etcd` and `etcd_factory` fixtures come from the package's own
pytest plugin (etcd_recipes.testing, registered through the pytest11 entry point)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

import etcd_recipes
from etcd_recipes.testing import EtcdCluster


@pytest.fixture
def ns() -> str:
    """A key namespace unique to one test, so tests can share the session etcd."""
    return f"t-{uuid.uuid4().hex[:12]}/"


@pytest.fixture
async def client(etcd: EtcdCluster, ns: str) -> AsyncIterator[etcd_recipes.Client]:
    async with await etcd_recipes.Client.connect(etcd.endpoints, namespace=ns) as c:
        yield c
