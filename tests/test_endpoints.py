"""Endpoints: URLs, authentication from the environment, and secrets that never show."""

from __future__ import annotations

import pytest

from cohort import EndpointError, custom, google_store, idc_proxy
from cohort.endpoints import (
    BasicAuth,
    BearerTokenAuth,
    EndpointKind,
    GoogleAuth,
    NoAuth,
    auth_from_name,
    google_credentials_available,
)

SECRET = "s3cr3t-never-shown"


def test_builtin_endpoints():
    proxy = idc_proxy()
    assert proxy.kind is EndpointKind.PROXY and proxy.idc_version is None and isinstance(proxy.auth, NoAuth)
    store = google_store(24)
    assert store.name == "idc-store-v24" and store.idc_version == 24 and isinstance(store.auth, GoogleAuth)
    assert store.url.endswith("/dicomStores/idc-store-v24/dicomWeb")
    assert store.series_url("1.2", "3.4") == store.url + "/studies/1.2/series/3.4"
    assert custom("http://127.0.0.1:8042/dicom-web/").url == "http://127.0.0.1:8042/dicom-web"


@pytest.mark.parametrize("url", ["ftp://host/dicom-web", "127.0.0.1:8042/dicom-web"])
def test_bad_url(url):
    with pytest.raises(EndpointError, match="must start with http"):
        custom(url)


def test_credentials_in_url_refused_without_echoing_them():
    with pytest.raises(EndpointError, match="basic auth from the environment") as info:
        custom(f"http://user:{SECRET}@127.0.0.1:8042/dicom-web")
    assert SECRET not in str(info.value)


def test_google_store_release_checked():
    with pytest.raises(EndpointError, match="1 or later"):
        google_store(0)


def test_bearer_token_from_env_applied_and_never_shown(monkeypatch):
    monkeypatch.setenv("MY_TOKEN", SECRET)
    endpoint = custom("http://127.0.0.1:1/dicom-web", BearerTokenAuth("MY_TOKEN"))
    session = endpoint.session()
    assert session.headers["Authorization"] == f"Bearer {SECRET}"
    for text in (repr(endpoint), str(endpoint), repr(endpoint.auth), repr(session)):
        assert SECRET not in text
    assert "MY_TOKEN" in repr(endpoint.auth)


def test_basic_auth_from_env_applied_and_never_shown(monkeypatch):
    monkeypatch.setenv("U_VAR", "alice")
    monkeypatch.setenv("P_VAR", SECRET)
    endpoint = custom("http://127.0.0.1:1/dicom-web", auth_from_name("basic:U_VAR:P_VAR"))
    assert endpoint.session().auth == ("alice", SECRET)
    assert SECRET not in repr(endpoint) and "alice" not in repr(endpoint)


@pytest.mark.parametrize(("auth", "variable"), [(BearerTokenAuth("NO_SUCH_TOKEN_VAR"), "NO_SUCH_TOKEN_VAR"),
                                                (BasicAuth("NO_SUCH_USER_VAR", "P"), "NO_SUCH_USER_VAR")])
def test_missing_env_is_an_endpoint_error(monkeypatch, auth, variable):
    monkeypatch.delenv(variable, raising=False)
    with pytest.raises(EndpointError, match=variable):
        custom("http://127.0.0.1:1/dicom-web", auth).session()


def test_google_auth_without_credentials(monkeypatch, tmp_path):
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    assert not google_credentials_available()
    with pytest.raises(EndpointError, match="gcloud auth application-default login"):
        google_store(24).session()


def test_google_credentials_available_checks_files_only(monkeypatch, tmp_path):
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))
    assert not google_credentials_available()
    (tmp_path / "application_default_credentials.json").write_text("{}")
    assert google_credentials_available()


@pytest.mark.parametrize(("name", "expected"), [
    ("none", NoAuth()), ("google", GoogleAuth()), ("bearer", BearerTokenAuth("DICOMWEB_TOKEN")),
    ("bearer:T", BearerTokenAuth("T")), ("basic", BasicAuth()), ("basic:U:P", BasicAuth("U", "P")),
])
def test_auth_from_name(name, expected):
    assert auth_from_name(name) == expected


def test_auth_from_name_unknown():
    with pytest.raises(EndpointError, match="unknown authentication 'kerberos'"):
        auth_from_name("kerberos")


@pytest.mark.orthanc
def test_basic_auth_against_orthanc(orthanc_factory, monkeypatch):
    server = orthanc_factory(users={"alice": SECRET})
    monkeypatch.setenv("DICOMWEB_USER", "alice")
    monkeypatch.setenv("DICOMWEB_PASSWORD", SECRET)
    with custom(server.dicomweb_url, BasicAuth()).session() as session:
        assert session.get(server.dicomweb_url + "/studies", timeout=10).status_code == 200
    with custom(server.dicomweb_url).session() as session:
        assert session.get(server.dicomweb_url + "/studies", timeout=10).status_code == 401
