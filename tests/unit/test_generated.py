"""The committed generated code matches the .proto files (`python -m kes.schemas.generate
--check`)."""

from pathlib import Path

import pytest

from kes.schemas import generate


def test_committed_generated_code_matches_protos() -> None:
    problems = generate.check()
    assert not problems, "run `python -m kes.schemas.generate`:\n" + "\n".join(problems)


def test_every_proto_is_found() -> None:
    names = {p.as_posix() for p in generate.proto_files()}
    assert {"schemas/kes/v1/envelopes.proto", "schemas/bank/v1/bank.proto"} <= names


def test_check_exits_non_zero_and_names_a_stale_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_schemas = tmp_path / "schemas"
    target = fake_schemas / "bank" / "v1"
    target.mkdir(parents=True)
    (target / "bank.proto").write_bytes((generate.SCHEMAS / "bank/v1/bank.proto").read_bytes())
    (target / "bank_pb2.py").write_text("# edited by hand\n")
    monkeypatch.setattr(generate, "ROOT", tmp_path)
    monkeypatch.setattr(generate, "SCHEMAS", fake_schemas)
    assert generate.main(["--check"]) == 1
    err = capsys.readouterr().err
    assert "schemas/bank/v1/bank_pb2.py: differs" in err
    assert "schemas/bank/v1/bank_pb2.pyi: missing" in err
