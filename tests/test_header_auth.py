"""API-key header authentication (``--auth header:NAME:ENV_VAR``): the key comes from the environment,
is sent as its own header, and is never printed."""

from __future__ import annotations

import pydicom
import pytest
from click.testing import CliRunner
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from cohort import EndpointError, custom
from cohort.cli import cli
from cohort.endpoints import HeaderAuth, auth_from_name

KEY = "key-for-tests-7f3a9c"


def test_header_auth_from_name_and_session(monkeypatch):
    auth = auth_from_name("header:apikey:SIIM_KEY")
    assert auth == HeaderAuth("apikey", "SIIM_KEY")
    monkeypatch.setenv("SIIM_KEY", KEY)
    session = custom("http://127.0.0.1:1/dicomweb", auth).session()
    assert session.headers["apikey"] == KEY
    assert KEY not in repr(auth) + repr(custom("http://127.0.0.1:1/dicomweb", auth))


@pytest.mark.parametrize(("name", "message"), [
    ("header", "header:NAME:ENV_VAR"), ("header:apikey", "header:NAME:ENV_VAR"),
    ("header::K", "header:NAME:ENV_VAR"), ("header:api key:K", "not a valid HTTP header name"),
])
def test_bad_header_auth(name, message):
    with pytest.raises(EndpointError, match=message):
        auth_from_name(name)


def test_missing_key_names_the_variable_not_a_value(monkeypatch):
    monkeypatch.delenv("SIIM_KEY", raising=False)
    with pytest.raises(EndpointError, match="environment variable SIIM_KEY"):
        custom("http://127.0.0.1:1/dicomweb", HeaderAuth("apikey", "SIIM_KEY")).session()


@pytest.mark.orthanc
def test_cli_coverage_verify_with_an_api_key_server(orthanc_factory, catalog, tmp_path, monkeypatch):
    from tests.support.slides import GoogleStandIn

    rows = catalog.sql("SELECT StudyInstanceUID, SeriesInstanceUID FROM index WHERE collection_id = 'tcga_paad' "
                       "ORDER BY SeriesInstanceUID LIMIT 2").to_pylist()
    server = orthanc_factory()
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = rows[0]["StudyInstanceUID"], rows[0]["SeriesInstanceUID"]
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(tmp_path / "ct.dcm")
    server.upload(tmp_path / "ct.dcm")
    sql = tmp_path / "two.sql"
    sql.write_text("SELECT SeriesInstanceUID FROM index WHERE SeriesInstanceUID IN ("
                   + ", ".join(f"'{r['SeriesInstanceUID']}'" for r in rows) + ")\n")
    with GoogleStandIn(server.dicomweb_url, header=("apikey", KEY)) as standin:
        args = ["coverage", str(sql), "--url", standin.dicomweb_url, "--auth", "header:apikey:SIIM_KEY", "--verify"]
        monkeypatch.setenv("SIIM_KEY", KEY)
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        assert "checked 2 series: 1 present, 1 missing, 0 errors" in result.stderr
        assert all(ok for _, ok in standin.log) and len(standin.log) == 2
        monkeypatch.setenv("SIIM_KEY", "wrong-" + KEY)
        refused = CliRunner().invoke(cli, args)
        assert "0 present, 0 missing, 2 errors" in refused.stderr and "HTTP 401" in refused.stderr
        assert KEY not in result.output + refused.output
