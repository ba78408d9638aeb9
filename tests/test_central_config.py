"""`liuhen central serve` refuses a bad configuration before it starts, naming the key;
docs/CENTRAL.md's key reference is the schema's."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
from centralfixtures import CentralRig, write_central_config
from conftest import ROOT
from mqttfixtures import running_broker

from central.config import CentralConfigError, parse, reference_markdown
from central.serve import EX_CONFIG, EX_UNAVAILABLE, run_serve

MINIMAL = {
    "central": {"data_dir": "/tmp/x"},
    "mqtt": {"host": "broker", "cert_file": "c.pem", "key_file": "c.key"},
    "trust": {"directory": "/etc/liuhen/trust"},
    "collector": {"cert_file": "s.pem", "key_file": "s.key", "client_ca_file": "ca.pem"},
}


def _problems(**changes: dict[str, object]) -> str:
    data = {k: dict(v) for k, v in MINIMAL.items()}
    for section, values in changes.items():
        data.setdefault(section, {}).update(values)
    with pytest.raises(CentralConfigError) as caught:
        parse(data, "central.toml")
    return str(caught.value)


def test_every_problem_is_named_by_its_key() -> None:
    assert parse(MINIMAL).collector.port == 8443
    text = _problems(collector={"port": 70000, "colour": "red"}, mqtt={"port": "8883"},
                     monitor={"cert_file": "only.pem"}, alerts={"storage_low_percent": -1})  # fmt: skip
    assert "collector.port: input should be less than or equal to 65535 (got 70000)" in text
    assert "collector.colour: unknown key" in text
    assert "mqtt.port: input should be a valid integer (got '8883')" in text
    assert "monitor: cert_file and key_file go together" in text
    assert "alerts.storage_low_percent: input should be greater than or equal to 0" in text
    assert "trust.directory: required but missing" in _problems(trust={"directory": None}).replace(
        "input should be a valid string (got None)", "required but missing"
    )
    data = {k: v for k, v in MINIMAL.items() if k != "mqtt"}
    with pytest.raises(CentralConfigError, match="mqtt: required but missing"):
        parse(data)
    with pytest.raises(CentralConfigError, match=r"central\.database: 'mysql://x'"):
        parse({**MINIMAL, "central": {"data_dir": "/x", "database": "mysql://x"}}).database()


def test_the_docs_carry_the_schema() -> None:
    doc = (ROOT / "docs" / "CENTRAL.md").read_text()
    begin = doc.index("<!-- BEGIN generated: central.config.reference_markdown() -->\n")
    end = doc.index("<!-- END generated -->")
    assert doc[begin:end].split("\n", 1)[1] == reference_markdown(), "regenerate docs/CENTRAL.md's reference"  # fmt: skip


def test_unusable_files_and_storage_stop_it_before_it_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = write_central_config(tmp_path / "bad.toml", **{**MINIMAL, "collector": {"port": "x"}})
    done = subprocess.run([sys.executable, "-m", "central.serve", "--config", str(bad)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)  # fmt: skip
    assert done.returncode == EX_CONFIG and "collector.port" in done.stderr, done.stderr
    with running_broker(tmp_path / "broker") as broker:
        rig = CentralRig(tmp_path / "central", broker)
        rig.unit("unit-a")

        def serve(**overrides: dict[str, object]) -> tuple[int, str]:
            code = run_serve(argparse.Namespace(config=rig.config(**overrides), duration=0))
            return code, capsys.readouterr().err

        assert serve()[0] == 0
        code, err = serve(collector={"cert_file": str(tmp_path / "nope.pem")})
        assert code == EX_CONFIG and "liuhen central serve: collector.cert_file" in err, err
        code, err = serve(trust={"directory": str(tmp_path / "empty")})
        assert code == EX_CONFIG and "trust.directory" in err and "not a directory" in err, err
        code, err = serve(central={"database": "postgresql://db/liuhen"})
        assert code == EX_UNAVAILABLE and "not implemented" in err, err
