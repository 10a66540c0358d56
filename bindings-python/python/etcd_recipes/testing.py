"""A throwaway real etcd for tests: yours and ours.

``EtcdCluster`` starts 1 or 3 etcd members on free loopback ports in a temporary
directory (binary: ``$ETCD_BIN``, else ``etcd`` on ``PATH``) and can pause, kill,
restart, wipe and compact them. ``EtcdCluster.start(tls=True)`` serves mutual TLS
with certificates generated at start (``cluster.certs``: PEM paths); ``auth=True``
turns on user/password authentication (``cluster.user``, ``cluster.password``,
``cluster.add_user()``). Installed as a pytest plugin, this module gives two
fixtures:

* ``etcd``: one single-member cluster shared by the whole test session (use distinct
  keys or a client ``namespace`` per test);
* ``etcd_factory``: ``etcd_factory(members=1, tls=False, auth=False)`` starts a fresh
  cluster owned by one test (for fault injection, TLS, auth), stopped when the test ends.

    async def test_my_service(etcd: EtcdCluster) -> None:
        client = await etcd_recipes.Client.connect(etcd.endpoints)
        ...

Without the plugin entry point, ``from etcd_recipes.testing import etcd`` works too.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator

from etcd_recipes._native import EtcdCluster, TestCerts, etcd_binary_path, etcd_binary_version

__all__ = ["EtcdCluster", "TestCerts", "etcdctl", "etcd_binary_path", "etcd_binary_version", "etcd", "etcd_factory"]


def etcdctl(cluster: EtcdCluster, *args: str, timeout: float = 30.0, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``etcdctl <args>`` (API v3) against ``cluster``; returns the finished process."""
    env = dict(os.environ, ETCDCTL_API="3")
    return subprocess.run(
        [*cluster.etcdctl, *args], env=env, capture_output=True, text=True, timeout=timeout, check=check
    )


try:
    import pytest
except ImportError:  # pragma: no cover - pytest is optional
    pass
else:

    @pytest.fixture(scope="session")
    def etcd() -> Iterator[EtcdCluster]:
        """One real single-member etcd shared by the test session."""
        cluster = EtcdCluster.start(1)
        try:
            yield cluster
        finally:
            cluster.close()

    @pytest.fixture
    def etcd_factory() -> Iterator[Callable[..., EtcdCluster]]:
        """Start fresh clusters owned by one test: ``etcd_factory(members=3)``,
        ``etcd_factory(tls=True)``, ``etcd_factory(auth=True)``."""
        started: list[EtcdCluster] = []

        def start(members: int = 1, *, tls: bool = False, auth: bool = False) -> EtcdCluster:
            cluster = EtcdCluster.start(members, tls=tls, auth=auth)
            started.append(cluster)
            return cluster

        try:
            yield start
        finally:
            for cluster in started:
                cluster.close()
