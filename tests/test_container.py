"""scripts/container-run: the podman/docker command it builds for a config (no engine needed)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from asyncdicom.container import command
from tests.conftest import write_yaml

ROOT = Path(__file__).resolve().parents[1]


def _config(tmp_path: Path) -> Path:
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "series.csv").write_text("StudyInstanceUID\n1.2.3\n")
    (tmp_path / "ctp").mkdir()
    (tmp_path / "ctp" / "anon.script").write_text('<script><e en="T" t="00100010">@empty()</e></script>\n')
    (tmp_path / "ctp" / "lookup.properties").write_text("ptid/1 = A\n")
    doc = {
        "pacs": {"hostname": "pacs.example.org", "port": 4242, "aet": "PACS"},
        "local": {"aet": "ASYNCDICOM", "port": 11112},
        "request": {
            "type": "c-move",
            "elements_batch_file": "../inputs/series.csv",
            "elements": ["QueryRetrieveLevel=STUDY", "StudyInstanceUID"],
        },
        "anonymization": {"enabled": True, "script": "../ctp/anon.script", "lookup_table": "../ctp/lookup.properties"},
        "output": {"directory": "/data/images", "database_file": "/data/images/retrieved.csv"},
    }
    return write_yaml(tmp_path / "config" / "c-move.yml", doc)


def test_command_binds_what_the_config_names(tmp_path: Path) -> None:
    """Inputs read-only at the same paths, outputs writable (the ledger and request CSV inside the
    output tree need no mount of their own), the config's folder as working directory, the C-MOVE
    port published, and asyncdicom's own arguments after the config."""
    config = _config(tmp_path)
    line = command(config, ["run", "--json"], "podman", "asyncdicom:test", user=(1000, 1000))
    assert line[:7] == ["podman", "run", "--rm", "--init", "--user", "1000:1000", "--userns=keep-id"]
    volumes = [line[i + 1] for i, part in enumerate(line) if part == "-v"]
    assert volumes == [
        "/data/images:/data/images:rw,Z",
        "/data/images-private:/data/images-private:rw,Z",  # ledger and spool: beside the anonymized tree
        "/data/images-quarantine:/data/images-quarantine:rw,Z",
        f"{tmp_path / 'config'}:{tmp_path / 'config'}:ro,Z",
        f"{tmp_path / 'ctp'}:{tmp_path / 'ctp'}:ro,Z",
        f"{tmp_path / 'inputs'}:{tmp_path / 'inputs'}:ro,Z",
    ]
    assert line[line.index("-w") + 1] == str(tmp_path / "config")
    assert line[line.index("-p") + 1] == "11112:11112"
    assert line[-4:] == ["asyncdicom:test", "run", str(config), "--json"]


def test_script_prints_the_command_and_makes_the_output_folders(tmp_path: Path) -> None:
    """--print shows the docker command; the writable folders exist first, so they are the user's."""
    config = _config(tmp_path)
    text = config.read_text().replace("/data/images", str(tmp_path / "out"))
    config.write_text(text)
    result = subprocess.run(
        [ROOT / "scripts" / "container-run", "--engine", "docker", "--print", config, "status"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("docker run --rm --init --user ")
    assert "--userns" not in result.stdout and " -p " in result.stdout
    assert result.stdout.strip().endswith(f"localhost/asyncdicom:latest status {config}")
    assert (tmp_path / "out").is_dir() and (tmp_path / "out-quarantine").is_dir()


def test_script_reports_a_bad_config_like_asyncdicom(tmp_path: Path) -> None:
    config = write_yaml(tmp_path / "c.yml", {"pacs": {"hostname": "h", "port": 0, "aet": "A"}})
    result = subprocess.run(
        [ROOT / "scripts" / "container-run", "--engine", "podman", "--print", config],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "error: pacs.port: port 0 is out of range; use 1 to 65535"
