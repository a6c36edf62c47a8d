"""cohort/endpoints.py: what the mutation run showed no other fast test checks."""

from __future__ import annotations

from cohort import custom


def test_dicomweb_client_waits_30_seconds_by_default():
    # dicomweb-client's own default is 20 s; ours is 30 s (a slow QIDO of a big study takes longer than 20 s)
    assert custom("http://127.0.0.1:1/dicom-web").client()._timeout == 30
    assert custom("http://127.0.0.1:1/dicom-web").client(timeout=4.5)._timeout == 4.5


import pytest  # noqa: E402

from cohort import EndpointError  # noqa: E402
from cohort.endpoints import HeaderAuth, auth_from_name  # noqa: E402


def _error(fn, *args, **kw) -> str:
    with pytest.raises(EndpointError) as err:
        fn(*args, **kw)
    return str(err.value)


CARRIED = ("give the URL without it and pass the token from the environment with --auth bearer[:ENV_VAR] "
           "(Python: auth=BearerTokenAuth(ENV_VAR)), so that it is never stored or printed")


def test_a_credential_in_the_query_string_of_the_url_or_the_name():
    assert _error(custom, "http://127.0.0.1:1/dw?token=abc&key=1&token=d&page=2") == (
        f"endpoint URL carries a credential in its query string (key, token=...); {CARRIED}")
    assert _error(custom, "http://127.0.0.1:1/dw", name="http://127.0.0.1:1/dw?X-Amz-Signature=s") == (
        f"endpoint URL carries a credential in its query string (X-Amz-Signature=...); {CARRIED}")
    assert _error(custom, "http://127.0.0.1:1/dw?apikey=1", name="n?jwt=2") == (
        f"endpoint URL carries a credential in its query string (apikey, jwt=...); {CARRIED}")
    assert custom("http://127.0.0.1:1/dw?page=2").url == "http://127.0.0.1:1/dw?page=2"


@pytest.mark.parametrize(("header", "ok"), [
    ("apikey", True), ("X-Api-Key", True), ("a!#$%&'*+-.^_`|~9", True), ("", False), ("api key", False),
    ("api:key", False), ("ключ", True),
])
def test_header_names(header, ok):
    if ok:
        assert HeaderAuth(header, "V").header == header
    else:
        assert _error(HeaderAuth, header, "V") == (f"header authentication: {header!r} is not a valid HTTP header "
                                                    "name; use e.g. --auth header:apikey:ENV_VAR")


def test_header_auth_needs_a_variable_and_sends_its_value(monkeypatch):
    assert _error(HeaderAuth, "apikey", "") == ("header authentication needs the environment variable that holds "
                                                "the key: --auth header:apikey:ENV_VAR")
    monkeypatch.setenv("MUT_KEY", "k-123")
    session = custom("http://127.0.0.1:1/dw", HeaderAuth("X-Key", "MUT_KEY")).session()
    assert session.headers["X-Key"] == "k-123"
    monkeypatch.setenv("MUT_KEY", "")
    assert _error(custom("http://127.0.0.1:1/dw", HeaderAuth("X-Key", "MUT_KEY")).session) == (
        "header authentication needs the environment variable MUT_KEY (sent as the 'X-Key' header); set it to the "
        "key (it is never printed or stored)")


@pytest.mark.parametrize("name", ["header", "header:apikey", "header::K", "header:apikey:"])
def test_auth_from_name_header_needs_name_and_variable(name):
    assert _error(auth_from_name, name) == (f"--auth {name!r}: header authentication is header:NAME:ENV_VAR, e.g. "
                                            "header:apikey:SIIM_API_KEY (the key is read from ENV_VAR)")


def test_auth_from_name_header_and_unknown():
    assert auth_from_name("header:apikey:K:rest") == HeaderAuth("apikey", "K:rest")
    assert _error(auth_from_name, "headers:a:b") == (
        "unknown authentication 'headers:a:b': use none, google, bearer[:ENV_VAR], basic[:USER_VAR:PASSWORD_VAR] or "
        "header:NAME:ENV_VAR")
