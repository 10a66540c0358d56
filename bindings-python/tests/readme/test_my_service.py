# The README's pytest example, verbatim. `etcd` is a real, throwaway etcd shared by the
# test session (fixture from the etcd_recipes pytest plugin, installed with the package).
import pytest

import etcd_recipes
from etcd_recipes.testing import EtcdCluster


@pytest.mark.asyncio
async def test_my_service(etcd: EtcdCluster) -> None:
    async with await etcd_recipes.Client.connect(etcd.endpoints, namespace="my-service/") as client:
        async with client.lock("jobs/nightly", ttl=5) as guard:
            await guard.put("jobs/nightly-owner", "test")
        assert await client.get("jobs/nightly-owner") == b"test"
