"""Mutual TLS and user/password authentication through the Python face, against a real
etcd: what works, and that every refusal is a typed error that comes at once instead of
after the connect timeout."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Iterator
from typing import Any, TypeVar

import pytest

import etcd_recipes
from etcd_recipes import Client
from etcd_recipes.testing import EtcdCluster, TestCerts

from waiting import tail

# Long, so that a refusal that waited for it instead of failing at once is caught by FAST.
CONNECT_TIMEOUT = 20.0
# A refusal must come within this (loose: the machine may be busy).
FAST = 10.0
# Bound on anything that should succeed.
LIMIT = 30.0

T = TypeVar("T")


async def bounded(what: str, aw: Awaitable[T]) -> T:
    try:
        return await asyncio.wait_for(aw, LIMIT)
    except asyncio.TimeoutError:
        raise AssertionError(f"{what}: no result within {LIMIT:g} s") from None


def short(e: BaseException) -> str:
    return f"{type(e).__name__}: {tail(str(e), 300)}"


async def refused(
    what: str, cls: type[etcd_recipes.EtcdRecipesError], endpoints: list[str], **options: Any
) -> etcd_recipes.EtcdRecipesError:
    """Connecting with `options` fails with `cls`, well before the connect timeout."""
    started = time.monotonic()
    try:
        client = await bounded(what, Client.connect(endpoints, connect_timeout=CONNECT_TIMEOUT, **options))
    except etcd_recipes.EtcdRecipesError as e:
        took = time.monotonic() - started
        assert isinstance(e, cls), f"{what}: expected {cls.__name__} after {took:.1f} s, got {short(e)}"
        assert took < FAST, f"{what}: refused only after {took:.1f} s (connect timeout {CONNECT_TIMEOUT:g} s): {short(e)}"
        return e
    await client.close()
    raise AssertionError(f"{what}: connected, expected {cls.__name__}")


async def put_get_and_lock(client: Client, tag: str) -> None:
    rev = await bounded("put", client.put(f"{tag}/k", "v"))
    assert rev > 0
    assert await bounded("get", client.get(f"{tag}/k")) == b"v"
    lock = client.lock(f"{tag}/lock", ttl=10, timeout=10.0)
    guard = await bounded("acquire", lock.acquire())
    assert guard.is_held
    await bounded("release", guard.release())
    again = await bounded("try_acquire", client.lock(f"{tag}/lock", ttl=10).try_acquire())
    await bounded("release", again.release())


@pytest.fixture(scope="module")
def tls_etcd() -> Iterator[EtcdCluster]:
    with EtcdCluster.start(1, tls=True) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def auth_etcd() -> Iterator[EtcdCluster]:
    with EtcdCluster.start(1, auth=True) as cluster:
        yield cluster


def certs_of(cluster: EtcdCluster) -> TestCerts:
    certs = cluster.certs
    assert certs is not None
    return certs


async def test_mtls_put_get_and_lock(tls_etcd: EtcdCluster) -> None:
    assert all(e.startswith("https://") for e in tls_etcd.endpoints), tls_etcd.endpoints
    certs = certs_of(tls_etcd)
    client = await bounded("connect", Client.connect(
        tls_etcd.endpoints, connect_timeout=CONNECT_TIMEOUT,
        ca_cert=certs.ca, cert=certs.client_cert, key=certs.client_key,
    ))
    async with client:
        await put_get_and_lock(client, "mtls")
    # PEM bytes work as well as paths.
    with open(certs.ca, "rb") as ca, open(certs.client_cert, "rb") as cert, open(certs.client_key, "rb") as key:
        ca_pem, cert_pem, key_pem = ca.read(), cert.read(), key.read()
    client2 = await bounded("connect", Client.connect(tls_etcd.endpoints, ca_cert=ca_pem, cert=cert_pem, key=key_pem))
    async with client2:
        assert await bounded("get", client2.get("mtls/k")) == b"v"


async def test_mtls_server_cert_from_an_untrusted_ca(tls_etcd: EtcdCluster) -> None:
    certs = certs_of(tls_etcd)
    e = await refused("server cert not signed by the trusted CA", etcd_recipes.ConnectError, tls_etcd.endpoints,
                      ca_cert=certs.other_ca, cert=certs.client_cert, key=certs.client_key)
    assert e.code == "CONNECT"
    assert "certificate" in str(e), short(e)


async def test_mtls_client_cert_from_another_ca(tls_etcd: EtcdCluster) -> None:
    certs = certs_of(tls_etcd)
    await refused("client cert from another CA", etcd_recipes.ConnectError, tls_etcd.endpoints,
                  ca_cert=certs.ca, cert=certs.other_client_cert, key=certs.other_client_key)


async def test_mtls_expired_client_cert(tls_etcd: EtcdCluster) -> None:
    certs = certs_of(tls_etcd)
    await refused("expired client cert", etcd_recipes.ConnectError, tls_etcd.endpoints,
                  ca_cert=certs.ca, cert=certs.expired_client_cert, key=certs.expired_client_key)


async def test_mtls_without_a_client_cert(tls_etcd: EtcdCluster) -> None:
    certs = certs_of(tls_etcd)
    await refused("no client cert", etcd_recipes.ConnectError, tls_etcd.endpoints, ca_cert=certs.ca)


async def test_https_without_tls_options_is_invalid(tls_etcd: EtcdCluster) -> None:
    await refused("https without a CA", etcd_recipes.InvalidArgumentError, tls_etcd.endpoints)


async def test_auth_wrong_password_unknown_user_and_no_user(auth_etcd: EtcdCluster) -> None:
    assert auth_etcd.user is not None
    e = await refused("wrong password", etcd_recipes.PermissionDeniedError, auth_etcd.endpoints,
                      user=auth_etcd.user, password="not-the-password")
    assert e.code == "PERMISSION_DENIED"
    await refused("unknown user", etcd_recipes.PermissionDeniedError, auth_etcd.endpoints,
                  user="nobody", password="whatever")
    await refused("no user", etcd_recipes.PermissionDeniedError, auth_etcd.endpoints)


async def test_auth_user_without_permission_is_denied_a_put_and_a_lock(auth_etcd: EtcdCluster) -> None:
    auth_etcd.add_user("py-reader", "reader-pw")
    client = await bounded("connect", Client.connect(
        auth_etcd.endpoints, user="py-reader", password="reader-pw", connect_timeout=CONNECT_TIMEOUT))
    async with client:
        with pytest.raises(etcd_recipes.PermissionDeniedError) as put_err:
            await bounded("put", client.put("k", "v"))
        assert put_err.value.code == "PERMISSION_DENIED"
        with pytest.raises(etcd_recipes.PermissionDeniedError):
            await bounded("get", client.get("k"))
        started = time.monotonic()
        with pytest.raises(etcd_recipes.PermissionDeniedError) as lock_err:
            await bounded("acquire", client.lock("denied", ttl=10, timeout=15.0).acquire())
        took = time.monotonic() - started
        assert took < FAST, f"lock refused only after {took:.1f} s: {short(lock_err.value)}"


async def test_auth_correct_user_works(auth_etcd: EtcdCluster) -> None:
    client = await bounded("connect", Client.connect(
        auth_etcd.endpoints, user=auth_etcd.user, password=auth_etcd.password, connect_timeout=CONNECT_TIMEOUT))
    async with client:
        await put_get_and_lock(client, "auth")
    assert await bounded("compact", auth_etcd.compact()) > 0
