"""The Azurite the azurite tests share: it answers on a loopback port, and leaves no process behind."""

from __future__ import annotations

import os
import urllib.error
import urllib.request

import pytest

from servers.azurite import start_azurite


def test_a_test_that_takes_the_azurite_fixture_is_marked_azurite(request, azurite):
    assert request.node.get_closest_marker("azurite") is not None
    assert azurite.blob_endpoint == f"http://127.0.0.1:{azurite.port}/devstoreaccount1"
    assert f"BlobEndpoint={azurite.blob_endpoint};" in azurite.connection_string


@pytest.mark.azurite
def test_azurite_stops_with_its_whole_process_group(tmp_path):
    with start_azurite(tmp_path) as server:
        with pytest.raises(urllib.error.HTTPError, match="403"):  # up, and wants credentials
            urllib.request.urlopen(server.blob_endpoint + "?comp=list", timeout=5)
        os.killpg(server.pid, 0)  # its own process group: the fixture stops exactly that
    with pytest.raises(ProcessLookupError):
        os.killpg(server.pid, 0)
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(server.blob_endpoint + "?comp=list", timeout=5)
    assert not list(tmp_path.glob("__*"))  # in memory: no database or extent files left in its folder


def test_without_azurite_installed_the_fixture_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setenv("OEA_AZURITE", str(tmp_path / "nowhere"))
    with pytest.raises(RuntimeError, match=r"Azurite is not installed at .*nowhere: run ./scripts/setup.sh"), \
            start_azurite(tmp_path):
        pass
